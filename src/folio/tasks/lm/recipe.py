"""`folio lm train`: corpus → vocabulary → windows → model, trained by `run_training`.

The vocabulary is characters (the default), words (`--tokenizer word`: the classifier's cleaning, top-V
words and hashed buckets) or byte-level BPE (`--tokenizer bpe`). `--arch gru|lstm|gpt` are causal
models that generate (encoders pretrained over the same windows: `folio.tasks.pretrain`). A word- or
subword-level checkpoint starts a classifier: `folio classify train --init-from DIR`.

    >>> from folio.tasks.lm import LMTrainOptions, train
    >>> summary = train(LMTrainOptions(corpus="shakespeare", out="runs/lm", model={"arch": "gpt"}))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from folio.data.windows import make_batches
from folio.errors import ConfigError
from folio.models.registry import build_model, model_class, model_section
from folio.tasks.lm.data import corpus_ids, save_vocab, train_valid_ids, vocab_fit
from folio.tasks.lm.metrics import stream_loss
from folio.tasks.lm.options import LMTrainOptions
from folio.tokenizers import load_tokenizer
from folio.training.run import Prepared, RunContext, run_training, trained_parameters

TASK = "lm"


class LMRecipe:
    """A language model's run: the vocabulary (fitted, or the resumed checkpoint's), the model, random
    windows or stateful streams of the training split, and the loss on the validation split."""

    task = TASK
    default_arch = "gru"
    kinds = ("causal",)  # what the models it trains predict (see folio.models)
    instead = "folio pretrain train (an encoder, which does not generate)"  # for a model of another kind

    def model_options(self, options: LMTrainOptions, context: RunContext) -> dict:
        """The "model" options of this run (the resumed checkpoint's when resuming), checked before any data is
        read: the arch is one this recipe trains, and --stateful is for a recurrent model."""
        model_options = model_section(context.saved) if context.resume_dir is not None else options.model
        arch = model_options.get("arch", self.default_arch)
        family = model_class({"arch": arch})
        if family.kind not in self.kinds:
            raise ConfigError(f"--arch {arch} is trained by {self.instead}")
        if options.stateful and not family.stateful:
            raise ConfigError(f"--stateful carries a recurrent state across batches; --arch {arch} reads every "
                              "window on its own")
        return {"arch": arch, **model_options}

    def prepare(self, options: LMTrainOptions, context: RunContext) -> Prepared:
        """Build what `run_training` trains from `options` (or from the checkpoint being resumed)."""
        model_options = self.model_options(options, context)
        arch = model_options["arch"]
        if context.resume_dir is not None:
            tokens = corpus_ids(options.corpus, options.split, load_tokenizer(context.resume_dir), context.dist)
            model_config = model_options
        else:
            fit = vocab_fit(options.tokenizer, options.vocab_size, options.oov_buckets, options.lower)
            tokens = corpus_ids(options.corpus, options.split, fit, context.dist)
            model_config = {"arch": arch, "vocab_size": len(tokens.tokenizer), **options.model}
        vocab = tokens.tokenizer
        model = build_model(model_config)
        if context.resume_dir is None:
            self.start(model, vocab)
        train_ids, valid_ids = train_valid_ids(tokens, options.corpus)  # (T,) memory-mapped, uint8/16/32
        batches = make_batches(
            train_ids, options.seq_len, options.batch_size, options.stateful,
            seed=options.train.seed, rank=context.dist.rank, world_size=context.dist.world_size,
        )
        config = model.config
        return Prepared(
            model=model,
            batches=batches,
            evaluate=self.evaluator(valid_ids, options),
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

    def start(self, model: torch.nn.Module, vocab) -> None:
        """What a new model needs from its fitted vocabulary before training (a causal model: nothing)."""

    def evaluator(self, valid_ids: torch.Tensor, options: LMTrainOptions) -> Callable[[torch.nn.Module], float | dict]:
        """The validation figure(s) of a model on the valid split's ids: the next-token loss over carried streams."""
        return lambda m: stream_loss(m, valid_ids, streams=options.eval_streams)[0]


def train(options: LMTrainOptions) -> dict:
    """Train a causal language model as `options` say; returns the trainer's summary."""
    return run_training(LMRecipe(), options)
