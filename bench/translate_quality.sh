#!/usr/bin/env bash
# Train the translation recipe for one data set and print its test-set `folio translate evaluate --json` line last.
#
#   bench/translate_quality.sh dates OUT_DIR   # 1,000 steps (at most 7 min) on a 2-core CPU; target: exact match
#                                              # >= 99.5% on 2,000 unseen dates
#   bench/translate_quality.sh bible OUT_DIR   # no attention vs Bahdanau vs Luong (and the Transformer),
#                                              # same time budget each, greedy and beam k=5;
#                                              # BUDGET=seconds per model (default 1800), MODELS=which of
#                                              # "none luong bahdanau transformer" (default: the
#                                              # three recurrent ones; add transformer for issue 5),
#                                              # EVAL_LIMIT=N evaluates the first N test verses only (smoke runs)
#
# Run it niced on a shared machine: OMP_NUM_THREADS=1 nice -n 19 bench/translate_quality.sh dates /tmp/out
set -euo pipefail
data=${1:?usage: bench/translate_quality.sh dates|bible OUT_DIR}
out=${2:?usage: bench/translate_quality.sh dates|bible OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}
if folio translate --help >/dev/null 2>&1; then
  translate=(folio translate)
else  # until the CLI registers the task, the same parser through the module
  translate=("$python" -m folio.cli translate)
fi
mkdir -p "$out"

timed_train() {  # timed_train LOG ARGS...: trains, appends wall and CPU seconds to LOG.time
  local log=$1; shift
  local start=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$log.cpu" "${translate[@]}" train "$@" 2> "$log"
  local end=$(date +%s.%N)
  read -r user sys < "$log.cpu"
  echo "train wall_s $(echo "$end - $start" | bc) cpu_s $(echo "$user + $sys" | bc)" | tee "$log.time" >&2
}

case "$data" in
  dates)
    timed_train "$out/dates.log" --data dates --out "$out/dates" --tokenizer char \
      --cell gru --layers 1 --hidden 128 --embedding-dim 32 --bidirectional \
      --attention luong_general --no-input-feeding --dropout 0.1 \
      --batch-size 128 --lr 3e-3 --warmup-steps 100 --max-steps 1000 --max-time 420 \
      --eval-every 500 --log-every 100 --seed 0 --quiet
    "${translate[@]}" evaluate --model "$out/dates" --json --beam-size 1
    ;;
  bible)
    budget=${BUDGET:-1800}
    models=${MODELS:-none luong bahdanau}
    bible=(--data bible --tokenizer bpe --vocab-size 8000 --max-src-len 120 --batch-size 64 --max-time "$budget"
          --eval-every 250 --log-every 50 --seed 0 --quiet)
    rnn=("${bible[@]}" --cell gru --layers 1 --hidden 256 --embedding-dim 128 --bidirectional --dropout 0.2 --lr 2e-3)
    for model in $models; do
      case "$model" in
        none) timed_train "$out/none.log" "${rnn[@]}" --out "$out/none" --attention none ;;
        luong) timed_train "$out/luong.log" "${rnn[@]}" --out "$out/luong" --attention luong_general --no-input-feeding ;;
        bahdanau) timed_train "$out/bahdanau.log" "${rnn[@]}" --out "$out/bahdanau" --attention bahdanau --input-feeding ;;
        transformer)  # pre-LN, 3+3 blocks of width 256, label smoothing 0.1, warm-up then 1/sqrt(step)
          timed_train "$out/transformer.log" "${bible[@]}" --out "$out/transformer" --arch transformer --layers 3 \
            --hidden 256 --heads 4 --ff-dim 1024 --dropout 0.1 --lr 1e-3 --warmup-steps 200 --schedule inverse_sqrt ;;
        *) echo "unknown model '$model' in MODELS" >&2; exit 2 ;;
      esac
    done
    for model in $models; do
      for beam in 1 5; do
        "${translate[@]}" evaluate --model "$out/$model" --json --beam-size "$beam" --limit "${EVAL_LIMIT:-0}" \
          --by-length "$out/$model-beam$beam.png" | tee "$out/$model-beam$beam.json"
      done
    done
    "$python" "$here/bench/translate_bible_table.py" "$out" >&2
    cat "$out/$(echo "$models" | awk '{print $NF}')-beam5.json"
    ;;
  *)
    echo "unknown data set '$data': use dates or bible" >&2
    exit 2
    ;;
esac
