"""A model family's command-line flags, declared on its config dataclass beside the fields they set.

A config field made with `option(...)` is a flag of every `folio <task> train` that trains the family: the
task names its archs once, `add_model_flags(parser, archs)` adds the union of their flags (a field that several
archs have, `--hidden`, is one flag), and `model_from_flags(args, archs)` reads back the "model" section of the
arch chosen (`--arch`). So a new family brings its flags with it, and no task CLI asks which arch it trains.

    @dataclass
    class RNNLMConfig:
        vocab_size: int                                      # no flag: the tokenizer decides it
        hidden: int = option(128, type=positive_int, help="recurrent state size")

Every flag's argparse default is None, so that "not given" can be told apart: a field then takes its
`cli_default` (a value, or a function of the parsed flags, with the model's own flags resolved: GPT's
`context` is `--seq-len`'s), else it is left out of the section and the dataclass default applies. A flag
given for an arch that does not take it (`--positions` with `--arch gru`) is refused in one line. A family
whose config is not built field by field from its flags (a Transformer classifier nests a BERT's fields)
names in its `cli_options` class attribute the dataclass whose fields its flags are.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from folio.errors import ConfigError
from folio.models.registry import config_class

_NOT_SET: Any = type("NotSet", (), {"__repr__": lambda self: "<not set>"})()  # no cli_default (None is a value)


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a config field is spelled and parsed on the command line (see `option`)."""

    help: str | None = None
    flag: str | None = None  # the spelling; None: --field-name
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    action: Any = None  # "store_true", "store_false" (a switch that turns a field off: --no-mask), or an Action class
    cli_default: Any = _NOT_SET  # the value when the flag is not given; a callable: computed from the parsed flags
    metavar: str | tuple[str, ...] | None = None
    nargs: str | int | None = None  # a field holding several values: "+"

    def spelling(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")

    def given(self, name: str, value: Any) -> str:
        """The flag of field `name` as the user typed it, for a message."""
        spelling = self.spelling(name)
        if self.action in ("store_true", "store_false"):
            return spelling
        if self.action is argparse.BooleanOptionalAction:
            return spelling if value else "--no-" + spelling[2:]
        return f"{spelling} {' '.join(map(str, value)) if isinstance(value, list) else value}"


def option(default: Any = dataclasses.MISSING, *, help: str | None = None, flag: str | None = None,  # noqa: A002
           type: Callable[[str], Any] | None = None, choices: Iterable | None = None, action: Any = None,  # noqa: A002
           cli_default: Any = _NOT_SET, metavar: str | None = None, nargs: str | int | None = None) -> Any:
    """A dataclass field with `default` that is also a command-line flag (see the module's docstring)."""
    spec = Flag(help, flag, type, tuple(choices) if choices is not None else None, action, cli_default, metavar, nargs)
    return dataclasses.field(default=default, metadata={"flag": spec})


def flag_fields(arch: str) -> dict[str, tuple[Flag, Any]]:
    """The flags a registry arch's config declares: field name → (Flag, the field's dataclass default)."""
    config = config_class(arch, "--arch")
    config = getattr(config, "cli_options", config)
    return {f.name: (f.metadata["flag"], f.default) for f in dataclasses.fields(config) if "flag" in f.metadata}


def _archs(archs: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """The task's `--arch` choices → registry archs (an iterable: the same names)."""
    return dict(archs) if isinstance(archs, Mapping) else {arch: arch for arch in archs}


def _union(archs: dict[str, str]) -> dict[str, list[tuple[str, Flag, Any]]]:
    """Each field some arch declares → [(the `--arch` choice, its Flag, its dataclass default)], in order."""
    union: dict[str, list[tuple[str, Flag, Any]]] = {}
    for name, arch in archs.items():
        for field, (spec, default) in flag_fields(arch).items():
            union.setdefault(field, []).append((name, spec, default))
    return union


def _shown_default(spec: Flag, default: Any) -> str | None:
    """The default a help text states (None: a switch, no value, or a derived one, which its help states)."""
    value = default if spec.cli_default is _NOT_SET else spec.cli_default
    if spec.action is argparse.BooleanOptionalAction:
        return "on" if value else "off"
    if spec.action is not None or value is None or value is dataclasses.MISSING or callable(value):
        return None
    return " ".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def _help(declared: list[tuple[str, Flag, Any]], every: list[str]) -> str:
    """One help text for a flag several archs declare: each distinct text once, prefixed by the archs it is
    for unless that is all the task's archs, and the default (once where all agree)."""
    shown = [_shown_default(spec, default) for _, spec, default in declared]
    agreed = len(set(shown)) == 1
    groups: dict[tuple[str, str | None], list[str]] = {}
    for (name, spec, _), default in zip(declared, shown, strict=True):
        groups.setdefault((spec.help or "", None if agreed else default), []).append(name)
    parts = []
    for (text, default), names in groups.items():
        prefix = "" if names == every else f"{', '.join(names)}: "
        parts.append(prefix + text + (f" (default: {default})" if default is not None else ""))
    text = "; ".join(part.strip(": ") for part in parts if part.strip(": "))
    return text + (f" (default: {shown[0]})" if agreed and shown[0] is not None else "")


def add_model_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                    archs: Mapping[str, str] | Iterable[str]) -> None:
    """Add the flags of `archs`' configs (a task's `--arch` choices, or those choices → registry archs)."""
    archs = _archs(archs)
    for field, declared in _union(archs).items():
        spec = declared[0][1]
        for _, other, _ in declared[1:]:
            if (other.spelling(field), other.type, other.action) != (spec.spelling(field), spec.type, spec.action):
                raise TypeError(f"{field}: the archs {', '.join(n for n, _, _ in declared)} spell or parse its flag "
                                "differently")
        choices = [c for _, other, _ in declared for c in other.choices or ()]
        kwargs: dict[str, Any] = {"dest": field, "default": None, "help": _help(declared, list(archs))}
        if spec.action is not None:
            kwargs["action"] = spec.action
        if spec.type is not None:
            kwargs["type"] = spec.type
        if choices:
            kwargs["choices"] = list(dict.fromkeys(choices))
        if spec.metavar is not None:
            kwargs["metavar"] = spec.metavar
        if spec.nargs is not None:
            kwargs["nargs"] = spec.nargs
        parser.add_argument(spec.spelling(field), **kwargs)


def model_from_flags(args: argparse.Namespace, archs: Mapping[str, str] | Iterable[str],
                     arch: str | None = None) -> dict:
    """The "model" fields the flags give the arch chosen (`arch`, default `args.arch`; `archs` as given to
    `add_model_flags`): each flag given, else its `cli_default`; a flag given that this arch does not take is
    refused (a `ConfigError` naming the flag and the arch). The section holds no `arch`: the task adds it."""
    archs = _archs(archs)
    arch = args.arch if arch is None else arch
    own = flag_fields(archs[arch])
    for field, declared in _union(archs).items():
        value = getattr(args, field, None)
        if value is not None and field not in own:
            takers = " or ".join(f"--arch {name}" for name, _, _ in declared)
            raise ConfigError(f"{declared[0][1].given(field, value)} does not apply to --arch {arch}: it is a flag of {takers}")
    section = {field: getattr(args, field) for field in own if getattr(args, field, None) is not None}
    for field, (spec, _) in own.items():
        if field not in section and spec.cli_default is not _NOT_SET and not callable(spec.cli_default):
            section[field] = spec.cli_default
    resolved = argparse.Namespace(**{**vars(args), **section})  # what a derived default reads
    for field, (spec, _) in own.items():
        if field not in section and callable(spec.cli_default):
            section[field] = spec.cli_default(resolved)
    return section
