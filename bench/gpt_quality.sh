#!/usr/bin/env bash
# Quality recipe for a character-level GPT (`folio lm train --arch gpt`) on tiny Shakespeare (case kept,
# 90/5/5 split), within 30 minutes of training on a 2-core CPU. Last line: the
# `folio lm evaluate --split test --json` output.
#
#   bash bench/gpt_quality.sh CORPUS_PATH OUT_DIR [extra `folio lm train` flags]
#
# The same harness as bench/lm_quality.sh (two single-thread data-parallel processes, AdamW with warm-up
# and cosine decay over the time budget, best checkpoint by validation loss), with a GPT in place of the
# GRU: 4 pre-LN blocks, width 192, 6 heads, learned positions over a 128-character context (nanoGPT's
# CPU-sized shakespeare_char model), dropout 0.1, 16 windows per process.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash bench/gpt_quality.sh CORPUS_PATH OUT_DIR [folio lm train flags]" >&2; exit 2; }
corpus=$1 out=$2
shift 2
exec bash "$(dirname "$0")/lm_quality.sh" "$corpus" "$out" --arch gpt --layers 4 --hidden 192 --heads 6 \
  --seq-len 128 --no-stateful --batch-size 16 --dropout 0.1 --lr 1e-3 --weight-decay 0.1 --min-lr-ratio 0.1 "$@"
