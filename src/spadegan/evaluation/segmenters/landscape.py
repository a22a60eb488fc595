"""Our small landscape segmenter, shipped with the package (``spadegan/weights/landscape_segmenter``).

The paper's landscape model was trained on photos labelled by a segmentation network and scored
with one; for our procedural landscapes (COCO-Stuff ids of sky, clouds, mountain, sea, grass,
tree...) no public network knows exactly these classes, so we train a compact one
(``scripts/train_segmenter.py``) and ship its weights (a few MB of float32 safetensors).

Network: a U-Net-like encoder–decoder. The encoder halves the resolution four times
(3×3 convs + BN + ReLU; the first conv of a level strides), a global-average-pooled context
vector is added at the coarsest level (which tells sea from sky by what surrounds it), and the
decoder goes back up (bilinear ×2, concatenation with the skip, 3×3 conv + BN + ReLU) to a 1×1
classifier at full resolution. Any input size works (sizes that are not multiples of 16 are
padded by replication and cropped back).

The folder holds ``model.safetensors`` and ``config.json``: the constructor arguments
(``architecture``), the table output channel → COCO-Stuff id (``class_ids``, with
``class_names``), the input normalisation and how the weights were trained (``training``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...safe_load import read_versioned_json
from .base import NetworkSegmenter, Preprocessing, load_state

FORMAT = "spade.landscape_segmenter"  # the stored files' format id, from before the package's rename
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PACKAGE_FOLDER = ("weights", "landscape_segmenter")   # under the spadegan package
DEFAULT_PREPROCESSING = Preprocessing(channel_order="RGB", scale=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class LandscapeNetConfig:
    """Constructor arguments of :class:`LandscapeSegNet`."""

    num_classes: int                                         # output channels
    widths: tuple[int, ...] = (16, 32, 64, 128, 192)         # channels per level, full resolution first
    convs_per_level: int = 2                                 # encoder convs per level (level 0: one)


def _cbr(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class LandscapeSegNet(nn.Module):
    """Compact U-Net with a global context vector at the bottleneck; logits at full resolution."""

    def __init__(self, config: LandscapeNetConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.down = nn.ModuleList([_cbr(3, w[0])])
        for level in range(1, len(w)):
            convs = [_cbr(w[level - 1], w[level], stride=2)]
            convs += [_cbr(w[level], w[level]) for _ in range(config.convs_per_level - 1)]
            self.down.append(nn.Sequential(*convs))
        # Image-level context (as in ParseNet / PSPNet): pooled features, projected, added back.
        self.context = nn.Sequential(nn.Conv2d(w[-1], w[-1], 1), nn.ReLU(inplace=True))
        self.up = nn.ModuleList(_cbr(w[level + 1] + w[level], w[level]) for level in reversed(range(len(w) - 1)))
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.config.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        s = self.stride
        pad_h, pad_w = (-height) % s, (-width) % s
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
        x = x + self.context(x.mean(dim=(2, 3), keepdim=True))
        for up, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        return self.head(x)[..., :height, :width]


class LandscapeSegmenter(NetworkSegmenter):
    """:class:`LandscapeSegNet` at the images' resolution; outputs mapped to COCO-Stuff ids."""

    def __init__(self, name: str, network: LandscapeSegNet, class_ids: Sequence[int], preprocessing: Preprocessing,
                 device: torch.device | str = "cpu", class_names: Sequence[str] | None = None,
                 metadata: dict[str, Any] | None = None):
        super().__init__(name, network, class_ids, preprocessing, device)
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in class_ids)
        self.metadata = dict(metadata or {})     # the config.json it came from

    def scores(self, inputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.network(inputs)


def packaged_weights_folder() -> Path:
    """The folder of the weights shipped with the package (it may not exist in a bare checkout)."""
    return Path(str(resources.files("spadegan").joinpath(*PACKAGE_FOLDER)))


def save_landscape_segmenter(folder: str | os.PathLike, network: LandscapeSegNet, class_ids: Sequence[int],
                             class_names: Sequence[str], preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
                             training: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` + ``config.json`` atomically (each file complete or absent)."""
    from safetensors.torch import save_file

    from spadegan.atomic import atomic_write

    if len(class_ids) != network.config.num_classes or len(class_names) != len(class_ids):
        raise ValueError(f"{network.config.num_classes} outputs, {len(class_ids)} class ids, "
                         f"{len(class_names)} class names: they must agree")
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    config = {"format": FORMAT, "version": VERSION,
              "architecture": {**asdict(network.config), "widths": list(network.config.widths)},
              "class_ids": [int(c) for c in class_ids], "class_names": list(class_names),
              "preprocessing": {**asdict(preprocessing), "mean": list(preprocessing.mean),
                                "std": list(preprocessing.std)},
              "parameters": sum(p.numel() for p in network.parameters()),
              "training": training or {}}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
    atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))


def load_landscape_segmenter(weights: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                             name: str = "landscapes") -> LandscapeSegmenter:
    """Load our segmenter: the packaged weights by default, or a folder (or its safetensors file)."""
    from safetensors.torch import load_file

    if weights is None:
        folder = packaged_weights_folder()
        if not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder}: the packaged landscape segmenter weights are missing "
                                    f"({WEIGHTS_FILE} + {CONFIG_FILE}); reinstall the package or pass weights=FOLDER")
    else:
        folder = Path(weights)
        if folder.is_file():
            folder = folder.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"{weights}: no such landscape segmenter folder")
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; a landscape segmenter folder holds {WEIGHTS_FILE} and {CONFIG_FILE}")
    config = read_versioned_json(config_path, FORMAT, VERSION)
    architecture = dict(config["architecture"])
    architecture["widths"] = tuple(architecture["widths"])
    network = LandscapeSegNet(LandscapeNetConfig(**architecture))
    try:
        state = load_file(str(weights_path))
    except Exception as error:
        raise ValueError(f"{weights_path}: cannot read it as safetensors ({error})") from error
    load_state(network, state, str(weights_path), "landscape segmenter")
    pre = config.get("preprocessing", {})
    preprocessing = Preprocessing(channel_order=pre.get("channel_order", "RGB"), scale=float(pre.get("scale", 1.0)),
                                  mean=tuple(pre.get("mean", DEFAULT_PREPROCESSING.mean)),
                                  std=tuple(pre.get("std", DEFAULT_PREPROCESSING.std)))
    class_ids = [int(c) for c in config["class_ids"]]
    if len(class_ids) != network.config.num_classes:
        raise ValueError(f"{config_path}: {len(class_ids)} class_ids for {network.config.num_classes} outputs")
    return LandscapeSegmenter(name, network, class_ids, preprocessing, device,
                              class_names=config.get("class_names"), metadata=config)
