"""The shape every task has, declared once: `Command` (a `folio NAME` sub-command) and `Task` (one that
trains and loads models, and so can be served and exported).

Hooks are named as `"module:attribute"` strings and imported only when used, so `folio --help` does not
import FastAPI or onnx, and a task's heavy parts load only for that task.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from folio.errors import CheckpointError, ConfigError


def resolve(reference: str):
    """`"package.module:attribute"` → the attribute, imported now."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Command:
    """`folio NAME ...`: `cli` adds the flags (or verbs) to the parser `folio NAME` gets."""

    name: str
    help: str
    cli: str  # "module:add_cli", add_cli(parser: argparse.ArgumentParser) -> None
    description: str | None = None

    def add_cli(self, parser: argparse.ArgumentParser) -> None:
        resolve(self.cli)(parser)


@dataclass(frozen=True)
class Task(Command):
    """A task with checkpoints: a model directory's `config.json` names it as `"task"`.

    inference: "module:Class", the Python API class; `Class.from_pretrained(directory, device=...)`.
    build_model: "module:function", the (untrained) model a config.json describes: `function(config) -> nn.Module`.
    routes: "module:add_routes", the task's HTTP routes: `add_routes(app, pick)` (see `folio.serve.app`).
    export: "module:graphs", the task's export graphs: `graphs(directory, config, fmt) -> (graphs, extra)`
        (see `folio.export`).
    pretrained: "module:function", `function(source) -> bool`: whether the task's `inference` class also reads
        `source`, a model that is not a Folio directory (lm: "smollm2", a GGUF file, a Hugging Face directory),
        so that `folio serve --model smollm2` finds its task without a config.json.
    """

    inference: str | None = None
    build_model: str | None = None
    routes: str | None = None
    export: str | None = None
    pretrained: str | None = None

    def load(self, directory: str | Path, device: str = "cpu", dtype: str = "auto"):
        """The task's inference object for a model directory (weights loaded). `dtype` (`folio serve --dtype`):
        passed on where the inference class takes one (lm); for the others only auto and fp32 apply."""
        loader = resolve(self.inference).from_pretrained
        if "dtype" in inspect.signature(loader).parameters:
            return loader(directory, device=device, dtype=dtype)
        if dtype not in ("auto", "fp32"):
            raise ConfigError(f"--dtype {dtype} applies to language models; {directory} is a {self.name} model: use "
                              "--dtype fp32")
        return loader(directory, device=device)

    def hook(self, name: str) -> Callable | None:
        reference = getattr(self, name)
        return None if reference is None else resolve(reference)


def read_task_name(directory: str | Path) -> str:
    """The `"task"` a model directory's config.json names (a clear error where there is none)."""
    config_path = Path(directory) / "config.json"
    if not Path(directory).is_dir():
        raise CheckpointError(f"model directory {directory} does not exist" if not Path(directory).exists()
                              else f"{directory} is a file, not a model directory (one with config.json)")
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no config.json there (is it a model directory?)")
    try:
        task = json.loads(config_path.read_text(encoding="utf-8"))["task"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path}: not a Folio model config ({err})") from err
    if not isinstance(task, str):
        raise CheckpointError(f"{config_path}: 'task' must be a string, got {task!r}")
    return task
