"""`folio translate train`: pairs → tokenizers → a recurrent or Transformer encoder–decoder, trained by
`run_training`.

The tokenizers (characters for dates, byte-level BPE otherwise, or `--tokenizer`) are fitted on the
training side only, one per side or one for both (`share_embeddings`). Training pairs whose source is
longer than the model's limit (the longest training source, or --max-src-len) are dropped.

    >>> from folio.tasks.translate import TranslateTrainOptions, train
    >>> summary = train(TranslateTrainOptions(out="runs/dates", arch="transformer"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from folio.data.pairs import EOS, PAD, SOS, Pair, TranslationBatches
from folio.errors import ConfigError, DataError
from folio.models.registry import ARCHS, build_config, build_model, load_tokenizers, model_section
from folio.tasks.translate.data import SourceEncoder, batches_by_length, encode_pairs
from folio.tasks.translate.options import TranslateTrainOptions
from folio.tokenizers import Tokenizer, fit_tokenizer
from folio.training.run import Prepared, RunContext, run_training
from folio.training.trainer import Trainer
from folio.training.validation import teacher_forced_loss

TASK = "translate"
# `--arch` → the model's `model.arch` (folio.models.registry). A family's model offers encode / decode_step /
# reorder_state / expand_state (see models/seq2seq.py) and `loss(batch)`.
MODEL_FAMILIES: dict[str, str] = {"rnn": "rnn_seq2seq", "transformer": "transformer_seq2seq"}
# where a checkpoint keeps its (source, target) tokenizers: the registry's, which reads them back
SRC_TOKENIZER, TGT_TOKENIZER = (file for file, _ in ARCHS["rnn_seq2seq"].tokenizers)


def fit_tokenizers(kind: str, pairs: list[Pair], vocab_size: int, joint: bool) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers fitted on the training pairs; one shared by both sides when `joint`."""
    sources = [s for s, _ in pairs]
    targets = [t for _, t in pairs]
    if joint:
        shared = fit_tokenizer(kind, sources + targets, vocab_size, seq2seq=True)
        return shared, shared
    return fit_tokenizer(kind, sources, vocab_size, seq2seq=True), fit_tokenizer(kind, targets, vocab_size, seq2seq=True)


class TranslateRecipe:
    """A translation run: the tokenizers (fitted, or the resumed checkpoint's), the model family's model,
    batches of similar-length training pairs, and the teacher-forced loss on the validation pairs."""

    task = TASK

    def prepare(self, options: TranslateTrainOptions, context: RunContext) -> Prepared:
        """Build what `run_training` trains from `options` (or from the checkpoint being resumed)."""
        splits = options.data.load()
        train_pairs = splits["train"]
        if not train_pairs or not splits["valid"]:
            raise DataError(f"--data {options.data.data}: too few pairs to split into train and valid sets")
        if context.resume_dir is not None:
            section = model_section(context.saved, f"{context.resume_dir}/config.json")
            src_tok, tgt_tok = load_tokenizers(context.resume_dir, section)
            model_config = build_config(section, f"{context.resume_dir}/config.json")
            reverse, kind = context.saved["data"]["reverse_source"], context.saved["data"]["tokenizer"]
        else:
            arch = options.arch
            if arch not in MODEL_FAMILIES:
                raise ConfigError(f"--arch {arch!r}: choose one of {', '.join(MODEL_FAMILIES)}")
            kind = options.tokenizer if options.tokenizer != "auto" else ("char" if options.data.data == "dates" else "bpe")
            reverse = options.reverse_source
            src_tok, tgt_tok = fit_tokenizers(kind, train_pairs, options.vocab_size,
                                              joint=bool(options.model.get("share_embeddings")))
            max_src_len = 1 + (options.max_src_len or max(len(src_tok.encode(s)) for s, _ in train_pairs))
            model_config = build_config({
                "arch": MODEL_FAMILIES[arch], "src_vocab_size": len(src_tok), "tgt_vocab_size": len(tgt_tok),
                "pad_id": PAD, "sos_id": SOS, "eos_id": EOS, "max_src_len": max_src_len, **options.model,
            }, "the model options")
        encode_src = SourceEncoder(src_tok, reverse, model_config.max_src_len)
        train_src, train_tgt, dropped = encode_pairs(train_pairs, encode_src, tgt_tok, options.max_tgt_len)
        valid_src, valid_tgt, _ = encode_pairs(splits["valid"], encode_src, tgt_tok, 0)
        batches = TranslationBatches(train_src, train_tgt, options.batch_size, seed=options.train.seed,
                                     rank=context.dist.rank, world_size=context.dist.world_size)
        model = build_model(model_config.to_dict())

        def evaluate(m: nn.Module) -> float:  # without label smoothing: nats per target token
            return teacher_forced_loss(m, batches_by_length(valid_src, valid_tgt, options.eval_batch_size), PAD,
                                       label_smoothing=0.0)

        def write_extras(directory: Path) -> None:
            src_tok.save(directory / SRC_TOKENIZER)
            tgt_tok.save(directory / TGT_TOKENIZER)

        def scheduled_sampling(trainer: Trainer) -> None:  # the probability rises linearly over training
            model.sampling_probability = model_config.scheduled_sampling * trainer.progress_fraction()

        params = sum(p.numel() for p in model.parameters())
        return Prepared(
            model, batches, evaluate,
            saved_config={
                "model": model_config.to_dict(),
                "data": {**options.data.to_dict(), "tokenizer": kind, "vocab_size": options.vocab_size,
                         "reverse_source": reverse, "max_tgt_len": options.max_tgt_len, "batch_size": options.batch_size},
            },
            describe=f"{model_config.describe()}, {params:,} parameters; {kind} tokens: {len(src_tok)} source, "
                     f"{len(tgt_tok)} target; {len(train_src):,} training pairs"
                     + (f" ({dropped} too long, dropped)" if dropped else "") + f", {len(valid_src):,} validation",
            write_extras=write_extras,
            on_step=scheduled_sampling if getattr(model_config, "scheduled_sampling", 0) > 0 else None,
        )


def train(options: TranslateTrainOptions) -> dict:
    """Train a translation model; returns the trainer's summary."""
    return run_training(TranslateRecipe(), options)
