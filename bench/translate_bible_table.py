"""The Bible comparison table from bench/translate_quality.sh bible OUT_DIR's JSON files.

    python bench/translate_bible_table.py OUT_DIR

Prints, per model (no attention, Luong general, Bahdanau, Transformer) and decoder (greedy, beam k=5): BLEU, chrF,
BLEU on verses longer than 30 words, and the training time; then whether attention beats no attention
by at least 3 BLEU points on those long verses (the issue's target).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> None:
    rows = {}
    print(f"{'model':<10} {'decoder':<8} {'BLEU':>6} {'chrF':>6} {'BLEU>30w':>9} {'n':>6}  training")
    for model in ("none", "luong", "bahdanau", "transformer"):
        timing = (out / f"{model}.log.time").read_text().strip() if (out / f"{model}.log.time").exists() else "?"
        for beam in (1, 5):
            path = out / f"{model}-beam{beam}.json"
            if not path.exists():
                continue
            report = json.loads(path.read_text().strip().splitlines()[-1])
            rows[(model, beam)] = report
            decoder = "greedy" if beam == 1 else f"beam{beam}"
            print(f"{model:<10} {decoder:<8} {report['bleu']:>6.2f} {report['chrf']:>6.2f} "
                  f"{report['bleu_long'] if report['bleu_long'] is not None else float('nan'):>9.2f} {report['n']:>6}  {timing}")
    base = rows.get(("none", 1))
    for model in ("luong", "bahdanau", "transformer"):
        if base and (model, 1) in rows:
            gain = rows[(model, 1)]["bleu_long"] - base["bleu_long"]
            print(f"{model} vs none, BLEU on >30-word verses (greedy): {gain:+.2f} ({'meets' if gain >= 3 else 'misses'} the +3 target)")
    if rows:
        print(f"signature: {next(iter(rows.values()))['signature']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
