"""DRN-D-105 on Cityscapes: the segmenter of the SPADE paper's Cityscapes scores.

Architecture of Yu, Koltun, Funkhouser, *Dilated Residual Networks* (CVPR 2017), as the
segmentation model ``DRNSeg`` of github.com/fyu/drn (``segment.py``) lays out its parameters, so
its released Cityscapes weights (``drn_d_105_cityscapes.pth`` and the other ``drn-d-*`` files at
go.yf.io/drn-cityscapes-models, or a ``checkpoint_*.pth.tar`` of its training) load unchanged:

=================  =============================================================================
``base.0``         7×7 conv (stride 1) + BN + ReLU                                   (DRN ``layer0``)
``base.1, base.2`` 3×3 conv + BN + ReLU, stride 1 and 2                          (``layer1, 2``)
``base.3 .. 6``    residual stages (Bottleneck for D-54/105, BasicBlock for D-22/38), strides
                   2, 2, then dilation 2 and 4 instead of stride                  (``layer3 .. 6``)
``base.7, base.8`` 3×3 conv + BN + ReLU, dilation 2 and 1 (no residual: removes gridding)
``seg``            1×1 conv to the 19 Cityscapes train ids
``up``             fixed bilinear ×8 transposed conv (16×16 kernel, stride 8, padding 4, one per class)
=================  =============================================================================

Depths, widths, block type and class count are read from the weights, so DRN-D-22/38/54 files
load too. Output stride 8; the ×8 upsampling restores the input size when it is a multiple of 8
(other sizes are interpolated to the input size).

Preprocessing (``segment.py`` with ``datasets/cityscapes/info.json``): RGB in [0, 1], minus mean
(0.290101, 0.328081, 0.286964), divided by std (0.182954, 0.186566, 0.184475); the image is
segmented at the resolution given (single scale; the repo's ``--ms`` testing is not reproduced).

Output: the 19 Cityscapes *train ids*, mapped to the Cityscapes *label ids* that SPADE's
Cityscapes label maps hold (``gtFine_labelIds``): road 7, sidewalk 8, building 11, wall 12,
fence 13, pole 17, traffic light 19, traffic sign 20, vegetation 21, terrain 22, sky 23,
person 24, rider 25, car 26, truck 27, bus 28, train 31, motorcycle 32, bicycle 33.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import (NetworkSegmenter, Preprocessing, count_blocks, load_state, output_class_ids, read_state_dict,
                   require, strip_prefix)

# trainId → labelId (cityscapesScripts labels.py), the ids of SPADE's Cityscapes label maps.
CITYSCAPES_TRAIN_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
DRN_CITYSCAPES_PREPROCESSING = Preprocessing(channel_order="RGB", scale=1.0,
                                             mean=(0.290101, 0.328081, 0.286964),
                                             std=(0.182954, 0.186566, 0.184475))


@dataclass(frozen=True)
class DRNConfig:
    """Sizes of a DRN-D segmentation network (defaults: DRN-D-105, Cityscapes)."""

    layers: tuple[int, ...] = (1, 1, 3, 4, 23, 3, 1, 1)            # convs / blocks per level 1..8
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512, 512)  # widths (block planes) per level
    bottleneck: bool = True                                         # Bottleneck (D-54/105) or BasicBlock (D-22/38)
    num_classes: int = 19
    learned_up: bool = True                                         # DRNSeg's ConvTranspose 'up' (else bilinear)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # DRN puts the stride (and dilation) on the 3×3 conv.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _conv_layers(in_channels: int, channels: int, convs: int, stride: int, dilation: int, kernel: int = 3
                 ) -> nn.Sequential:
    """Plain conv + BN + ReLU layers (DRN-D levels 1, 2, 7, 8); the first one strides."""
    modules: list[nn.Module] = []
    for i in range(convs):
        modules += [nn.Conv2d(in_channels if i == 0 else channels, channels, kernel, stride if i == 0 else 1,
                              padding=dilation * (kernel // 2), dilation=dilation, bias=False),
                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


def _bilinear_up_kernel(classes: int, size: int = 16) -> torch.Tensor:
    """The fixed bilinear kernel of DRNSeg's ``fill_up_weights`` (one per class, grouped conv)."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - (torch.arange(size, dtype=torch.float64, device="cpu") / f - c).abs()
    return (ramp[:, None] * ramp[None, :]).float().expand(classes, 1, size, size).clone()


class DRNSeg(nn.Module):
    """DRN-D backbone + 1×1 classifier + ×8 upsampling, with DRNSeg's parameter names."""

    def __init__(self, config: DRNConfig = DRNConfig()):
        super().__init__()
        c, n = config.channels, config.layers
        block = _Bottleneck if config.bottleneck else _BasicBlock
        levels: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, c[0], 7, 1, padding=3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True)),
            _conv_layers(c[0], c[0], n[0], stride=1, dilation=1),
            _conv_layers(c[0], c[1], n[1], stride=2, dilation=1),
        ]
        in_channels = c[1]
        # Levels 3-6: residual stages; 5 and 6 dilate (2, 4) instead of striding (DRN Sec. 3).
        for planes, blocks, stride, dilation in ((c[2], n[2], 2, 1), (c[3], n[3], 2, 1),
                                                 (c[4], n[4], 1, 2), (c[5], n[5], 1, 4)):
            out_channels = planes * block.expansion
            downsample = None
            if stride != 1 or in_channels != out_channels:
                downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                           nn.BatchNorm2d(out_channels))
            stage = [block(in_channels, planes, stride, dilation, downsample)]
            stage += [block(out_channels, planes, 1, dilation, None) for _ in range(blocks - 1)]
            levels.append(nn.Sequential(*stage))
            in_channels = out_channels
        levels.append(_conv_layers(in_channels, c[6], n[6], stride=1, dilation=2))
        levels.append(_conv_layers(c[6], c[7], n[7], stride=1, dilation=1))
        self.base = nn.Sequential(*levels)
        self.seg = nn.Conv2d(c[7], config.num_classes, 1, bias=True)
        self.up: nn.ConvTranspose2d | None = None
        if config.learned_up:
            self.up = nn.ConvTranspose2d(config.num_classes, config.num_classes, 16, stride=8, padding=4,
                                         groups=config.num_classes, bias=False)
            with torch.no_grad():
                self.up.weight.copy_(_bilinear_up_kernel(config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at 8× the stride-8 feature size (= the input size for multiples of 8)."""
        logits = self.seg(self.base(x))
        if self.up is not None:
            return self.up(logits)
        return F.interpolate(logits, scale_factor=8, mode="bilinear", align_corners=True)  # UpsamplingBilinear2d


def drn_config_from_state(state: dict[str, torch.Tensor], source: str) -> DRNConfig:
    """Read depths, widths, block type and class count from DRNSeg weights."""
    what = "DRNSeg (DRN-D)"

    def width(key: str) -> int:
        return require(state, key, source, what).shape[0]

    def convs(level: int) -> int:
        # conv, BN, ReLU triplets: the last child with parameters is the BN at index 3k - 2
        return (count_blocks(state, f"base.{level}.") + 2) // 3

    channels = (width("base.0.0.weight"), width("base.2.0.weight"),
                *(width(f"base.{level}.0.conv1.weight") for level in (3, 4, 5, 6)),
                width("base.7.0.weight"), width("base.8.0.weight"))
    layers = (convs(1), convs(2), *(count_blocks(state, f"base.{level}.") for level in (3, 4, 5, 6)),
              convs(7), convs(8))
    return DRNConfig(layers=layers, channels=channels, bottleneck="base.3.0.conv3.weight" in state,
                     num_classes=width("seg.weight"), learned_up="up.weight" in state)


def load_drn(path: str | Path) -> DRNSeg:
    """A DRNSeg network with the weights of ``path`` (a ``torch.save``d state dict or checkpoint)."""
    state = strip_prefix(read_state_dict(path), ("module.",))
    network = DRNSeg(drn_config_from_state(state, str(path)))
    load_state(network, state, str(path), "DRNSeg (DRN-D)")
    return network


class DRNSegmenter(NetworkSegmenter):
    """DRN-D segmentation at a single scale; output stride 8 upsampled to the input size."""

    def scores(self, inputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.network(inputs)
        if logits.shape[-2:] != size:   # inputs not a multiple of 8
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def drn_d_105_cityscapes(weights: str | Path | None, device: torch.device | str = "cpu",
                         class_ids: tuple[int, ...] | None = None) -> DRNSegmenter:
    """The registered ``drn-d-105`` segmenter: Cityscapes label ids from a DRNSeg weight file.

    ``class_ids`` overrides the train-id → label-id table (e.g. for a file with other classes)."""
    if weights is None:
        raise ValueError("segmenter 'drn-d-105' needs a weights file: the DRN-D-105 Cityscapes model "
                         "of github.com/fyu/drn (drn_d_105_cityscapes.pth, go.yf.io/drn-cityscapes-models); "
                         "pass it with weights=PATH (--weights PATH)")
    network = load_drn(weights)
    classes = network.seg.out_channels
    class_ids = output_class_ids(weights, classes, class_ids, CITYSCAPES_TRAIN_TO_LABEL_ID, "19 Cityscapes train ids")
    return DRNSegmenter("drn-d-105", network, class_ids, DRN_CITYSCAPES_PREPROCESSING, device)
