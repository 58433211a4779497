"""Checkpoint directories: `config.json`, `model.safetensors`, vocabulary files, `trainer_state.pt`.

Every file is written to a temporary directory and fsynced first, so a crash never leaves a
half-written file where a good one was. A directory that holds only the checkpoint (`OUT/last`) is then
swapped in whole; a model directory that also holds other things (`OUT`, with its metrics and `last/`)
gets each file renamed into place, weights first and `config.json` last.

A process killed part-way (SIGKILL, power loss) can leave its temporary directory `.NAME.tmp-*` beside
the checkpoint, or, killed between the two renames of a swap, the previous checkpoint set aside as
`.NAME.old` and none at NAME: the next save clears the temporary directories, and `--resume` puts a
set-aside checkpoint back first.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import folio
from folio.errors import CheckpointError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with tied weights (one tensor under several names) stored once, under the first name."""
    seen, out = set(), {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().contiguous().cpu()
    return out


def _with_tied(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """`state` completed with the names of tied weights that were stored once (see _unique_tensors)."""
    own = model.state_dict()
    stored = {(t.data_ptr(), t.dtype, tuple(t.shape)): name for name, t in own.items() if name in state}
    for name, tensor in own.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if name not in state and key in stored:
            state[name] = state[stored[key]]
    return state


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    config: dict,
    write_extras: Callable[[Path], None] | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a complete checkpoint to `directory`, atomically replacing any previous one (see above)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # One process writes a checkpoint directory at a time (rank 0 under torchrun), so the temporary
    # directories already there are what killed saves left behind (each as big as a checkpoint).
    for stale in directory.parent.glob(f".{glob.escape(directory.name)}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        save_file(_unique_tensors(unwrap(model).state_dict()), str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps({"folio_version": folio.__version__, **config}, indent=2) + "\n")
        if write_extras is not None:
            write_extras(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        written = {path.name for path in tmp.iterdir()}
        if not directory.exists() or {path.name for path in directory.iterdir()} <= written:
            old = directory.with_name(f".{directory.name}.old")
            if old.exists():
                shutil.rmtree(old)
            if directory.exists():
                os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            for name in sorted(written, key=lambda name: name == CONFIG):  # config.json last
                os.replace(tmp / name, directory / name)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file renamed into place: readers see the old file
    or the whole new one, and a failure leaves no partial file behind.

        write_atomic("runs/imdb/explain.html", page)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_config(directory: str | Path, task: str) -> dict:
    """The checkpoint's config, checked to belong to `task`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist" if not directory.exists()
                              else f"{directory} is a file, not a model directory (one with {CONFIG} and {WEIGHTS})")
    path = directory / CONFIG
    if not path.exists():
        raise CheckpointError(f"{directory} is not a Folio checkpoint: it has no {CONFIG}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err
    if not isinstance(config, dict) or config.get("task") != task:
        found = config.get("task") if isinstance(config, dict) else None
        raise CheckpointError(f"{directory} holds a {found!r} model, not a {task!r} model")
    return config


def load_weights(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load `model.safetensors` onto the model's device, whatever device it was saved from."""
    path = Path(directory) / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{directory} has no {WEIGHTS}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err
    try:
        unwrap(model).load_state_dict(_with_tied(state, unwrap(model)))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not fit the model in {CONFIG}: {first}") from err
    return model


def resume_directory(resume: str | None, out_dir: str | Path, task: str) -> tuple[Path | None, dict | None]:
    """Where `--resume [DIR]` points (DIR, or OUT/last when given bare) and that checkpoint's config.

    (None, None) when not resuming; a `CheckpointError` when there is nothing to resume there.
    """
    if resume is None:
        return None, None
    directory = Path(resume) if resume else Path(out_dir) / "last"
    set_aside = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and (set_aside / TRAINER_STATE).exists():
        # a save was killed between its two renames (see above); under torchrun another process may
        # have put it back already
        with contextlib.suppress(OSError):
            os.replace(set_aside, directory)
    if not (directory / TRAINER_STATE).exists():
        raise CheckpointError(f"--resume: no checkpoint to resume at {directory} (expected {directory}/{TRAINER_STATE})")
    return directory, read_config(directory, task)


def load_trainer_state(directory: str | Path) -> dict:
    path = Path(directory) / TRAINER_STATE
    if not path.exists():
        raise CheckpointError(f"cannot resume: {directory} has no {TRAINER_STATE}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch.load raises many types on a damaged file
        raise CheckpointError(f"cannot resume: {path} is corrupt ({type(err).__name__}: {err})") from err
