"""The one training loop every task uses, with checkpoints, metrics and progress."""

from folio.training.config import TrainConfig
from folio.training.trainer import Trainer

__all__ = ["TrainConfig", "Trainer"]
