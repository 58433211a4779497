"""How the cost of a quantized product grows with the rows it multiplies: what batching concurrent requests
can save (issue 25: 8 clients against one stream).

    .venv/bin/python bench/int4_rows.py [--threads 1]

For SmolLM2's shapes (576 → 1536, the feed-forward's; 576 → 49152, the head), one to eight rows of input:
Folio's int4 layer (`folio.nn.quant.Int4Linear`: its AVX2 kernel, float32 input) and float32 `F.linear`, best of 30. A
step of 8 streams costs `t(8)`, 8 steps of one stream `8·t(1)`: the ratio is the most that batching 8 streams
can gain from the matrix work. Prints the CPU's model and flags first.
"""

from __future__ import annotations

import argparse
import platform
import subprocess

import torch
from torch.nn import functional as F

from folio.nn.quant import Int4Linear, _best_seconds


def cpu() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    flags = [f for f in fields.get("Flags", "").split() if f.startswith(("avx", "amx", "fma", "f16c"))]
    return f"{fields.get('Model name', '?').strip()}; {' '.join(flags)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu()}; torch {torch.__version__}, {args.threads} thread(s)")
    for rows, cols in [(1536, 576), (49152, 576)]:
        torch.manual_seed(0)
        weight = torch.randn(rows, cols) * 0.02
        layer = Int4Linear.from_float(weight)
        times = {}
        for m in (1, 2, 4, 8):
            x = torch.randn(m, cols)
            times[m] = (_best_seconds(lambda x=x, layer=layer: layer(x), 30),
                        _best_seconds(lambda x=x, weight=weight: F.linear(x, weight), 30))
        for name, i in (("int4", 0), ("fp32", 1)):
            cells = "  ".join(f"{m} rows {t[i] * 1e6:7.0f} µs" for m, t in times.items())
            print(f"{cols}→{rows} {name}: {cells}  | 8 rows save {8 * times[1][i] / times[8][i]:.2f}x")


if __name__ == "__main__":
    main()
