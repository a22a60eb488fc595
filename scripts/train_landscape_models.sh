#!/usr/bin/env bash
# Trains the bundled landscapes model (SPADE with the image encoder) and the pix2pixHD baseline
# on the same procedural landscapes, one after the other for the same wall time each, then exports
# both at the same step (the largest checkpointed step both reached) as float16 inference
# checkpoints. (The CPU command that produced src/spadegan/weights/landscapes/ is in docs/results.md.)
#
#   bash scripts/train_landscape_models.sh WORK_DIR [MINUTES]     (MINUTES per model)
#
# The runs take turns: two training processes on one GPU are time-sliced, not run side by side,
# and each then ran several times slower than alone (H100: 0.2 s/iteration alone; 0.3 and 1.6
# s/iteration for two runs sharing it).
#
# Environment: SPADE (the command, default `spadegan`), COUNT (training samples, default 3000),
# DATA_SEED (default 1), GPU_IDS (default 0, -1 for the CPU), WORKERS (data-loading processes per
# run, default 6), NDF (discriminator width, default 64), BATCH (default 16), SPADE_NORM;
# EVERY (checkpoint interval in iterations, default 100); LAMBDA_L1 (default 0, off: the weight of
# the pooled L1 term, `--lambda_l1`, a possible stand-in for the VGG loss; not shown to help yet);
# VGG19_WEIGHTS (a torchvision vgg19 weights file; both runs then train with the paper's VGG
# loss, which SPADE's encoder needs to be used; default: none, no VGG loss).
set -euo pipefail
work=${1:?usage: train_landscape_models.sh WORK_DIR [MINUTES]}
minutes=${2:-7}
spade=${SPADE:-spadegan}
count=${COUNT:-3000}
data_seed=${DATA_SEED:-1}
gpu=${GPU_IDS:-0}
workers=${WORKERS:-6}
ndf=${NDF:-64}
# With a batch of 1, batch norm in train mode normalizes each image alone but eval mode uses
# running averages; instance norm (SPADE_NORM=spectralspadeinstance3x3) is the same in both.
spade_norm=${SPADE_NORM:-spectralspadesyncbatch3x3}
batch=${BATCH:-16}
every=${EVERY:-100}  # checkpoint every 100 iterations, so both models can be taken at the same step

mkdir -p "$work"
if [ ! -f "$work/data/.complete" ]; then
    $spade landscapes --out "$work/data" --count "$count" --size 256 --seed "$data_seed"
    touch "$work/data/.complete"
fi

# Options both runs share: the data, the batch, the losses (VGG only with VGG19_WEIGHTS: its
# weights are a file the user passes in, never fetched), TTUR at the official rates, EMA, and the
# checkpoint rhythm.
vgg=(--no_vgg_loss)
if [ -n "${VGG19_WEIGHTS:-}" ]; then vgg=(--vgg_path "$VGG19_WEIGHTS"); fi
common=("${vgg[@]}" --dataset_mode custom --label_dir "$work/data/train_label" --image_dir "$work/data/train_img"
        --label_nc 182 --contain_dontcare_label --no_instance --crop_size 256 --load_size 286
        --ndf "$ndf" --batchSize $batch --niter 100000 --ema --max_minutes "$minutes"
        --save_latest_freq $((every * batch)) --keep_checkpoints 1000 --save_epoch_freq 100000
        --display_freq $((every * batch)) --print_freq $((10 * batch)) --nThreads "$workers"
        --gpu_ids "$gpu" --checkpoints_dir "$work/runs" --no_progress)

# SPADE + VAE (Sec. 3.3): ngf 16 and a 64-wide label network keep G + E at 14.9 M parameters
# (28 MB in float16); pix2pixHD at ngf 18 has 14.6 M, a comparable budget. On a GPU the SPADE
# label networks run as the plain convolutions (--reference_spade: no data-dependent shapes);
# on the CPU the exact fast path is faster.
spade_path=()
[ "$gpu" != "-1" ] && spade_path=(--reference_spade)
# Without the VGG loss, G(E(x)) is tied to x only by feature matching and the encoder may collapse
# to the prior; LAMBDA_L1 > 0 adds an L1 term on 16×16 thumbnails (SPADE only: the pix2pixHD
# baseline has no encoder).
$spade train --name spade_landscapes --netG spade --use_vae --ngf 16 --spade_hidden 64 --z_dim 256 \
    --norm_G "$spade_norm" --lambda_l1 "${LAMBDA_L1:-0}" --l1_downsample 16 \
    "${spade_path[@]}" "${common[@]}" > "$work/spade_train.log" 2>&1 \
    || { tail -n 30 "$work/spade_train.log"; exit 1; }
$spade train --name pix2pixhd_landscapes --netG pix2pixhd --ngf 18 \
    "${common[@]}" > "$work/pix2pixhd_train.log" 2>&1 \
    || { tail -n 30 "$work/pix2pixhd_train.log"; exit 1; }

# The same step for both: the largest multiple of $every that both runs checkpointed.
last_step() { sed -n 's/^step_0*\([0-9][0-9]*\)$/\1/p' <(ls "$1") | sort -n | tail -n 1; }
spade_last=$(last_step "$work/runs/spade_landscapes/checkpoints")
p2p_last=$(last_step "$work/runs/pix2pixhd_landscapes/checkpoints")
common_step=$(( (spade_last < p2p_last ? spade_last : p2p_last) / every * every ))
echo "SPADE reached step $spade_last, pix2pixHD $p2p_last: both exported at step $common_step"
step_name=$(printf "step_%08d" "$common_step")
for run in spade_landscapes pix2pixhd_landscapes; do
    $spade export "$work/runs/$run/checkpoints/$step_name" --inference "$work/export/$run" --half
done
