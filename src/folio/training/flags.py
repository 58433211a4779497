"""The shared training loop's flags, the same for every task's `folio <task> train`, and the `TrainConfig` they
make (beside the trainer they configure, so that `folio.flags`, on the ground floor, knows no trainer)."""

from __future__ import annotations

import argparse

from folio.flags import finite_float, non_negative_float, non_negative_int, positive_float, positive_int, seed
from folio.training.config import TrainConfig


def add_training_flags(parser: argparse.ArgumentParser, lr: float, max_time: float | None) -> None:
    """Flags of the shared training loop, the same for every task."""
    group = parser.add_argument_group("training")
    group.add_argument("--lr", type=positive_float, default=lr, help="peak learning rate (AdamW)")
    group.add_argument("--weight-decay", type=non_negative_float, default=0.01)
    group.add_argument("--warmup-steps", type=non_negative_int, default=100)
    group.add_argument("--min-lr-ratio", type=finite_float, default=0.1, help="cosine decay ends at lr × this")
    group.add_argument("--schedule", choices=["cosine", "inverse_sqrt"], default="cosine",
                       help="after the warm-up: cosine decay over the run, or lr·√(warmup/step) (Transformer)")
    group.add_argument("--grad-clip", type=non_negative_float, default=1.0, help="max gradient norm; 0 disables")
    group.add_argument("--max-steps", type=positive_int, default=None)
    group.add_argument("--max-time", type=positive_float, default=max_time, help="seconds of training")
    group.add_argument("--eval-every", type=positive_int, default=500, help="steps between validations")
    group.add_argument("--patience", type=non_negative_int, default=0, help="early stopping after N evaluations without improvement (0: off)")
    group.add_argument("--log-every", type=positive_int, default=50)
    group.add_argument("--save-every", type=positive_int, default=500, help="steps between resumable checkpoints")
    group.add_argument("--seed", type=seed, default=0)
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    group.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw",
                       help="muon: Muon for the hidden weight matrices (at --muon-lr), AdamW at --lr for the rest")
    group.add_argument("--muon-lr", type=positive_float, default=0.02, help="peak learning rate of the Muon matrices")
    group.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                       help="bf16: autocast matrix products to bfloat16 (weights, optimizer and loss stay fp32); "
                            "auto: bf16 on CUDA, fp32 elsewhere")
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument("--ema-decay", type=finite_float, default=0.0,
                       help="validate and save an exponential moving average of the weights with this decay (0: off)")
    group.add_argument("--resume", nargs="?", const="", default=None, metavar="DIR",
                       help="continue an interrupted run from DIR (default: OUT/last)")
    group.add_argument("--quiet", action="store_true", help="no progress output")


def train_config_from(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of the flags `add_training_flags` added."""
    return TrainConfig(
        lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps, schedule=args.schedule,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, max_steps=args.max_steps, max_time=args.max_time, eval_every=args.eval_every,
        patience=args.patience, log_every=args.log_every, save_every=args.save_every, seed=args.seed,
        precision=args.precision, optimizer=args.optimizer, muon_lr=args.muon_lr, compile=args.compile, ema_decay=args.ema_decay,
    )
