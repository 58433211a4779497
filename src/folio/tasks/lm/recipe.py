"""`folio lm train`: corpus → vocabulary → windows → model, trained by `run_training`.

The vocabulary is characters (the default), words (`--tokenizer word`: the classifier's cleaning, top-V
words and hashed buckets) or byte-level BPE (`--tokenizer bpe`). `--arch gru|lstm|gpt` are causal
models that generate; `--arch bert` pretrains an encoder with BERT's masked-LM objective. A word- or
subword-level checkpoint of any of them starts a classifier: `folio classify train --init-from DIR`.

    >>> from folio.tasks.lm import LMTrainOptions, train
    >>> summary = train(LMTrainOptions(corpus="shakespeare", out="runs/lm", model={"arch": "gpt"}))  # doctest: +SKIP
"""

from __future__ import annotations

from folio.data.windows import make_batches
from folio.errors import ConfigError
from folio.models.bert import MaskedLanguageModel, MaskedLMConfig
from folio.models.gpt import GPT, GPTConfig
from folio.models.llama import Llama, LlamaConfig
from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.tasks.lm.data import corpus_ids, save_vocab, train_valid_ids, vocab_fit
from folio.tasks.lm.metrics import evaluate_ids
from folio.tasks.lm.options import LMTrainOptions
from folio.tokenizers import load_tokenizer
from folio.training.run import Prepared, RunContext, run_training, trained_parameters

TASK = "lm"


def build_model(config: dict) -> RNNLanguageModel | GPT | MaskedLanguageModel:
    """The model a `config.json` "model" section describes: arch gru/lstm → RNN, gpt → GPT, llama → Llama (a
    fine-tuned pretrained model), bert → masked LM."""
    if config.get("arch") == "gpt":
        return GPT(GPTConfig(**config))
    if config.get("arch") == "llama":
        return Llama(LlamaConfig(**config))
    if config.get("arch") == "bert":
        return MaskedLanguageModel(MaskedLMConfig(**config))
    return RNNLanguageModel(RNNLMConfig(**config))


class LMRecipe:
    """A language model's run: the vocabulary (fitted, or the resumed checkpoint's), the model, random
    windows or stateful streams of the training split, and the loss on the validation split."""

    task = TASK

    def prepare(self, options: LMTrainOptions, context: RunContext) -> Prepared:
        """Build what `run_training` trains from `options` (or from the checkpoint being resumed)."""
        if context.resume_dir is not None:
            tokens = corpus_ids(options.corpus, options.split, load_tokenizer(context.resume_dir), context.dist)
            model_config = context.saved["model"]
        else:
            fit = vocab_fit(options.tokenizer, options.vocab_size, options.oov_buckets, options.lower)
            tokens = corpus_ids(options.corpus, options.split, fit, context.dist)
            model_config = {"vocab_size": len(tokens.tokenizer), **options.model}
        vocab = tokens.tokenizer
        model = build_model(model_config)
        if not isinstance(model, RNNLanguageModel) and options.stateful:
            raise ConfigError("--stateful carries a recurrent state; a Transformer sees its context in every window")
        train_ids, valid_ids = train_valid_ids(tokens, options.corpus)  # (T,) memory-mapped, uint8/16/32
        batches = make_batches(
            train_ids, options.seq_len, options.batch_size, options.stateful,
            seed=options.train.seed, rank=context.dist.rank, world_size=context.dist.world_size,
        )
        config = model.config
        return Prepared(
            model=model,
            batches=batches,
            evaluate=lambda m: evaluate_ids(m, valid_ids, streams=options.eval_streams)[0],
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


def train(options: LMTrainOptions) -> dict:
    """Train a language model (or pretrain a masked LM) as `options` say; returns the trainer's summary."""
    return run_training(LMRecipe(), options)
