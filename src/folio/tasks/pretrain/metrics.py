"""`folio pretrain`'s figures: masked-token loss, next-sentence loss and accuracy, and a biLM's loss in each direction."""

from __future__ import annotations

import torch

from folio.data.sentence_pairs import HeldOutPairs
from folio.models.bert import MaskedLanguageModel
from folio.models.bilm import BiLM


@torch.no_grad()
def masked_lm_loss(model: MaskedLanguageModel, ids: torch.Tensor, batch_size: int = 32, seed: int = 0) -> tuple[float, int]:
    """Mean masked-token loss over `ids` read as windows of the model's context, masked with a fixed seed
    (the same positions at every evaluation). Returns (loss, positions scored)."""
    device = next(model.parameters()).device
    context = model.config.context
    windows = ids[: len(ids) // context * context].view(-1, context) if len(ids) >= context else ids.view(1, -1)  # (N, context)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, windows.size(0), batch_size):
        batch = windows[start : start + batch_size].long().to(device)
        loss, picked = model.masked_loss(batch, torch.ones_like(batch, dtype=torch.bool), generator, reduction="sum")
        total, count = total + loss.item(), count + picked
    model.train(was_training)
    return total / max(count, 1), count


@torch.no_grad()
def sentence_pair_metrics(model: MaskedLanguageModel, pairs: HeldOutPairs, batch_size: int = 64, seed: int = 0) -> dict:
    """BERT's two pretraining figures on fixed pairs (`folio.data.sentence_pairs.held_out_pairs`), masked
    with a fixed seed (the same positions at every evaluation): {"loss": masked_loss + nsp_loss (what
    early stopping and the best checkpoint follow), "masked_loss" (per masked token), "nsp_loss",
    "nsp_accuracy", "pairs", "masked_tokens"}."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    masked_total, masked, nsp_total, correct = 0.0, 0, 0.0, 0
    for batch in pairs.batches(batch_size):
        batch = batch.to(device)
        losses = model.pretraining_losses(batch.ids, batch.mask, batch.segments, batch.is_next, generator, reduction="sum")
        masked_total, masked = masked_total + losses["masked_loss"].item(), masked + losses["masked"]
        nsp_total += losses["nsp_loss"].item()
        correct += int((losses["nsp_logits"].argmax(-1) == batch.is_next).sum())
    model.train(was_training)
    masked_loss, nsp_loss = masked_total / max(masked, 1), nsp_total / max(len(pairs), 1)
    return {"loss": masked_loss + nsp_loss, "masked_loss": masked_loss, "nsp_loss": nsp_loss,
            "nsp_accuracy": correct / max(len(pairs), 1), "pairs": len(pairs), "masked_tokens": masked}


@torch.no_grad()
def bilm_losses(model: BiLM, ids: torch.Tensor, seq_len: int = 256, batch_size: int = 16) -> dict:
    """Both directions of a biLM over `ids` cut into windows of `seq_len` + 1 tokens (consecutive windows
    share their edge token): the forward stack predicts every token of a window after its first, the
    backward stack every token before its last. Returns {"loss": their mean, "forward_loss",
    "backward_loss", "tokens": predicted per direction}."""
    device = next(model.parameters()).device
    seq_len = max(1, min(seq_len, len(ids) - 1))
    starts = range(0, len(ids) - 1, seq_len)
    was_training = model.training
    model.eval()
    totals, count = [0.0, 0.0], 0
    for first in range(0, len(starts), batch_size):
        group = list(starts[first : first + batch_size])
        for length in sorted({min(seq_len, len(ids) - 1 - s) for s in group}):  # the last window may be shorter
            rows = [s for s in group if min(seq_len, len(ids) - 1 - s) == length]
            window = torch.stack([ids[s : s + length + 1].long() for s in rows]).to(device)  # (B, length + 1)
            for i, loss in enumerate(model.direction_losses(window, reduction="sum")):
                totals[i] += loss.item()
            count += window.size(0) * length
    model.train(was_training)
    forward, backward = totals[0] / count, totals[1] / count
    return {"loss": (forward + backward) / 2, "forward_loss": forward, "backward_loss": backward, "tokens": count}


def evaluate_ids(model: MaskedLanguageModel | BiLM, ids: torch.Tensor, seq_len: int = 256) -> dict:
    """The masked-token loss of a masked LM, the mean of both directions' of a biLM (by the model's `kind`: see
    folio.models), on `ids`: {"loss", "tokens" scored} (and a biLM's "forward_loss", "backward_loss")."""
    if model.kind == "masked":
        loss, scored = masked_lm_loss(model, ids)
        return {"loss": loss, "tokens": scored}
    return bilm_losses(model, ids, seq_len)
