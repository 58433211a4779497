"""The options of `folio caption train`."""

from __future__ import annotations

from dataclasses import dataclass, field

from folio.tasks.caption.data import CaptionData
from folio.training.config import TrainConfig
from folio.training.run import RunOptions


@dataclass
class CaptionTrainOptions(RunOptions):
    """Everything `folio caption train` accepts, with the CLI's defaults (the run's own fields: `RunOptions`).

    >>> options = CaptionTrainOptions(data=CaptionData(scenes_objects=(1, 2)), model={"hidden": 128})
    """

    out: str = "runs/caption"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=600))
    data: CaptionData = field(default_factory=CaptionData)
    model: dict = field(default_factory=dict)  # CaptionerConfig fields except vocabulary size, ids and image size
    batch_size: int = 64
