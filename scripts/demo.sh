#!/usr/bin/env bash
# Set up (idempotent) and run the main job: synthesize pictures from label maps with the model
# bundled in the package (SPADE + image encoder trained on the procedural landscapes).
# It draws a few landscape label maps (held out from training: another seed), synthesizes three
# samples of each (three random styles, paper Fig. 9) and one set in the style of a reference
# picture (Fig. 1), and writes HTML galleries.
#   SPADE_DEMO_OUT         output folder (default: outputs/demo)
#   SPADE_DEMO_CHECKPOINT  another checkpoint folder (ours, a run folder or an official one)
#   SPADE_GPU_IDS          -1 (CPU, default) or a GPU id
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${SPADE_DEMO_OUT:-outputs/demo}
checkpoint=()
[ -n "${SPADE_DEMO_CHECKPOINT:-}" ] && checkpoint=(--checkpoint "$SPADE_DEMO_CHECKPOINT")
gpu=${SPADE_GPU_IDS:--1}
.venv/bin/spadegan landscapes --out "$out/scenes" --count 6 --size 256 --seed 2026
.venv/bin/spadegan synthesize "$out/scenes/train_label" "${checkpoint[@]}" --samples 3 --seed 0 \
  --out "$out/samples" --gpu_ids "$gpu"
.venv/bin/spadegan synthesize "$out/scenes/train_label" "${checkpoint[@]}" \
  --style "$out/scenes/train_img/$(ls "$out/scenes/train_img" | head -n 1)" --seed 0 \
  --out "$out/styled" --gpu_ids "$gpu"
echo "open $out/samples/index.html (three styles of each scene) and $out/styled/index.html (one reference style)"
