"""`folio lm`'s figures: next-token loss over carried streams, masked-token loss, bits and perplexity."""

from __future__ import annotations

import math

import torch

from folio.models.bert import MaskedLanguageModel
from folio.models.gpt import GPT
from folio.models.rnn_lm import RNNLanguageModel


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
def stream_loss(model: RNNLanguageModel | GPT, ids: torch.Tensor, seq_len: int = 256, streams: int = 16) -> tuple[float, int]:
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


def evaluate_ids(model: RNNLanguageModel | GPT | MaskedLanguageModel, ids: torch.Tensor, seq_len: int = 256,
                 streams: int = 16) -> tuple[float, int]:
    """Next-token loss for causal models, masked-token loss for a masked LM. Returns (loss, tokens scored)."""
    if isinstance(model, MaskedLanguageModel):
        return masked_lm_loss(model, ids)
    return stream_loss(model, ids, seq_len, streams)


def loss_report(loss: float, tokens: int, level: str = "char") -> dict:
    """`loss` in nats per token; `bits_per_char` is bits per token at word or BPE level (see `level`).

    >>> loss_report(math.log(2), 10)["bits_per_char"]
    1.0
    """
    return {"loss": loss, "bits_per_char": loss / math.log(2), "perplexity": math.exp(loss), "tokens": tokens, "level": level}
