"""Where code runs: device choice, seeding and the distributed (torchrun) context, in one place."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from folio.errors import ConfigError

T = TypeVar("T")


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; any other name is taken as given and checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() if is_distributed() else 0)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r} is not a device name (try auto, cpu, cuda, cuda:1 or mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine (use --device cpu or auto)")
    return device


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@dataclass(frozen=True)
class Distributed:
    """The process's place in a torchrun job; rank 0 of world 1 when run alone."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA)."""
    if not is_distributed():
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def threads(count: int | None):
    """Run a block with `count` intra-op threads (None: unchanged).

    Token-by-token generation is a long chain of tiny operations; on CPU one thread runs them faster
    than two, whose every operation pays for waking and joining the other.
    """
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class FasterThreads:
    """Which of one intra-op thread and `most` runs like steps faster (a stream's tokens), found by timing them:
    the steps alternate between the two (`count()` says which runs next, `record` takes how long it took) until
    each ran `trials`, then the one with the shorter best step runs the next `hold`, and the timing starts over
    (the machine's load changes).

    Neither is faster everywhere: one stream of SmolLM2 (int4) took 15.8 ms a token on two threads against 21.6
    on one of a quiet 2-CPU machine, and 33.5 ms (median) against 22.2 while another process kept a CPU busy
    (two threads then wait on each other at every product)."""

    def __init__(self, most: int, trials: int = 3, hold: int = 256):
        self.counts = (1, most) if most > 1 else (1,)
        self.trials, self.hold = trials, hold
        self._start_over()

    def _start_over(self) -> None:
        self.best, self.runs = dict.fromkeys(self.counts, math.inf), dict.fromkeys(self.counts, 0)

    def count(self) -> int:
        untried = [count for count in self.counts if self.runs[count] < self.trials]
        if untried:
            return min(untried, key=self.runs.get)
        chosen = min(self.counts, key=self.best.get)
        if self.runs[chosen] >= self.trials + self.hold:
            self._start_over()
            return self.count()
        return chosen

    def record(self, count: int, seconds: float) -> None:
        self.runs[count] += 1
        self.best[count] = min(self.best[count], seconds)


def on_faster_threads(steps: Iterator[T], most: int, trials: int = 3) -> Iterator[T]:
    """`steps` (a generator whose every item after the first costs one like step: a stream's tokens, the first
    sampled from the prompt's logits) run on the faster of one intra-op thread and `most` (`FasterThreads`); the
    first item is not timed (it may cost no step, or one that warms up). The setting is the caller's again at
    each item handed over."""
    choice, outside = FasterThreads(most, trials), torch.get_num_threads()
    try:
        yield next(steps)
    except StopIteration:
        return
    while True:
        count = choice.count()
        torch.set_num_threads(count)
        start = time.perf_counter()
        try:
            item = next(steps)
        except StopIteration:
            return
        finally:
            torch.set_num_threads(outside)
        choice.record(count, time.perf_counter() - start)
        yield item


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@contextmanager
def low_peak_memory(threshold: int = 256 << 10):
    """Run a block that allocates and frees many medium buffers (converting a model's weights layer by layer)
    without glibc's heap keeping their room: allocations of `threshold` bytes or more are mapped pages of their
    own, given back when freed, and free heap pages are given back at the end (`malloc_trim`). Without it,
    glibc raises its mapping threshold after each freed buffer, later ones land on the heap between live weights,
    and a quantized SmolLM2's load peaks at 567 MB instead of 381. After the block the threshold is glibc's
    largest default (32 MiB), which its own adjustment would reach: the steps that follow reuse their buffers.
    Nothing happens off glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    except (OSError, AttributeError):  # not glibc
        yield
        return
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.malloc_trim(0)


@contextmanager
def main_process_first(dist_: Distributed):
    """Run a block on rank 0 first and on the other ranks after it (e.g. rank 0 builds a cache, the others
    then read it); alone, just run it."""
    if dist_.world_size > 1 and not dist_.is_main:
        dist.barrier()
    yield
    if dist_.world_size > 1 and dist_.is_main:
        dist.barrier()
