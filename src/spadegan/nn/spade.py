"""Spatially-adaptive normalization (SPADE) and the SPADE residual block.

SPADE (paper Sec. 3.1, Eq. 1, Fig. 2): normalize activations with a parameter-free norm, then
modulate them per pixel, ``x̂ · (1 + γ(m)) + β(m)``, where γ and β are tensors predicted from the
semantic map ``m`` by a small conv net (shared conv + ReLU, then a γ conv and a β conv). Because
γ and β vary per pixel, the normalization no longer washes the layout away (Fig. 3).

Parameter and buffer names follow the official implementation so that its weights load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import ParamFreeKind, param_free_norm
from .spectral import spectral_norm

NEGATIVE_SLOPE = 0.2  # the leaky ReLU of the residual block (official: 2e-1)


class SPADE(nn.Module):
    """One SPADE layer (Fig. 2)."""

    def __init__(
        self,
        norm_channels: int,             # channels of the activations being normalized
        label_channels: int,            # channels of the semantic map (one-hot + don't-care + edges)
        param_free: ParamFreeKind = "syncbatch",  # the parameter-free norm
        kernel_size: int = 3,           # kernel of the label network's convs
        hidden_channels: int = 128,     # the label network's width; fixed at 128 in the official code
    ):
        super().__init__()
        self.param_free_norm = param_free_norm(param_free, norm_channels, affine=False)
        padding = kernel_size // 2
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden_channels, kernel_size, padding=padding), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden_channels, norm_channels, kernel_size, padding=padding)
        self.mlp_beta = nn.Conv2d(hidden_channels, norm_channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """``segmap``: the semantic map (one-hot classes, don't-care, instance edges). The same
        numbers, faster, for a one-hot map: :func:`spadegan.nn.fast_spade.spade_modulate`."""
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")  # to this layer's resolution
        actv = self.mlp_shared(segmap)
        gamma = self.mlp_gamma(actv)
        beta = self.mlp_beta(actv)
        return normalized * (1 + gamma) + beta  # Eq. 1


class ClassAffine(nn.Module):
    """CLADE's per-class scale and shift: row c of ``weight`` and ``bias`` for a pixel of class c
    (official CLADE ``ClassAffine``, without its optional intra-class distance input)."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, channels))
        self.bias = nn.Parameter(torch.empty(num_classes, channels))
        nn.init.uniform_(self.weight)  # official: U(0, 1) scales, zero shifts
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``classes``: N×H×W class ids at x's resolution."""
        scale = F.embedding(classes, self.weight).permute(0, 3, 1, 2)
        shift = F.embedding(classes, self.bias).permute(0, 3, 1, 2)
        return x * scale + shift


class CLADE(nn.Module):
    """Class-adaptive normalization (Tan et al., "Efficient Semantic Image Synthesis via
    Class-Adaptive Normalization", TPAMI 2021): SPADE's Eq. 1 with γ and β depending on the class
    only, ``norm(x)·γ[c] + β[c]``, a lookup instead of SPADE's label network. With instance edges,
    the edge map goes through a 1×1 conv and is appended as one more channel (official CLADE), so
    the convolution that follows takes one more input channel."""

    def __init__(self, norm_channels: int, num_classes: int, instance_edges: bool,
                 param_free: ParamFreeKind = "syncbatch"):
        super().__init__()
        self.param_free_norm = param_free_norm(param_free, norm_channels, affine=False)
        self.class_specified_affine = ClassAffine(num_classes, norm_channels)
        self.inst_conv = nn.Conv2d(1, 1, kernel_size=1) if instance_edges else None

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """``segmap``: the one-hot semantic map (+ the edge channel last, with instance edges)."""
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        if self.inst_conv is not None:
            segmap, edges = segmap[:, :-1], segmap[:, -1:]
        out = self.class_specified_affine(normalized, segmap.argmax(dim=1))
        if self.inst_conv is not None:
            out = torch.cat([out, self.inst_conv(edges)], dim=1)
        return out


class SPADEResnetBlock(nn.Module):
    """The SPADE residual block (Fig. 4, left): two SPADE-ReLU-conv units, and a learned
    SPADE-conv shortcut when the channel count changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        label_channels: int,
        param_free: ParamFreeKind = "syncbatch",
        kernel_size: int = 3,           # SPADE label-network kernel
        spectral: bool = True,          # spectral norm on conv_0, conv_1, conv_s (not on SPADE convs)
        hidden_channels: int = 128,
        norm_mode: str = "spade",       # "clade": class-adaptive normalization (CLADE) instead of SPADE
        instance_edges: bool = False,   # the semantic map's last channel is the instance edge map
    ):
        super().__init__()
        self.learned_shortcut = in_channels != out_channels
        middle = min(in_channels, out_channels)
        wrap = spectral_norm if spectral else (lambda m: m)
        extra = 1 if norm_mode == "clade" and instance_edges else 0  # CLADE appends the edge feature
        self.conv_0 = wrap(nn.Conv2d(in_channels + extra, middle, 3, padding=1))
        self.conv_1 = wrap(nn.Conv2d(middle + extra, out_channels, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = wrap(nn.Conv2d(in_channels + extra, out_channels, 1, bias=False))
        if norm_mode == "spade":
            def norm(channels: int) -> nn.Module:
                return SPADE(channels, label_channels, param_free, kernel_size, hidden_channels)
        elif norm_mode == "clade":
            classes = label_channels - (1 if instance_edges else 0)  # one-hot classes (+ don't-care)

            def norm(channels: int) -> nn.Module:
                return CLADE(channels, classes, instance_edges, param_free)
        else:
            raise ValueError(f"norm_mode {norm_mode!r}: expected 'spade' or 'clade'")
        self.norm_0 = norm(in_channels)
        self.norm_1 = norm(middle)
        if self.learned_shortcut:
            self.norm_s = norm(in_channels)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, upsample: bool = False) -> torch.Tensor:
        """``upsample``: take x upsampled 2× (nearest) as the input, as the generator feeds its up
        blocks. The same numbers, faster, for a one-hot map:
        :func:`spadegan.nn.fast_spade.resnet_block_fast`, which never makes the upsampled map."""
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x  # no activation (official)
        dx = self.conv_0(actvn(self.norm_0(x, seg)))
        dx = self.conv_1(actvn(self.norm_1(dx, seg)))
        return x_s + dx


def actvn(x: torch.Tensor) -> torch.Tensor:
    """The residual block's activation (the official ``actvn``)."""
    return F.leaky_relu(x, NEGATIVE_SLOPE)
