"""Text → token ids → padded batches for sequence classification.

* `TextCleaner`: the book's cleaning, configurable (cut to the first N characters, `<br />` → space,
  everything but letters and apostrophes → space, split on whitespace), at word or character level.
* `WordVocab`: the top V words by frequency plus K hashed out-of-vocabulary buckets. Id 0 is padding,
  always, so masks never depend on which token happens to be most frequent. The bucket of an unknown
  word is `crc32(utf-8 bytes) % K`: the same in every process and on every machine (Python's `hash()`
  is salted per process and would not be).
* `SubwordTokenizer`: a Hugging Face `tokenizers` WordPiece model trained on the texts, ids shifted so
  that 0 stays padding.
* `BPETokenizer`: byte-level BPE on raw text (lossless), for language models that write text back.
* `ClassificationBatches`: length-bucketed, padded batches addressable by (epoch, index), so a resumed
  run continues at the same batch. Masks are `True` where a token is real ("keep").

    >>> cleaner = TextCleaner()
    >>> cleaner.tokens("Great film!<br />Loved it, didn't you?")
    ['great', 'film', 'loved', 'it', "didn't", 'you']
    >>> vocab = WordVocab.fit([["good", "good", "bad"]], max_size=10, oov_buckets=4)
    >>> vocab.encode(["good", "bad", "unseen"])[:2]
    [1, 2]
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from folio.errors import CheckpointError, ConfigError, DataError

PAD_ID = 0
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Anything that is not a letter or an apostrophe: non-word characters, digits and underscores.
_NOT_LETTER = re.compile(r"[^\w']|[\d_]")


@dataclass
class TextCleaner:
    """The book's cleaning, with its choices as options.

    max_chars: keep only the first N characters (the book: 300; None keeps everything).
    lower: lower-case (the book does not; GloVe's vocabulary is lower-case).
    level: "word" splits on whitespace; "char" gives every remaining non-space character (Reber strings).
    """

    max_chars: int | None = None
    lower: bool = True
    level: str = "word"

    def __post_init__(self):
        if self.level not in ("word", "char"):
            raise ConfigError(f"text level {self.level!r}: choose word or char")
        if self.max_chars is not None and self.max_chars < 1:
            raise ConfigError(f"--max-chars must be at least 1, got {self.max_chars}")

    def clean(self, text: str) -> str:
        if self.max_chars is not None:
            text = text[: self.max_chars]
        text = _NOT_LETTER.sub(" ", _BREAK.sub(" ", text))
        return text.lower() if self.lower else text

    def tokens(self, text: str) -> list[str]:
        cleaned = self.clean(text)
        return [c for c in cleaned if not c.isspace()] if self.level == "char" else cleaned.split()

    def to_dict(self) -> dict:
        return asdict(self)


TRUNCATIONS = ("head", "head_tail")


def truncate(items: list, max_len: int | None, how: str = "head") -> list:
    """Keep at most `max_len` items: the first ones ("head"), or the first quarter and the last three
    quarters ("head_tail", after Sun et al. 2019: a review's verdict is often at its end)."""
    if how not in TRUNCATIONS:
        raise ConfigError(f"--truncation {how!r}: choose one of {', '.join(TRUNCATIONS)}")
    if not max_len or len(items) <= max_len:
        return items
    if how == "head":
        return items[:max_len]
    head = max_len // 4
    return items[:head] + items[len(items) - (max_len - head) :]


def stable_bucket(word: str, buckets: int) -> int:
    """A bucket in [0, buckets) that depends only on the word (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(word.encode("utf-8")) % buckets


class WordVocab:
    """Id 0 = padding, 1..V = known words (most frequent first), V+1..V+K = hashed OOV buckets."""

    kind = "word"

    def __init__(self, words: Sequence[str], oov_buckets: int = 1000, cleaner: TextCleaner | None = None):
        if oov_buckets < 1:
            raise ConfigError(f"--oov-buckets must be at least 1 (unknown words need somewhere to go), got {oov_buckets}")
        self.words = list(words)
        self.oov_buckets = oov_buckets
        self.cleaner = cleaner or TextCleaner()
        self.index = {w: i + 1 for i, w in enumerate(self.words)}

    @classmethod
    def fit(
        cls, token_lists: Iterable[Sequence[str]], max_size: int = 10_000, oov_buckets: int = 1000,
        min_count: int = 1, cleaner: TextCleaner | None = None,
    ) -> WordVocab:
        """The `max_size` most frequent tokens (ties broken alphabetically, so fitting is deterministic)."""
        counts = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_size], oov_buckets, cleaner)

    def __len__(self) -> int:
        """Embedding rows: padding + words + buckets."""
        return 1 + len(self.words) + self.oov_buckets

    def token_id(self, token: str) -> int:
        found = self.index.get(token)
        return found if found is not None else 1 + len(self.words) + stable_bucket(token, self.oov_buckets)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.token_id(t) for t in tokens]

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        """Raw text → (tokens as shown to a user, ids)."""
        tokens = self.cleaner.tokens(text)
        return tokens, self.encode(tokens)

    def encode_text(self, text: str) -> list[int]:
        return self.encode(self.cleaner.tokens(text))

    def decode(self, ids: Sequence[int]) -> str:
        """Words joined by spaces; an out-of-vocabulary bucket reads `<unk>`, padding nothing."""
        known = len(self.words)
        return " ".join(self.words[i - 1] if i <= known else "<unk>" for i in ids if i > 0)

    def save(self, directory: str | Path) -> None:
        data = {"type": "word", "words": self.words, "oov_buckets": self.oov_buckets, "cleaner": self.cleaner.to_dict()}
        (Path(directory) / "vocab.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


class _ShiftedTokenizer:
    """A Hugging Face tokenizer whose ids are shifted by one, so that id 0 is Folio's padding."""

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size() + 1

    @property
    def words(self) -> list[str]:
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.get)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenize(text)[1]


class SubwordTokenizer(_ShiftedTokenizer):
    """WordPiece subwords (Hugging Face `tokenizers`) after the same cleaning; id 0 stays padding.

    The tokenizer's own ids are shifted by one, so its id 0 (`[UNK]`) becomes 1.
    """

    kind = "subword"

    def __init__(self, tokenizer, cleaner: TextCleaner | None = None):
        self.tokenizer = tokenizer
        self.cleaner = cleaner or TextCleaner()

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 8000, cleaner: TextCleaner | None = None) -> SubwordTokenizer:
        try:
            from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        except ModuleNotFoundError as err:
            raise ConfigError("--tokenizer subword needs Hugging Face tokenizers: pip install tokenizers") from err
        cleaner = cleaner or TextCleaner()
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"], show_progress=False)
        tokenizer.train_from_iterator((cleaner.clean(t) for t in texts), trainer=trainer)
        return cls(tokenizer, cleaner)

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        encoding = self.tokenizer.encode(self.cleaner.clean(text))
        return list(encoding.tokens), [i + 1 for i in encoding.ids]

    def decode(self, ids: Sequence[int]) -> str:
        text = " ".join(self.tokenizer.id_to_token(i - 1) for i in ids if i > 0)
        return text.replace(" ##", "")

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / "tokenizer.json"))
        meta = {"type": "subword", "cleaner": self.cleaner.to_dict()}
        (Path(directory) / "vocab.json").write_text(json.dumps(meta), encoding="utf-8")


class BPETokenizer(_ShiftedTokenizer):
    """Byte-level BPE (GPT-2 style, Hugging Face `tokenizers`) on raw text: no cleaning, every string
    round-trips exactly (`decode(encode_text(t)) == t`), so a language model can write punctuation,
    case and line breaks. Ids are shifted by one so that 0 stays padding.
    """

    kind = "bpe"
    cleaner = None

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 4000) -> BPETokenizer:
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ModuleNotFoundError as err:
            raise ConfigError("--tokenizer bpe needs Hugging Face tokenizers: pip install tokenizers") from err
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet):
            raise ConfigError(f"--vocab-size {vocab_size} is too small for byte-level BPE: it needs at least {len(alphabet)}")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        encoding = self.tokenizer.encode(text)
        return [self.decode([i + 1]) for i in encoding.ids], [i + 1 for i in encoding.ids]

    def encode_text(self, text: str) -> list[int]:
        """Long texts are encoded a block of lines at a time (in parallel); the ids still decode to `text`."""
        lines = text.splitlines(keepends=True)
        if len(lines) <= 1:
            return [i + 1 for i in self.tokenizer.encode(text).ids]
        blocks = ["".join(lines[i : i + 64]) for i in range(0, len(lines), 64)]
        return [i + 1 for encoding in self.tokenizer.encode_batch(blocks) for i in encoding.ids]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i - 1 for i in ids if i > 0], skip_special_tokens=False)

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / "tokenizer.json"))
        (Path(directory) / "vocab.json").write_text(json.dumps({"type": "bpe"}), encoding="utf-8")


class PretrainedTokenizer:
    """A pretrained model's own tokenizer (a Hugging Face `tokenizer.json`, e.g. MiniLM's lower-casing
    WordPiece with [CLS] … [SEP]), truncated to `max_length` tokens. Its [PAD] must be id 0, as Folio's
    padding. The only cleaning is `<br />` → space: the tokenizer normalises the rest itself.
    """

    kind = "pretrained"
    cleaner = None

    def __init__(self, tokenizer, max_length: int = 256, truncation: str = "head"):
        if tokenizer.token_to_id("[PAD]") not in (0, None):
            raise ConfigError("this tokenizer's [PAD] is not id 0, which Folio's padding and masks rely on")
        truncate([], max_length, truncation)  # checks the choice
        self.tokenizer, self.max_length, self.truncation = tokenizer, max_length, truncation
        if truncation == "head":
            tokenizer.enable_truncation(max_length)
        else:  # cut after encoding, keeping [CLS] at the start and [SEP] at the end
            tokenizer.no_truncation()
        tokenizer.no_padding()

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = 256, truncation: str = "head") -> PretrainedTokenizer:
        try:
            from tokenizers import Tokenizer
        except ModuleNotFoundError as err:
            raise ConfigError("pretrained tokenizers need Hugging Face tokenizers: pip install tokenizers") from err
        return cls(Tokenizer.from_file(str(path)), max_length, truncation)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def words(self) -> list[str]:
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.get)

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        encoding = self.tokenizer.encode(_BREAK.sub(" ", text))
        tokens, ids = list(encoding.tokens), list(encoding.ids)
        return truncate(tokens, self.max_length, self.truncation), truncate(ids, self.max_length, self.truncation)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenize(text)[1]

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / "tokenizer.json"))
        meta = {"type": "pretrained", "max_length": self.max_length, "truncation": self.truncation}
        (Path(directory) / "vocab.json").write_text(json.dumps(meta), encoding="utf-8")


def load_tokenizer(directory: str | Path):
    """The vocabulary or tokenizer saved in a checkpoint directory: a `WordVocab`, `SubwordTokenizer`,
    `BPETokenizer`, `PretrainedTokenizer`, or a language model's `CharVocab`."""
    path = Path(directory) / "vocab.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["type"] == "char":
            from folio.data.vocab import CharVocab

            return CharVocab.load(path)
        if data["type"] == "pretrained":
            return PretrainedTokenizer.from_file(Path(directory) / "tokenizer.json", data["max_length"],
                                                 data.get("truncation", "head"))
        if data["type"] == "bpe":
            from tokenizers import Tokenizer

            return BPETokenizer(Tokenizer.from_file(str(Path(directory) / "tokenizer.json")))
        cleaner = TextCleaner(**data["cleaner"])
        if data["type"] == "word":
            return WordVocab(data["words"], data["oov_buckets"], cleaner)
        if data["type"] == "subword":
            from tokenizers import Tokenizer

            return SubwordTokenizer(Tokenizer.from_file(str(Path(directory) / "tokenizer.json")), cleaner)
        raise CheckpointError(f"{path}: unknown vocabulary type {data['type']!r}")
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"cannot read the vocabulary {path}: {err}") from err
    except Exception as err:  # tokenizers raises its own exception type on a damaged file
        raise CheckpointError(f"cannot read the tokenizer in {directory}: {err}") from err


# ---- batches -----------------------------------------------------------------------------------
@dataclass
class ClassificationBatch:
    ids: torch.Tensor  # (B, T) int64, PAD_ID after each sequence's end
    mask: torch.Tensor  # (B, T) bool, True = a real token ("keep")
    labels: torch.Tensor  # (B,) int64

    def to(self, device: torch.device) -> ClassificationBatch:
        return ClassificationBatch(self.ids.to(device), self.mask.to(device), self.labels.to(device))

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


def pad_sequences(sequences: Sequence[Sequence[int]], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists with PAD_ID to `length` (default: the longest). Returns ids (B, T) and mask (B, T)."""
    longest = max((len(s) for s in sequences), default=0)
    length = max(longest, 1) if length is None else length
    if length < longest:
        raise ConfigError(f"cannot pad sequences of {longest} tokens to {length}")
    ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, ids != PAD_ID


class ClassificationBatches:
    """Shuffled, length-bucketed batches: each epoch's order is a pure function of (seed, epoch).

    Reviews are shuffled, then sorted by length within pools of `pool` batches, so a batch holds
    reviews of similar length (little padding) while batches still arrive in random order.
    Every sequence must be non-empty.
    """

    stateful = False

    def __init__(self, sequences: Sequence[Sequence[int]], labels: Sequence[int], batch_size: int,
                 seed: int = 0, pool: int = 50, rank: int = 0, world_size: int = 1):
        if len(sequences) != len(labels):
            raise DataError(f"{len(sequences)} texts but {len(labels)} labels")
        if len(sequences) < batch_size * world_size:
            raise DataError(f"{len(sequences)} training texts are fewer than one batch of {batch_size * world_size}")
        self.sequences, self.labels = list(sequences), torch.as_tensor(list(labels), dtype=torch.long)
        self.lengths = torch.tensor([len(s) for s in self.sequences])
        if (self.lengths == 0).any():
            raise DataError("a training text has no tokens after cleaning")
        self.batch_size, self.seed, self.pool = batch_size, seed, pool
        self.rank, self.world_size = rank, world_size
        self._plan: tuple[int, list[torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.sequences) // (self.batch_size * self.world_size)

    def _batches_of(self, epoch: int) -> list[torch.Tensor]:
        if self._plan is None or self._plan[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.sequences), generator=generator)
            global_batch = self.batch_size * self.world_size
            order = order[: len(self) * global_batch]
            pool = global_batch * self.pool
            chunks = []
            for start in range(0, len(order), pool):
                chunk = order[start : start + pool]
                chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
                chunks.extend(chunk.split(global_batch))
            shuffle = torch.randperm(len(chunks), generator=generator)
            self._plan = (epoch, [chunks[i] for i in shuffle])
        return self._plan[1]

    def batch(self, epoch: int, index: int) -> ClassificationBatch:
        rows = self._batches_of(epoch)[index][self.rank :: self.world_size]
        ids, mask = pad_sequences([self.sequences[i] for i in rows])
        return ClassificationBatch(ids, mask, self.labels[rows])


@dataclass
class FeatureBatch:
    features: torch.Tensor  # (B, D) fixed vectors from a frozen encoder
    labels: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> FeatureBatch:
        return FeatureBatch(self.features.to(device), self.labels.to(device))

    @property
    def num_tokens(self) -> int:
        return self.features.shape[0]


class FeatureBatches:
    """Shuffled batches of precomputed feature vectors, addressable by (epoch, index)."""

    stateful = False

    def __init__(self, features: torch.Tensor, labels: Sequence[int], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if len(features) < batch_size * world_size:
            raise DataError(f"{len(features)} training texts are fewer than one batch of {batch_size * world_size}")
        self.features, self.labels = features, torch.as_tensor(list(labels), dtype=torch.long)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size

    def __len__(self) -> int:
        return len(self.features) // (self.batch_size * self.world_size)

    def batch(self, epoch: int, index: int) -> FeatureBatch:
        order = torch.randperm(len(self.features), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        global_batch = self.batch_size * self.world_size
        rows = order[index * global_batch : (index + 1) * global_batch][self.rank :: self.world_size]
        return FeatureBatch(self.features[rows], self.labels[rows])
