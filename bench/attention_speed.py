"""Scaled dot-product attention: PyTorch's fused `scaled_dot_product_attention` against the written-out
reference path (softmax(q kᵀ/√d) v with the weights materialised), causal, forward and backward.

    .venv/bin/python bench/attention_speed.py [--lengths 128 512 2048] [--batch 4] [--heads 6] [--head-dim 32]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from folio.nn.multihead_attention import scaled_dot_product_attention


def timed(fn, repeats: int) -> float:
    """Median wall-clock seconds of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, heads {args.heads}, head dim {args.head_dim}, causal")
    for length in args.lengths:
        shape = (args.batch, args.heads, length, args.head_dim)
        q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        row = {"length": length}
        for name, need_weights in (("sdpa", False), ("reference", True)):
            def step(q=q, k=k, v=v, need_weights=need_weights):
                out, _ = scaled_dot_product_attention(q, k, v, causal=True, need_weights=need_weights)
                out.sum().backward()

            row[f"{name}_ms"] = round(1000 * timed(step, args.repeats), 2)
        row["speedup"] = round(row["reference_ms"] / row["sdpa_ms"], 2)
        print(f"T={length:5d}: sdpa {row['sdpa_ms']:9.2f} ms, reference {row['reference_ms']:9.2f} ms, "
              f"{row['speedup']}x (forward + backward)")
        print(json.dumps(row))


if __name__ == "__main__":
    main()
