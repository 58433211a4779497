#!/usr/bin/env bash
# Quality recipe for a character-level GPT (`folio lm train --arch gpt`) on tiny Shakespeare (case kept,
# 90/5/5 split), within 30 minutes of training on a 2-core CPU. Last line: the
# `folio lm evaluate --split test --json` output.
#
#   bash bench/gpt_quality.sh CORPUS_PATH OUT_DIR [extra `folio lm train` flags]
#
# The same harness as bench/lm_quality.sh (two single-thread data-parallel processes, warm-up and cosine
# decay over the time budget, weight averaging, best checkpoint by validation loss), with a GPT in place
# of the GRU: 4 pre-LN blocks, width 192, 6 heads, rotary positions over a 256-character context, 8
# windows per process; Muon (lr 0.02) for the hidden matrices and AdamW (lr 1e-3, weight decay 0.1) for
# the rest; bf16 autocast; dropout 0.1 on the embeddings and sub-layer outputs, none inside them.
# The test split (the corpus's last 5%) is mostly The Tempest, a play absent from training, so a long
# context (new names and phrases copied from earlier in the scene) matters there more than in validation.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash bench/gpt_quality.sh CORPUS_PATH OUT_DIR [folio lm train flags]" >&2; exit 2; }
corpus=$1 out=$2
shift 2
exec bash "$(dirname "$0")/lm_quality.sh" "$corpus" "$out" --arch gpt --layers 4 --hidden 192 --heads 6 \
  --seq-len 256 --no-stateful --batch-size 8 --positions rope --dropout 0.1 --inner-dropout 0 \
  --optimizer muon --muon-lr 0.02 --lr 1e-3 --weight-decay 0.1 --min-lr-ratio 0.1 --precision bf16 \
  --eval-every 400 "$@"
