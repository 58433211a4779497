"""Flag types, for every task's CLI (`folio <task> <verb>`); the training loop's own flags are
`folio.training.flags`'s."""

from __future__ import annotations

import argparse
import io
import math
import os
import sys


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows each flag's default; a flag whose default is None (its value is worked out when not
    given) gets no "(default: None)" after it where its help says what that is, or where it is a switch."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None and ("default" in (action.help or "") or action.nargs == 0):
            return action.help
        return super()._get_help_string(action)


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


def is_worker() -> bool:
    """True in a torchrun process other than rank 0 (which alone prints samples and reports)."""
    return int(os.environ.get("RANK", "0")) != 0
