"""OASIS (Schönfeld et al., "You Only Need Adversarial Supervision for Semantic Image Synthesis",
ICLR 2021): a SPADE generator that hears 3-D noise, and a U-Net discriminator that segments.

* **Generator** (paper Sec. 3.2): SPADE residual blocks (:class:`~spadegan.nn.spade.SPADEResnetBlock`)
  whose label networks read the semantic map concatenated with a noise tensor, ``[z | m]``. The
  noise is 3-D: one ``z_dim`` vector per pixel. Drawn as one vector per picture and spread over
  the map, it changes the picture's whole look (multimodality without an encoder); drawn anew
  inside one region only, it changes that region only (local control).
* **Discriminator** (Sec. 3.1): an encoder-decoder with skip connections whose output is a
  segmentation into N + 1 classes per pixel: the N semantic classes, and channel 0 for "fake".

Parameter and buffer names follow the official implementation (boschresearch/OASIS), except
``first_norm``, which is ``param_free_norm`` here as in SPADE (:func:`official_oasis_keys` maps
them), so that its checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from .fast_spade import LabelNetworkCache, label_maps_from_semantics, resnet_block_fast
from .norm import ParamFreeKind
from .spade import NEGATIVE_SLOPE, SPADEResnetBlock

BLOCKS = 6  # both networks: the official code builds six whatever --num_res_blocks says


class OASISGenerator(nn.Module):
    """The OASIS generator: ``fc`` (a 3×3 conv) on ``[z | m]`` downsampled to the start size,
    then six SPADE residual blocks, each but the first on its input upsampled 2× (nearest), then
    leaky ReLU, ``conv_img`` and tanh. Widths 16, 16, 16, 8, 4, 2, 1 × ``ngf`` (``--channels_G``)."""

    def __init__(
        self,
        semantic_channels: int,          # one-hot classes (+ don't-care): the official semantic_nc
        crop_size: int = 256,
        aspect_ratio: float = 1.0,       # width / height
        ngf: int = 64,                   # --channels_G
        z_dim: int | None = 64,          # None: --no_3dnoise
        param_free: ParamFreeKind = "syncbatch",
        spade_kernel_size: int = 3,      # --spade_ks
        spectral: bool = True,           # not --no_spectral_norm
    ):
        super().__init__()
        self.z_dim = z_dim
        self.start_width = crop_size // 2 ** (BLOCKS - 1)
        self.start_height = round(self.start_width / aspect_ratio)
        if self.start_width < 1 or self.start_height < 1:
            raise ValueError(f"crop_size {crop_size} with aspect ratio {aspect_ratio} gives an empty "
                             f"{self.start_height}x{self.start_width} start; OASIS needs at least {2 ** (BLOCKS - 1)}")
        conditioning = semantic_channels + (z_dim or 0)
        widths = [16 * ngf, 16 * ngf, 16 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf]
        self.fc = nn.Conv2d(conditioning, widths[0], 3, padding=1)
        self.body = nn.ModuleList(
            SPADEResnetBlock(widths[i], widths[i + 1], conditioning, param_free, spade_kernel_size, spectral)
            for i in range(BLOCKS))
        self.conv_img = nn.Conv2d(widths[-1], 3, 3, padding=1)
        # The fast SPADE path where the conditioning is a one-hot map (no noise); see SPADEGenerator.
        self.fast_spade = spade_kernel_size == 3
        self.label_network_cache = LabelNetworkCache()

    def noise(self, semantics: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One z per picture, N×z_dim, from N(0, I): the official draw (float32 ``torch.randn``
        on the global generator when ``generator`` is None), in the map's dtype."""
        z = torch.randn(semantics.shape[0], self.z_dim, dtype=torch.float32, device=semantics.device,
                        generator=generator)
        return z.to(semantics.dtype)

    def forward(self, semantics: torch.Tensor, z: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``semantics``: N×C×H×W one-hot map; ``z``: N×z_dim (one code per picture, spread over
        every pixel, as the official code draws it) or N×z_dim×H×W (a code per pixel), drawn
        with ``generator`` when None. Returns images in [-1, 1]."""
        conditioning = semantics
        if self.z_dim is not None:
            if z is None:
                z = self.noise(semantics, generator)
            if z.dim() == 2:
                z = z[:, :, None, None].expand(-1, -1, *semantics.shape[2:])
            conditioning = torch.cat([z.to(semantics.dtype), semantics], dim=1)  # noise first (official)
        x = self.fc(F.interpolate(conditioning, size=(self.start_height, self.start_width), mode="nearest"))
        maps = label_maps_from_semantics(conditioning) if self.fast_spade and self.z_dim is None else None
        for index, block in enumerate(self.body):
            upsample = index > 0
            if maps is not None:
                x = resnet_block_fast(block, x, maps, upsample, self.label_network_cache)
            else:
                x = block(x, conditioning, upsample=upsample)
        return torch.tanh(self.conv_img(F.leaky_relu(x, NEGATIVE_SLOPE)))


class OASISDiscriminatorBlock(nn.Module):
    """A residual block of the OASIS discriminator: (leaky ReLU,) conv, leaky ReLU, conv, with a
    2× average-pool after (encoder) or a 2× nearest upsampling before (decoder), and a 1×1 conv
    shortcut where the width changes. The first encoder block reads the image: no activation
    before its first conv."""

    def __init__(self, in_channels: int, out_channels: int, up: bool, first: bool = False, spectral: bool = True):
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)
        self.up, self.first = up, first
        conv = wrap(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        if first:
            self.conv1 = nn.Sequential(conv)
        elif up:
            self.conv1 = nn.Sequential(nn.LeakyReLU(NEGATIVE_SLOPE), nn.Upsample(scale_factor=2), conv)
        else:
            self.conv1 = nn.Sequential(nn.LeakyReLU(NEGATIVE_SLOPE), conv)
        self.conv2 = nn.Sequential(nn.LeakyReLU(NEGATIVE_SLOPE), wrap(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.conv_s = wrap(nn.Conv2d(in_channels, out_channels, 1)) if in_channels != out_channels else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # The official order: resample first, except in the encoder's later blocks, which pool
        # after the 1×1 conv (the same function; the order decides the rounding).
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        elif self.first:
            x = F.avg_pool2d(x, 2)
        if self.conv_s is not None:
            x = self.conv_s(x)
        if not self.up and not self.first:
            x = F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.conv2(self.conv1(x))
        if not self.up:
            dx = F.avg_pool2d(dx, 2)
        return self.shortcut(x) + dx


class OASISDiscriminator(nn.Module):
    """The OASIS discriminator: six encoder blocks (widths 2, 2, 4, 4, 8, 8 × ``ndf``) from the
    image down to 1/64 of its size, six decoder blocks back up, each but the first reading the
    matching encoder output beside its input, and a 1×1 conv to ``semantic_channels + 1`` logits
    per pixel: channel 0 "fake", channel c + 1 semantic class c. ``ndf`` 64 is the official
    network, whose widths are fixed (its ``--channels_D`` is read and not used)."""

    def __init__(self, semantic_channels: int, ndf: int = 64, spectral: bool = True):
        super().__init__()
        widths = [3, 2 * ndf, 2 * ndf, 4 * ndf, 4 * ndf, 8 * ndf, 8 * ndf]
        self.body_down = nn.ModuleList(
            OASISDiscriminatorBlock(widths[i], widths[i + 1], up=False, first=i == 0, spectral=spectral)
            for i in range(BLOCKS))
        ups = [OASISDiscriminatorBlock(widths[-1], widths[-2], up=True, spectral=spectral)]
        ups += [OASISDiscriminatorBlock(2 * widths[-1 - i], widths[-2 - i], up=True, spectral=spectral)
                for i in range(1, BLOCKS - 1)]
        ups.append(OASISDiscriminatorBlock(2 * widths[1], ndf, up=True, spectral=spectral))
        self.body_up = nn.ModuleList(ups)
        self.layer_up_last = nn.Conv2d(ndf, semantic_channels + 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """N×3×H×W (H and W multiples of 64) → N×(C + 1)×H×W logits."""
        features = []
        x = image
        for block in self.body_down:
            x = block(x)
            features.append(x)
        x = self.body_up[0](x)
        for index in range(1, BLOCKS):
            x = self.body_up[index](torch.cat([features[-1 - index], x], dim=1))  # skip first (official)
        return self.layer_up_last(x)


def official_oasis_keys(state: dict[str, torch.Tensor], to_official: bool = False) -> dict[str, torch.Tensor]:
    """A state dict with the official OASIS key names (``first_norm``) turned into ours
    (``param_free_norm``), or back with ``to_official``."""
    theirs, ours = ".first_norm.", ".param_free_norm."
    old, new = (ours, theirs) if to_official else (theirs, ours)
    return {key.replace(old, new): value for key, value in state.items()}
