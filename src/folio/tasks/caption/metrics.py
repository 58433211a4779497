"""Captioning figures: corpus BLEU-4 (sacrebleu, every reference of an image), exact match (the caption
equals one of its references) and, on scenes, `localization`: the attention mass inside the box of each
object when the word naming it is emitted, beside what uniform attention would give.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from folio.data.images import CaptionExample
from folio.data.scenes import parse_scene_caption

if TYPE_CHECKING:
    from folio.tasks.caption.inference import Caption


def score_captions(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU-4 against every reference of each image (sacrebleu), and exact match with any of them.

    >>> score_captions(["a blue circle"], [["a blue circle", "a circle"]])["bleu4"]
    100.0
    """
    from sacrebleu.metrics import BLEU

    most = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]
    # effective_order: n-gram orders that no caption is long enough to have are left out instead of zeroing the
    # score (three-word captions have no 4-grams: plain corpus BLEU-4 would be 0 even when every caption is right).
    bleu = BLEU(effective_order=True)
    score = bleu.corpus_score(hypotheses, streams)
    exact = sum(h.strip() in {r.strip() for r in refs} for h, refs in zip(hypotheses, references, strict=True))
    return {"bleu4": round(score.score, 2), "exact_match": round(exact / len(hypotheses), 5), "n": len(hypotheses),
            "signature": str(bleu.get_signature())}


def box_mass(attention: torch.Tensor, box: tuple[int, int, int, int], image_size: int) -> float:
    """The share of one (grid, grid) attention map that falls inside a pixel box (x0, y0, x1, y1), each cell's
    weight spread evenly over the pixels it covers."""
    grid = attention.size(-1)
    edges = torch.linspace(0, image_size, grid + 1, dtype=torch.float64)
    x0, y0, x1, y1 = box

    def overlap(lo: float, hi: float) -> torch.Tensor:  # (grid,) share of each cell's extent inside [lo, hi)
        return ((edges[1:].clamp(max=hi) - edges[:-1].clamp(min=lo)).clamp(min=0)) / (edges[1:] - edges[:-1])

    inside = overlap(y0, y1)[:, None] * overlap(x0, x1)[None, :]  # (grid, grid)
    return float((attention.double() * inside).sum())


def localization(captions: list[Caption], examples: list[CaptionExample], image_size: int) -> dict:
    """For every object of every scene: the attention mass inside its box while the caption emits the noun that
    names it (0 when the caption never names it), averaged; and the same for uniform attention."""
    masses, uniform = [], []
    for caption, example in zip(captions, examples, strict=True):
        phrases = _noun_positions(caption.words)
        used: set[int] = set()
        for k, obj in enumerate(example.objects):
            uniform.append((obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1]) / image_size**2)
            description = (obj.size, obj.colour, obj.shape)
            # The k-th phrase if it names this object, else the first unused phrase that does.
            candidates = ([k] if k < len(phrases) and phrases[k][0] == description else []) + [
                j for j, (d, _) in enumerate(phrases) if d == description
            ]
            match = next((j for j in candidates if j not in used), None)
            if match is None or caption.attention is None:
                masses.append(0.0)
                continue
            used.add(match)
            masses.append(box_mass(caption.attention[phrases[match][1]], obj.box, image_size))
    return {"localization": round(float(np.mean(masses)), 4), "localization_uniform": round(float(np.mean(uniform)), 4),
            "localization_objects": len(masses)}


def _noun_positions(words: list[str]) -> list[tuple[tuple[str, str, str], int]]:
    """Each object phrase of a generated caption: its (size, colour, shape) and the index of its noun."""
    found, start = [], 0
    for description in parse_scene_caption(" ".join(w for w in words if w != "</s>")):
        noun = words.index(description[2], start)
        found.append((description, noun))
        start = noun + 1
    return found
