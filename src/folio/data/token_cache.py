"""A corpus tokenized once, streaming, into a compact array on disk that training and evaluation
memory-map: the text is never held whole, and neither are its ids.

    >>> from folio.data.corpora import open_corpus
    >>> tokens = corpus_tokens(open_corpus("shakespeare"), tokenizer)            # doctest: +SKIP
    >>> tokens.split("train").dtype, tokens.split("valid")[:5]                    # doctest: +SKIP
    (torch.uint8, tensor([ 1, 46, 55, 40, 43], dtype=torch.uint8))

The splits are `split_text`'s (train, valid, test by character position, 90/5/5 by default), and each
split's ids are exactly what `tokenizer.encode_tensor(split_text(text)[split])` gives: a split is read in
pieces cut where the tokenizer reads the same in pieces as whole (after a line break; for byte-level BPE
after a multiple of the lines it encodes together), so streaming changes no id.

Files, in `token_cache_dir()` (`$FOLIO_CACHE/tokens`, else `~/.cache/folio/tokens`):

    NAME.KIND-KEY.bin    the ids of the train, valid and test splits end to end, as uint8, uint16 or
                         uint32 (the smallest that holds the vocabulary)
    NAME.KIND-KEY.json   what the array is: the source (a file's path, size and modification time, or a
                         built text's SHA-256), the tokenizer (kind, size, SHA-256 of its JSON), the
                         split fractions, and each split's token range and characters
    NAME.fit-KEY.json    a tokenizer fitted on the corpus with given options (`fit_corpus_tokens`), so
                         that a second run neither reads the text nor fits again

KEY hashes what the file is made from (the corpus's path or name, the split fractions, the tokenizer or
the fitting options); the source's stamp is checked on every use, so a changed corpus is tokenized again
(and what was made from its earlier version removed), and a changed tokenizer has its own KEY. Every file is written to a temporary file and renamed
into place, the array before its JSON: a reader finds a complete cache or none.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from folio.data.corpora import Corpus, split_bounds
from folio.data.download import cache_dir
from folio.errors import DataError, VocabularyError
from folio.tokenizers import ByteLevelBPETokenizer, Tokenizer
from folio.tokenizers.kinds import tokenizer_class

FORMAT = 1  # bump when the files' layout or meaning changes: older caches are then rebuilt
PIECE_CHARS = 1 << 20  # characters tokenized at a time (~1 MB of text, ~30 MB of temporaries)
SPLITS = ("train", "valid", "test")


def token_cache_dir() -> Path:
    """Where tokenized corpora live: `$FOLIO_CACHE/tokens` (else `~/.cache/folio/tokens`, as downloads)."""
    return cache_dir() / "tokens"


def ids_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id of a vocabulary of `vocab_size`."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"a vocabulary of {vocab_size:,} tokens does not fit 32-bit ids")


@dataclass(frozen=True)
class TokenizerFit:
    """How to fit a tokenizer on a corpus: `fit(pieces)` reads the text of the training split (or the
    whole text, `whole_text=True`, as a character vocabulary that must read every character) as an
    iterable of pieces; `spec` (JSON-ready: kind and options) names the result in the cache."""

    spec: dict
    fit: Callable[[Iterable[str]], Tokenizer]
    whole_text: bool = False


@dataclass
class CorpusTokens:
    """A tokenized corpus: `ids` (N,) holds every split's ids end to end, memory-mapped from `path`."""

    tokenizer: Tokenizer
    ids: torch.Tensor  # (N,) uint8/uint16/uint32, read from disk as it is touched
    ranges: dict[str, tuple[int, int]]  # split → (first, end) token positions in `ids`
    chars: dict[str, int]  # split → characters of text
    path: Path
    built_seconds: float | None = None  # seconds this call spent reading, fitting and tokenizing; None: cached
    source_bytes: int = 0

    def split(self, name: str) -> torch.Tensor:
        """One split's ids (T,), a view of the map (nothing is read until used)."""
        start, end = self.ranges[name]
        return self.ids[start:end]

    @property
    def throughput(self) -> float | None:
        """Megabytes (10**6) of source text tokenized per second, where this call built the cache."""
        return None if not self.built_seconds else self.source_bytes / 1e6 / self.built_seconds


def corpus_tokens(corpus: Corpus, tokenizer: Tokenizer, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
                  cache: Path | None = None, length: int | None = None) -> CorpusTokens:
    """`corpus`'s ids under `tokenizer`, split as `split_text` splits (`fractions`), from the cache, or
    tokenized into it first. `length` (characters), where the caller knows it, saves a counting pass."""
    started = time.perf_counter()
    cache = _cache_dir(cache)
    tokenizer_sha = _digest(tokenizer.to_dict())
    fractions = tuple(float(f) for f in fractions)
    key = _digest({"format": FORMAT, "source": corpus.identity, "split": fractions, "tokenizer": tokenizer_sha})
    base = f"{_stem(corpus)}.{tokenizer.kind}-{key[:16]}"
    meta_path, bin_path = cache / f"{base}.json", cache / f"{base}.bin"
    stamp = corpus.stamp()
    dtype = ids_dtype(len(tokenizer))
    meta = _read_json(meta_path)
    fresh = (
        meta is not None and meta.get("format") == FORMAT and meta.get("source") == stamp
        and meta.get("tokenizer", {}).get("sha256") == tokenizer_sha and meta.get("split") == list(fractions)
        and bin_path.exists() and bin_path.stat().st_size == meta["tokens"] * dtype.itemsize
    )
    built = None
    if not fresh:
        length = length if length is not None else _count_chars(corpus)
        bounds = split_bounds(length, fractions)
        ends = [bounds[name][1] for name in SPLITS]
        counts = [0, 0, 0]
        cut = _cutter(tokenizer.kind)
        with _atomic(bin_path) as handle:
            for split, piece in _pieces(corpus.pieces(), ends, cut):
                ids = _encode(tokenizer, piece, corpus, SPLITS[split])
                handle.write(ids.astype(dtype, copy=False).tobytes())
                counts[split] += len(ids)
        starts = np.cumsum([0, *counts]).tolist()
        meta = {
            "format": FORMAT,
            "source": stamp,
            "tokenizer": {"kind": tokenizer.kind, "size": len(tokenizer), "sha256": tokenizer_sha},
            "split": list(fractions),
            "dtype": dtype.name,
            "tokens": starts[-1],
            "splits": {name: {"tokens": [starts[i], starts[i + 1]], "chars": bounds[name][1] - bounds[name][0]}
                       for i, name in enumerate(SPLITS)},
            "seconds": round(time.perf_counter() - started, 3),
        }
        with _atomic(meta_path) as handle:
            handle.write(json.dumps(meta, indent=1).encode("utf-8"))
        _drop_stale(cache, corpus, stamp)
        built = time.perf_counter() - started
    ranges = {name: tuple(meta["splits"][name]["tokens"]) for name in SPLITS}
    chars = {name: meta["splits"][name]["chars"] for name in SPLITS}
    return CorpusTokens(tokenizer, _map(bin_path, dtype, meta["tokens"]), ranges, chars, bin_path,
                        built, stamp["bytes"])


def fit_corpus_tokens(corpus: Corpus, fit: TokenizerFit, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
                      cache: Path | None = None) -> CorpusTokens:
    """Fit a tokenizer on `corpus` as `fit` says (streaming), then `corpus_tokens`; the fitted tokenizer
    is cached too, so a second call with the same corpus and options reads neither text nor ids."""
    started = time.perf_counter()
    cache = _cache_dir(cache)
    fractions = tuple(float(f) for f in fractions)
    key = _digest({"format": FORMAT, "source": corpus.identity, "split": fractions, "fit": fit.spec})
    record_path = cache / f"{_stem(corpus)}.fit-{key[:16]}.json"
    stamp = corpus.stamp()
    record = _read_json(record_path)
    if record is not None and record.get("format") == FORMAT and record.get("source") == stamp:
        tokenizer = tokenizer_class(record["tokenizer"]).from_dict(record["tokenizer"])
        return corpus_tokens(corpus, tokenizer, fractions, cache, length=record["chars"])
    if fit.whole_text:  # one pass: count the characters while fitting on all of them
        length = 0

        def counted(pieces: Iterator[str]) -> Iterator[str]:
            nonlocal length
            for piece in pieces:
                length += len(piece)
                yield piece

        cut = _cutter(fit.spec.get("kind", ""))
        tokenizer = fit.fit(piece for _, piece in _pieces(counted(corpus.pieces()), [sys.maxsize], cut))
    else:  # count, then fit on the training split alone (reading stops at its end)
        length = _count_chars(corpus)
        train_end = split_bounds(length, fractions)["train"][1]
        cut = _cutter(fit.spec.get("kind", ""))
        tokenizer = fit.fit(piece for _, piece in _pieces(corpus.pieces(), [train_end], cut))
    fitted = time.perf_counter() - started
    with _atomic(record_path) as handle:
        handle.write(json.dumps({"format": FORMAT, "source": stamp, "fit": fit.spec, "chars": length,
                                 "seconds": round(fitted, 3), "tokenizer": tokenizer.to_dict()}).encode("utf-8"))
    tokens = corpus_tokens(corpus, tokenizer, fractions, cache, length=length)
    if tokens.built_seconds is not None:
        tokens.built_seconds += fitted
    return tokens


# ---- reading in pieces ------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_OPEN_BREAK_TAG = re.compile(r"<br\s*\Z", re.IGNORECASE)  # a `<br />` the cleaner might read across the cut


def _after_last_line(text: str) -> int:
    """Just after the last "\\n" (everything where there is none): context-dependent lower-casing (a final
    sigma) never reaches across a line break, and no word spans one."""
    at = text.rfind("\n") + 1
    return at or len(text)


def _word_cut(text: str) -> int:
    at = _after_last_line(text)
    while at and at < len(text) and _OPEN_BREAK_TAG.search(text[max(0, at - 256) : at]):
        at = text.rfind("\n", 0, at - 1) + 1  # the cleaner reads `<br\n/>` as one break: cut before it
    return at or (text.rfind(" ") + 1 if " " in text else len(text))


def _line_block_cut(text: str, block: int = ByteLevelBPETokenizer.block_lines) -> int:
    """After the last whole multiple of `block` lines (as `str.splitlines` counts them), leaving the last
    line, which may go on (or be "\\r" before a "\\n"); 0 while there are fewer lines than that."""
    lines = text.splitlines(keepends=True)
    whole = (len(lines) - 1) // block * block
    return sum(map(len, lines[:whole]))


def _line_start_cut(text: str) -> int:
    """Just after the last "\\n" that a non-space character follows (0 where there is none): a pretrained
    byte-level BPE's pre-tokenizer runs whitespace together ("\\n\\n" may be one token), but always ends a
    pre-token there, and no merge crosses a pre-token."""
    at = len(text)
    while (at := text.rfind("\n", 0, at)) >= 0:
        if at + 1 < len(text) and not text[at + 1].isspace():
            return at + 1
    return 0


def _cutter(kind: str) -> Callable[[str], int]:
    """Where a tokenizer of `kind` may have its text cut without changing its ids: Folio's byte-level BPE
    encodes blocks of lines (so pieces hold whole blocks); a pretrained model's, before a line's first
    non-space character; words and characters, after a line break."""
    return {"bpe": _line_block_cut, "word": _word_cut, "pretrained_lm": _line_start_cut}.get(kind, _after_last_line)


def _pieces(texts: Iterable[str], ends: list[int], cut: Callable[[str], int],
            size: int | None = None) -> Iterator[tuple[int, str]]:
    """`texts` (consecutive pieces of one text) re-cut into (split index, piece): split i runs to
    character `ends[i]`, and a piece never crosses a split's end; within a split, pieces of about `size`
    characters end where `cut` says. Reading stops at the last end."""
    size = size or PIECE_CHARS
    split, position, pending = 0, 0, ""
    for text in texts:
        while text and split < len(ends):
            take = ends[split] - position
            head, text = (text, "") if take >= len(text) else (text[:take], text[take:])
            position += len(head)
            pending += head
            if position == ends[split]:
                if pending:
                    yield split, pending
                pending, split = "", split + 1
            while len(pending) >= size and (at := cut(pending[:size]) or cut(pending)):
                yield split, pending[:at]
                pending = pending[at:]
        if split == len(ends):
            return
    if pending:
        yield split, pending


def _count_chars(corpus: Corpus) -> int:
    if corpus.text is not None:
        return len(corpus.text)
    return sum(len(piece) for piece in corpus.pieces())


def _encode(tokenizer: Tokenizer, piece: str, corpus: Corpus, split: str) -> np.ndarray:
    try:
        return tokenizer.encode_tensor(piece).numpy()
    except VocabularyError as err:
        raise VocabularyError(f"corpus {corpus.name!r}, {split} split: {err}") from err


# ---- files ----------------------------------------------------------------------------------------

def _cache_dir(cache: Path | None) -> Path:
    cache = Path(cache) if cache is not None else token_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the token cache {cache}: {err}; set FOLIO_CACHE to a writable directory") from err
    return cache


def _stem(corpus: Corpus) -> str:
    name = corpus.path.name if corpus.path is not None else corpus.name
    return re.sub(r"[^\w.-]", "_", name)[:64]


def _drop_stale(cache: Path, corpus: Corpus, stamp: dict) -> None:
    """Remove what was made from another version of `corpus` (its ids and fitted tokenizers): no run can
    use it again, and a large corpus's ids are as large as its text."""
    for meta_path in cache.glob(f"{glob.escape(_stem(corpus))}.*.json"):
        meta = _read_json(meta_path)
        source = (meta or {}).get("source", {})
        if source.get("path", source.get("name")) == stamp.get("path", stamp.get("name")) and source != stamp:
            meta_path.with_suffix(".bin").unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, or damaged: rebuilt
        return None


@contextmanager
def _atomic(path: Path):
    """A binary file handle whose content replaces `path` only once the block has finished without error."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _map(path: Path, dtype: np.dtype, count: int) -> torch.Tensor:
    if count == 0:
        return torch.from_numpy(np.zeros(0, dtype=dtype))
    # Copy-on-write: the file is never written through the map, and torch gets the writable array it wants.
    return torch.from_numpy(np.memmap(path, dtype=dtype, mode="c", shape=(count,)))
