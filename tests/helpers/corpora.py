"""Tiny synthetic data sets that small models learn in seconds: character text, labelled reviews,
English-French number pairs."""

from __future__ import annotations

import random

import torch

# A pattern a tiny model can learn in seconds, with speaker lines like the real corpus.
PATTERN = "ROMEO:\nHow are you? I am well.\n\nJULIET:\nAnd how are you, my lord?\n\n"

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "lovely"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "weak", "clumsy"]
FILLER = ["the", "film", "was", "and", "plot", "acting", "really", "quite", "a", "story"]


def synthetic_reviews(n: int, seed: int) -> list[tuple[str, str]]:
    """Filler words around one to three sentiment words; the label is the majority sentiment."""
    rng = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [FILLER[int(j)] for j in torch.randint(0, len(FILLER), (int(torch.randint(5, 25, (1,), generator=rng)),), generator=rng)]
        pool = POSITIVE if label else NEGATIVE
        for _ in range(int(torch.randint(1, 3, (1,), generator=rng))):
            words.insert(int(torch.randint(0, len(words), (1,), generator=rng)), pool[int(torch.randint(0, 6, (1,), generator=rng))])
        rows.append((" ".join(words).capitalize() + "!", "pos" if label else "neg"))
    return rows


NUMBERS = {"one": "un", "two": "deux", "three": "trois", "four": "quatre", "five": "cinq", "six": "six",
           "seven": "sept", "eight": "huit", "nine": "neuf", "ten": "dix"}


def number_pairs(n: int, seed: int) -> str:
    """`n` lines of one to five English number words, their French, and an attribution (Tatoeba's layout)."""
    rng = random.Random(seed)
    words = list(NUMBERS)
    lines = []
    for _ in range(n):
        chosen = [rng.choice(words) for _ in range(rng.randint(1, 5))]
        lines.append(" ".join(chosen) + "\t" + " ".join(NUMBERS[w] for w in chosen) + "\tCC-BY 2.0 attribution")
    return "\n".join(lines) + "\n"


TOPICS = ["harbour", "violin", "glacier", "orchard", "comet", "lantern", "falcon", "meadow", "canyon", "pepper",
          "tunnel", "cactus", "anchor", "mirror", "saddle", "willow", "rocket", "pebble", "thunder", "velvet"]


def topic_documents(n: int, seed: int, topics: int = 10) -> list[str]:
    """`n` documents of two to five short sentences, every sentence naming its document's topic (one of
    the first `topics` of TOPICS) among one to three filler words: a sentence's successor (same topic) is
    told from another document's (another topic, 9 times in 10) by the words alone, which next-sentence
    prediction learns in seconds."""
    rng = random.Random(seed)
    documents = []
    for _ in range(n):
        topic = rng.choice(TOPICS[:topics])
        sentences = []
        for _ in range(rng.randint(2, 5)):
            words = [rng.choice(FILLER) for _ in range(rng.randint(1, 3))]
            words.insert(rng.randint(0, len(words)), topic)
            sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?"]))
        documents.append(" ".join(sentences))
    return documents
