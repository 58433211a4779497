"""`folio caption`: image captioning with visual attention. See `folio.tasks` for the files.

    >>> from folio.tasks.caption import ImageCaptioner
    >>> ImageCaptioner.from_pretrained("runs/caption").describe(["scene.png"])[0].text  # doctest: +SKIP
    'a small red circle left of a large blue square'
"""

from folio.tasks.caption.data import CaptionData
from folio.tasks.caption.inference import Caption, ImageCaptioner
from folio.tasks.caption.metrics import box_mass, localization, score_captions
from folio.tasks.caption.options import CaptionTrainOptions
from folio.tasks.caption.recipe import CaptionRecipe, train

DataSpec = CaptionData  # the name scripts and tests written before `folio.data.spec.DataSpec` import

__all__ = ["Caption", "CaptionData", "CaptionRecipe", "CaptionTrainOptions", "DataSpec", "ImageCaptioner", "box_mass",
           "localization", "score_captions", "train"]
