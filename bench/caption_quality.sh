#!/usr/bin/env bash
# Train the captioning recipe for one data set and print the held-out `folio caption evaluate --json` line last.
#
#   bench/caption_quality.sh scenes OUT_DIR    # synthetic 2-4 shape scenes, a CNN from scratch + soft-attention
#                                              # LSTM; reports exact match, BLEU-4 and localization (target
#                                              # >= 0.5) beside the uniform-attention baseline, on 1,000 new scenes
#   bench/caption_quality.sh easyvqa OUT_DIR   # easy-vqa's 64x64 images, the pretrained EfficientNet-Lite0
#                                              # (frozen, its stride-16 map of a 128x128 input: an 8x8 grid);
#                                              # reports caption accuracy on the package's 1,000 test images
#
# Extra arguments go to `folio caption train` (e.g. --max-steps 100 for a smoke run). The runs are bounded by
# steps, with a time cap far above what a quiet 2-core CPU needs, so a busy machine changes the time, not the model.
# It prints the training wall-clock and CPU seconds, then the JSON line.
set -euo pipefail
data=${1:?usage: bench/caption_quality.sh scenes|easyvqa OUT_DIR [folio caption train flags]}
out=${2:?usage: bench/caption_quality.sh scenes|easyvqa OUT_DIR [folio caption train flags]}
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}
folio=("$python" -m folio.cli)

case "$data" in
  scenes)
    recipe=(--data scenes --scenes-train 20000 --channels 32 64 128 --hidden 256 --feature-dim 128
            --batch-size 64 --lr 2e-3 --warmup-steps 100 --max-steps 2000 --max-time 7200
            --eval-every 250 --save-every 250 --log-every 25) ;;
  easyvqa)
    recipe=(--data easyvqa --encoder efficientnet_lite0 --encoder-stage stride16 --image-size 128
            --hidden 128 --feature-dim 128 --batch-size 64 --lr 2e-3 --warmup-steps 50 --max-steps 600
            --max-time 7200 --eval-every 100 --save-every 100 --log-every 20) ;;
  *) echo "bench/caption_quality.sh: data must be scenes or easyvqa, not '$data'" >&2; exit 2 ;;
esac

mkdir -p "$out"
start=$(date +%s.%N)
/usr/bin/time -f "%U %S" -o "$out.cpu" "${folio[@]}" caption train "${recipe[@]}" --out "$out" "$@" >&2
end=$(date +%s.%N)
read -r user sys < "$out.cpu"
echo "train wall_s $(echo "$end - $start" | bc) cpu_s $(echo "$user + $sys" | bc); curve: $out/training_curve.png" >&2
"${folio[@]}" caption evaluate --model "$out" --split test --output "$out/test_captions.tsv" --json
