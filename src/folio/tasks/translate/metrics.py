"""Translation figures: corpus BLEU and chrF (sacrebleu, with their signatures), exact match, and BLEU by
source length, where attention should matter most on the long sources.

    >>> score_translations(["one two"], ["un deux"], ["un deux"])["exact_match"]
    1.0
"""

from __future__ import annotations

LENGTH_BUCKETS = (10, 20, 30, 40)  # source words: 1-10, 11-20, 21-30, 31-40, >40
LONG_SOURCE_WORDS = 30  # `bleu_long`: BLEU on sources longer than this, where attention should matter most


def score_translations(sources: list[str], hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF (one reference each), exact match, n, the sacrebleu signatures, `bleu_long`
    and `bleu_by_length`."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=False)) / len(references)
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "exact_match": round(exact, 5),
        "n": len(references),
        "signature": f"{bleu.get_signature()} | {chrf.get_signature()}",
        "bleu_long": _bleu_long(sources, hypotheses, references),
        "bleu_by_length": bleu_by_length(sources, hypotheses, references),
    }


def _bleu_long(sources: list[str], hypotheses: list[str], references: list[str]) -> float | None:
    from sacrebleu.metrics import BLEU

    rows = [i for i, s in enumerate(sources) if len(s.split()) > LONG_SOURCE_WORDS]
    if not rows:
        return None
    return round(BLEU().corpus_score([hypotheses[i] for i in rows], [[references[i] for i in rows]]).score, 2)


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[str], edges=LENGTH_BUCKETS) -> list[dict]:
    """Corpus BLEU of the pairs whose source has 1-10, 11-20, ... words (whitespace-separated)."""
    from sacrebleu.metrics import BLEU

    buckets: dict[str, tuple[list[str], list[str]]] = {}
    labels = [f"{lo + 1}-{hi}" for lo, hi in zip((0, *edges[:-1]), edges, strict=False)] + [f">{edges[-1]}"]
    for source, hyp, ref in zip(sources, hypotheses, references, strict=False):
        words = len(source.split())
        label = next((lab for lab, hi in zip(labels, edges, strict=False) if words <= hi), labels[-1])
        buckets.setdefault(label, ([], []))
        buckets[label][0].append(hyp)
        buckets[label][1].append(ref)
    rows = []
    for label in labels:
        if label in buckets:
            hyps, refs = buckets[label]
            rows.append({"source_words": label, "n": len(hyps), "bleu": round(BLEU().corpus_score(hyps, [refs]).score, 2)})
    return rows
