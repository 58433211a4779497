"""Folio: recurrent networks and attention for natural language processing, in PyTorch."""

__version__ = "0.1.0"

from folio.errors import FolioError  # noqa: E402
from folio.tasks.lm import LanguageModel  # noqa: E402

__all__ = ["FolioError", "LanguageModel", "__version__"]
