"""Next-sentence prediction's data (BERT; `folio lm train --arch bert --objective mlm+nsp`): a corpus's
documents → sentences (blingfire's splitter) → token ids → `[CLS] A [SEP] B [SEP]` pairs, where B is the
text that follows A half of the time and text from another document otherwise.

* `corpus_documents(name, fractions)`: the documents of each split. IMDb's (`--corpus imdb`) are its
  reviews, one a line; any other corpus's are its blank-line-separated paragraphs. A document belongs to
  the split that holds its last character (`split_bounds`, the character splits the token cache and
  `folio lm evaluate` use), so no document's sentences are in two splits, and the held-out windows of
  the token stream never hold text a pair model trained on.
* `tokenize_documents(documents, tokenizer)`: each document's sentences as token ids (`SentenceDocuments`).
* `SentencePairBatches`: training pairs, a new draw every epoch, addressable by (epoch, index) like every
  `TrainBatches` (`folio.training.batches`), so a resumed run continues at the same batch.
* `held_out_pairs(...)`: a fixed set of pairs (one per document), for validation and evaluation.

A pair is built as BERT's `create_pretraining_data` builds it: from a random sentence of a document of
at least two sentences, a run of whole sentences up to the target length (the context, or a random
shorter length 10% of the time) is cut at a random sentence boundary into A and the true B; half of the
time B is replaced by a run of sentences from a random other document of the same split. A pair too long
loses tokens from its longer side, A from its front and B from its end, so the seam between them (what
next-sentence prediction looks at) is kept.

    >>> docs = tokenize_documents(["One. Two. Three.", "Four. Five."], tokenizer)       # doctest: +SKIP
    >>> batches = SentencePairBatches(docs, batch_size=2, max_tokens=30, cls_id=101, sep_id=102)  # doctest: +SKIP
    >>> batches.batch(0, 0).segments                                                      # doctest: +SKIP
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from folio.data.corpora import load_corpus, split_bounds
from folio.errors import DataError
from folio.tokenizers import PAD_ID, Tokenizer
from folio.tokenizers.cleaning import BREAK

SHORT_PAIR_PROBABILITY = 0.1  # BERT's short_seq_prob: some pairs shorter than the context, as fine-tuning inputs are
_LINE = re.compile(r"\n")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")  # a line of nothing but spaces: between paragraphs


# ---- documents and sentences --------------------------------------------------------------------------
def document_kind(corpus: str) -> str:
    """How a corpus is cut into documents: "lines" for IMDb's reviews, "paragraphs" for any other text."""
    return "lines" if corpus == "imdb" else "paragraphs"


def split_documents(text: str, kind: str = "paragraphs",
                    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)) -> dict[str, list[str]]:
    """The documents of `text` (its lines, or its blank-line-separated paragraphs; blank ones dropped) of
    each split: a document goes to the split of `split_bounds` that holds its last character.

    >>> split_documents("a\\n\\nb\\n\\nc", fractions=(0.6, 0.2, 0.2))
    {'train': ['a', 'b'], 'valid': [], 'test': ['c']}
    """
    bounds = split_bounds(len(text), fractions)
    separator = _LINE if kind == "lines" else _BLANK_LINE
    out: dict[str, list[str]] = {name: [] for name in bounds}
    start = 0
    for end, next_start in [*((m.start(), m.end()) for m in separator.finditer(text)), (len(text), len(text))]:
        document = text[start:end].strip()
        if document:
            last = start + len(text[start:end].rstrip()) - 1  # the document's last character
            out[next(name for name, (s, e) in bounds.items() if s <= last < e)].append(document)
        start = next_start
    return out


def corpus_documents(corpus: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)) -> dict[str, list[str]]:
    """`split_documents` of a corpus (`load_corpus`'s names or a file), cut as `document_kind` says."""
    return split_documents(load_corpus(corpus), document_kind(corpus), fractions)


def sentences(document: str) -> list[str]:
    """A document's sentences, by blingfire's splitter (`<br />` read as a space: IMDb's line breaks)."""
    from blingfire import text_to_sentences

    return [s for s in text_to_sentences(BREAK.sub(" ", document)).split("\n") if s.strip()]


@dataclass
class SentenceDocuments:
    """Documents as sentences of token ids, held flat: sentence s is `ids[sentence_starts[s] :
    sentence_starts[s + 1]]`; document d holds sentences `document_starts[d]` to `document_starts[d + 1]`."""

    ids: np.ndarray  # (N,) int64: every sentence's ids end to end
    sentence_starts: np.ndarray  # (S + 1,)
    document_starts: np.ndarray  # (D + 1,)

    def __len__(self) -> int:
        return len(self.document_starts) - 1

    @property
    def sentence_counts(self) -> np.ndarray:
        """Sentences per document (D,)."""
        return np.diff(self.document_starts)

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    def span(self, first: int, end: int) -> list[int]:
        """The ids of sentences `first` to `end` (exclusive), end to end."""
        return self.ids[self.sentence_starts[first] : self.sentence_starts[end]].tolist()

    def sentence_length(self, sentence: int) -> int:
        return int(self.sentence_starts[sentence + 1] - self.sentence_starts[sentence])


def tokenize_documents(documents: Sequence[str], tokenizer: Tokenizer) -> SentenceDocuments:
    """Each document's sentences as ids of `tokenizer`. A sentence after the first is read with the space
    before it (byte-level BPE marks a word that follows a space); a sentence with no token left (a word
    tokenizer drops punctuation) is dropped, and so is a document with no sentence left."""
    ids: list[int] = []
    sentence_starts, document_starts = [0], [0]
    for document in documents:
        count = 0
        for number, sentence in enumerate(sentences(document)):
            tokens = tokenizer.encode(sentence if number == 0 else " " + sentence)
            if tokens:
                ids.extend(tokens)
                sentence_starts.append(len(ids))
                count += 1
        if count:
            document_starts.append(document_starts[-1] + count)
    return SentenceDocuments(np.asarray(ids, dtype=np.int64), np.asarray(sentence_starts, dtype=np.int64),
                             np.asarray(document_starts, dtype=np.int64))


def check_documents(docs: SentenceDocuments | Sequence[SentenceDocuments], where: str) -> None:
    """Refuse documents (one set, or several taken together: a corpus's splits) that cannot make pairs:
    none at all, none of two sentences (no A with a true B), or a single document (no other document to
    draw a random B from). `where` names the corpus (and split) in the message."""
    counts = np.concatenate([d.sentence_counts for d in ([docs] if isinstance(docs, SentenceDocuments) else docs)])
    if len(counts) == 0:
        raise DataError(f"{where}: no document with text in it; give more text (blank-line-separated paragraphs)")
    if not (counts >= 2).any():
        raise DataError(f"{where}: no document has two sentences; next-sentence prediction needs documents of at "
                        "least two sentences (blank-line-separated paragraphs; one review a line for imdb) that "
                        "end with . ! or ?")
    if len(counts) < 2:
        raise DataError(f"{where}: only one document; next-sentence prediction takes B from another document half "
                        "of the time: separate documents with blank lines")


# ---- pairs --------------------------------------------------------------------------------------------
def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Cut the longer of `a` and `b` one token at a time until both fit `max_tokens` together: A loses its
    first tokens, B its last, so the seam between them stays (longest-first, as Hugging Face's).

    >>> truncate_pair([1, 2, 3, 4], [5, 6], 4)
    ([3, 4], [5, 6])
    """
    keep_a, keep_b = len(a), len(b)
    while keep_a + keep_b > max_tokens:  # at most a few hundred steps: a pair is a few sentences
        if keep_a > keep_b:
            keep_a -= 1
        else:
            keep_b -= 1
    return a[len(a) - keep_a :], b[:keep_b]


def make_pair(docs: SentenceDocuments, document: int, is_next: bool, rng: random.Random, max_tokens: int,
              short_probability: float = SHORT_PAIR_PROBABILITY) -> tuple[list[int], list[int]]:
    """A and B (ids, no special tokens) from `document` (of at least two sentences), as the module says."""
    first, end = int(docs.document_starts[document]), int(docs.document_starts[document + 1])
    target = max_tokens if rng.random() >= short_probability else rng.randint(2, max_tokens)
    start = rng.randrange(first, end - 1)  # at least one sentence after it, for the true B
    chunk_end, length = start, 0
    while chunk_end < end and (length < target or chunk_end < start + 2):
        length += docs.sentence_length(chunk_end)
        chunk_end += 1
    a_end = rng.randrange(start + 1, chunk_end)  # A: sentences start..a_end - 1; the true B: a_end..chunk_end - 1
    a = docs.span(start, a_end)
    if is_next:
        b = docs.span(a_end, chunk_end)
    else:
        other = rng.randrange(len(docs) - 1)
        other += other >= document  # never A's own document
        other_first, other_end = int(docs.document_starts[other]), int(docs.document_starts[other + 1])
        sentence = rng.randrange(other_first, other_end)
        b_end, b_length = sentence, 0
        while b_end < other_end and (b_end == sentence or b_length < target - len(a)):
            b_length += docs.sentence_length(b_end)
            b_end += 1
        b = docs.span(sentence, b_end)
    return truncate_pair(a, b, max_tokens)


@dataclass
class PairBatch:
    ids: torch.Tensor  # (B, T) int64: [CLS] A [SEP] B [SEP], then PAD_ID
    mask: torch.Tensor  # (B, T) bool, True = a real token ("keep")
    segments: torch.Tensor  # (B, T) int64: 0 for [CLS] A [SEP] (and the padding), 1 for B [SEP]
    is_next: torch.Tensor  # (B,) int64: 1 where B follows A in its document, 0 where it comes from another
    reset_state = False  # a class attribute, not a field: no state is carried across these batches

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.ids.to(device), self.mask.to(device), self.segments.to(device), self.is_next.to(device))

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    def __len__(self) -> int:
        return self.ids.size(0)


def collate_pairs(pairs: Sequence[tuple[list[int], list[int], bool]], cls_id: int, sep_id: int) -> PairBatch:
    """(A, B, is_next) triples → a `PairBatch` padded to its longest pair."""
    longest = max(len(a) + len(b) + 3 for a, b, _ in pairs)
    ids = torch.full((len(pairs), longest), PAD_ID, dtype=torch.long)
    segments = torch.zeros(len(pairs), longest, dtype=torch.long)
    mask = torch.zeros(len(pairs), longest, dtype=torch.bool)
    for row, (a, b, _) in enumerate(pairs):
        length = len(a) + len(b) + 3
        ids[row, :length] = torch.tensor([cls_id, *a, sep_id, *b, sep_id])
        segments[row, len(a) + 2 : length] = 1
        mask[row, :length] = True
    return PairBatch(ids, mask, segments, torch.tensor([int(n) for _, _, n in pairs]))


def _pair_rng(seed: int, epoch: int, position: int) -> random.Random:
    return random.Random((seed * 1_000_003 + epoch) * 1_000_003 + position)


class SentencePairBatches:
    """Training pairs: every epoch each document of at least two sentences starts one pair, in an order
    and with choices (start, cut, IsNext or a coin's NotNext, the other document) that are a pure function
    of (seed, epoch, position): a resumed run draws the same pairs.
    """

    stateful = False

    def __init__(self, docs: SentenceDocuments, batch_size: int, max_tokens: int, cls_id: int, sep_id: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(docs) < 2:
            raise DataError("next-sentence prediction needs at least two documents")
        self.docs, self.batch_size, self.max_tokens = docs, batch_size, max_tokens
        self.cls_id, self.sep_id, self.seed, self.rank, self.world_size = cls_id, sep_id, seed, rank, world_size
        self.anchors = torch.from_numpy(np.flatnonzero(docs.sentence_counts >= 2))  # documents that can start a pair
        if len(self) == 0:
            raise DataError(f"{len(self.anchors)} training documents of two sentences or more are fewer than one "
                            f"batch of {batch_size * world_size} pairs: lower --batch-size")
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.anchors) // (self.batch_size * self.world_size)

    def _documents_of(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, self.anchors[torch.randperm(len(self.anchors), generator=generator)])
        return self._order[1]

    def pair(self, epoch: int, position: int) -> tuple[list[int], list[int], bool]:
        """(A, B, is_next) of the pair at `position` of `epoch`'s order."""
        rng = _pair_rng(self.seed, epoch, position)
        is_next = rng.random() < 0.5
        a, b = make_pair(self.docs, int(self._documents_of(epoch)[position]), is_next, rng, self.max_tokens)
        return a, b, is_next

    def batch(self, epoch: int, index: int) -> PairBatch:
        global_batch = self.batch_size * self.world_size
        positions = range(index * global_batch, (index + 1) * global_batch)[self.rank :: self.world_size]
        return collate_pairs([self.pair(epoch, p) for p in positions], self.cls_id, self.sep_id)


@dataclass
class HeldOutPairs:
    """A fixed set of pairs, one per document of two sentences or more, IsNext and NotNext in turn (exactly
    half each, so an accuracy of 0.5 is chance): what validation and `folio lm evaluate` score."""

    pairs: list[tuple[list[int], list[int], bool]]
    cls_id: int
    sep_id: int

    def __len__(self) -> int:
        return len(self.pairs)

    def batches(self, batch_size: int = 64) -> Iterator[PairBatch]:
        for start in range(0, len(self.pairs), batch_size):
            yield collate_pairs(self.pairs[start : start + batch_size], self.cls_id, self.sep_id)


def held_out_pairs(docs: SentenceDocuments, max_tokens: int, cls_id: int, sep_id: int, seed: int = 0,
                   limit: int | None = None) -> HeldOutPairs:
    """The fixed pairs of `docs` (at most `limit`, from the first documents), drawn with `seed`."""
    anchors = np.flatnonzero(docs.sentence_counts >= 2)[:limit]
    pairs = []
    for position, document in enumerate(anchors.tolist()):
        is_next = position % 2 == 0
        a, b = make_pair(docs, document, is_next, _pair_rng(seed, 0, position), max_tokens)
        pairs.append((a, b, is_next))
    return HeldOutPairs(pairs, cls_id, sep_id)


__all__ = [
    "HeldOutPairs", "PairBatch", "SentenceDocuments", "SentencePairBatches", "check_documents", "collate_pairs",
    "corpus_documents", "document_kind", "held_out_pairs", "make_pair", "sentences", "split_documents",
    "tokenize_documents", "truncate_pair",
]
