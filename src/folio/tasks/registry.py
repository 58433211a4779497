"""The shape every task has, declared once: `Command` (a `folio NAME` sub-command) and `Task` (one that
trains and loads models, and so can be served and exported).

Hooks are named as `"module:attribute"` strings and imported only when used, so `folio --help` does not
import FastAPI or onnx, and a task's heavy parts load only for that task. What each hook must be is a Protocol
below (`HOOKS` maps a hook's field to it); tests/tasks/test_registry.py resolves every registered hook and checks
its signature against its Protocol.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from folio.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # the hooks' argument types: their modules load FastAPI, torch; a hook's own module imports them
    from fastapi import FastAPI

    from folio.export_api import Graph
    from folio.serve.api import Pick


class AddCli(Protocol):
    """`cli`: adds the flags (or verbs, each with its `func`) to the parser `folio NAME` gets."""

    def __call__(self, parser: argparse.ArgumentParser, /) -> None: ...


class Inference(Protocol):
    """`inference`: the task's Python API class, loaded from a model directory (or, where the task has a
    `pretrained` hook, a source that hook accepts). A class whose `from_pretrained` also takes `dtype` gets
    `folio serve --dtype` (see `Task.load`)."""

    @classmethod
    def from_pretrained(cls, directory: str | Path, /, device: str = "cpu") -> Any: ...


class AddRoutes(Protocol):
    """`routes`: adds the task's HTTP routes to the app; `pick(name)` finds a served model of the task (see
    `folio.serve.api`)."""

    def __call__(self, app: FastAPI, pick: Pick, /) -> None: ...


class ExportGraphs(Protocol):
    """`export`: the graphs that export a model directory in `fmt` ("onnx" or "torchscript"), and what a decoding
    loop needs to run them (None for a single graph; see `folio.export`)."""

    def __call__(self, directory: Path, fmt: str, /) -> tuple[list[Graph], dict | None]: ...


class ReadsPretrained(Protocol):
    """`pretrained`: whether the task's `inference` class reads `source`, a model that is not a Folio directory
    (lm: "smollm2", a GGUF file, a Hugging Face directory), so that `folio serve --model smollm2` finds its task
    without a config.json."""

    def __call__(self, source: str | Path, /) -> bool: ...


# A hook's field → what the attribute it names must be. `page` names a value, not a function: a
# `folio.serve.api.PageTab`, the task's tab on the web page at `/`.
HOOKS: dict[str, type] = {"cli": AddCli, "inference": Inference, "routes": AddRoutes, "export": ExportGraphs,
                          "pretrained": ReadsPretrained}


def resolve(reference: str) -> Any:
    """`"package.module:attribute"` → the attribute, imported now."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Command:
    """`folio NAME ...`: `cli` ("module:add_cli", an `AddCli`) adds the flags (or verbs) to the parser `folio NAME`
    gets."""

    name: str
    help: str
    cli: str
    description: str | None = None

    def add_cli(self, parser: argparse.ArgumentParser) -> None:
        resolve(self.cli)(parser)

    def hook(self, name: str) -> Any:
        """The attribute the hook field `name` names, imported now (None where the task has none)."""
        reference = getattr(self, name)
        return None if reference is None else resolve(reference)


@dataclass(frozen=True)
class Task(Command):
    """A task with checkpoints: a model directory's `config.json` names it as `"task"`. Each hook is a
    `"module:attribute"` string (or None where the task has none):

    inference: "module:Class", an `Inference` (the Python API class).
    routes: "module:add_routes", an `AddRoutes` (the task's HTTP routes).
    export: "module:graphs", an `ExportGraphs` (the task's export graphs).
    pretrained: "module:function", a `ReadsPretrained`.
    page: "module:TAB", a `folio.serve.api.PageTab`: the task's tab on the web page at `/`.
    """

    inference: str | None = None
    routes: str | None = None
    export: str | None = None
    pretrained: str | None = None
    page: str | None = None

    def load(self, directory: str | Path, device: str = "cpu", dtype: str = "auto"):
        """The task's inference object for a model directory (weights loaded). `dtype` (`folio serve --dtype`):
        passed on where the inference class takes one (lm); for the others only auto and fp32 apply."""
        loader = self.hook("inference").from_pretrained
        if "dtype" in inspect.signature(loader).parameters:
            return loader(directory, device=device, dtype=dtype)
        if dtype not in ("auto", "fp32"):
            raise ConfigError(f"--dtype {dtype} applies to language models; {directory} is a {self.name} model: use "
                              "--dtype fp32")
        return loader(directory, device=device)


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
