"""Flag types and the shared training flags, for every task's CLI (`folio <task> <verb>`)."""

from __future__ import annotations

import argparse
import io
import math
import os
import sys


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class Parser(argparse.ArgumentParser):
    """Bad flags get one line naming the problem (and where help is), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


INT64_MAX = 2**63 - 1  # integers go into tensors and seeds as int64: larger ones overflow there, not here


def finite_float(text: str) -> float:
    """A float flag that is a number: "nan", "inf" and "1e999" are refused by the parser."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _int_in(minimum: int, wording: str, maximum: int = INT64_MAX):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {wording}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is too large (at most {maximum})")
        return value

    return parse


integer = _int_in(-INT64_MAX - 1, "at least -2**63")
positive_int = _int_in(1, "at least 1")
non_negative_int = _int_in(0, "0 or more")
seed = _int_in(0, "0 or more")  # torch, NumPy (mod 2**32) and Python take every seed in 0..2**63-1


def unit_float(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


def utf8_text(value: str) -> str:
    """A text flag that is Unicode text: bytes that are not UTF-8 arrive from the command line as lone
    surrogates (Python's surrogateescape), which no tokenizer, file or JSON reply can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise argparse.ArgumentTypeError(f"{ascii(value)} is not UTF-8 text (character {err.start}); "
                                         "check the terminal's encoding") from None
    return value


def read_stdin_lines() -> list[str]:
    """The lines of standard input, decoded as UTF-8 whatever the locale (a `DataError` names the first
    line that is not UTF-8, where Python would otherwise smuggle the bytes through as surrogates)."""
    from folio.errors import decode_utf8

    stream = getattr(sys.stdin, "buffer", None)
    text = sys.stdin.read() if stream is None else decode_utf8(stream.read(), "standard input")  # None: tests' text stream
    return [line.rstrip("\n") for line in io.StringIO(text, newline=None)]  # split as a text file is read


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


def train_config_from(args):
    from folio.training.config import TrainConfig

    return TrainConfig(
        lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps, schedule=args.schedule,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, max_steps=args.max_steps, max_time=args.max_time, eval_every=args.eval_every,
        patience=args.patience, log_every=args.log_every, save_every=args.save_every, seed=args.seed,
        precision=args.precision, optimizer=args.optimizer, muon_lr=args.muon_lr, compile=args.compile, ema_decay=args.ema_decay,
    )


def is_worker() -> bool:
    """True in a torchrun process other than rank 0 (which alone prints samples and reports)."""
    return int(os.environ.get("RANK", "0")) != 0
