"""Official OASIS checkpoint folders (boschresearch/OASIS): ``opt.txt`` and
``models/{iter}_{G,D,EMA}.pth``, read without unpickling anything but tensors (``opt.pkl`` is
never opened).

The official ``opt.txt`` is written before the data set sets its fields, so it names neither the
class count nor the picture size: the class count is read from the weights (the input width of
``fc`` less the noise channels), and the size is the data set's own (its ``--dataset_mode``)
unless given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import DiscriminatorConfig, GeneratorConfig, ModelConfig, SemanticsConfig, read_opt_txt
from .models import Networks, build_generator, build_networks
from .nn.oasis import official_oasis_keys
from .safe_load import load_weights_only

# (crop_size, aspect_ratio) the official data set classes set for each --dataset_mode.
DATASET_SIZES = {"ade20k": (256, 1.0), "coco": (256, 1.0), "cityscapes": (512, 2.0)}


@dataclass
class OfficialOASIS:
    """What :func:`load_official_oasis` returns: the options as read, the networks (generator,
    and discriminator where its file exists) and the EMA generator where its file exists."""

    folder: Path
    options: dict[str, Any]
    networks: Networks
    ema_generator: torch.nn.Module | None


def _load_into(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    result = network.load_state_dict(official_oasis_keys(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: not this OASIS network's weights (missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]})")


def oasis_model_config(options: dict[str, Any], semantic_channels: int, crop_size: int, aspect_ratio: float,
                       with_discriminator: bool) -> ModelConfig:
    """The :class:`ModelConfig` of an official OASIS model. Its one-hot map has a channel per id,
    0 included (0 is "unknown" in its data sets): no separate don't-care channel and no instance
    edges, in this project's terms."""
    spectral = "" if options.get("no_spectral_norm", False) else "spectral"
    norm = f"{spectral}spade{options.get('param_free_norm', 'syncbatch')}{int(options.get('spade_ks', 3))}x" \
           f"{int(options.get('spade_ks', 3))}"
    generator = GeneratorConfig(netG="oasis", ngf=int(options.get("channels_G", 64)), norm_G=norm,
                                crop_size=crop_size, aspect_ratio=aspect_ratio,
                                z_dim=None if options.get("no_3dnoise", False) else int(options.get("z_dim", 64)))
    # The official D's widths are fixed: ndf 64 whatever --channels_D says.
    discriminator = DiscriminatorConfig(netD="oasis", ndf=64, norm_D=spectral or "none") if with_discriminator else None
    semantics = SemanticsConfig(label_nc=semantic_channels, contain_dontcare_label=False, use_instance=False)
    return ModelConfig(semantics=semantics, generator=generator, discriminator=discriminator)


def load_official_oasis(folder: str | os.PathLike, which_iter: str = "latest", crop_size: int | None = None,
                        aspect_ratio: float | None = None, device: str | torch.device = "cpu") -> OfficialOASIS:
    """Load an official OASIS checkpoint folder: the generator (required), the discriminator and
    the EMA generator where their files exist. ``crop_size`` / ``aspect_ratio``: the picture size
    the generator starts from (default: its data set's, :data:`DATASET_SIZES`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    options = read_opt_txt(folder / "opt.txt")
    paths = {tag: folder / "models" / f"{which_iter}_{tag}.pth" for tag in ("G", "D", "EMA")}
    if not paths["G"].is_file():
        raise FileNotFoundError(f"{paths['G']}: no such file (an official OASIS folder holds models/{which_iter}_G.pth)")
    states = {tag: load_weights_only(path, "OASIS weights") for tag, path in paths.items() if path.is_file()}
    if "fc.weight" not in states["G"]:
        raise ValueError(f"{paths['G']}: no fc.weight; not an OASIS generator")
    noise_channels = 0 if options.get("no_3dnoise", False) else int(options.get("z_dim", 64))
    semantic_channels = states["G"]["fc.weight"].shape[1] - noise_channels
    if crop_size is None or aspect_ratio is None:
        mode = options.get("dataset_mode")
        if mode not in DATASET_SIZES:
            raise ValueError(f"{folder / 'opt.txt'}: dataset_mode {mode!r} has no known picture size; "
                             f"give crop_size and aspect_ratio (known: {', '.join(DATASET_SIZES)})")
        crop_size = DATASET_SIZES[mode][0] if crop_size is None else crop_size
        aspect_ratio = DATASET_SIZES[mode][1] if aspect_ratio is None else aspect_ratio
    config = oasis_model_config(options, semantic_channels, crop_size, aspect_ratio, "D" in states)
    networks = build_networks(config, init_type=None)
    _load_into(networks.generator, states["G"], paths["G"])
    if networks.discriminator is not None:
        _load_into(networks.discriminator, states["D"], paths["D"])
    ema = None
    if "EMA" in states:
        ema = build_generator(config.generator, config.semantics)
        _load_into(ema, states["EMA"], paths["EMA"])
        ema.to(device)
    return OfficialOASIS(folder, options, networks.to(device), ema)
