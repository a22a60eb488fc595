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

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fast_spade import (LabelNetworkCache, _gamma_beta_matrix, _patches, _shared_table, _uniform_5x5,
                         label_maps_from_semantics, resnet_block_fast)
from .norm import ParamFreeKind
from .spade import NEGATIVE_SLOPE, SPADEResnetBlock
from .spectral import spectral_norm

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
        conditioning, code = semantics, None
        if self.z_dim is not None:
            if z is None:
                z = self.noise(semantics, generator)
            z = z.to(semantics.dtype)
            code = z if z.dim() == 2 else None
            if z.dim() == 2:
                z = z[:, :, None, None].expand(-1, -1, *semantics.shape[2:])
            conditioning = torch.cat([z, semantics], dim=1)  # noise first (official)
        x = self.fc(F.interpolate(conditioning, size=(self.start_height, self.start_width), mode="nearest"))
        # The path, chosen once: the fast SPADE path for a one-hot map without noise; for a
        # one-hot map with one code per picture, the label networks' first conv as a lookup plus
        # the code's constant contribution; the reference blocks otherwise (a code per pixel).
        maps = label_maps_from_semantics(semantics) if self.fast_spade else None
        if maps is not None and maps.edges is not None:
            maps = None
        levels: dict[tuple[int, int], CodeLevel] = {}

        def level_at(size: tuple[int, int]) -> CodeLevel:
            """The class ids at ``size`` and where their regions' interiors are, once per
            resolution (nearest resizing of the ids picks the same source pixels as nearest
            resizing of the one-hot map)."""
            if size not in levels:
                levels[size] = CodeLevel.of(F.interpolate(maps.ids.float(), size=size, mode="nearest").long()[:, 0],
                                            maps.num_classes)
            return levels[size]
        for index, block in enumerate(self.body):
            upsample = index > 0
            if maps is not None and self.z_dim is None:
                x = resnet_block_fast(block, x, maps, upsample, self.label_network_cache)
            elif maps is not None and code is not None:
                x = resnet_block_with_code(block, x, level_at, code, upsample)
            else:
                x = block(x, conditioning, upsample=upsample)
        return torch.tanh(self.conv_img(F.leaky_relu(x, NEGATIVE_SLOPE)))


def _neighbour_rows(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N·H·W)×9 rows of :func:`~spadegan.nn.fast_spade._shared_table` for each pixel's 3×3
    neighbourhood (offset-major): the class of the neighbour at offset o, or the zero row where
    the neighbour is outside the image (the conv's zero padding)."""
    outside = 2 * num_classes
    padded = F.pad(ids * 2, (1, 1, 1, 1), value=outside)
    windows = padded.unfold(1, 3, 1).unfold(2, 3, 1)             # N×H×W×3×3
    offsets = torch.arange(9, device=ids.device) * (2 * num_classes + 1)
    return windows.reshape(-1, 9) + offsets


def label_activation_with_code(spade, ids: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """The activation of a SPADE layer's ``mlp_shared`` (3×3 conv, ReLU) on ``[z | one-hot(ids)]``
    where z is one code per picture, the same at every pixel (the official draw): N×hidden×H×W.

    The conv is linear in its input, so it is the sum of two parts, each computed for what it is:
    the one-hot part is, at each pixel, the sum of the weight columns of the 9 neighbours'
    classes (a lookup); the code's part is Σ_o W_o·z over the offsets o whose neighbour lies in
    the image (zero padding), the same at every pixel away from the border: the 9 vectors W_o·z,
    placed by a one-channel 3×3 convolution of an image of ones."""
    conv = spade.mlp_shared[0]
    n, h, w = ids.shape
    hidden, z_dim = conv.out_channels, code.shape[1]
    classes = conv.in_channels - z_dim
    table = _shared_table(conv.weight[:, z_dim:], classes, has_edges=False)
    one_hot_part = F.embedding_bag(_neighbour_rows(ids, classes), table, mode="sum")
    one_hot_part = one_hot_part.view(n, h, w, hidden).permute(0, 3, 1, 2)
    per_offset = torch.einsum("jzo,nz->njo", conv.weight[:, :z_dim].reshape(hidden, z_dim, 9), code)
    ones = code.new_ones(1, 1, h, w)
    code_part = F.conv2d(ones, per_offset.reshape(n * hidden, 1, 3, 3), padding=1).view(n, hidden, h, w)
    return F.relu(one_hot_part + code_part + conv.bias.view(1, -1, 1, 1))


@dataclass(frozen=True)
class CodeLevel:
    """One resolution's class ids (N×H×W) and what the lookups need of them: the pixels whose 5×5
    window holds one class inside the image (``interior``), the others (``boundary``, flat
    indices) with their 3×3 neighbourhoods in the activation map padded by one pixel
    (``patch_index``, B×9), and each pixel's row among N·K per-(picture, class) rows and B
    boundary rows (``pixel_row``)."""

    ids: torch.Tensor
    interior: torch.Tensor
    boundary: torch.Tensor
    patch_index: torch.Tensor
    pixel_row: torch.Tensor

    @staticmethod
    def of(ids: torch.Tensor, num_classes: int) -> CodeLevel:
        n, h, w = ids.shape
        with torch.no_grad():
            interior = _uniform_5x5(ids * 2, 2 * num_classes)
            boundary = (~interior).flatten().nonzero().squeeze(1)
            b_n, rest = boundary // (h * w), boundary % (h * w)
            top_left = b_n * (h + 2) * (w + 2) + (rest // w) * (w + 2) + rest % w
            offsets = torch.tensor([dy * (w + 2) + dx for dy in range(3) for dx in range(3)], device=ids.device)
            picture = torch.arange(n, device=ids.device).repeat_interleave(h * w)
            pixel_row = picture * num_classes + ids.flatten()
            pixel_row[boundary] = n * num_classes + torch.arange(boundary.numel(), device=ids.device)
        return CodeLevel(ids, interior, boundary, top_left[:, None] + offsets, pixel_row)


def spade_with_code(spade, x: torch.Tensor, level: CodeLevel, code: torch.Tensor) -> torch.Tensor:
    """A SPADE layer (Eq. 1) on ``[z | one-hot(ids)]`` with one code per picture. Its label
    network's activation comes from :func:`label_activation_with_code`; γ and β as the 3×3
    convs compute them, in two kinds of pixels:

    * a pixel whose 5×5 window holds one class c inside the image sees the activation
      relu(Σ_o (column of c at o) + Σ_o W_o·z + b) at all 9 taps, so its γ|β is one row per
      (picture, class): (Σ_o V_o)·a + bias, with V_o the γ|β weight at offset o;
    * every other pixel gets the exact 3×3 product over its gathered neighbourhood."""
    conv, gamma, beta = spade.mlp_shared[0], spade.mlp_gamma, spade.mlp_beta
    n, h, w = level.ids.shape
    hidden, z_dim = conv.out_channels, code.shape[1]
    classes, channels = conv.in_channels - z_dim, gamma.out_channels
    table = _shared_table(conv.weight[:, z_dim:], classes, has_edges=False).view(9, 2 * classes + 1, hidden)
    code_sum = torch.einsum("jzo,nz->nj", conv.weight[:, :z_dim].reshape(hidden, z_dim, 9), code)
    interior_actv = F.relu(table[:, 0:2 * classes:2].sum(0)[None] + code_sum[:, None] + conv.bias)  # N×K×hidden
    bias = torch.cat([gamma.bias, beta.bias])
    rows = [torch.addmm(bias, interior_actv.reshape(n * classes, hidden),
                        _gamma_beta_matrix(gamma.weight, beta.weight, "sum"))]
    if level.boundary.numel():
        actv = label_activation_with_code(spade, level.ids, code).permute(0, 2, 3, 1).reshape(-1, hidden)
        rows.append(torch.addmm(bias, _patches(actv, level.patch_index, n, h, w),
                                _gamma_beta_matrix(gamma.weight, beta.weight, "offsets")))
    per_pixel = F.embedding(level.pixel_row, torch.cat(rows)).view(n, h, w, 2 * channels).permute(0, 3, 1, 2)
    return spade.param_free_norm(x) * (1 + per_pixel[:, :channels]) + per_pixel[:, channels:]


def resnet_block_with_code(block, x: torch.Tensor, level_at: Callable[[tuple[int, int]], CodeLevel],
                           code: torch.Tensor, upsample: bool) -> torch.Tensor:
    """A :class:`~spadegan.nn.spade.SPADEResnetBlock` (Fig. 4) whose SPADE layers read the class ids
    at x's resolution (``level_at(size)``) and one code per picture (:func:`spade_with_code`): the
    reference block's function."""
    if upsample:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    level = level_at(tuple(x.shape[2:]))
    x_s = block.conv_s(spade_with_code(block.norm_s, x, level, code)) if block.learned_shortcut else x
    dx = block.conv_0(F.leaky_relu(spade_with_code(block.norm_0, x, level, code), NEGATIVE_SLOPE))
    dx = block.conv_1(F.leaky_relu(spade_with_code(block.norm_1, dx, level, code), NEGATIVE_SLOPE))
    return x_s + dx


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
