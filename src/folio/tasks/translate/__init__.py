"""`folio translate`: encoder–decoder translation with attention and beam search. See `folio.tasks` for the files.

    >>> from folio.tasks.translate import Translator
    >>> Translator.from_pretrained("runs/dates").translate(["Monday, April 22nd 2019"])[0].text  # doctest: +SKIP
    '2019-04-22'
"""

from folio.tasks.translate.data import SourceEncoder, TranslateData
from folio.tasks.translate.inference import Translation, Translator
from folio.tasks.translate.metrics import bleu_by_length, score_translations
from folio.tasks.translate.options import TranslateTrainOptions
from folio.tasks.translate.recipe import MODEL_FAMILIES, TranslateRecipe, train

DataSpec = TranslateData  # the name scripts and tests written before `folio.data.spec.DataSpec` import

__all__ = ["MODEL_FAMILIES", "DataSpec", "SourceEncoder", "TranslateData", "TranslateRecipe", "TranslateTrainOptions",
           "Translation", "Translator", "bleu_by_length", "score_translations", "train"]
