#!/usr/bin/env bash
# Train a `folio classify` recipe on the embedded IMDb reviews and end with the
# `folio classify evaluate --json` line for the held-out test set (a stratified 10%, seed 0).
#
#   bench/classify_quality.sh OUT_DIR [RECIPE]
#
# RECIPE: glove (default, the best), scratch (no pretrained vectors), nomask (scratch without masks:
# the masking ablation), minilm (fine-tunes the pretrained MiniLM encoder end to end, its own WordPiece
# tokenizer, first 256 tokens, 1 hour by default). Extra training flags may follow the recipe,
# e.g. `--max-time 1200`.
# FOLIO overrides the command (default: folio). Run it niced on a shared machine:
#   OMP_NUM_THREADS=1 nice -n 19 bench/classify_quality.sh runs/bench glove
set -euo pipefail
OUT=${1:?usage: bench/classify_quality.sh OUT_DIR [glove|scratch|nomask] [extra train flags]}
RECIPE=${2:-glove}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")/.." && pwd)
default_folio=folio
[ -x "$here/.venv/bin/folio" ] && default_folio=$here/.venv/bin/folio
read -r -a FOLIO_CMD <<< "${FOLIO:-$default_folio}"

# Shared by every recipe: whole reviews cut to 400 words, top 20,000 words + 1,000 hashed buckets,
# a bidirectional GRU (64 units a direction), max+mean pooling over real tokens, 950 steps (3 epochs);
# the schedule follows steps, not time (--max-time is only a safety cap).
COMMON=(--data imdb --vocab-size 20000 --oov-buckets 1000 --max-len 400 --hidden 64 --pooling max_mean
        --dropout 0.3 --batch-size 64 --lr 3e-3 --warmup-steps 100 --max-steps 950 --max-time 7200 --eval-every 200
        --log-every 50 --seed 0)
case "$RECIPE" in
  glove)   FLAGS=(--embeddings glove) ;;
  scratch) FLAGS=(--embedding-dim 128 --vocab-size 10000 --eval-every 100) ;;  # the book's 10,000 words overfit less
  nomask)  FLAGS=(--embedding-dim 128 --vocab-size 10000 --eval-every 100 --no-mask) ;;
  # A transformer reads ~50x the FLOPs per token of the GRU: the schedule follows time, and validation
  # (2,250 reviews) runs once, at the end.
  minilm)  FLAGS=(--arch transformer --init-from minilm --pooling mean --dropout 0.1 --max-len 256 --batch-size 32
                  --lr 5e-5 --warmup-steps 50 --max-steps 1000000 --max-time 3600 --eval-every 1000000 --log-every 10) ;;
  *) echo "unknown recipe $RECIPE (glove, scratch, nomask or minilm)" >&2; exit 2 ;;
esac

MODEL="$OUT/$RECIPE"
mkdir -p "$OUT"
start=$(date +%s)
"${FOLIO_CMD[@]}" classify train --out "$MODEL" "${COMMON[@]}" "${FLAGS[@]}" "$@" 2> >(tee "$OUT/$RECIPE.train.log" >&2)
end=$(date +%s)
echo "recipe $RECIPE: training took $((end - start)) s wall-clock on a machine with $(nproc --all) CPUs ($(uname -m))" >&2
"${FOLIO_CMD[@]}" classify evaluate --model "$MODEL" --data imdb --split test --json
