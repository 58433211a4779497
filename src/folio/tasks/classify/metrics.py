"""A classifier's figures: class probabilities of many texts at once, and the metrics computed from them.

Both training (the validation loss and the final report) and `TextClassifier` score texts here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from folio.data.text import pad_sequences
from folio.models.classifier import RecurrentClassifier, TransformerClassifier


@torch.no_grad()
def score_sequences(model: RecurrentClassifier | TransformerClassifier, sequences: list[list[int]],
                    batch_size: int = 128, segments: list[list[int]] | None = None) -> torch.Tensor:
    """Class probabilities (N, C), computed in length-sorted batches (little padding) and put back in order;
    `segments` (pairs of texts: one list per sequence) go to the model beside the ids."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    probs = torch.empty(len(sequences), model.config.num_classes)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_sequences([sequences[i] for i in rows])  # (B, T), (B, T)
        if segments is None:
            logits = model(ids.to(device), mask.to(device))
        else:
            pair_segments = pad_sequences([segments[i] for i in rows], ids.size(1))[0]  # (B, T), 0 in the padding
            logits = model(ids.to(device), mask.to(device), pair_segments.to(device))
        probs[rows] = logits.float().softmax(-1).cpu()
    model.train(was_training)
    return probs


@torch.no_grad()
def score_features(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, C) of a sentence head over precomputed sentence vectors `features` (N, D)."""
    device = next(head.parameters()).device
    return head.eval()(features.to(device)).float().softmax(-1).cpu()


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count one half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels: list[int] | torch.Tensor, probs: torch.Tensor) -> dict:
    """accuracy, precision, recall, f1, roc_auc, confusion_matrix (rows: true, columns: predicted), n.

    Binary: precision/recall/f1 of class 1 and the AUC of its probability. More classes: macro averages
    and the macro one-vs-rest AUC.

    >>> classification_metrics([0, 1], torch.tensor([[0.8, 0.2], [0.3, 0.7]]))["accuracy"]
    1.0
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs_np = probs.float().numpy()
    classes = probs_np.shape[1]
    predicted = probs_np.argmax(1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = []
    for c in range(classes):
        tp = confusion[c, c]
        precision = tp / confusion[:, c].sum() if confusion[:, c].sum() else 0.0
        recall = tp / confusion[c].sum() if confusion[c].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        auc = _rank_auc(probs_np[:, c], labels == c)
        per_class.append((precision, recall, f1, auc))
    if classes == 2:
        precision, recall, f1, auc = per_class[1]
    else:
        precision, recall, f1 = (float(np.mean([p[i] for p in per_class])) for i in range(3))
        aucs = [p[3] for p in per_class if p[3] is not None]
        auc = float(np.mean(aucs)) if aucs else None
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "precision": float(precision), "recall": float(recall), "f1": float(f1),
        "roc_auc": auc, "confusion_matrix": confusion.tolist(), "n": int(len(labels)),
    }
