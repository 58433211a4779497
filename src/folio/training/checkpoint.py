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
import errno
import glob
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from folio.errors import CheckpointError, OutputError
from folio.models.registry import CONFIG, WEIGHTS, read_config, unwrap
from folio.version import __version__

TRAINER_STATE = "trainer_state.pt"
# The layout of trainer_state.pt: 2 holds tensors, numbers, strings, lists and dicts only (read with
# torch.load(weights_only=True)); 1 (no "format" key, Folio <= 0.x) also held NumPy's RNG state as an array.
TRAINER_STATE_FORMAT = 2


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


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    config: dict,
    write_extras: Callable[[Path], None] | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a complete checkpoint to `directory`, atomically replacing any previous one (see above).

    A disk that is full or a directory that cannot be written is an `OutputError` naming `directory`;
    the previous checkpoint is left as it was and the temporary directory is removed.
    """
    directory = Path(directory)
    try:
        _save(directory, model, config, write_extras, trainer_state)
    except OSError as err:
        raise OutputError(f"cannot save the checkpoint {directory}: {_reason(err)}; the previous one is kept") from err
    return directory


def _reason(err: OSError) -> str:
    """An OSError in a few words ("No space left on device"), without the path the message names already."""
    return err.strerror or errno.errorcode.get(err.errno or 0) or str(err) or type(err).__name__


def _save(directory: Path, model: nn.Module, config: dict, write_extras: Callable[[Path], None] | None,
          trainer_state: dict | None) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    # One process writes a checkpoint directory at a time (rank 0 under torchrun), so the temporary
    # directories already there are what killed saves left behind (each as big as a checkpoint).
    for stale in directory.parent.glob(f".{glob.escape(directory.name)}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        save_file(_unique_tensors(unwrap(model).state_dict()), str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps({"folio_version": __version__, **config}, indent=2) + "\n")
        if write_extras is not None:
            write_extras(tmp)
        if trainer_state is not None:
            torch.save({"format": TRAINER_STATE_FORMAT, **trainer_state}, tmp / TRAINER_STATE)
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


def check_output(path: str | Path, flag: str = "--out", directory: bool | None = True) -> None:
    """Refuse, before any work, an output path that cannot be written: an existing file where a directory
    goes (`directory=True`) or a directory where a file goes (`False`; None: either), a path under a file, a
    folder without write permission. An `OutputError` names the flag and the path.

        check_output("runs/lm")                                   # a training's --out directory
        check_output("model.onnx", directory=False)               # export --out
    """
    path = Path(path)
    if directory is True and path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file; give a directory (a new one, or one Folio wrote)")
    if directory is False and path.is_dir():
        raise OutputError(f"{flag} {path} is a directory; give a file name")
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:  # the first mkdir happens in the nearest existing folder
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, so nothing can be written under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: no permission to write in {parent}")


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file renamed into place: readers see the old file
    or the whole new one, and a failure leaves no partial file behind.

        write_atomic("runs/imdb/explain.html", page)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_reason(err)}") from err
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(f"cannot write {path}: {_reason(err)}") from err
        raise


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


def _legacy_numpy_globals() -> list:
    """What a format-1 trainer state needs beyond torch's safe types: NumPy's uint32 RNG key array. Building an
    array from a dtype and bytes runs no code, and anything inside it still goes through the safe unpickler."""
    import numpy as np

    reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct
    # under both names: NumPy 1 pickled it as numpy.core..., NumPy 2 as numpy._core...
    return [(reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_trainer_state(directory: str | Path) -> dict:
    """`trainer_state.pt` read with `torch.load(weights_only=True)`: tensors, numbers, strings, lists and
    dicts, nothing that runs code. A `CheckpointError` naming the file when it holds anything else, is
    damaged, incomplete, or of another format."""
    path = Path(directory) / TRAINER_STATE
    if not path.exists():
        raise CheckpointError(f"cannot resume: {directory} has no {TRAINER_STATE}")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(f"cannot resume: {path} cannot be read safely (it refers to {found.group(1)}); a "
                                  "trainer state holds tensors and numbers only, so Folio did not write it") from None
        reason = re.search(r"WeightsUnpickler error: ([^\n]+)", str(err))
        raise CheckpointError(f"cannot resume: {path} is corrupt ({reason.group(1) if reason else 'not a torch file'})") from None
    except Exception as err:  # torch.load raises many types on a damaged file
        raise CheckpointError(f"cannot resume: {path} is corrupt ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot resume: {path} is corrupt (it holds a {type(state).__name__}, not a trainer state)")
    version = state.get("format", 1)
    if version not in (1, TRAINER_STATE_FORMAT):
        raise CheckpointError(f"cannot resume: {path} is of format {version!r}; this Folio reads format "
                              f"{TRAINER_STATE_FORMAT} (and 1)")
    return state
