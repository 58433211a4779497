#!/usr/bin/env bash
# Quality recipe for `folio lm` on tiny Shakespeare (case kept, 90/5/5 split), within 30 minutes of
# training on a 2-core CPU. Last line: the `folio lm evaluate --split test --json` output.
#
#   bash bench/lm_quality.sh CORPUS_PATH OUT_DIR [extra `folio lm train` flags]
#
# Recipe: a 2x512 GRU (one-hot input, dropout 0.3 between the layers, none before the output layer),
# stateful training (the hidden state carried across consecutive 100-character windows, as it is at
# evaluation), AdamW at 2e-3 with warm-up and a cosine decay over the time budget, gradient clipping
# at 1, AdamW weight decay 0.1, and an exponential moving average of the weights (decay 0.998, about the last 500 steps) that is
# what gets validated and saved. It runs as two data-parallel processes of one thread each (32 streams
# per process, 64 in all), which uses a 2-core CPU better than one process with two threads. The best
# checkpoint by validation loss is evaluated on the test split, read as one stream.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash bench/lm_quality.sh CORPUS_PATH OUT_DIR [folio lm train flags]" >&2
  exit 2
fi
corpus=$1
out=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
[ -x "$py" ] || py=python3
max_time=${FOLIO_MAX_TIME:-1740}   # seconds of training; startup and the final evaluation come on top
start=$(date +%s)
OMP_NUM_THREADS=1 "$py" -m torch.distributed.run --standalone --nproc_per_node=2 -m folio.cli lm train \
  --corpus "$corpus" --out "$out" --arch gru --layers 2 --hidden 512 --embedding-dim 0 \
  --dropout 0.3 --output-dropout 0 \
  --seq-len 100 --batch-size 32 --stateful --lr 2e-3 --warmup-steps 100 --min-lr-ratio 0.05 \
  --grad-clip 1.0 --weight-decay 0.1 --ema-decay 0.998 --eval-every 200 --save-every 200 --log-every 20 \
  --max-time "$max_time" --device cpu --seed 0 --sample-temperatures "$@" >&2
echo "trained in $(( $(date +%s) - start )) s (wall clock, with start-up); curve: $out/training_curve.png" >&2
"$py" -m folio.cli lm evaluate --model "$out" --corpus "$corpus" --split test --json
