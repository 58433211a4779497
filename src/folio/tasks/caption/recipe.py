"""`folio caption train`: images → a word vocabulary of their captions → a CNN (or EfficientNet) grid with a
soft-attention decoder (Show, Attend and Tell), trained by `run_training`.

    >>> from folio.tasks.caption import CaptionTrainOptions, train
    >>> summary = train(CaptionTrainOptions(out="runs/caption"))  # doctest: +SKIP
"""

from __future__ import annotations

from folio.data.pairs import EOS, PAD, SOS
from folio.errors import DataError
from folio.models.captioner import Captioner, CaptionerConfig
from folio.models.registry import ARCHS, load_tokenizers, model_section
from folio.tasks.caption.data import CaptionBatches, CaptionData, batches_in_order, images_tensor
from folio.tasks.caption.options import CaptionTrainOptions
from folio.tokenizers import fit_tokenizer
from folio.training.run import Prepared, RunContext, run_training, trained_parameters
from folio.training.validation import teacher_forced_loss

TASK = "caption"
# where a checkpoint keeps its caption vocabulary: the registry's, which reads it back
((TOKENIZER, _),) = ARCHS["captioner"].tokenizers


class CaptionRecipe:
    """A captioning run: the images (the resumed checkpoint's data when resuming), the caption vocabulary
    (fitted on the training captions, or the checkpoint's), the captioner, and the teacher-forced loss on
    the first caption of each validation image."""

    task = TASK

    def prepare(self, options: CaptionTrainOptions, context: RunContext) -> Prepared:
        """Build what `run_training` trains from `options` (or from the checkpoint being resumed)."""
        data = options.data
        if context.resume_dir is not None:
            data = CaptionData.from_dict({**options.data.to_dict(), **context.saved["data_spec"]})
        splits = data.load()
        if not splits["train"] or not splits["valid"]:
            raise DataError(f"--data {data.data}: too few images to split into train and valid sets")
        if context.resume_dir is not None:
            section = model_section(context.saved, f"{context.resume_dir}/config.json")
            tokenizer = load_tokenizers(context.resume_dir, section)
            model_config = CaptionerConfig.from_dict(section)
        else:
            tokenizer = fit_tokenizer("word", [c for e in splits["train"] for c in e.captions], seq2seq=True)
            longest = max(len(tokenizer.encode(c)) for e in splits["train"] for c in e.captions)
            model_config = CaptionerConfig(vocab_size=len(tokenizer), image_size=data.image_size, pad_id=PAD,
                                           sos_id=SOS, eos_id=EOS, max_len=longest + 5, **options.model)
        train_images = images_tensor([e.image for e in splits["train"]])  # (N, 3, H, W) uint8
        pairs = [(i, tokenizer.encode(c)) for i, e in enumerate(splits["train"]) for c in e.captions if c.strip()]
        valid_images = images_tensor([e.image for e in splits["valid"]])
        valid_targets = [tokenizer.encode(e.captions[0]) for e in splits["valid"]]
        batches = CaptionBatches(train_images, pairs, options.batch_size, seed=options.train.seed,
                                 rank=context.dist.rank, world_size=context.dist.world_size)
        model = Captioner(model_config)

        def evaluate(m: Captioner) -> float:  # reduction "sum" leaves the attention penalty out: nats per word
            return teacher_forced_loss(m, batches_in_order(valid_images, valid_targets, 256), PAD)

        return Prepared(
            model, batches, evaluate,
            saved_config={"model": model_config.to_dict(), "data_spec": data.to_dict(),
                          "data": {"batch_size": options.batch_size}},
            describe=f"{model_config.describe()}, {trained_parameters(model):,} trained parameters; {len(tokenizer)} words; "
                     f"{len(splits['train']):,} training images ({len(pairs):,} captions), "
                     f"{len(splits['valid']):,} validation",
            write_extras=lambda directory: tokenizer.save(directory / TOKENIZER),
        )


def train(options: CaptionTrainOptions) -> dict:
    """Train a captioning model; returns the trainer's summary."""
    return run_training(CaptionRecipe(), options)
