"""The settings of a training run (`TrainConfig`, checked where they enter) and the optimizer they build."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from folio.errors import ConfigError
from folio.training.muon import Muon, split_for_muon


@dataclass
class TrainConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine (over the run) | inverse_sqrt (Vaswani et al.: lr·√(warmup/step))
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # 0 disables clipping
    max_steps: int | None = None
    max_time: float | None = None  # seconds of training (evaluation included)
    eval_every: int = 500
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    optimizer: str = "adamw"  # adamw | muon (Muon for hidden matrices at muon_lr, AdamW at lr for the rest)
    muon_lr: float = 0.02
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere) | bf16 (autocast on any device) | fp32
    compile: bool = False
    ema_decay: float = 0.0  # > 0: validate and save an exponential moving average of the weights (Polyak)

    def __post_init__(self):
        if self.max_steps is None and self.max_time is None:
            raise ConfigError("give --max-steps or --max-time (or both) so training knows when to end")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.max_time is not None and self.max_time <= 0:
            raise ConfigError(f"--max-time must be positive seconds, got {self.max_time}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        for flag, value in (("--weight-decay", self.weight_decay), ("--grad-clip", self.grad_clip), ("--patience", self.patience)):
            if value < 0:
                raise ConfigError(f"{flag} must be 0 (off) or more, got {value}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.optimizer not in ("adamw", "muon"):
            raise ConfigError(f"--optimizer {self.optimizer!r}: choose adamw or muon")
        if self.muon_lr <= 0:
            raise ConfigError(f"--muon-lr must be positive, got {self.muon_lr}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"--precision {self.precision!r}: choose auto, bf16 or fp32")
        if self.schedule not in ("cosine", "inverse_sqrt"):
            raise ConfigError(f"--schedule {self.schedule!r}: choose cosine or inverse_sqrt")
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(groups: list[dict], model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over `groups`, or Muon for the model's hidden matrices and AdamW for the rest."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    groups = split_for_muon(groups, model)
    ratio = config.muon_lr / config.lr
    for group in groups:
        if group["muon"]:  # the schedule scales every group alike; decay per step stays lr × weight_decay
            group["lr_scale"] *= ratio
            group["weight_decay"] = group.get("weight_decay", config.weight_decay) / ratio
    return Muon(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
