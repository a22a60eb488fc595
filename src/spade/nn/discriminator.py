"""The multi-scale PatchGAN discriminator (paper Sec. 3.2, from pix2pixHD).

``num_D`` identical patch discriminators look at the (semantic map, image) pair at successively
halved resolutions. Each returns its intermediate feature maps as well as its prediction, for
the feature-matching loss. Module names follow the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .norm import NormSpec, add_norm, parse_norm_spec


class NLayerDiscriminator(nn.Module):
    """A PatchGAN: a 4×4 stride-2 conv, ``n_layers - 1`` normalized convs (the last with stride
    1), then a 1-channel 4×4 conv. Kept as ``model0..modelN`` groups to expose each output."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4,
                 norm: NormSpec | str = "spectralinstance"):
        super().__init__()
        spec = parse_norm_spec(norm) if isinstance(norm, str) else norm
        kw = 4
        padw = math.ceil((kw - 1.0) / 2)  # 2, as in the official code
        nf = ndf
        groups: list[list[nn.Module]] = [[nn.Conv2d(input_nc, nf, kw, stride=2, padding=padw),
                                          nn.LeakyReLU(0.2)]]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            groups.append([add_norm(nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=padw), spec),
                           nn.LeakyReLU(0.2)])
        groups.append([nn.Conv2d(nf, 1, kw, stride=1, padding=padw)])
        for n, group in enumerate(groups):
            self.add_module(f"model{n}", nn.Sequential(*group))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for group in self.children():
            x = group(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs on a pyramid made by 3×3 average pooling with stride 2."""

    def __init__(
        self,
        input_nc: int,                   # semantic channels + 3 image channels
        ndf: int = 64,
        n_layers: int = 4,               # --n_layers_D
        num_D: int = 2,                  # --num_D
        norm: NormSpec | str = "spectralinstance",
        return_features: bool = True,    # False: each scale gives [prediction] (--no_ganFeat_loss)
    ):
        super().__init__()
        self.return_features = return_features
        for i in range(num_D):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(input_nc, ndf, n_layers, norm))

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale, the list of feature maps whose last entry is the patch prediction."""
        results = []
        for discriminator in self.children():
            features = discriminator(x)
            results.append(features if self.return_features else features[-1:])
            x = self.downsample(x)
        return results
