"""The one training loop every task uses, with checkpoints, metrics and progress."""

from folio.training.trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
