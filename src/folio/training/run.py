"""`run_training(recipe, options)`: the preamble every task's training shares, in one place.

A task's recipe turns its options into a `Prepared` run (model, batches, validation, what to save);
`run_training` owns the rest: the device, the torchrun process group, seeding, `--resume`, the saved
config's `task` and `train` sections, the `Trainer`, the banner line and the shutdown.

    >>> summary = run_training(LMRecipe(), LMTrainOptions(corpus="shakespeare", out="runs/lm"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from folio.runtime import Distributed, init_distributed, seed_everything, select_device, shutdown_distributed
from folio.training.batches import TrainBatches
from folio.training.checkpoint import check_output, resume_directory
from folio.training.config import TrainConfig
from folio.training.trainer import Trainer


@dataclass
class RunOptions:
    """The options every `folio <task> train` shares; a task's options dataclass extends it."""

    out: str = "runs/model"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=180))
    device: str = "auto"
    resume: str | None = None  # None: a new run; "": OUT/last; else a checkpoint directory
    progress: bool = True

    def validate(self) -> None:
        """Refuse option combinations that cannot train (a `ConfigError` naming the fix); a task's options
        add their own checks. Called before anything else, so a bad option fails before any work."""


@dataclass(frozen=True)
class RunContext:
    """Where a run stands when its recipe prepares it."""

    device: torch.device
    dist: Distributed
    out: Path
    resume_dir: Path | None  # the checkpoint to continue from, if resuming
    saved: dict  # that checkpoint's config.json ({} for a new run)

    @property
    def resuming(self) -> bool:
        return self.resume_dir is not None


@dataclass
class Prepared:
    """A run ready to train, as a recipe builds it.

    saved_config: the task's sections of `config.json` (`task` and `train` are added by `run_training`).
    describe: the banner line (model, data, parameters); the device, processes and resume step are added.
    on_step(trainer): called after every step (e.g. a schedule of the model's own).
    finish(summary, trainer): after training, on every rank; returns the summary to hand back.
    """

    model: nn.Module
    batches: TrainBatches
    evaluate: Callable[[nn.Module], float | dict]
    saved_config: dict
    describe: str
    write_extras: Callable[[Path], None] | None = None
    param_groups: list[dict] | None = None
    on_step: Callable[[Trainer], None] | None = None
    finish: Callable[[dict, Trainer], dict] | None = None


class Recipe(Protocol):
    """What a task's training recipe provides to `run_training`."""

    task: str  # the name written as config.json's "task", and checked on --resume

    def prepare(self, options, context: RunContext) -> Prepared: ...


def run_training(recipe: Recipe, options: RunOptions) -> dict:
    """Train what `recipe` prepares from `options`; returns the trainer's summary (or `finish`'s)."""
    options.validate()
    check_output(options.out)  # before any data is read or step taken
    device = select_device(options.device)
    dist_info = init_distributed(device)
    try:
        seed_everything(options.train.seed + dist_info.rank)
        out = Path(options.out)
        resume_dir, saved = resume_directory(options.resume, out, recipe.task)
        context = RunContext(device, dist_info, out, resume_dir, saved or {})
        run = recipe.prepare(options, context)
        trainer: Trainer | None = None

        def on_step(step: int) -> None:
            run.on_step(trainer)

        trainer = Trainer(
            run.model, run.batches, options.train, out, evaluate=run.evaluate,
            saved_config={"task": recipe.task, **run.saved_config, "train": options.train.to_dict()},
            write_extras=run.write_extras, device=device, dist_info=dist_info, progress=options.progress,
            param_groups=run.param_groups, on_step=on_step if run.on_step is not None else None,
        )
        if resume_dir is not None:
            trainer.resume(resume_dir)
        if dist_info.is_main:
            trainer.progress.message(
                f"{run.describe}, device {device}"
                + (f", {dist_info.world_size} processes" if dist_info.world_size > 1 else "")
                + (f", resuming at step {trainer.step}" if resume_dir is not None else "")
            )
        summary = trainer.train()
        return run.finish(summary, trainer) if run.finish is not None else summary
    finally:
        shutdown_distributed()


def trained_parameters(model: nn.Module) -> int:
    """The number of parameters the optimizer updates (for banners)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
