"""Folio: recurrent networks and attention for natural language processing, in PyTorch.

    >>> from folio import LanguageModel                       # doctest: +SKIP
    >>> LanguageModel.from_pretrained("runs/lm").generate("ROMEO:", max_new_tokens=40)  # doctest: +SKIP

The public classes are imported when first named (PEP 562's module `__getattr__`), so importing any part of
Folio (`folio.training`, `folio.data`) imports no task: the package root sits on the top floor.
"""

from __future__ import annotations

import importlib

from folio.version import __version__

# name → the module that defines it
_PUBLIC = {
    "FolioError": "folio.errors",
    "LanguageModel": "folio.tasks.lm",
    "TextClassifier": "folio.tasks.classify",
    "Translator": "folio.tasks.translate",
    "ImageCaptioner": "folio.tasks.caption",
    "SentenceEmbedder": "folio.tasks.embed.inference",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'folio' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # found once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
