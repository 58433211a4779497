#!/usr/bin/env bash
# Pretrain a small BERT on the IMDb training reviews (`folio lm train --corpus imdb`, one review a line) and
# end with the `folio lm evaluate --json` line for the test split (the reviews that end in the corpus's
# last 5%, which neither recipe trained on).
#
#   bench/nsp_quality.sh OUT_DIR [RECIPE] [extra train flags]
#
# RECIPE: mlm+nsp (default: BERT's masked LM plus next-sentence prediction over [CLS] A [SEP] B [SEP]
# pairs of sentence runs, B the true continuation half of the time and a run from another review
# otherwise) or mlm (masked LM alone, over 128-token windows of the token stream). Both read the same
# words (top 10,000, lower-cased, + 1,000 hashed buckets: the same fitted tokenizer), the same model
# (4 blocks of width 128, 4 heads, 128 positions) and the same budget: 20 minutes of training
# (`--max-time 1200`, validation included; the learning rate's warm-up and cosine decay follow the clock).
#
# The last line's figures: "loss" is the masked-token loss on 128-token windows of the test split's token
# stream, masked with a fixed seed: the same windows, positions and replacements for both recipes (the
# figure to compare). For mlm+nsp it also holds "nsp_accuracy" (fixed pairs of the test reviews, IsNext
# and NotNext in turn: 0.5 is chance), "nsp_loss" and "masked_loss" (masked-token loss on those pairs).
# FOLIO overrides the command (default: folio). Run it niced on a shared machine:
#   OMP_NUM_THREADS=2 nice -n 19 bench/nsp_quality.sh runs/nsp mlm+nsp
set -euo pipefail
OUT=${1:?usage: bench/nsp_quality.sh OUT_DIR [mlm+nsp|mlm] [extra train flags]}
RECIPE=${2:-mlm+nsp}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")/.." && pwd)
default_folio=folio
[ -x "$here/.venv/bin/folio" ] && default_folio=$here/.venv/bin/folio
read -r -a FOLIO_CMD <<< "${FOLIO:-$default_folio}"

case "$RECIPE" in
  mlm+nsp|mlm) ;;
  *) echo "unknown recipe $RECIPE (mlm+nsp or mlm)" >&2; exit 2 ;;
esac
NAME=${RECIPE/+/_}  # mlm_nsp or mlm: the model's directory under OUT
COMMON=(--corpus imdb --arch bert --objective "$RECIPE" --tokenizer word --lower --vocab-size 10000 --oov-buckets 1000
        --layers 4 --hidden 128 --heads 4 --context 128 --seq-len 128 --dropout 0.1 --mask-prob 0.15
        --batch-size 32 --lr 1e-3 --warmup-steps 100 --max-time 1200 --eval-every 300 --log-every 50 --seed 0)

MODEL="$OUT/$NAME"
mkdir -p "$OUT"
start=$(date +%s)
"${FOLIO_CMD[@]}" lm train --out "$MODEL" "${COMMON[@]}" "$@" 2> >(tee "$OUT/$NAME.train.log" >&2)
end=$(date +%s)
echo "recipe $RECIPE: training took $((end - start)) s wall-clock (data included) on a machine with $(nproc --all) CPUs ($(uname -m))" >&2
"${FOLIO_CMD[@]}" lm evaluate --model "$MODEL" --corpus imdb --split test --json
