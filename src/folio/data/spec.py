"""`DataSpec`: where a task's examples come from, written once for every task that trains on named data.

A checkpoint keeps its data spec in `config.json` (`to_dict`), so `evaluate` rebuilds the same
train/valid/test split later (`from_dict`, then `load`). A user's own file is split by `fractions` and
`split_seed` (`folio.data.splits`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

from folio.data.splits import LEGACY_FRACTIONS, USER_FRACTIONS

Spec = TypeVar("Spec", bound="DataSpec")


@dataclass
class DataSpec:
    """Where a task's examples come from: a named source, a path or a URL (`data`), the options of that
    source, and the seed of the train/valid/test split. A task extends it with its sources' options and
    writes `load`; saving and reading back are shared.

        >>> @dataclass
        ... class Numbers(DataSpec):
        ...     data: str = "numbers"
        ...     count: int = 10
        ...
        ...     def load(self, only=None):
        ...         return {"train": list(range(self.count)), "valid": [], "test": []}
        >>> spec = Numbers.from_dict({"data": "numbers", "count": 3, "batch_size": 64})  # unknown keys are skipped
        >>> spec.load()["train"], spec.to_dict()["count"]
        ([0, 1, 2], 3)
    """

    data: str = ""
    split_seed: int = 0
    fractions: tuple[float, float, float] = USER_FRACTIONS  # train/valid/test shares of a user's file

    def load(self, only: str | None = None) -> dict[str, list]:
        """The "train", "valid" and "test" splits; `only` names the one split needed (the others may come
        back empty where leaving them out saves time)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to load its data")

    def to_dict(self) -> dict:
        """The fields as config.json keeps them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[Spec], saved: dict) -> Spec:
        """The spec a config.json section describes; keys that are not fields (a task may save other data
        settings beside them, e.g. the tokenizer) are left out. A checkpoint saved before the fractions were
        has its files split as they were then (`LEGACY_FRACTIONS`)."""
        known = {f.name for f in fields(cls)}
        return cls(**{"fractions": LEGACY_FRACTIONS, **{key: value for key, value in saved.items() if key in known}})
