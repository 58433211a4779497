"""Training speed of the character GPT on one CPU thread (what each of bench/gpt_quality.sh's two
processes gets): tokens/s of a whole step (forward, backward, optimizer) for each way of running it,
all measured in the same run, with the ratio to the first.

    .venv/bin/python bench/gpt_train_step.py [--steps 15] [--batch-size 16] [--seq-len 128]

Rows: fp32 with dropout 0.1 (the recipe before bf16), then without dropout, then bf16 autocast with
PyTorch's fused attention kernel forced and with Folio's choice (the unfused path for bf16 training on
CPU), then Muon in place of AdamW for the hidden matrices.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import folio.nn.multihead_attention as attention_layers
from folio.models.gpt import GPT, GPTConfig
from folio.runtime import threads
from folio.training.config import TrainConfig, make_optimizer

folio_choice = attention_layers._kernel_for
ROWS = [  # label, dropout, bf16, force the fused kernel, optimizer
    ("fp32, dropout 0.1", 0.1, False, False, "adamw"),
    ("fp32, no dropout", 0.0, False, False, "adamw"),
    ("bf16, fused attention kernel", 0.0, True, True, "adamw"),
    ("bf16, Folio's kernel choice", 0.0, True, False, "adamw"),
    ("bf16, Folio's kernel choice, Muon", 0.0, True, False, "muon"),
]


def tokens_per_second(dropout: float, bf16: bool, fused: bool, optimizer: str, args) -> float:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, layers=4, heads=6, hidden=192, context=args.seq_len, dropout=dropout)).train()
    config = TrainConfig(lr=1e-3, max_steps=1, optimizer=optimizer)
    opt = make_optimizer([{"params": list(model.parameters()), "lr_scale": 1.0}], model, config)
    ids = torch.randint(0, 65, (args.batch_size, args.seq_len + 1))
    batch = type("Batch", (), {"inputs": ids[:, :-1], "targets": ids[:, 1:]})

    # Folio picks the kernel inside each attention call; the fused row replaces that choice
    attention_layers._kernel_for = (lambda q: sdpa_kernel(SDPBackend.FLASH_ATTENTION)) if fused else folio_choice

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch_size * args.seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    print(f"GPT 4x192, 6 heads, batch {args.batch_size} x {args.seq_len} tokens, 1 thread, {args.steps} steps per row")
    first = None
    with threads(1):
        for label, dropout, bf16, fused, optimizer in ROWS:
            rate = tokens_per_second(dropout, bf16, fused, optimizer, args)
            first = first or rate
            print(f"{label:<36} {rate:8,.0f} tokens/s  {rate / first:5.2f}x", flush=True)
    attention_layers._kernel_for = folio_choice


if __name__ == "__main__":
    main()
