#!/usr/bin/env bash
# Set up (idempotent) and run the main job: synthesize images from label maps with a checkpoint.
# Until a trained model ships with the package, it uses the official-layout checkpoint recorded
# from the official implementation in ../shared/fixtures (random weights: the pictures show that
# the pipeline runs end to end and matches the official networks, not a trained model).
#   SPADE_DEMO_CHECKPOINT  checkpoint folder (opt.txt + latest_net_G.pth)
#   SPADE_DEMO_OUT         output folder (default: outputs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
checkpoint=${SPADE_DEMO_CHECKPOINT:-../shared/fixtures/official_spade/cityscapes_like_checkpoint}
out=${SPADE_DEMO_OUT:-outputs/demo}
if [ ! -d "$checkpoint" ]; then
  echo "no checkpoint folder at $checkpoint: set SPADE_DEMO_CHECKPOINT to an official SPADE checkpoint folder" >&2
  exit 1
fi
.venv/bin/spade synthesize "$checkpoint"/input_label_*.png \
  --instances "$checkpoint"/input_instance_*.png \
  --checkpoint "$checkpoint" --out "$out" --gpu_ids "${SPADE_GPU_IDS:--1}"
echo "open $out/index.html"
