"""A style code that says each class's look (ours, ``--class_modulation``).

The official generator hears its style code z only through its first layer; ``--z_modulation``
adds one per-channel scale and shift per block. Neither can say "an orange sky over a dark sea"
in one step: a style is a colour and a contrast *per class*, and a scale and shift of a whole
feature map moves every class alike. Here z gives each class c its own scale a(z, c) and shift
b(z, c) of the last block's channels, applied where the semantic map has that class:

    x' = x · (1 + a(z, c)) + b(z, c)

so the picture after ``conv_img`` can take any colour and contrast per class while the generator's
layout and texture (x) stay what they were. The map's other channels (instance edges, don't-care)
are classes of their own here. The layer starts at zero, where x' = x: a trained generator gains
it without a change to its pictures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import ZeroInitLinear


class ClassModulation(nn.Module):
    def __init__(self, z_dim: int, label_channels: int, channels: int):
        super().__init__()
        self.label_channels = label_channels
        self.channels = channels
        # [a | b] for every class, one row of 2·channels each, linear in z.
        self.rows = ZeroInitLinear(z_dim, label_channels * 2 * channels)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x``: N×channels×H×W features; ``seg``: N×label_channels semantic map (any size:
        resized nearest, as SPADE resizes it); ``z``: N×z_dim."""
        n, _, height, width = x.shape
        if seg.shape[-2:] != (height, width):
            seg = F.interpolate(seg, size=(height, width), mode="nearest")
        rows = self.rows(z).view(n, self.label_channels, 2 * self.channels).to(x.dtype)
        # Σ_c seg[c] · [a | b](z, c) per pixel: one lookup where the map is one-hot.
        per_pixel = torch.bmm(rows.transpose(1, 2), seg.to(x.dtype).flatten(2)).view(n, 2 * self.channels, height, width)
        scale, shift = per_pixel.chunk(2, dim=1)
        return x * (1 + scale) + shift
