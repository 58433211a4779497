"""`folio lm`'s figures: next-token loss over carried streams, bits and perplexity."""

from __future__ import annotations

import math

import torch


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
