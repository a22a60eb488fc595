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

    def forward(self, x: torch.Tensor, images: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The feature maps of each group; ``x`` is the input, or with ``images`` the semantic
        maps that go with them (see ``MultiscaleDiscriminator.forward``)."""
        groups = list(self.children())
        if images is not None:
            x, groups = self._first_group_on_pairs(x, images), groups[1:]
            features = [x]
        else:
            features = []
        for group in groups:
            x = group(x)
            features.append(x)
        return features

    def _first_group_on_pairs(self, semantics: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The first conv of (semantics, image) pairs, computed as conv(semantics) + conv(image).

        The first conv is linear and unnormalized, so its input channels split into two sums.
        The semantic part (all but 3 of the channels) never needs a gradient of its own, where a
        concatenated input gets one for every channel as soon as the image needs one; and the
        pyramid pools it once per map, without a backward pass. The semantic conv still runs on
        every pair (``repeat``), not once per map: summing the fake and real halves' gradients
        before the weight gradient was faster still (1.9× a training step against 1.3×) but
        changes the order of a sum that nearly cancels under the hinge loss, and two processes
        under DDP then ended 45× further from one process than the official order does."""
        conv, activation = self.model0
        n_semantic, repeats = semantics.shape[1], images.shape[0] // semantics.shape[0]
        # The bias rides on the semantic conv: oneDNN's float32 bias gradient of a conv with only
        # the 3 image channels as input loses precision that the semantic conv's keeps.
        shared = F.conv2d(semantics.repeat(repeats, 1, 1, 1), conv.weight[:, :n_semantic], conv.bias,
                          conv.stride, conv.padding)
        own = F.conv2d(images, conv.weight[:, n_semantic:], None, conv.stride, conv.padding)
        return activation(own + shared)


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

    def forward(self, x: torch.Tensor, images: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        """Per scale, the list of feature maps whose last entry is the patch prediction.

        ``x`` is the input: semantic maps and images concatenated on channels. Or, with
        ``images`` (k·N images for N semantic maps, image i going with map i mod N), ``x`` holds
        the semantic maps alone: the same result as ``forward(cat([x.repeat(k), images]))``, up
        to float rounding, faster to train (see ``_first_group_on_pairs``)."""
        if images is not None and images.shape[0] % x.shape[0]:
            raise ValueError(f"{images.shape[0]} images cannot be paired with {x.shape[0]} semantic maps")
        results = []
        discriminators = list(self.children())
        for i, discriminator in enumerate(discriminators):
            features = discriminator(x, images)
            results.append(features if self.return_features else features[-1:])
            if i + 1 < len(discriminators):  # the last scale's pooled input would go unused
                x = self.downsample(x)
                images = self.downsample(images) if images is not None else None
        return results
