"""Train / valid / test splits: one rule for a user's own file in every task, and the holdout of the embedded
reviews.

A user's file (classify's CSV/JSONL, translate's TSV, caption's COCO folder) is split `USER_FRACTIONS`
(80/10/10) by `split_by_group`: rows that share a key (the same text, source sentence or image) stay in
one split, the keys are shuffled by the seed alone, and with `strata` (a classifier's labels) each stratum
is shared out in proportion, so each label's count in valid and test is within one row of its share. The
fractions and the seed are saved in the checkpoint's config.json, so `evaluate` re-derives the same split.

    >>> split = split_by_group(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], USER_FRACTIONS, seed=0)
    >>> [len(split[name]) for name in SPLITS]
    [8, 1, 1]
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence

import numpy as np

from folio.errors import DataError

SPLITS = ("train", "valid", "test")
EVALUATION_SPLITS = (*SPLITS, "all")  # what `evaluate --split` accepts
USER_FRACTIONS = (0.8, 0.1, 0.1)  # train, valid, test of a user's file, in every task
LEGACY_FRACTIONS = (0.9, 0.05, 0.05)  # translate's and caption's user files before the fractions were saved


def chosen_split(splits: dict[str, list], name: str) -> list:
    """The examples of split `name` (train, valid or test), or of every split in that order (`all`): what
    `evaluate --split` scores."""
    return [example for part in SPLITS for example in splits[part]] if name == "all" else splits[name]


def split_by_group(groups: Sequence[Hashable], fractions: Sequence[float], seed: int,
                   strata: Sequence[Hashable] | None = None) -> dict[str, list[int]]:
    """Indices of `groups` split train/valid/test by `fractions` (train's share is what is left): items of
    one group (a chapter, an image, a repeated text) stay together; the valid and test groups are drawn by
    `seed` alone (at least one each). With `strata` (one per item; a group takes its first item's), each
    stratum gives valid and test its share of their groups, rounded by largest remainder."""
    _, valid_share, test_share = (float(f) for f in fractions)
    if not (0 <= valid_share < 1 and 0 <= test_share < 1 and valid_share + test_share < 1):
        raise DataError(f"split fractions {list(fractions)}: valid and test must leave a share for training")
    stratum_of: dict = {}
    for index, key in enumerate(groups):
        stratum_of.setdefault(key, None if strata is None else strata[index])
    members: dict = {stratum: [] for stratum in sorted(set(stratum_of.values()), key=str)}
    for key in sorted(stratum_of):
        members[stratum_of[key]].append(key)
    rng = random.Random(seed)
    for keys in members.values():
        rng.shuffle(keys)
    sizes = [len(keys) for keys in members.values()]
    total = sum(sizes)
    n_valid = _shares(max(1, round(valid_share * total)), sizes, sizes)
    n_test = _shares(max(1, round(test_share * total)), sizes, [s - v for s, v in zip(sizes, n_valid, strict=True)])
    part = {}
    for keys, valid, test in zip(members.values(), n_valid, n_test, strict=True):
        part.update({key: "valid" for key in keys[:valid]})
        part.update({key: "test" for key in keys[valid : valid + test]})
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    for index, key in enumerate(groups):
        split[part.get(key, "train")].append(index)
    return split


def _shares(count: int, sizes: list[int], room: list[int]) -> list[int]:
    """`count` shared among strata in proportion to `sizes` (largest remainder, earlier strata first on a
    tie), none given more than its `room`."""
    total = sum(sizes)
    quotas = [count * size / total for size in sizes]
    given = [min(math.floor(q), r) for q, r in zip(quotas, room, strict=True)]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
    left = count - sum(given)
    while left > 0 and any(g < r for g, r in zip(given, room, strict=True)):
        for i in by_remainder:
            if left and given[i] < room[i]:
                given[i] += 1
                left -= 1
    return given


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (rest, held_out): `fraction` of each class held out, chosen by `seed` alone (the embedded
    reviews' test and validation sets, which must not change)."""
    if not 0 < fraction < 1:
        raise DataError(f"a split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    held = []
    for label in sorted(set(labels)):
        members = np.flatnonzero(labels_array == label)
        rng.shuffle(members)
        held.extend(members[: int(round(len(members) * fraction))].tolist())
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)
