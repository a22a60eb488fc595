#!/usr/bin/env bash
# Short, comparable training runs of SPADE + image encoder on procedural landscapes, one per
# recipe, each for the same wall time, then every run's EMA generator scored by the style
# benchmark and the segmenter (`spadegan evaluate --style_metrics`): which training terms make the
# generator follow its style code.
#
#   bash scripts/style_recipes.sh WORK_DIR MINUTES [RECIPE...]
#
# Recipes (default: all): baseline (the paper's objective without VGG: hinge, feature matching,
# KL), latent (+ latent regression, --lambda_latent 1), latent_ms (+ mode seeking, --lambda_ms 1),
# l1 (+ the pooled L1 term, --lambda_l1 10 --l1_downsample 8), l1_latent (both: BicycleGAN's pair
# of a reconstruction term, which teaches the encoder to read pictures, and latent regression,
# which makes the generator show the code), zmod_l1 (l1 with --z_modulation: the code also scales
# and shifts every generator block's input), zmod_l1_lat (zmod_l1 with latent regression that
# also trains the encoder, --lambda_latent 1 --latent_trains_encoder), class_frozen (a trained generator
# held fixed while a per-class modulation by the code and the encoder learn to follow the references'
# colours: --class_modulation --freeze_generator, the region and latent terms, KL weight 0.002; needs
# FROM, with FRESH=encoder EXTRA="--norm_E spectral"). Runs resume where they stopped
# (--continue_train), so MINUTES may be given again to train further.
#
# Environment: SPADE (the command, default `spadegan`), SIZE (default 64), LOAD_SIZE (default
# SIZE·9/8), COUNT (training samples, default 3000), GPU_IDS (default -1), BATCH (default 2),
# WORKERS (default 0), FROM (a checkpoint every run starts from, `--init_from`, instead of from
# scratch: e.g. the bundled model with SIZE=256 LOAD_SIZE=286), FRESH (with FROM: the networks that
# start fresh instead, `--init_fresh`, e.g. "encoder" for an encoder of another --norm_E), EXTRA
# (more options for every run, e.g. "--norm_E spectral").
set -euo pipefail
work=${1:?usage: style_recipes.sh WORK_DIR MINUTES [RECIPE...]}
minutes=${2:?usage: style_recipes.sh WORK_DIR MINUTES [RECIPE...]}
shift 2
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=(baseline latent latent_ms l1)
spade=${SPADE:-spadegan}
size=${SIZE:-64}
load_size=${LOAD_SIZE:-$((size * 9 / 8))}
count=${COUNT:-3000}
gpu=${GPU_IDS:--1}
batch=${BATCH:-2}
workers=${WORKERS:-0}
read -r -a extra <<< "${EXTRA:-}"

mkdir -p "$work"
for split in train:1:$count val:2:100; do
    IFS=: read -r name seed n <<< "$split"
    if [ ! -f "$work/$name/.complete" ]; then
        $spade landscapes --out "$work/$name" --count "$n" --size "$size" --seed "$seed"
        touch "$work/$name/.complete"
    fi
done

common=(--netG spade --use_vae --ngf 16 --spade_hidden 64 --z_dim 256 --norm_G spectralspadesyncbatch3x3
        --dataset_mode custom --label_dir "$work/train/train_label" --image_dir "$work/train/train_img"
        --label_nc 182 --contain_dontcare_label --no_instance --crop_size "$size" --load_size "$load_size"
        --ndf 32 --batchSize "$batch" --niter 100000 --no_vgg_loss --ema --max_minutes "$minutes"
        --save_latest_freq $((200 * batch)) --keep_checkpoints 2 --save_epoch_freq 100000
        --display_freq $((200 * batch)) --print_freq $((20 * batch)) --nThreads "$workers" --gpu_ids "$gpu"
        --checkpoints_dir "$work/runs" --no_progress "${extra[@]}")

for recipe in "${recipes[@]}"; do
    case $recipe in
        baseline) terms=() ;;
        latent) terms=(--lambda_latent 1) ;;
        latent_ms) terms=(--lambda_latent 1 --lambda_ms 1) ;;
        l1) terms=(--lambda_l1 10 --l1_downsample 8) ;;
        l1_latent) terms=(--lambda_l1 10 --l1_downsample 8 --lambda_latent 1) ;;
        zmod_l1) terms=(--lambda_l1 10 --l1_downsample 8 --z_modulation) ;;
        zmod_l1_lat) terms=(--lambda_l1 10 --l1_downsample 8 --z_modulation --lambda_latent 1 --latent_trains_encoder) ;;
        class_frozen) terms=(--class_modulation --freeze_generator --lambda_region 10 --lambda_latent 1
                             --latent_trains_encoder --lambda_kld 0.002 --ema_decay 0.99) ;;
        *) echo "unknown recipe $recipe (baseline, latent, latent_ms, l1, l1_latent, zmod_l1, zmod_l1_lat, class_frozen)" >&2
           exit 2 ;;
    esac
    resume=()
    if [ -n "${FROM:-}" ]; then
        resume=(--init_from "$FROM")
        [ -n "${FRESH:-}" ] && read -r -a fresh <<< "$FRESH" && resume+=(--init_fresh "${fresh[@]}")
    fi
    [ -d "$work/runs/$recipe/checkpoints" ] && resume=(--continue_train)
    shown="${terms[*]}"
    echo "== $recipe: ${shown:-the paper terms only}, $minutes min"
    $spade train --name "$recipe" "${common[@]}" "${terms[@]}" "${resume[@]}"
done

runs=()
for recipe in "${recipes[@]}"; do runs+=("$work/runs/$recipe"); done
$spade evaluate --dataroot "$work/val" --no_fid --style_metrics --out "$work/eval" --gpu_ids "$gpu" \
    --checkpoint "${runs[@]}" --name "${recipes[@]}"
