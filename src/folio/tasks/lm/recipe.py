"""`folio lm train`: corpus → vocabulary → windows → model, trained by `run_training`.

The vocabulary is characters (the default), words (`--tokenizer word`: the classifier's cleaning, top-V
words and hashed buckets) or byte-level BPE (`--tokenizer bpe`). `--arch gru|lstm|gpt` are causal
models that generate; `--arch bert` pretrains an encoder with BERT's masked-LM objective (over windows of
the token stream), or with masked LM plus next-sentence prediction (`objective="mlm+nsp"`, over sentence
pairs of the corpus's documents: `folio.data.sentence_pairs`). A word- or
subword-level checkpoint of any of them starts a classifier: `folio classify train --init-from DIR`.

    >>> from folio.tasks.lm import LMTrainOptions, train
    >>> summary = train(LMTrainOptions(corpus="shakespeare", out="runs/lm", model={"arch": "gpt"}))  # doctest: +SKIP
"""

from __future__ import annotations

import time

from folio.data.sentence_pairs import (
    SentencePairBatches,
    check_documents,
    corpus_documents,
    document_kind,
    held_out_pairs,
    tokenize_documents,
)
from folio.data.windows import make_batches
from folio.errors import ConfigError
from folio.models.registry import build_model, model_section
from folio.tasks.lm.data import corpus_ids, save_vocab, spellings, train_valid_ids, vocab_fit
from folio.tasks.lm.metrics import bilm_losses, evaluate_ids, sentence_pair_metrics
from folio.tasks.lm.options import LMTrainOptions
from folio.tokenizers import load_tokenizer
from folio.training.run import Prepared, RunContext, run_training, trained_parameters

TASK = "lm"


class LMRecipe:
    """A language model's run: the vocabulary (fitted, or the resumed checkpoint's), the model, random
    windows or stateful streams of the training split, and the loss on the validation split."""

    task = TASK

    def prepare(self, options: LMTrainOptions, context: RunContext) -> Prepared:
        """Build what `run_training` trains from `options` (or from the checkpoint being resumed)."""
        model_options = model_section(context.saved) if context.resume_dir is not None else options.model
        arch = model_options.get("arch", "gru")
        if options.stateful and arch not in ("gru", "lstm"):  # before any data is read, for every recipe below
            raise ConfigError(f"--stateful carries a recurrent state across batches; --arch {arch} reads every "
                              "window on its own")
        if arch == "bert" and model_options.get("objective") == "mlm+nsp":
            return _prepare_nsp(options, context)
        if context.resume_dir is not None:
            tokens = corpus_ids(options.corpus, options.split, load_tokenizer(context.resume_dir), context.dist)
            model_config = model_options
        else:
            fit = vocab_fit(options.tokenizer, options.vocab_size, options.oov_buckets, options.lower)
            tokens = corpus_ids(options.corpus, options.split, fit, context.dist)
            model_config = {"arch": arch, "vocab_size": len(tokens.tokenizer), **options.model}
        vocab = tokens.tokenizer
        model = build_model(model_config)
        if getattr(model.config, "char_cnn", False) and context.resume_dir is None:  # a biLM's character CNN
            if vocab.kind == "char":
                raise ConfigError("--char-cnn builds a token's vector from its characters, and with --tokenizer char "
                                  "every token is one character: use --tokenizer word or bpe, or drop --char-cnn")
            model.set_vocabulary(spellings(vocab))
        train_ids, valid_ids = train_valid_ids(tokens, options.corpus)  # (T,) memory-mapped, uint8/16/32
        batches = make_batches(
            train_ids, options.seq_len, options.batch_size, options.stateful,
            seed=options.train.seed, rank=context.dist.rank, world_size=context.dist.world_size,
        )
        config = model.config
        return Prepared(
            model=model,
            batches=batches,
            evaluate=(lambda m: {k: v for k, v in bilm_losses(m, valid_ids, options.seq_len).items() if k != "tokens"})
            if model.kind == "bidirectional"
            else lambda m: evaluate_ids(m, valid_ids, streams=options.eval_streams)[0],
            saved_config={
                "model": config.to_dict(),
                "data": {"corpus": options.corpus, "split": list(options.split), "seq_len": options.seq_len,
                         "batch_size": options.batch_size, "stateful": options.stateful, "tokenizer": vocab.kind},
            },
            describe=f"{config.arch.upper()} {config.layers}x{config.hidden}, {trained_parameters(model):,} parameters, "
                     f"{len(vocab):,} {vocab.kind} tokens in the vocabulary, {len(train_ids):,} training tokens "
                     + (f"(tokenized in {tokens.built_seconds:.1f} s, {tokens.throughput:.1f} MB/s)"
                        if tokens.built_seconds else "(from the token cache)"),
            write_extras=lambda directory: save_vocab(vocab, directory),
        )


def _prepare_nsp(options: LMTrainOptions, context: RunContext) -> Prepared:
    """BERT's masked LM plus next-sentence prediction: the corpus's documents split into sentences, pairs
    of them (`folio.data.sentence_pairs`) drawn afresh every epoch, and validation on fixed held-out
    pairs of the valid split's documents (masked-token loss, NSP loss and accuracy; "loss" their sum).
    The tokenizer is the one `--objective mlm` fits on the same corpus with the same options, so the two
    recipes' masked-token losses on the token stream's windows (`folio lm evaluate`) are comparable."""
    if context.resume_dir is not None:
        vocab = load_tokenizer(context.resume_dir)
        model_config = model_section(context.saved)
    else:
        fit = vocab_fit(options.tokenizer, options.vocab_size, options.oov_buckets, options.lower)
        vocab = corpus_ids(options.corpus, options.split, fit, context.dist).tokenizer  # fitted and cached as for mlm
        model_config = {"vocab_size": len(vocab), **options.model}
    model = build_model(model_config)
    config, started = model.config, time.perf_counter()
    specials = config.special_ids()
    documents = corpus_documents(options.corpus, options.split)
    docs = {name: tokenize_documents(documents[name], vocab) for name in ("train", "valid", "test")}
    check_documents(list(docs.values()), f"corpus {options.corpus}")  # the corpus as a whole, then each split
    check_documents(docs["train"], f"corpus {options.corpus}, its train split (the documents that end in the first "
                                   f"{options.split[0]:.0%} of the text)")
    check_documents(docs["valid"], f"corpus {options.corpus}, its valid split (the documents that end in the "
                                   f"{options.split[1]:.0%} of the text after the first {options.split[0]:.0%})")
    max_tokens = config.context - 3  # [CLS] A [SEP] B [SEP]
    batches = SentencePairBatches(docs["train"], options.batch_size, max_tokens, specials["cls"], specials["sep"],
                                  seed=options.train.seed, rank=context.dist.rank, world_size=context.dist.world_size)
    valid_pairs = held_out_pairs(docs["valid"], max_tokens, specials["cls"], specials["sep"])
    figures = ("loss", "masked_loss", "nsp_loss", "nsp_accuracy")
    train_docs = docs["train"]
    return Prepared(
        model=model,
        batches=batches,
        evaluate=lambda m: {k: v for k, v in sentence_pair_metrics(m, valid_pairs).items() if k in figures},
        saved_config={
            "model": config.to_dict(),
            "data": {"corpus": options.corpus, "split": list(options.split), "documents": document_kind(options.corpus),
                     "batch_size": options.batch_size, "tokenizer": vocab.kind},
        },
        describe=f"BERT {config.layers}x{config.hidden} (masked LM + next-sentence prediction), "
                 f"{trained_parameters(model):,} parameters, {len(vocab):,} {vocab.kind} tokens in the vocabulary, "
                 f"{len(train_docs):,} training documents of {train_docs.num_sentences:,} sentences "
                 f"({len(train_docs.ids):,} tokens, {len(batches) * options.batch_size:,} pairs an epoch), "
                 f"{len(valid_pairs):,} validation pairs (split and tokenized in {time.perf_counter() - started:.1f} s)",
        write_extras=lambda directory: save_vocab(vocab, directory),
    )


def train(options: LMTrainOptions) -> dict:
    """Train a language model (or pretrain a masked LM) as `options` say; returns the trainer's summary."""
    return run_training(LMRecipe(), options)
