"""How much of next-sentence prediction can be told without learning coherence: the held-out pairs that
`folio lm evaluate` scores an NSP model on, judged by how alike A and B are.

    python bench/nsp_baselines.py --model RUNS/mlm_nsp [--corpus imdb] [--minilm]

The pairs are exactly the model's (its tokenizer, its context, the same seed): one per document of the
valid and of the test split, IsNext and NotNext in turn. Each baseline scores a pair by one similarity of
A and B; its threshold is the one that does best on the valid pairs, and the figure printed is its accuracy
on the test pairs (0.5 is chance):

* shared words: the fraction of B's distinct words that A holds too;
* TF-IDF cosine: A's and B's word counts weighted by the inverse document frequency of the training
  documents;
* MiniLM cosine (`--minilm`): all-MiniLM-L6-v2's sentence vectors of A's and B's text (the ids decoded,
  unknown words as the tokenizer writes them), a model trained on a billion sentence pairs for similarity.

A model that only learns topic similarity stays near these figures; an NSP accuracy well above them needs
coherence across the seam (what follows what), which is what the objective is for.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter

import torch

from folio.data.sentence_pairs import check_documents, corpus_documents, held_out_pairs, tokenize_documents
from folio.tasks.pretrain import PretrainedEncoder


def shared_words(a: list[int], b: list[int], idf: dict[int, float]) -> float:
    return len(set(a) & set(b)) / max(1, len(set(b)))


def tfidf_cosine(a: list[int], b: list[int], idf: dict[int, float]) -> float:
    va, vb = ({t: n * idf.get(t, 0.0) for t, n in Counter(x).items()} for x in (a, b))
    dot = sum(w * vb.get(t, 0.0) for t, w in va.items())
    norm = math.sqrt(sum(w * w for w in va.values()) * sum(w * w for w in vb.values()))
    return dot / norm if norm else 0.0


def best_threshold(scores: list[float], labels: list[bool]) -> float:
    """The threshold t (IsNext when score > t) with the best accuracy on (scores, labels)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    correct = sum(labels)  # t below every score: all IsNext
    best, threshold = correct, scores[order[0]] - 1.0
    for i in order:  # move t past one score at a time: that pair becomes NotNext
        correct += -1 if labels[i] else 1
        if correct > best:
            best, threshold = correct, scores[i]
    return threshold


def accuracy(scores: list[float], labels: list[bool], threshold: float) -> float:
    return sum((s > threshold) == y for s, y in zip(scores, labels, strict=True)) / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a BERT trained with --objective mlm+nsp (its tokenizer and context)")
    parser.add_argument("--corpus", default="imdb")
    parser.add_argument("--minilm", action="store_true", help="also the MiniLM sentence-vector cosine (slower)")
    args = parser.parse_args()

    started = time.perf_counter()
    lm = PretrainedEncoder.from_pretrained(args.model)
    model_config, vocab, config = lm.model.config, lm.vocab, lm.config
    specials = model_config.special_ids()
    splits = corpus_documents(args.corpus, tuple(config.get("data", {}).get("split", (0.9, 0.05, 0.05))))
    docs = {name: tokenize_documents(splits[name], vocab) for name in ("train", "valid", "test")}
    for name in ("valid", "test"):
        check_documents(docs[name], f"corpus {args.corpus}, {name} split")
    pairs = {name: held_out_pairs(docs[name], model_config.context - 3, specials["cls"], specials["sep"]).pairs
             for name in ("valid", "test")}
    train = docs["train"]
    frequency = Counter()
    for d in range(len(train)):
        frequency.update(set(train.span(int(train.document_starts[d]), int(train.document_starts[d + 1]))))
    idf = {t: math.log(len(train) / n) for t, n in frequency.items()}

    scorers = {"shared words": shared_words, "TF-IDF cosine": tfidf_cosine}
    scores = {name: {split: [f(a, b, idf) for a, b, _ in pairs[split]] for split in pairs} for name, f in scorers.items()}
    if args.minilm:
        from folio.models.sentence_encoder import SentenceEncoder

        encoder = SentenceEncoder.from_package(model_config.context)
        scores["MiniLM cosine"] = {}
        for split, rows in pairs.items():
            a, b = (encoder.encode([vocab.decode(p[side]) for p in rows]) for side in (0, 1))
            scores["MiniLM cosine"][split] = (a * b).sum(-1).tolist()
    labels = {split: [bool(p[2]) for p in rows] for split, rows in pairs.items()}
    print(f"{len(pairs['valid'])} valid and {len(pairs['test'])} test pairs of {args.corpus}, "
          f"{model_config.context} positions ({time.perf_counter() - started:.0f} s)")
    for name, by_split in scores.items():
        threshold = best_threshold(by_split["valid"], labels["valid"])
        print(json.dumps({"baseline": name, "threshold": round(threshold, 4),
                          "valid_accuracy": round(accuracy(by_split["valid"], labels["valid"], threshold), 4),
                          "test_accuracy": round(accuracy(by_split["test"], labels["test"], threshold), 4)}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
