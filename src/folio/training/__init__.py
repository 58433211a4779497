"""The one training loop every task uses, with checkpoints, metrics and progress."""

from folio.training.trainer import Trainer, TrainConfig

__all__ = ["TrainConfig", "Trainer"]
