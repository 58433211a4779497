"""`folio caption`: image captioning with visual attention. See `folio.tasks` for the files."""

from folio.tasks.caption.recipe import (
    Caption,
    CaptionTrainOptions,
    DataSpec,
    ImageCaptioner,
    box_mass,
    localization,
    score_captions,
    train,
)

__all__ = ["Caption", "CaptionTrainOptions", "DataSpec", "ImageCaptioner", "box_mass", "localization", "score_captions",
           "train"]
