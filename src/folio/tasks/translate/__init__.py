"""`folio translate`: encoder-decoder translation with attention. See `folio.tasks` for the files."""

from folio.tasks.translate.recipe import DataSpec, SourceEncoder, TranslateTrainOptions, Translator, train

__all__ = ["DataSpec", "SourceEncoder", "TranslateTrainOptions", "Translator", "train"]
