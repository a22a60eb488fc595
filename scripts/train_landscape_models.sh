#!/usr/bin/env bash
# Trains the landscapes models of the four-method comparison on the same procedural landscapes,
# one after the other for the same wall time each: SPADE with the image encoder (the bundled
# model's recipe), the pix2pixHD baseline, CLADE (SPADE's generator with per-class γ, β) and OASIS
# (3-D noise, a segmenting discriminator); then exports all at the same step (the largest
# checkpointed step every run reached) as float16 inference checkpoints. (The CPU command that
# produced src/spadegan/weights/landscapes/ is in docs/results.md.)
#
#   bash scripts/train_landscape_models.sh WORK_DIR [MINUTES]     (MINUTES per model)
#
# The runs take turns: two training processes on one GPU are time-sliced, not run side by side,
# and each then ran several times slower than alone (H100: 0.2 s/iteration alone; 0.3 and 1.6
# s/iteration for two runs sharing it).
#
# Environment: METHODS (default "spade pix2pixhd clade oasis"), SPADE (the command, default `spadegan`), COUNT (training samples, default 3000),
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
run() {  # NAME OPTIONS...: one training run, its log beside the runs
    local name=$1; shift
    $spade train --name "$name" "$@" "${common[@]}" > "$work/${name}_train.log" 2>&1 \
        || { tail -n 30 "$work/${name}_train.log"; exit 1; }
}
methods=${METHODS:-spade pix2pixhd clade oasis}
runs=()
for method in $methods; do
    case $method in
        spade) run spade_landscapes --netG spade --use_vae --ngf 16 --spade_hidden 64 --z_dim 256 \
                   --norm_G "$spade_norm" --lambda_l1 "${LAMBDA_L1:-0}" --l1_downsample 16 "${spade_path[@]}" ;;
        pix2pixhd) run pix2pixhd_landscapes --netG pix2pixhd --ngf 18 ;;
        # CLADE: the SPADE recipe with a per-class γ, β instead of the label networks.
        clade) run clade_landscapes --netG spade --norm_mode clade --use_vae --ngf 16 --z_dim 256 \
                   --norm_G "$spade_norm" --lambda_l1 "${LAMBDA_L1:-0}" --l1_downsample 16 ;;
        # OASIS at ngf 16: 13.2 M generator parameters (its label networks are 128 wide, as
        # official), beside SPADE + encoder's 14.9 M; its own losses (no VGG, LabelMix), the
        # official Adam settings; --ndf sets its U-Net discriminator's width (64: official).
        oasis) run oasis_landscapes --netG oasis --ngf 16 --norm_G "$spade_norm" "${spade_path[@]}" ;;
        *) echo "unknown method $method (spade, pix2pixhd, clade, oasis)"; exit 1 ;;
    esac
    runs+=("${method}_landscapes")
done

# The same step for all: the largest multiple of $every that every run checkpointed.
last_step() { sed -n 's/^step_0*\([0-9][0-9]*\)$/\1/p' <(ls "$1") | sort -n | tail -n 1; }
common_step=
for name in "${runs[@]}"; do
    last=$(last_step "$work/runs/$name/checkpoints")
    echo "$name reached step $last"
    if [ -z "$common_step" ] || [ "$last" -lt "$common_step" ]; then common_step=$last; fi
done
common_step=$(( common_step / every * every ))
echo "all exported at step $common_step"
step_name=$(printf "step_%08d" "$common_step")
for name in "${runs[@]}"; do
    $spade export "$work/runs/$name/checkpoints/$step_name" --inference "$work/export/$name" --half
done
