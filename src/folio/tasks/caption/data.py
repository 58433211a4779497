"""Captioning data: where the images come from (`CaptionData`) and how (image, caption) pairs are batched.

Data: `scenes` (generated shapes with captions and bounding boxes, the default), `easyvqa` (the
easy-vqa package's images, captioned "a blue rectangle" from its answers), or a folder with images and
a COCO-captions (split 80/10/10 by image: `DataSpec.fractions`) or Karpathy Flickr8k JSON file.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from folio.data.caption_folders import read_caption_folder
from folio.data.easy_vqa import easy_vqa_splits
from folio.data.images import CaptionExample, resize_array
from folio.data.pairs import pad_targets
from folio.data.scenes import scene_splits
from folio.data.spec import DataSpec
from folio.data.splits import LEGACY_FRACTIONS
from folio.errors import DataError
from folio.models.captioner import CaptionBatch


def note(message: str) -> None:
    """A remark on standard error that is not an error (an image converted or resized, a file skipped)."""
    print(f"folio: note: {message}", file=sys.stderr)


@dataclass
class CaptionData(DataSpec):
    """Where the images come from; saved in config.json's "data_spec" so `evaluate` can rebuild the same
    test split.

        >>> CaptionData(scenes_train=100, scenes_objects=(1, 1)).load(only="train")["train"][0].captions  # doctest: +SKIP
        ['a small red circle']
    """

    data: str = "scenes"  # scenes | easyvqa | DIR
    image_size: int = 64
    scenes_train: int = 20_000
    scenes_valid: int = 500
    scenes_test: int = 1_000
    scenes_objects: tuple[int, int] = (2, 4)  # fewest and most shapes in a scene

    def __post_init__(self):
        self.scenes_objects = tuple(self.scenes_objects)  # config.json gives back a list

    def load(self, only: str | None = None) -> dict[str, list[CaptionExample]]:
        """The train/valid/test splits; `only` names the one split needed (the others may come back empty)."""
        if self.data == "scenes":  # each split has its own seed, so generating one alone gives the same images
            counts = {"train": self.scenes_train, "valid": self.scenes_valid, "test": self.scenes_test}
            if only is not None:
                counts = {name: count if name == only else 0 for name, count in counts.items()}
            return scene_splits(**counts, seed=self.split_seed, size=self.image_size,
                                min_objects=self.scenes_objects[0], max_objects=self.scenes_objects[1])
        if self.data == "easyvqa":
            splits = easy_vqa_splits(seed=self.split_seed)
            return {name: [_resized(e, self.image_size) for e in examples] for name, examples in splits.items()}
        if not Path(self.data).is_dir():
            problem = "is a file, not a folder" if Path(self.data).exists() else "does not exist"
            raise DataError(f"--data {self.data} {problem}: give 'scenes', 'easyvqa' or a folder of images with a "
                            "captions JSON file")
        # a checkpoint from before the fractions were saved split its folder with seed 0 whatever --split-seed said
        seed = 0 if tuple(self.fractions) == LEGACY_FRACTIONS else self.split_seed
        return read_caption_folder(self.data, self.image_size, note, self.fractions, seed)


def _resized(example: CaptionExample, size: int) -> CaptionExample:
    return CaptionExample(resize_array(example.image, size), example.captions, example.objects, example.name)


def images_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays → (N, 3, H, W) uint8."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def make_batch(images: torch.Tensor, targets: list[list[int]] | None = None) -> CaptionBatch:
    """uint8 images (B, 3, H, W) and caption ids (no specials) → a CaptionBatch with SOS/EOS added."""
    pixels = images.float() / 255.0
    if targets is None:
        return CaptionBatch(pixels)
    return CaptionBatch(pixels, *pad_targets(targets))


def batches_in_order(images: torch.Tensor, targets: list[list[int]], batch_size: int):
    """Every (image, caption) once, in order: for validation."""
    for start in range(0, len(targets), batch_size):
        yield make_batch(images[start : start + batch_size], targets[start : start + batch_size])


class CaptionBatches:
    """(image, caption) pairs, every reference of an image its own pair, reshuffled each epoch from
    (seed, epoch) so that resume is exact; under torchrun each rank takes its rows of the global batch."""

    stateful = False

    def __init__(self, images: torch.Tensor, pairs: list[tuple[int, list[int]]], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if len(pairs) < batch_size * world_size:
            raise DataError(f"{len(pairs)} training captions are fewer than one batch of {batch_size * world_size}")
        self.images, self.pairs = images, pairs
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self._epoch: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.pairs) // (self.batch_size * self.world_size)

    def batch(self, epoch: int, index: int) -> CaptionBatch:
        if self._epoch is None or self._epoch[0] != epoch:
            order = list(range(len(self.pairs)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._epoch = (epoch, order)
        global_batch = self.batch_size * self.world_size
        rows = self._epoch[1][index * global_batch : (index + 1) * global_batch][self.rank :: self.world_size]
        return make_batch(self.images[rows], [self.pairs[i][1] for i in rows])
