"""Configuration: frozen dataclasses for each network, and the official ``opt.txt`` format.

The official code threads one ``opt`` object everywhere; here each network gets a small frozen
config built once from the options (:func:`generator_config_from_options` and friends), and the
networks themselves take explicit arguments. The official option *names* are kept, so an
``opt.txt`` written by the official code reads back, and ours is readable by it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Every option the official code writes to opt.txt, with its default (the type of the default is
# the option's type; None defaults are strings). Train-time and test-time options together.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    # base options
    "name": "label2coco", "gpu_ids": "0", "checkpoints_dir": "./checkpoints", "model": "pix2pix",
    "norm_G": "spectralinstance", "norm_D": "spectralinstance", "norm_E": "spectralinstance",
    "phase": "train", "batchSize": 1, "preprocess_mode": "scale_width_and_crop", "load_size": 1024,
    "crop_size": 512, "aspect_ratio": 1.0, "label_nc": 182, "contain_dontcare_label": False,
    "output_nc": 3, "dataroot": "./datasets/cityscapes/", "dataset_mode": "coco",
    "serial_batches": False, "no_flip": False, "nThreads": 0, "max_dataset_size": 9223372036854775807,
    "load_from_opt_file": False, "cache_filelist_write": False, "cache_filelist_read": False,
    "display_winsize": 400, "netG": "spade", "ngf": 64, "init_type": "xavier", "init_variance": 0.02,
    "z_dim": 256, "no_instance": False, "nef": 16, "use_vae": False,
    # generator-specific (SPADE, pix2pixHD)
    "num_upsampling_layers": "normal", "resnet_n_downsample": 4, "resnet_n_blocks": 9,
    "resnet_kernel_size": 3, "resnet_initial_kernel_size": 7,
    # dataset-specific
    "label_dir": None, "image_dir": None, "instance_dir": "", "coco_no_portraits": False,
    # train options
    "display_freq": 100, "print_freq": 100, "save_latest_freq": 5000, "save_epoch_freq": 10,
    "no_html": False, "debug": False, "tf_log": False, "continue_train": False, "which_epoch": "latest",
    "niter": 50, "niter_decay": 0, "optimizer": "adam", "beta1": 0.0, "beta2": 0.9, "no_TTUR": False,
    "lr": 0.0002, "D_steps_per_G": 1, "ndf": 64, "lambda_feat": 10.0, "lambda_vgg": 10.0,
    "no_ganFeat_loss": False, "no_vgg_loss": False, "gan_mode": "hinge", "netD": "multiscale",
    "lambda_kld": 0.05, "netD_subarch": "n_layer", "num_D": 2, "n_layers_D": 4,
    "no_pairing_check": False,
    # test options
    "results_dir": "./results/", "how_many": 9223372036854775807,
    "isTrain": None,
}
_BOOL_OPTIONS_WITH_NONE_DEFAULT = {"isTrain"}
# Options of ours that the official code does not have (written to opt.txt only when they differ
# from the official behaviour, so official-compatible models keep an official-looking opt.txt).
EXTENSION_DEFAULTS: dict[str, Any] = {"spade_hidden": 128, "z_modulation": False, "class_modulation": False,
                                      "upsample": "nearest",
                                      "norm_mode": "spade"}  # norm_mode: the official CLADE code's option


def _parse_value(name: str, text: str) -> Any:
    """Turn an opt.txt value back into the option's type."""
    default = OFFICIAL_DEFAULTS.get(name, EXTENSION_DEFAULTS.get(name))
    if name in _BOOL_OPTIONS_WITH_NONE_DEFAULT or isinstance(default, bool):
        if text not in ("True", "False"):
            raise ValueError(f"option {name}: expected True or False, got {text!r}")
        return text == "True"
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if default is None and name not in OFFICIAL_DEFAULTS and name not in EXTENSION_DEFAULTS:
        # An option we do not know (a newer official version, a fork): keep its most likely type.
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        if text in ("True", "False"):
            return text == "True"
    if text == "None" and default is None:
        return None
    return text


def read_opt_txt(path: str | os.PathLike) -> dict[str, Any]:
    """Read an official ``opt.txt`` (``{:>25}: {:<30}`` lines, ``\\t[default: X]`` where changed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such options file (an official checkpoint folder holds opt.txt)")
    options: dict[str, Any] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.strip().startswith("-"):
            continue  # blank lines and the '----- Options -----' banners of the printed form
        body = line.split("\t[default:")[0]
        name, sep, value = body.partition(": ")
        if not sep:
            raise ValueError(f"{path}:{number}: expected 'name: value', got {line!r}")
        name = name.strip()
        try:
            options[name] = _parse_value(name, value.strip())
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return options


def write_opt_txt(path: str | os.PathLike, options: dict[str, Any]) -> None:
    """Write options in the official ``opt.txt`` format, marking values that differ from the default."""
    lines = []
    for name in sorted(options):
        value = options[name]
        comment = ""
        if name in OFFICIAL_DEFAULTS and value != OFFICIAL_DEFAULTS[name]:
            comment = f"\t[default: {OFFICIAL_DEFAULTS[name]}]"
        lines.append(f"{name:>25}: {str(value):<30}{comment}")
    Path(path).write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class SemanticsConfig:
    """What the semantic input holds: the class count, don't-care, instance edges."""

    label_nc: int = 182
    contain_dontcare_label: bool = False
    use_instance: bool = True


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator (SPADE, OASIS or pix2pixHD)."""

    netG: Literal["spade", "oasis", "pix2pixhd"] = "spade"
    ngf: int = 64
    norm_G: str = "spectralspadesyncbatch3x3"
    crop_size: int = 256
    aspect_ratio: float = 1.0
    num_upsampling_layers: Literal["normal", "more", "most"] = "normal"
    z_dim: int | None = None                 # None: no image encoder, start from the label map (oasis: no 3-D noise)
    spade_hidden: int = 128                  # SPADE label network width (official: fixed 128)
    z_modulation: bool = False               # z also modulates every block's input (ours; official: off)
    class_modulation: bool = False           # z modulates the last block's output per class (ours; official: off)
    upsample: Literal["nearest", "bilinear"] = "nearest"  # the features' 2× upsampling (official: nearest)
    norm_mode: Literal["spade", "clade"] = "spade"  # CLADE (Tan et al.): γ, β per class instead of a label network
    resnet_n_downsample: int = 4
    resnet_n_blocks: int = 9
    resnet_kernel_size: int = 3
    resnet_initial_kernel_size: int = 7


@dataclass(frozen=True)
class DiscriminatorConfig:
    netD: Literal["multiscale", "oasis"] = "multiscale"  # oasis: the segmenting U-Net (its norm: spectral or none)
    ndf: int = 64
    n_layers_D: int = 4
    num_D: int = 2
    norm_D: str = "spectralinstance"
    output_nc: int = 3
    return_features: bool = True             # False with --no_ganFeat_loss


@dataclass(frozen=True)
class EncoderConfig:
    ndf: int = 64                            # the official encoder is as wide as the generator (--ngf)
    num_layers: int = 6                      # 6 when crop_size >= 256 (official), else 5
    latent_dim: int = 256
    norm_E: str = "spectralinstance"


@dataclass(frozen=True)
class ModelConfig:
    """The networks of one model, with the semantics they take."""

    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig | None = None
    encoder: EncoderConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        def part(kind, value):
            return None if value is None else kind(**value)
        return cls(semantics=SemanticsConfig(**data["semantics"]),
                   generator=GeneratorConfig(**data["generator"]),
                   discriminator=part(DiscriminatorConfig, data.get("discriminator")),
                   encoder=part(EncoderConfig, data.get("encoder")))


def _option(options: dict[str, Any], name: str) -> Any:
    return options.get(name, OFFICIAL_DEFAULTS.get(name, EXTENSION_DEFAULTS.get(name)))


def model_config_from_options(options: dict[str, Any], with_discriminator: bool = True,
                              with_encoder: bool | None = None) -> ModelConfig:
    """Map official options onto our configs (missing options take the official defaults; the
    generator's norm defaults per netG as the official ``modify_commandline_options`` sets it)."""
    net = _option(options, "netG")
    if net not in ("spade", "oasis", "pix2pixhd"):
        raise ValueError(f"netG {net!r}: expected spade, oasis or pix2pixhd")
    use_vae = bool(_option(options, "use_vae"))
    if net == "oasis" and use_vae:
        raise ValueError("netG oasis takes 3-D noise, not an image encoder: use_vae does not apply")
    norm_default = "spectralspadesyncbatch3x3" if net in ("spade", "oasis") else "instance"
    semantics = SemanticsConfig(label_nc=_option(options, "label_nc"),
                                contain_dontcare_label=bool(_option(options, "contain_dontcare_label")),
                                use_instance=not _option(options, "no_instance"))
    generator = GeneratorConfig(
        netG=net, ngf=_option(options, "ngf"), norm_G=options.get("norm_G", norm_default),
        crop_size=_option(options, "crop_size"), aspect_ratio=float(_option(options, "aspect_ratio")),
        num_upsampling_layers=_option(options, "num_upsampling_layers"),
        z_dim=(_option(options, "z_dim") if use_vae and net == "spade"
               else None if net != "oasis" or options.get("no_3dnoise") else _option(options, "z_dim")),
        spade_hidden=_option(options, "spade_hidden"),
        z_modulation=bool(_option(options, "z_modulation")) and use_vae and net == "spade",
        class_modulation=bool(_option(options, "class_modulation")) and use_vae and net == "spade",
        upsample=_option(options, "upsample") if net == "spade" else "nearest",
        norm_mode=_option(options, "norm_mode") if net == "spade" else "spade",
        **{name: _option(options, name) for name in ("resnet_n_downsample", "resnet_n_blocks",
                                                     "resnet_kernel_size", "resnet_initial_kernel_size")})
    discriminator = None
    if with_discriminator:
        discriminator = DiscriminatorConfig(
            netD="oasis" if net == "oasis" else "multiscale", ndf=_option(options, "ndf"), n_layers_D=_option(options, "n_layers_D"),
            num_D=_option(options, "num_D"), norm_D=_option(options, "norm_D"),
            output_nc=_option(options, "output_nc"),
            return_features=not _option(options, "no_ganFeat_loss"))
    encoder = None
    if use_vae if with_encoder is None else with_encoder:
        encoder = EncoderConfig(ndf=_option(options, "ngf"),
                                num_layers=6 if _option(options, "crop_size") >= 256 else 5,
                                latent_dim=_option(options, "z_dim"), norm_E=_option(options, "norm_E"))
    return ModelConfig(semantics=semantics, generator=generator, discriminator=discriminator, encoder=encoder)


def options_from_model_config(config: ModelConfig) -> dict[str, Any]:
    """The official options that describe ``config`` (the inverse of :func:`model_config_from_options`),
    over the official defaults, for writing an ``opt.txt`` the official code can read."""
    options = {name: value for name, value in OFFICIAL_DEFAULTS.items() if value is not None}
    g, s = config.generator, config.semantics
    options.update(
        netG=g.netG, ngf=g.ngf, norm_G=g.norm_G, crop_size=g.crop_size, load_size=g.crop_size,
        aspect_ratio=g.aspect_ratio, num_upsampling_layers=g.num_upsampling_layers,
        use_vae=g.z_dim is not None, z_dim=g.z_dim if g.z_dim is not None else OFFICIAL_DEFAULTS["z_dim"],
        resnet_n_downsample=g.resnet_n_downsample, resnet_n_blocks=g.resnet_n_blocks,
        resnet_kernel_size=g.resnet_kernel_size, resnet_initial_kernel_size=g.resnet_initial_kernel_size,
        label_nc=s.label_nc, contain_dontcare_label=s.contain_dontcare_label, no_instance=not s.use_instance,
    )
    if g.spade_hidden != EXTENSION_DEFAULTS["spade_hidden"]:
        options["spade_hidden"] = g.spade_hidden
    if g.z_modulation:
        options["z_modulation"] = True
    if g.class_modulation:
        options["class_modulation"] = True
    if g.upsample != EXTENSION_DEFAULTS["upsample"]:
        options["upsample"] = g.upsample
    if g.norm_mode != EXTENSION_DEFAULTS["norm_mode"]:
        options["norm_mode"] = g.norm_mode  # as the official CLADE code names it
    if config.discriminator is not None:
        d = config.discriminator
        options.update(ndf=d.ndf, n_layers_D=d.n_layers_D, num_D=d.num_D, norm_D=d.norm_D,
                       output_nc=d.output_nc, no_ganFeat_loss=not d.return_features)
    if config.encoder is not None:
        options.update(norm_E=config.encoder.norm_E)
    return options


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how samples are preprocessed (official option names)."""

    dataset_mode: Literal["coco", "ade20k", "cityscapes", "custom"] = "custom"
    dataroot: str = "./datasets/cityscapes/"
    label_dir: str | None = None             # custom mode
    image_dir: str | None = None             # custom mode
    instance_dir: str | None = None          # custom mode, optional
    phase: str = "train"                     # 'train' or 'test' ('val' folders for test)
    preprocess_mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    aspect_ratio: float = 1.0
    no_flip: bool = False
    is_train: bool = True                    # flips only when training (official)
    label_nc: int = 182
    contain_dontcare_label: bool = False
    use_instance: bool = False
    no_pairing_check: bool = False
    max_dataset_size: int = 9223372036854775807
    coco_no_portraits: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Loss terms and weights of the generator objective (paper Sec. 3, Appendix A)."""

    gan_mode: Literal["hinge", "ls", "original", "w"] = "hinge"
    lambda_feat: float = 10.0                # feature matching (pix2pixHD)
    lambda_vgg: float = 10.0                 # VGG19 perceptual loss
    lambda_kld: float = 0.05                 # KL term of the image encoder
    no_ganFeat_loss: bool = False
    no_vgg_loss: bool = False
    lambda_l1: float = 0.0                   # L1 to the real image, pooled (ours; 0 = off, as the paper)
    l1_downsample: int = 1                   # average-pooling factor of that L1 term
    lambda_region: float = 0.0               # region colour statistics to the real image (ours; 0 = off)
    lambda_latent: float = 0.0               # latent regression, BicycleGAN's cLR (ours; 0 = off)
    lambda_ms: float = 0.0                   # mode seeking, MSGAN (ours; 0 = off)
    lambda_labelmix: float = 10.0            # OASIS: LabelMix consistency of the segmenting D
    no_balancing_inloss: bool = False        # OASIS: no class balancing of its cross-entropy
    latent_trains_encoder: bool = False      # the cLR term also trains E (ours; BicycleGAN: G only)
    vgg_path: str | None = None              # torchvision vgg19 weights (or $SPADE_VGG19_WEIGHTS)


@dataclass(frozen=True)
class TrainConfig:
    """The optimization and bookkeeping of a training run (official names where they exist).

    Frequencies (``display_freq``, ``print_freq``, ``save_latest_freq``) count training images,
    as in the official code; ``save_epoch_freq`` counts epochs.
    """

    run_dir: str = "./checkpoints/label2coco"
    batch_size: int = 1                      # --batchSize: the global batch, split over DDP processes
    lr: float = 0.0002
    beta1: float = 0.0                       # used only with no_TTUR (whose defaults are 0.5 / 0.999)
    beta2: float = 0.9
    no_TTUR: bool = False                    # TTUR (Heusel et al.): G at lr/2, D at 2·lr, betas (0, 0.9)
    lr_G: float | None = None                # a rate per network instead of TTUR's lr/2, 2·lr (OASIS: lr_g)
    lr_D: float | None = None                # (OASIS: lr_d)
    niter: int = 50                          # epochs at the initial learning rate
    niter_decay: int = 0                     # epochs of linear decay to 0 afterwards
    D_steps_per_G: int = 1
    max_steps: int | None = None             # stop after this many iterations (all epochs otherwise)
    max_minutes: float | None = None         # stop (with a checkpoint) after this much wall time
    seed: int = 0
    deterministic: bool = False              # deterministic algorithms; exact resume on CPU
    ema: bool = False                        # keep an exponential moving average of G
    ema_decay: float = 0.999
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    num_workers: int = 0                     # --nThreads
    serial_batches: bool = False             # no shuffling
    display_freq: int = 100
    print_freq: int = 100
    save_latest_freq: int = 5000
    save_epoch_freq: int = 10
    keep_checkpoints: int = 3                # latest step checkpoints kept (epoch ones are all kept)
    init_type: str = "xavier"
    init_variance: float = 0.02
    tensorboard: bool = True
    fast_spade: bool = True                  # the exact fast SPADE path (spadegan.nn.fast_spade)
    init_from: str | None = None             # start from this checkpoint's weights (fine-tuning)
    init_fresh: tuple[str, ...] = ()         # networks that --init_from leaves fresh ("discriminator", "encoder")
    freeze_generator: bool = False           # only G's z-modulation layers (and E) train


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run is made of; saved as ``run_config.json`` in the run folder."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return cls(model=ModelConfig.from_dict(data["model"]), data=DataConfig(**data["data"]),
                   loss=LossConfig(**data["loss"]), train=TrainConfig(**data["train"]))
