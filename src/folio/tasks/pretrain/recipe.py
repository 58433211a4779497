"""`folio pretrain train`: encoders pretrained by objectives that do not generate text (masked LM and next-sentence prediction, the biLM).

`--arch bert` pretrains a BERT encoder with masked LM over windows of the token stream (the windows,
vocabulary and corpus options of `folio lm train`: `folio.tasks.lm.recipe.LMRecipe`), or with masked LM
plus next-sentence prediction (`objective="mlm+nsp"`, over sentence pairs of the corpus's documents:
`folio.data.sentence_pairs`); `--arch bilm` pretrains ELMo's bidirectional LSTM language model (both
directions, over windows). A BERT checkpoint starts a classifier (`folio classify train --init-from DIR`), a
biLM gives contextual word vectors (`folio embed --model DIR`, `folio classify train --features DIR`).

Checkpoints are written with `"task": "lm"`, as they were before this package had its own name, so every reader
of them (classify, embed, serve) reads old and new alike; `folio pretrain` picks them out by the model's `kind`.

    >>> from folio.tasks.pretrain import PretrainOptions, train
    >>> summary = train(PretrainOptions(corpus="imdb", out="runs/bert", tokenizer="word"))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from folio.data.sentence_pairs import (
    SentencePairBatches,
    check_documents,
    corpus_documents,
    document_kind,
    held_out_pairs,
    tokenize_documents,
)
from folio.errors import ConfigError
from folio.models.registry import build_model
from folio.tasks.lm.data import corpus_ids, save_vocab, spellings, vocab_fit
from folio.tasks.lm.recipe import LMRecipe
from folio.tasks.pretrain.metrics import evaluate_ids, sentence_pair_metrics
from folio.tasks.pretrain.options import PretrainOptions
from folio.tokenizers import load_tokenizer
from folio.training.run import Prepared, RunContext, run_training, trained_parameters


class PretrainRecipe(LMRecipe):
    """An encoder's run: a masked LM or a biLM over the windows of `LMRecipe`, or a BERT with next-sentence
    prediction over sentence pairs (`prepare_nsp`)."""

    default_arch = "bert"
    kinds = ("masked", "bidirectional")
    instead = "folio lm train (a causal language model, which generates)"

    def prepare(self, options: PretrainOptions, context: RunContext) -> Prepared:
        model_options = self.model_options(options, context)
        if model_options.get("objective") == "mlm+nsp":
            return prepare_nsp(options, context, model_options)
        return super().prepare(options, context)

    def start(self, model: torch.nn.Module, vocab) -> None:
        """A biLM's character CNN reads each token's spelling."""
        if getattr(model.config, "char_cnn", False):
            if vocab.kind == "char":
                raise ConfigError("--char-cnn builds a token's vector from its characters, and with --tokenizer char "
                                  "every token is one character: use --tokenizer word or bpe, or drop --char-cnn")
            model.set_vocabulary(spellings(vocab))

    def evaluator(self, valid_ids: torch.Tensor, options: PretrainOptions) -> Callable[[torch.nn.Module], float | dict]:
        """A masked LM's masked-token loss (fixed positions); a biLM's loss in each direction and their mean."""
        return lambda m: {k: v for k, v in evaluate_ids(m, valid_ids, options.seq_len).items() if k != "tokens"}


def prepare_nsp(options: PretrainOptions, context: RunContext, model_options: dict) -> Prepared:
    """BERT's masked LM plus next-sentence prediction: the corpus's documents split into sentences, pairs
    of them (`folio.data.sentence_pairs`) drawn afresh every epoch, and validation on fixed held-out
    pairs of the valid split's documents (masked-token loss, NSP loss and accuracy; "loss" their sum).
    The tokenizer is the one `--objective mlm` fits on the same corpus with the same options, so the two
    recipes' masked-token losses on the token stream's windows (`folio pretrain evaluate`) are comparable."""
    if context.resume_dir is not None:
        vocab = load_tokenizer(context.resume_dir)
        model_config = model_options
    else:
        fit = vocab_fit(options.tokenizer, options.vocab_size, options.oov_buckets, options.lower)
        vocab = corpus_ids(options.corpus, options.split, fit, context.dist).tokenizer  # fitted and cached as for mlm
        model_config = {"vocab_size": len(vocab), **model_options}
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


def train(options: PretrainOptions) -> dict:
    """Pretrain a BERT encoder or a biLM as `options` say; returns the trainer's summary."""
    return run_training(PretrainRecipe(), options)
