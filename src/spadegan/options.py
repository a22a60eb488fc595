"""Command-line options of ``spadegan train``: the official option names, resolved into a RunConfig.

A command line from the official README works as it is: every official training option is
accepted under its own name. Defaults resolve as the official code resolves them — per data set
(``--dataset_mode``), per generator (``--netG``), and the Adam betas per ``--no_TTUR`` — plus the
options of ours (EMA, mixed precision, channels-last, determinism, ``--max_steps``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .config import (OFFICIAL_DEFAULTS, DataConfig, LossConfig, RunConfig, TrainConfig,
                     model_config_from_options)
from .data import dataset_defaults

# Official options accepted for compatibility that change nothing here, with the reason.
ACCEPTED_WITHOUT_EFFECT = {
    "model": "one model class (pix2pix) exists",
    "phase": "training reads the train split",
    "display_winsize": "grids are saved at full size",
    "cache_filelist_write": "file lists are not cached",
    "cache_filelist_read": "file lists are not cached",
    "nef": "the official encoder uses --ngf, as here",
    "no_html": "the HTML page is small and always written",
    "tf_log": "TensorBoard logging is always on (see --no_tensorboard)",
    "debug": "use --max_steps and --max_dataset_size",
    "output_nc": "images have 3 channels",
}
_CHOICES = {"netG": ["spade", "oasis", "pix2pixhd"], "gan_mode": ["hinge", "ls", "original", "w"],
            "dataset_mode": ["coco", "ade20k", "cityscapes", "custom"],
            "num_upsampling_layers": ["normal", "more", "most"], "optimizer": ["adam"],
            "netD": ["multiscale"], "netD_subarch": ["n_layer"],
            "preprocess_mode": ["resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
                                "scale_shortside", "scale_shortside_and_crop", "fixed", "none"]}
_TRAIN_OPTIONS = [
    "name", "checkpoints_dir", "gpu_ids", "model", "norm_G", "norm_D", "norm_E", "phase", "batchSize",
    "preprocess_mode", "load_size", "crop_size", "aspect_ratio", "label_nc", "contain_dontcare_label",
    "output_nc", "dataroot", "dataset_mode", "serial_batches", "no_flip", "nThreads", "max_dataset_size",
    "load_from_opt_file", "cache_filelist_write", "cache_filelist_read", "display_winsize", "netG", "ngf",
    "init_type", "init_variance", "z_dim", "no_instance", "nef", "use_vae", "num_upsampling_layers",
    "resnet_n_downsample", "resnet_n_blocks", "resnet_kernel_size", "resnet_initial_kernel_size",
    "label_dir", "image_dir", "instance_dir", "coco_no_portraits", "display_freq", "print_freq",
    "save_latest_freq", "save_epoch_freq", "no_html", "debug", "tf_log", "continue_train", "which_epoch",
    "niter", "niter_decay", "optimizer", "beta1", "beta2", "no_TTUR", "lr", "D_steps_per_G", "ndf",
    "lambda_feat", "lambda_vgg", "no_ganFeat_loss", "no_vgg_loss", "gan_mode", "netD", "lambda_kld",
    "netD_subarch", "num_D", "n_layers_D", "no_pairing_check",
]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    official = parser.add_argument_group("official options (same names and meanings as the official code)")
    for name in _TRAIN_OPTIONS:
        default = OFFICIAL_DEFAULTS[name]
        if isinstance(default, bool) or name in ("continue_train",):
            official.add_argument(f"--{name}", action="store_true", default=None)
        else:
            kind = type(default) if default is not None else str
            official.add_argument(f"--{name}", type=kind, default=None, choices=_CHOICES.get(name))
    ours = parser.add_argument_group("options of ours")
    ours.add_argument("--vgg_path", help="torchvision vgg19 weights file (or set SPADE_VGG19_WEIGHTS)")
    ours.add_argument("--lambda_l1", type=float, default=0.0,
                      help="weight of an L1 term between the fake and the real image (not in the paper; 0: off): "
                           "a reconstruction term for the image encoder when no VGG19 weights are at hand")
    ours.add_argument("--l1_downsample", type=int, default=1,
                      help="average-pool both images by this factor before that L1 (1: full resolution)")
    ours.add_argument("--lambda_region", type=float, default=0.0,
                      help="weight of a term between the fake's and the real image's colour mean and standard "
                           "deviation in each region of the semantic map (not in the paper; 0: off): a "
                           "reconstruction term for the image encoder that asks for style, not for layout")
    ours.add_argument("--lambda_latent", type=float, default=0.0,
                      help="weight of latent regression (BicycleGAN's cLR; not in the paper; 0: off): a picture "
                           "made from a random code z must encode back to z, so the generator cannot ignore z")
    ours.add_argument("--latent_trains_encoder", action="store_true",
                      help="the latent regression term also trains the encoder: it learns to read the code "
                           "from the generator's pictures (BicycleGAN holds it fixed there)")
    ours.add_argument("--lambda_ms", type=float, default=0.0,
                      help="weight of the mode-seeking term (MSGAN; not in the paper; 0: off) between the "
                           "pictures of the encoded and of a random code")
    ours.add_argument("--max_steps", type=int, help="stop after this many iterations in all")
    ours.add_argument("--max_minutes", type=float,
                      help="stop after this much wall time, with a checkpoint (resume with --continue_train)")
    ours.add_argument("--seed", type=int, default=0)
    ours.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume)")
    ours.add_argument("--ema", action="store_true", help="keep an exponential moving average of G")
    ours.add_argument("--ema_decay", type=float, default=0.999)
    ours.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision")
    ours.add_argument("--channels_last", action="store_true", help="channels-last memory format")
    ours.add_argument("--keep_checkpoints", type=int, default=3, help="latest step checkpoints to keep")
    ours.add_argument("--spade_hidden", type=int, default=128, help="SPADE label-network width (official: 128)")
    ours.add_argument("--z_modulation", action="store_true",
                      help="the style code also scales and shifts every generator block's input, per channel "
                           "(FiLM, zero at the start; needs --use_vae; official: only through the first layer)")
    ours.add_argument("--class_modulation", action="store_true",
                      help="the style code also scales and shifts the last block's output by an amount of its own "
                           "per class (zero at the start; needs --use_vae): a style's colour and contrast per class")
    ours.add_argument("--freeze_generator", action="store_true",
                      help="the generator's weights stay fixed except its z- and class-modulation layers (with "
                           "--init_from: teach a trained generator to follow its code without relearning what it "
                           "paints)")
    ours.add_argument("--upsample", choices=["nearest", "bilinear"], default="nearest",
                      help="how the SPADE generator upsamples its features 2x between blocks (official: nearest, "
                           "whose blocks show as edges in flat regions; the label maps stay nearest)")
    ours.add_argument("--norm_mode", choices=["spade", "clade"], default="spade",
                      help="clade: class-adaptive normalization (Tan et al., CLADE): each class's γ and β are "
                           "learned vectors, looked up per pixel, instead of SPADE's label network (the official "
                           "CLADE option; its intra-class distance input is not supported)")
    oasis = parser.add_argument_group("OASIS (--netG oasis: Schönfeld et al., ICLR 2021; official names)")
    oasis.add_argument("--no_3dnoise", action="store_true",
                       help="no 3-D noise: the generator reads the label map only (one picture per map)")
    oasis.add_argument("--lambda_labelmix", type=float, default=None,
                       help="weight of LabelMix (default: 5 for cityscapes, else 10, as the official code)")
    oasis.add_argument("--no_balancing_inloss", action="store_true",
                       help="no class balancing in the segmentation loss")
    oasis.add_argument("--lr_g", type=float, default=None,
                       help="the generator's learning rate (default: 4e-4 for cityscapes, else 1e-4, as the "
                            "official code; with Adam betas --beta1 0 --beta2 0.999)")
    oasis.add_argument("--lr_d", type=float, default=None, help="the discriminator's learning rate (default 4e-4)")
    ours.add_argument("--no_tensorboard", action="store_true")
    ours.add_argument("--init_from", metavar="CHECKPOINT",
                      help="start from this checkpoint's weights (ours, a run folder or official): fine-tuning "
                           "with fresh optimizers and step count; the generator's norm may change "
                           "(instance ↔ batch)")
    ours.add_argument("--init_fresh", nargs="+", choices=["discriminator", "encoder"], default=[],
                      help="with --init_from: networks that start fresh instead (e.g. an encoder of another "
                           "--norm_E)")
    ours.add_argument("--reference_spade", action="store_true",
                      help="compute SPADE's γ, β with the reference convs instead of the exact fast path "
                           "(faster only for tiny label networks)")
    ours.add_argument("--no_progress", action="store_true", help="no progress bar")
    ours.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="print the resolved configuration and exit")


def infer_label_options(options: dict[str, Any], dontcare_given: bool) -> dict[str, Any]:
    """``label_nc`` (and ``contain_dontcare_label``) of a custom data set given without them: the
    class count of its ``palette.json`` where there is one (``spadegan dataset convert`` writes
    it), else one more than the largest id its label maps hold; don't-care (255) present turns
    ``contain_dontcare_label`` on unless it was given. Printed, and stored in the checkpoints with
    the model's configuration."""
    import sys

    from .data.inspect import inspect_dataset
    from .palettes import PALETTE_FILE, read_palette_file

    label_dir = Path(options["label_dir"])
    palette_path = label_dir.parent / PALETTE_FILE
    data = DataConfig(dataset_mode="custom", label_dir=str(label_dir), image_dir=options["image_dir"],
                      label_nc=2 ** 31 - 1, use_instance=False, no_pairing_check=bool(options["no_pairing_check"]),
                      max_dataset_size=options["max_dataset_size"])
    report = inspect_dataset(data, progress=False)
    ids = report.class_ids()
    if palette_path.is_file():
        label_nc = len(read_palette_file(palette_path))
        source = f"the {label_nc} classes of {palette_path}"
    elif ids:
        label_nc, source = max(ids) + 1, f"the largest id in {label_dir}, {max(ids)}"
    else:
        return {}  # nothing readable: the data set's own checks will say why
    inferred = {"label_nc": label_nc}
    note = ""
    if not dontcare_given and report.dontcare_pixels:
        inferred["contain_dontcare_label"] = True
        note = " and --contain_dontcare_label (its maps hold don't-care pixels, id 255)"
    print(f"--label_nc {label_nc} (from {source}){note}", file=sys.stderr)
    return inferred


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Official options with the official default resolution applied."""
    given = {name: getattr(args, name) for name in _TRAIN_OPTIONS if getattr(args, name) is not None}
    if given.get("load_from_opt_file"):
        raise SystemExit("--load_from_opt_file reads the official pickled options, which are not loaded "
                         "here (pickles can run code); pass the options on the command line")
    mode = given.get("dataset_mode", OFFICIAL_DEFAULTS["dataset_mode"])
    options = dict(OFFICIAL_DEFAULTS)
    options.update(dataset_defaults(mode, is_train=True))
    net = given.get("netG", "spade")
    if net in ("spade", "oasis"):
        options["norm_G"] = "spectralspadesyncbatch3x3"
    else:
        options["norm_G"] = "instance"
    if net == "oasis":
        # The official OASIS defaults: no VGG loss, 64-channel 3-D noise, Adam (0, 0.999) with
        # lr 1e-4 for G and 4e-4 for D (TTUR's halving and doubling of 2e-4), no instance maps.
        options.update(no_vgg_loss=True, z_dim=64, beta1=0.0, beta2=0.999, no_instance=True, no_TTUR=True)
        if given.get("no_instance") is False or given.get("use_vae"):
            raise SystemExit("--netG oasis: takes no instance maps and no image encoder (--use_vae)")
    if given.get("no_TTUR"):
        options.update(beta1=0.5, beta2=0.999)  # the official defaults without TTUR
    options.update(given)
    if mode == "custom" and "label_nc" not in given and not given.get("continue_train") and options.get("label_dir"):
        options.update(infer_label_options(options, dontcare_given="contain_dontcare_label" in given))
    options["spade_hidden"] = args.spade_hidden
    options["z_modulation"] = args.z_modulation
    options["class_modulation"] = args.class_modulation
    options["upsample"] = args.upsample
    options["norm_mode"] = args.norm_mode
    options["no_3dnoise"] = args.no_3dnoise
    return options


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    o = resolve_options(args)
    model = model_config_from_options(o, with_discriminator=True)
    data = DataConfig(
        dataset_mode=o["dataset_mode"], dataroot=o["dataroot"], label_dir=o["label_dir"], image_dir=o["image_dir"],
        instance_dir=o["instance_dir"] or None, phase="train", preprocess_mode=o["preprocess_mode"],
        load_size=o["load_size"], crop_size=o["crop_size"], aspect_ratio=float(o["aspect_ratio"]),
        no_flip=o["no_flip"], is_train=True, label_nc=o["label_nc"],
        contain_dontcare_label=o["contain_dontcare_label"], use_instance=not o["no_instance"],
        no_pairing_check=o["no_pairing_check"], max_dataset_size=o["max_dataset_size"],
        coco_no_portraits=o["coco_no_portraits"])
    if args.l1_downsample < 1 or args.lambda_l1 < 0:
        raise SystemExit(f"--l1_downsample must be at least 1 (got {args.l1_downsample}) and --lambda_l1 "
                         f"not negative (got {args.lambda_l1})")
    for name in ("lambda_latent", "lambda_ms", "lambda_region"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name} must not be negative (got {getattr(args, name)})")
        if getattr(args, name) > 0 and not o["use_vae"]:
            raise SystemExit(f"--{name} needs the image encoder (--use_vae)")
    if args.latent_trains_encoder and args.lambda_latent <= 0:
        raise SystemExit("--latent_trains_encoder needs the latent regression term (--lambda_latent > 0)")
    if args.init_fresh and not args.init_from:
        raise SystemExit("--init_fresh needs --init_from (the networks it names would start fresh anyway)")
    for name in ("z_modulation", "class_modulation"):
        if getattr(args, name) and not (o["use_vae"] and o["netG"] == "spade"):
            raise SystemExit(f"--{name} needs the SPADE generator with the image encoder (--netG spade --use_vae)")
    if args.freeze_generator and not (args.z_modulation or args.class_modulation):
        raise SystemExit("--freeze_generator trains only the modulation layers: it needs --z_modulation or "
                         "--class_modulation")
    loss = LossConfig(gan_mode=o["gan_mode"], lambda_feat=o["lambda_feat"], lambda_vgg=o["lambda_vgg"],
                      lambda_kld=o["lambda_kld"], no_ganFeat_loss=o["no_ganFeat_loss"],
                      no_vgg_loss=o["no_vgg_loss"], vgg_path=args.vgg_path,
                      lambda_l1=args.lambda_l1, l1_downsample=args.l1_downsample,
                      lambda_region=args.lambda_region, lambda_latent=args.lambda_latent, lambda_ms=args.lambda_ms,
                      latent_trains_encoder=args.latent_trains_encoder,
                      lambda_labelmix=(args.lambda_labelmix if args.lambda_labelmix is not None
                                       else 5.0 if o["dataset_mode"] == "cityscapes" else 10.0),
                      no_balancing_inloss=args.no_balancing_inloss)
    if o["netG"] != "oasis" and (args.no_3dnoise or args.lambda_labelmix is not None or args.no_balancing_inloss
                                 or args.lr_g is not None or args.lr_d is not None):
        raise SystemExit("--no_3dnoise, --lambda_labelmix, --no_balancing_inloss, --lr_g and --lr_d are options "
                         "of --netG oasis")
    train = TrainConfig(
        run_dir=str(Path(o["checkpoints_dir"]) / o["name"]), batch_size=o["batchSize"], lr=o["lr"],
        beta1=o["beta1"], beta2=o["beta2"], no_TTUR=o["no_TTUR"], niter=o["niter"], niter_decay=o["niter_decay"],
        D_steps_per_G=o["D_steps_per_G"], max_steps=args.max_steps, max_minutes=args.max_minutes,
        seed=args.seed,
        deterministic=args.deterministic, ema=args.ema, ema_decay=args.ema_decay, amp=args.amp,
        channels_last=args.channels_last, num_workers=o["nThreads"], serial_batches=o["serial_batches"],
        display_freq=o["display_freq"], print_freq=o["print_freq"], save_latest_freq=o["save_latest_freq"],
        save_epoch_freq=o["save_epoch_freq"], keep_checkpoints=args.keep_checkpoints,
        init_type=o["init_type"], init_variance=o["init_variance"], tensorboard=not args.no_tensorboard,
        fast_spade=not args.reference_spade, init_from=args.init_from,
        init_fresh=tuple(args.init_fresh), freeze_generator=args.freeze_generator,
        lr_G=(None if o["netG"] != "oasis" else args.lr_g if args.lr_g is not None
              else 4e-4 if o["dataset_mode"] == "cityscapes" else 1e-4),
        lr_D=None if o["netG"] != "oasis" else args.lr_d if args.lr_d is not None else 4e-4)
    return RunConfig(model=model, data=data, loss=loss, train=train)
