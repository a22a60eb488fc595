"""UperNet-101 on ADE20K: the segmenter of the SPADE paper's ADE20K scores.

Architecture of Xiao et al., *Unified Perceptual Parsing* (ECCV 2018), as
github.com/CSAILVision/semantic-segmentation-pytorch lays out its parameters, so its released
``ade20k-resnet101-upernet`` weights (``encoder_epoch_50.pth`` + ``decoder_epoch_50.pth``; the
2018 ``baseline-resnet101-upernet`` has the same layout) load unchanged.

Encoder (``encoder_*.pth``), the repo's ImageNet ResNet-101 with a deep stem:
``conv1`` (3×3, stride 2, 3→64), ``conv2`` (64→64), ``conv3`` (64→128), each with ``bn1..3`` + ReLU,
3×3 max-pool stride 2, then ``layer1 .. layer4`` (3, 4, 23, 3 bottlenecks; stride on the 3×3
``conv2``; ``downsample.0/1`` = 1×1 conv + BN) giving features at strides 4, 8, 16, 32.

Decoder (``decoder_*.pth``), UPerNet with ``fpn_dim`` 512 (the ``upernet`` decoder; 256 for
``upernet_lite``), ``fc_dim`` 2048:
``ppm_conv.{0..3}`` (1×1 conv to 512 + BN + ReLU after adaptive average pooling to 1, 2, 3, 6),
``ppm_last_conv`` (3×3 conv + BN + ReLU), ``fpn_in.{0..2}`` (lateral 1×1 conv + BN + ReLU),
``fpn_out.{0..2}.0`` (3×3 conv + BN + ReLU), ``conv_last.0`` (3×3 conv + BN + ReLU on the four
fused levels) and ``conv_last.1`` (1×1 conv with bias to the 150 classes).

Weights: a folder holding ``encoder_*.pth`` and ``decoder_*.pth``, the encoder file (the decoder
file is found beside it by name), or one file with ``encoder.`` / ``decoder.`` prefixed keys
(a ``SegmentationModule`` state dict).

Preprocessing: ``preprocessing='mit_semseg'`` (default; the current repo and its
``ade20k-*`` models): RGB in [0, 1], ImageNet mean (0.485, 0.456, 0.406) and std
(0.229, 0.224, 0.225). ``preprocessing='legacy'`` (the 2018 ``baseline-*`` models, read with
OpenCV): BGR in [0, 255] minus (102.9801, 115.9465, 122.7717). Evaluation as the repo's
``eval.py``: for each short side in ``image_sizes`` (300, 375, 450, 525, 600; the long side at
most 1000) the image is resized (bilinear), rounded up to a multiple of 32, segmented, and the
softmax probabilities, resized back to the image, are averaged.

Output: 150 channels = ADE20K classes 1..150 of the label files, i.e. ids 0..149 as
:mod:`spadegan.data.datasets` loads ADE20K label maps (file id − 1; unlabeled 0 becomes 150).
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

ADE20K_CLASSES = 150
UPERNET_PREPROCESSING = {
    "mit_semseg": Preprocessing(channel_order="RGB", scale=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "legacy": Preprocessing(channel_order="BGR", scale=255.0, mean=(102.9801, 115.9465, 122.7717), std=(1.0, 1.0, 1.0)),
}


@dataclass(frozen=True)
class UperNetConfig:
    """Sizes of a ResNet + UPerNet network (defaults: ``ade20k-resnet101-upernet``)."""

    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)    # ResNet-101
    width: int = 64                                       # encoder stem width; features 4w, 8w, 16w, 32w
    fpn_dim: int = 512                                    # 'upernet' decoder (256: 'upernet_lite')
    ppm_dim: int = 512                                    # fixed in the repo
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    num_classes: int = ADE20K_CLASSES


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _Bottleneck(nn.Module):
    def __init__(self, in_channels: int, planes: int, stride: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)   # torchvision style
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = (nn.Sequential(nn.Conv2d(in_channels, planes * 4, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * 4)) if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetEncoder(nn.Module):
    """The repo's ``Resnet`` encoder (deep stem ResNet without pooling/fc): 4 feature maps."""

    def __init__(self, blocks: Sequence[int] = (3, 4, 23, 3),   # bottlenecks per stage
                 width: int = 64):                               # stem width (64 in the releases)
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, 2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = nn.Conv2d(w, 2 * w, 3, 1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * w)
        in_channels = 2 * w
        for index, (planes, count, stride) in enumerate(zip((w, 2 * w, 4 * w, 8 * w), blocks, (1, 2, 2, 2))):
            stage = [_Bottleneck(in_channels, planes, stride, downsample=True)]
            stage += [_Bottleneck(planes * 4, planes, 1, downsample=False) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            in_channels = planes * 4
        self.out_channels = (4 * w, 8 * w, 16 * w, 32 * w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


class UPerNetDecoder(nn.Module):
    """Pyramid pooling on the last feature map + FPN over all four, fused (UPerNet, Fig. 3)."""

    def __init__(self, config: UperNetConfig = UperNetConfig(), in_channels: Sequence[int] = (256, 512, 1024, 2048)):
        super().__init__()
        top = in_channels[-1]
        self.pool_scales = tuple(config.pool_scales)
        self.ppm_conv = nn.ModuleList(_conv_bn_relu(top, config.ppm_dim, 1) for _ in self.pool_scales)
        self.ppm_last_conv = _conv_bn_relu(top + len(self.pool_scales) * config.ppm_dim, config.fpn_dim, 3)
        self.fpn_in = nn.ModuleList(_conv_bn_relu(c, config.fpn_dim, 1) for c in in_channels[:-1])
        self.fpn_out = nn.ModuleList(nn.Sequential(_conv_bn_relu(config.fpn_dim, config.fpn_dim, 3))
                                     for _ in in_channels[:-1])
        self.conv_last = nn.Sequential(_conv_bn_relu(len(in_channels) * config.fpn_dim, config.fpn_dim, 3),
                                       nn.Conv2d(config.fpn_dim, config.num_classes, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits at stride 4."""
        top = features[-1]
        size = top.shape[-2:]
        pooled = [top] + [conv(F.interpolate(F.adaptive_avg_pool2d(top, scale), size, mode="bilinear",
                                             align_corners=False))
                          for scale, conv in zip(self.pool_scales, self.ppm_conv)]
        f = self.ppm_last_conv(torch.cat(pooled, dim=1))
        levels = [f]
        for i in reversed(range(len(features) - 1)):   # top-down pathway with lateral connections
            lateral = self.fpn_in[i](features[i])
            f = lateral + F.interpolate(f, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            levels.append(self.fpn_out[i](f))
        levels.reverse()
        out_size = levels[0].shape[-2:]
        fused = [levels[0]] + [F.interpolate(level, out_size, mode="bilinear", align_corners=False)
                               for level in levels[1:]]
        return self.conv_last(torch.cat(fused, dim=1))


class UperNet(nn.Module):
    """Encoder + decoder, keeping the two state dicts of the released files apart."""

    def __init__(self, config: UperNetConfig = UperNetConfig()):
        super().__init__()
        self.encoder = ResNetEncoder(config.blocks, config.width)
        self.decoder = UPerNetDecoder(config, self.encoder.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _files(path: Path) -> tuple[Path, Path | None]:
    """(encoder file, decoder file) for a folder or an encoder file; (file, None) for a combined file."""
    if path.is_dir():
        encoders = sorted(path.glob("encoder*.pth"))
        decoders = sorted(path.glob("decoder*.pth"))
        if len(encoders) != 1 or len(decoders) != 1:
            raise FileNotFoundError(f"{path}: expected one encoder_*.pth and one decoder_*.pth, found "
                                    f"{[p.name for p in encoders + decoders] or 'none'}")
        return encoders[0], decoders[0]
    if "encoder" in path.name:
        decoder = path.with_name(path.name.replace("encoder", "decoder"))
        if not decoder.is_file():
            raise FileNotFoundError(f"{path}: an encoder file; its decoder {decoder.name} is not beside it")
        return path, decoder
    return path, None


def upernet_config_from_states(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor],
                               encoder_source: str, decoder_source: str) -> UperNetConfig:
    """Read depths and widths from the encoder and decoder weights (pool scales are not stored:
    the released models use 1, 2, 3, 6)."""
    def encoder_key(key: str) -> torch.Tensor:
        return require(encoder, key, encoder_source, "UperNet encoder (ResNet)")

    def decoder_key(key: str) -> torch.Tensor:
        return require(decoder, key, decoder_source, "UPerNet decoder")

    blocks = tuple(count_blocks(encoder, f"layer{i}.") for i in (1, 2, 3, 4))
    if 0 in blocks:
        encoder_key(f"layer{blocks.index(0) + 1}.0.conv1.weight")
    pools = count_blocks(decoder, "ppm_conv.")
    return UperNetConfig(blocks=blocks, width=encoder_key("conv1.weight").shape[0],
                         fpn_dim=decoder_key("ppm_last_conv.0.weight").shape[0],
                         ppm_dim=decoder_key("ppm_conv.0.0.weight").shape[0],
                         pool_scales=UperNetConfig.pool_scales[:pools] if pools < 4 else UperNetConfig.pool_scales,
                         num_classes=decoder_key("conv_last.1.weight").shape[0])


def load_upernet(path: str | Path) -> UperNet:
    """An UperNet with the weights at ``path`` (folder, encoder file, or combined file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weights file or folder")
    encoder_path, decoder_path = _files(path)
    if decoder_path is None:
        state = strip_prefix(read_state_dict(encoder_path), ("module.",))
        encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        decoder = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
        if not encoder or not decoder:
            raise ValueError(f"{path}: not UperNet weights: give the folder with encoder_*.pth and decoder_*.pth, "
                             "the encoder file, or one file with 'encoder.' and 'decoder.' keys")
        sources = (str(path), str(path))
    else:
        encoder = strip_prefix(read_state_dict(encoder_path), ("module.",))
        decoder = strip_prefix(read_state_dict(decoder_path), ("module.",))
        sources = (str(encoder_path), str(decoder_path))
    network = UperNet(upernet_config_from_states(encoder, decoder, *sources))
    load_state(network.encoder, encoder, sources[0], "UperNet encoder (ResNet)")
    load_state(network.decoder, decoder, sources[1], "UPerNet decoder")
    return network


class UperNetSegmenter(NetworkSegmenter):
    """The repo's multi-scale evaluation: softmax probabilities averaged over resized inputs."""

    def __init__(self, name: str, network: nn.Module, class_ids: Sequence[int], preprocessing: Preprocessing,
                 device: torch.device | str = "cpu",
                 image_sizes: Sequence[int] = (300, 375, 450, 525, 600),   # short sides tried
                 max_size: int = 1000,                                      # cap on the long side
                 padding_constant: int = 32):                              # sizes rounded up to a multiple
        super().__init__(name, network, class_ids, preprocessing, device)
        self.image_sizes, self.max_size, self.padding_constant = tuple(image_sizes), max_size, padding_constant

    def scores(self, inputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = size
        total = None
        for short in self.image_sizes:
            scale = min(short / min(height, width), self.max_size / max(height, width))
            p = self.padding_constant
            target = [((int(s * scale) - 1) // p + 1) * p for s in (height, width)]
            resized = F.interpolate(inputs, size=target, mode="bilinear", align_corners=False, antialias=True)
            logits = self.network(resized)
            probabilities = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(dim=1)
            total = probabilities if total is None else total + probabilities
        return total / len(self.image_sizes)


def upernet101_ade20k(weights: str | Path | None, device: torch.device | str = "cpu",
                      preprocessing: str = "mit_semseg",
                      image_sizes: Sequence[int] = (300, 375, 450, 525, 600), max_size: int = 1000,
                      class_ids: Sequence[int] | None = None) -> UperNetSegmenter:
    """The registered ``upernet-101`` segmenter: ADE20K ids 0..149 from the CSAIL release."""
    if weights is None:
        raise ValueError("segmenter 'upernet-101' needs weights: the folder of the ade20k-resnet101-upernet "
                         "model of github.com/CSAILVision/semantic-segmentation-pytorch (encoder_epoch_50.pth "
                         "+ decoder_epoch_50.pth); pass it with weights=PATH (--weights PATH)")
    if preprocessing not in UPERNET_PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {sorted(UPERNET_PREPROCESSING)}, got {preprocessing!r}")
    network = load_upernet(weights)
    classes = network.decoder.conv_last[1].out_channels
    class_ids = output_class_ids(weights, classes, class_ids, range(ADE20K_CLASSES), "150 of ADE20K")
    return UperNetSegmenter("upernet-101", network, class_ids, UPERNET_PREPROCESSING[preprocessing],
                            device, image_sizes, max_size)
