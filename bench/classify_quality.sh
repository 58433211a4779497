#!/usr/bin/env bash
# Train a `folio classify` recipe on the embedded IMDb reviews and end with the
# `folio classify evaluate --json` line for the held-out test set (a stratified 10%, seed 0).
#
#   bench/classify_quality.sh OUT_DIR [RECIPE]
#
# RECIPE: glove (default, the best), scratch (no pretrained vectors), nomask (scratch without masks:
# the masking ablation), minilm (fine-tunes the pretrained MiniLM encoder end to end, its own WordPiece
# tokenizer, first 64 + last 192 tokens, about an hour), sentence (frozen MiniLM sentence vectors, first 256 tokens,
# under a trained head with one hidden layer: the book's TF-Hub nnlm-en-dim50 recipe), ulmfit (first a
# word-level GRU language model on the training reviews' text, `folio lm --corpus imdb`, then a classifier
# started from it with discriminative learning rates), elmo (first ELMo's biLM, `folio lm train --arch bilm`, on the
# training reviews' text, step-bounded; then the scratch recipe's classifier reading, beside its own embedding, the
# frozen biLM's layers through a mix it learns: `--features`), elmo_glove (the same biLM, trained only where
# OUT holds none yet, and GloVe vectors as the classifier's own embedding beside the mix: Peters et al.'s task
# models read [GloVe; ELMo]). Extra training flags may follow the recipe,
# e.g. `--max-time 1200`.
# FOLIO overrides the command (default: folio). Run it niced on a shared machine:
#   OMP_NUM_THREADS=1 nice -n 19 bench/classify_quality.sh runs/bench glove
set -euo pipefail
OUT=${1:?usage: bench/classify_quality.sh OUT_DIR [glove|scratch|nomask|minilm|sentence|ulmfit|elmo|elmo_glove] [extra train flags]}
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
  # A transformer reads ~50x the FLOPs per token of the GRU: 450 steps of 32 reviews (0.64 epoch, about
  # an hour on 2 cores), each cut to its first 64 and last 192 WordPiece tokens; validation (2,250
  # reviews) runs once, at the end.
  minilm)  FLAGS=(--arch transformer --init-from minilm --pooling mean --dropout 0.1 --max-len 256 --truncation head_tail
                  --batch-size 32 --lr 1e-4 --warmup-steps 40 --max-steps 450 --max-time 14400 --eval-every 1000000
                  --log-every 10) ;;
  sentence) FLAGS=(--encoder minilm --encoder-max-length 256 --head-hidden 256 --dropout 0.2 --lr 1e-3
                   --max-steps 3000 --eval-every 300) ;;
  # ULMFiT: the language model (600 steps of 64 windows of 64 words, half a pass over the 4.2M training
  # words; its 11,001-way softmax makes a step cost ~70 GFLOP) decides the tokenizer (10,000 words + 1,000 buckets, lower-cased), the embedding
  # (128) and the recurrent layer (one GRU, 256 units, left to right); the classifier adds max+mean
  # pooling and a head, and learns with the head at lr and each layer below 2.6 times slower.
  ulmfit)  FLAGS=(--init-from "$OUT/ulmfit_lm" --layer-lr-decay 2.6 --lr 5e-3) ;;
  # ELMo: the biLM (5,000 steps of 32 random windows of 64 words: 10M tokens, 2.4 times the training reviews' 4.2M;
  # two LSTM layers of 256 a direction, 10,000 words + 1,000 buckets, lower-cased, trained with ELMo's sampled
  # softmax over 1,024 ids, about 50 minutes on one core) decides the tokenizer; the classifier is the scratch
  # recipe's, with the biLM's 3 layers of 512 mixed beside its 128-d embedding (about 20 minutes on two cores).
  elmo)    FLAGS=(--features "$OUT/elmo_bilm" --embedding-dim 128 --eval-every 100) ;;
  elmo_glove) FLAGS=(--features "$OUT/elmo_bilm" --embeddings glove) ;;
  *) echo "unknown recipe $RECIPE (glove, scratch, nomask, minilm, sentence, ulmfit, elmo or elmo_glove)" >&2; exit 2 ;;
esac

MODEL="$OUT/$RECIPE"
mkdir -p "$OUT"
start=$(date +%s)
if [ "$RECIPE" = ulmfit ]; then
  "${FOLIO_CMD[@]}" lm train --corpus imdb --out "$OUT/ulmfit_lm" --tokenizer word --lower --vocab-size 10000 \
    --oov-buckets 1000 --embedding-dim 128 --layers 1 --hidden 256 --dropout 0.2 --seq-len 64 --batch-size 64 \
    --lr 3e-3 --warmup-steps 50 --max-steps 600 --max-time 7200 --eval-every 300 --log-every 50 --seed 0 \
    --sample-temperatures 0.8 --sample-prompt "this movie" --sample-length 40 2> >(tee "$OUT/ulmfit_lm.train.log" >&2)
  "${FOLIO_CMD[@]}" lm evaluate --model "$OUT/ulmfit_lm" --corpus imdb --split test --streams 16 --json
fi
if [ "$RECIPE" = elmo ] || { [ "$RECIPE" = elmo_glove ] && [ ! -f "$OUT/elmo_bilm/model.safetensors" ]; }; then
  "${FOLIO_CMD[@]}" lm train --corpus imdb --out "$OUT/elmo_bilm" --arch bilm --tokenizer word --lower --vocab-size 10000 \
    --oov-buckets 1000 --layers 2 --hidden 256 --dropout 0.1 --seq-len 64 --batch-size 32 --lr 3e-3 --warmup-steps 100 \
    --softmax-samples 1024 --max-steps 5000 --max-time 7200 --eval-every 1000 --log-every 100 --seed 0 2> >(tee "$OUT/elmo_bilm.train.log" >&2)
  "${FOLIO_CMD[@]}" lm evaluate --model "$OUT/elmo_bilm" --corpus imdb --split test --json
fi
"${FOLIO_CMD[@]}" classify train --out "$MODEL" "${COMMON[@]}" "${FLAGS[@]}" "$@" 2> >(tee "$OUT/$RECIPE.train.log" >&2)
end=$(date +%s)
echo "recipe $RECIPE: training took $((end - start)) s wall-clock on a machine with $(nproc --all) CPUs ($(uname -m))" >&2
"${FOLIO_CMD[@]}" classify evaluate --model "$MODEL" --data imdb --split test --json
