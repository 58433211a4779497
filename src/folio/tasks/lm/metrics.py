"""`folio lm`'s figures: next-token loss over carried streams, masked-token loss, next-sentence accuracy, bits and perplexity."""

from __future__ import annotations

import math

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
def stream_loss(model: torch.nn.Module, ids: torch.Tensor, seq_len: int = 256, streams: int = 16) -> tuple[float, int]:
    """Mean next-token loss (nats) over `ids`, read as `streams` contiguous streams with the state carried.

    Every token after a stream's first is predicted once, with all earlier tokens of its stream as
    context, as a recurrent model is used in practice. Fewer streams mean fewer cold starts (slightly
    lower loss) but a longer sequential loop. Returns (loss, tokens predicted).
    """
    device = next(model.parameters()).device
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    stream_len = (len(ids) - 1) // streams
    inputs = ids[: stream_len * streams].view(streams, stream_len)  # (S, L), of any integer type (a memory map)
    targets = ids[1 : stream_len * streams + 1].view(streams, stream_len)
    total, state = 0.0, None
    was_training = model.training
    model.eval()
    for start in range(0, stream_len, seq_len):  # the last window may be shorter: no token is dropped
        window = slice(start, start + seq_len)
        logits, state = model(inputs[:, window].long().to(device), state)
        total += torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), targets[:, window].long().reshape(-1).to(device), reduction="sum"
        ).item()
    model.train(was_training)
    return total / targets.numel(), targets.numel()


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


def evaluate_ids(model: torch.nn.Module, ids: torch.Tensor, seq_len: int = 256, streams: int = 16) -> tuple[float, int]:
    """Next-token loss for causal models, masked-token loss for a masked LM, the mean of both directions' for a
    biLM (by the model's `kind`: see folio.models). Returns (loss, tokens scored)."""
    if model.kind == "masked":
        return masked_lm_loss(model, ids)
    if model.kind == "bidirectional":
        figures = bilm_losses(model, ids, seq_len)
        return figures["loss"], figures["tokens"]
    return stream_loss(model, ids, seq_len, streams)


def loss_report(loss: float, tokens: int, level: str = "char") -> dict:
    """`loss` in nats per token, and `bits_per_token`: per character at `level` "char", per word or BPE token
    otherwise. `bits_per_char` is the same figure under its old name, kept in the output for one release
    (a misnomer except at character level).

    >>> loss_report(math.log(2), 10)["bits_per_token"]
    1.0
    """
    bits = loss / math.log(2)
    return {"loss": loss, "bits_per_token": bits, "bits_per_char": bits, "perplexity": math.exp(loss), "tokens": tokens,
            "level": level}
