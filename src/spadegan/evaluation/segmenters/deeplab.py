"""DeepLabV2 (ResNet-101 + ASPP) on COCO-Stuff: the segmenter of the paper's COCO-Stuff scores.

Architecture of Chen et al., *DeepLab* (TPAMI 2017), as github.com/kazuto1011/deeplab-pytorch
lays out its parameters, so its released COCO-Stuff 164k weights
(``deeplabv2_resnet101_msc-cocostuff164k-100000.pth``) load unchanged:

======================  ========================================================================
``layer1.conv1``        7×7 conv, stride 2 + BN + ReLU; then 3×3 max-pool, stride 2 (ceil mode)
``layer2 .. layer5``    ResNet-101 stages (3, 4, 23, 3 bottlenecks); Caffe/MSRA style: the stride
                        sits on the first 1×1 conv (``reduce``); ``layer4`` and ``layer5`` dilate
                        (2, 4) instead of striding. Each block: ``reduce``, ``conv3x3``,
                        ``increase`` (conv + ``bn``) and, in the first block, ``shortcut``
``aspp.c0 .. c3``       four 3×3 convs with dilation 6, 12, 18, 24 to the classes, summed
======================  ========================================================================

Keys are matched after removing the multi-scale wrapper's prefix (``base.``; ``scale.`` in the
repo's first releases, which also named the shortcut ``proj`` and the ASPP convs
``aspp.stages.c*``: both spellings are accepted) and ``module.``.

Preprocessing (``configs/cocostuff164k.yaml``): Caffe style — BGR, values in [0, 255], minus the
mean (B 104.008, G 116.669, R 122.675), no division. Output stride 8; logits are upsampled
bilinearly to the image size. Evaluation as the repo's ``MSC`` model in eval mode: logits of the
image and of the image resized by 0.5 and 0.75 (resized to the full-scale logits), pixel-wise
max (``scales=(1.0,)`` for single scale).

Output: 182 channels = COCO-Stuff ids 0..181 (things 0-90, stuff 91-181, with the unused ids
kept), the ids of SPADE's COCO-Stuff label maps, so the id table is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import (NetworkSegmenter, Preprocessing, count_blocks, load_state, output_class_ids, read_state_dict,
                   require, strip_prefix)

DEEPLAB_CAFFE_PREPROCESSING = Preprocessing(channel_order="BGR", scale=255.0,
                                            mean=(104.008, 116.669, 122.675), std=(1.0, 1.0, 1.0))
COCO_STUFF_CLASSES = 182


@dataclass(frozen=True)
class DeepLabV2Config:
    """Sizes of a DeepLabV2 network (defaults: ResNet-101, COCO-Stuff)."""

    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)     # bottlenecks per stage (ResNet-101)
    width: int = 64                                        # stem width; stage outputs 4w, 8w, 16w, 32w
    rates: tuple[int, ...] = (6, 12, 18, 24)               # ASPP dilations
    num_classes: int = COCO_STUFF_CLASSES


class _ConvBN(nn.Sequential):
    """conv (no bias) + BN, with the repo's child names ``conv`` / ``bn``; ReLU applied by the caller."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, dilation: int):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel, stride,
                                          padding=dilation * (kernel // 2), dilation=dilation, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_channels))


class _Bottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int, project: bool):
        super().__init__()
        mid = out_channels // 4
        self.reduce = _ConvBN(in_channels, mid, 1, stride, 1)      # Caffe ResNet: stride on the 1×1
        self.conv3x3 = _ConvBN(mid, mid, 3, 1, dilation)
        self.increase = _ConvBN(mid, out_channels, 1, 1, 1)
        self.shortcut = _ConvBN(in_channels, out_channels, 1, stride, 1) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.reduce(x))
        h = F.relu(self.conv3x3(h))
        h = self.increase(h)
        return F.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class _Stage(nn.Sequential):
    def __init__(self, blocks: int, in_channels: int, out_channels: int, stride: int, dilation: int):
        super().__init__()
        for i in range(blocks):
            self.add_module(f"block{i + 1}", _Bottleneck(in_channels if i == 0 else out_channels, out_channels,
                                                         stride if i == 0 else 1, dilation, project=i == 0))


class _Stem(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = _ConvBN(3, width, 7, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), 3, 2, 1, ceil_mode=True)


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLabV2: parallel dilated 3×3 convs, summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int]):
        super().__init__()
        for i, rate in enumerate(rates):
            self.add_module(f"c{i}", nn.Conv2d(in_channels, num_classes, 3, 1, padding=rate, dilation=rate, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(conv(x) for conv in self.children())


class DeepLabV2(nn.Module):
    """ResNet + ASPP at output stride 8, with deeplab-pytorch's parameter names."""

    def __init__(self, config: DeepLabV2Config = DeepLabV2Config()):
        super().__init__()
        w, b = config.width, config.blocks
        self.layer1 = _Stem(w)
        self.layer2 = _Stage(b[0], w, 4 * w, stride=1, dilation=1)
        self.layer3 = _Stage(b[1], 4 * w, 8 * w, stride=2, dilation=1)
        self.layer4 = _Stage(b[2], 8 * w, 16 * w, stride=1, dilation=2)
        self.layer5 = _Stage(b[3], 16 * w, 32 * w, stride=1, dilation=4)
        self.aspp = _ASPP(32 * w, config.num_classes, config.rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = layer(x)
        return self.aspp(x)


def _rename(key: str) -> str:
    """First-release spellings → current ones (``proj`` → ``shortcut``, ``aspp.stages.`` → ``aspp.``)."""
    return key.replace(".proj.", ".shortcut.").replace("aspp.stages.", "aspp.")


def deeplab_config_from_state(state: dict[str, torch.Tensor], source: str) -> DeepLabV2Config:
    what = "DeepLabV2"
    width = require(state, "layer1.conv1.conv.weight", source, what).shape[0]
    blocks = []
    for stage in (2, 3, 4, 5):
        prefix = f"layer{stage}.block"
        numbers = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
        if not numbers:
            require(state, f"{prefix}1.reduce.conv.weight", source, what)
        blocks.append(max(numbers))
    convs = count_blocks({k[len("aspp.c"):]: v for k, v in state.items() if k.startswith("aspp.c")}, "")
    if convs == 0:
        require(state, "aspp.c0.weight", source, what)
    # The dilation is not stored in the weights: the released models use 6, 12, 18, 24.
    rates = DeepLabV2Config.rates if convs == 4 else tuple(6 * (i + 1) for i in range(convs))
    return DeepLabV2Config(blocks=tuple(blocks), width=width, rates=rates,
                           num_classes=state["aspp.c0.weight"].shape[0])


def load_deeplab(path: str | Path) -> DeepLabV2:
    """A DeepLabV2 network with the weights of ``path`` (deeplab-pytorch layout, MSC-wrapped or not)."""
    state = strip_prefix(read_state_dict(path), ("module.", "base.", "scale."))
    state = {_rename(k): v for k, v in state.items()}
    network = DeepLabV2(deeplab_config_from_state(state, str(path)))
    load_state(network, state, str(path), "DeepLabV2")
    return network


class DeepLabSegmenter(NetworkSegmenter):
    """Multi-scale max of DeepLabV2 logits (the repo's MSC in eval mode), upsampled to the image."""

    def __init__(self, name: str, network: nn.Module, class_ids: Sequence[int], preprocessing: Preprocessing,
                 device: torch.device | str = "cpu",
                 scales: Sequence[float] = (1.0, 0.5, 0.75)):   # input scales; logits max-pooled over them
        super().__init__(name, network, class_ids, preprocessing, device)
        self.scales = tuple(scales)

    def scores(self, inputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        full = self.network(inputs)
        logits = [full]
        for scale in self.scales:
            if scale == 1.0:
                continue
            scaled = [int(s * scale) for s in inputs.shape[-2:]]
            h = F.interpolate(inputs, size=scaled, mode="bilinear", align_corners=False)
            logits.append(F.interpolate(self.network(h), size=full.shape[-2:], mode="bilinear", align_corners=False))
        best = torch.stack(logits).amax(dim=0)
        return F.interpolate(best, size=size, mode="bilinear", align_corners=False)


def deeplabv2_cocostuff(weights: str | Path | None, device: torch.device | str = "cpu",
                        scales: Sequence[float] = (1.0, 0.5, 0.75),
                        class_ids: Sequence[int] | None = None) -> DeepLabSegmenter:
    """The registered ``deeplabv2`` segmenter: COCO-Stuff ids 0..181 from a deeplab-pytorch file."""
    if weights is None:
        raise ValueError("segmenter 'deeplabv2' needs a weights file: the COCO-Stuff 164k DeepLabV2 model of "
                         "github.com/kazuto1011/deeplab-pytorch (deeplabv2_resnet101_msc-cocostuff164k-100000.pth); "
                         "pass it with weights=PATH (--weights PATH)")
    network = load_deeplab(weights)
    classes = network.aspp.c0.out_channels
    class_ids = output_class_ids(weights, classes, class_ids, range(COCO_STUFF_CLASSES), "182 of COCO-Stuff")
    return DeepLabSegmenter("deeplabv2", network, class_ids, DEEPLAB_CAFFE_PREPROCESSING, device, scales)
