"""Generators: the SPADE generator (paper Fig. 4, right) and the pix2pixHD baseline.

Both keep the official module names, so official checkpoints load with ``load_state_dict``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .class_modulation import ClassModulation
from .fast_spade import LabelNetworkCache, label_maps_from_semantics, resnet_block_fast
from .init import ZeroInitLinear
from .norm import NormSpec, add_norm, parse_norm_spec
from .spade import SPADEResnetBlock

UpsamplingLayers = Literal["normal", "more", "most"]
_UP_LAYER_COUNT = {"normal": 5, "more": 6, "most": 7}


def latent_size(crop_size: int, aspect_ratio: float, num_upsampling_layers: UpsamplingLayers) -> tuple[int, int]:
    """(height, width) of the generator's starting tensor, as the official code computes it."""
    if num_upsampling_layers not in _UP_LAYER_COUNT:
        raise ValueError(f"num_upsampling_layers {num_upsampling_layers!r}: expected normal, more or most")
    width = crop_size // (2 ** _UP_LAYER_COUNT[num_upsampling_layers])
    height = round(width / aspect_ratio)
    if width < 1 or height < 1:
        raise ValueError(f"crop_size {crop_size} with aspect ratio {aspect_ratio} and "
                         f"{num_upsampling_layers!r} upsampling gives an empty {height}x{width} start")
    return height, width


class SPADEGenerator(nn.Module):
    """SPADE generator: residual SPADE blocks with 2× nearest upsampling, no encoder (Fig. 4).
    ``upsample="bilinear"`` (ours) upsamples the features bilinearly instead.

    It starts from a ``z`` mapped by ``fc`` (when an image encoder is used, Sec. 3.3) or from the
    label map downsampled to the start size and convolved (the deterministic variant).
    """

    def __init__(
        self,
        label_channels: int,                 # semantic map channels (see semantics.semantic_channels)
        ngf: int = 64,                       # width multiplier: blocks have 16, 16, 16, 8, 4, 2, 1 × ngf
        crop_size: int = 256,                # output width
        aspect_ratio: float = 1.0,           # width / height
        num_upsampling_layers: UpsamplingLayers = "normal",  # 'more'/'most' add one/two ×2 steps
        z_dim: int | None = None,            # latent size when an encoder is used, else None
        norm: NormSpec | str = "spectralspadesyncbatch3x3",
        spade_hidden: int = 128,             # width of SPADE's label network (official: 128)
        z_modulation: bool = False,          # z also scales and shifts every block's input (ours)
        class_modulation: bool = False,      # z scales and shifts the last block's output per class (ours)
        upsample: str = "nearest",           # features' 2× upsampling: "nearest" (official) or "bilinear"
        norm_mode: str = "spade",            # "clade": class-adaptive normalization in every block
        instance_edges: bool = False,        # the semantic map's last channel holds instance edges
    ):
        super().__init__()
        spec = parse_norm_spec(norm) if isinstance(norm, str) else norm
        if not spec.spade:
            raise ValueError(f"the SPADE generator needs a SPADE norm spec, got {spec}")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample {upsample!r}: expected 'nearest' or 'bilinear'")
        self.num_upsampling_layers = num_upsampling_layers
        self.upsample = upsample
        self.z_dim = z_dim
        self.ngf = ngf
        self.start_height, self.start_width = latent_size(crop_size, aspect_ratio, num_upsampling_layers)
        nf = ngf
        if z_dim is not None:
            self.fc = nn.Linear(z_dim, 16 * nf * self.start_height * self.start_width)
        else:
            self.fc = nn.Conv2d(label_channels, 16 * nf, 3, padding=1)

        def block(fin: int, fout: int) -> SPADEResnetBlock:
            return SPADEResnetBlock(fin, fout, label_channels, param_free=spec.kind,
                                    kernel_size=spec.kernel_size, spectral=spec.spectral,
                                    hidden_channels=spade_hidden, norm_mode=norm_mode,
                                    instance_edges=instance_edges)

        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0 = block(16 * nf, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, 1 * nf)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = block(nf, nf // 2)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)
        if z_modulation:
            if z_dim is None:
                raise ValueError("z_modulation needs a latent code (z_dim)")
            # The official generator hears z only through ``fc``, ahead of seven normalised blocks;
            # here each block's input, and the last block's output, also gets a per-channel
            # x·(1 + a(z)) + b(z), so the style code reaches the colours in one step. Zero at the
            # start: the generator computes exactly what it did without them (a warm start keeps
            # its pictures). Outside the SPADE layers, so the fast path is unchanged.
            widths = [16 * nf] * 4 + [8 * nf, 4 * nf, 2 * nf] + ([nf] if num_upsampling_layers == "most" else [])
            self.z_modulation = nn.ModuleList(ZeroInitLinear(z_dim, 2 * width) for width in widths + [final_nc])
        else:
            self.z_modulation = None
        if class_modulation and z_dim is None:
            raise ValueError("class_modulation needs a latent code (z_dim)")
        self.class_modulation = ClassModulation(z_dim, label_channels, final_nc) if class_modulation else None
        # The exact fast computation of γ and β (spadegan.nn.fast_spade) for one-hot input; the
        # reference path stays selectable (``fast_spade = False``). Neither the switch nor the
        # tables kept for inference are part of the state dict.
        self.norm_mode = norm_mode
        self.fast_spade = spec.kernel_size == 3
        self.label_network_cache = LabelNetworkCache()

    @staticmethod
    def modulate(x: torch.Tensor, layer: nn.Linear, z: torch.Tensor) -> torch.Tensor:
        """x·(1 + a) + b with [a | b] = layer(z), per sample and channel (FiLM)."""
        scale, shift = layer(z).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + scale) + shift

    def forward(self, seg: torch.Tensor, z: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``seg``: N×C×H×W semantic map; ``z``: N×z_dim latent (drawn from N(0, I) with
        ``generator`` when the model takes z and none is given). Returns images in [-1, 1]."""
        if self.z_dim is not None:
            if z is None:
                # Random style (Sec. 3.3); on the input's device, which the official code gets wrong on CPU.
                z = torch.randn(seg.shape[0], self.z_dim, device=seg.device, dtype=seg.dtype,
                                generator=generator)
            x = self.fc(z).view(-1, 16 * self.ngf, self.start_height, self.start_width)
        else:
            x = F.interpolate(seg, size=(self.start_height, self.start_width), mode="nearest")
            x = self.fc(x)

        # The one place where the path is chosen: the fast one where the map is one-hot (class
        # ids recovered once, each resolution's label map made once, not per layer), the
        # reference blocks otherwise. CLADE is a lookup already.
        maps = label_maps_from_semantics(seg) if self.fast_spade and self.norm_mode == "spade" else None
        if maps is not None:
            # Inference: channels-last, the residual convs run faster, and the fast SPADE rows
            # are pixel-major already, so the modulation needs no transposition. Training
            # stays NCHW (see spade_modulate).
            if not self.training:
                x = x.contiguous(memory_format=torch.channels_last)
        # Each up block takes x upsampled 2× (nearest); it does the upsampling itself, so that
        # the fast path can fold it into its first modulation. Bilinear upsampling (ours) is done
        # here, before the block. A per-channel z modulation commutes with either upsampling (both
        # average with weights that sum to 1), so it is applied at the lower resolution.
        blocks = [(self.head_0, False), (self.G_middle_0, True),
                  (self.G_middle_1, self.num_upsampling_layers in ("more", "most"))]
        blocks += [(block, True) for block in (self.up_0, self.up_1, self.up_2, self.up_3)]
        if self.num_upsampling_layers == "most":
            blocks.append((self.up_4, True))
        for index, (block, upsample) in enumerate(blocks):
            if self.z_modulation is not None:
                x = self.modulate(x, self.z_modulation[index], z)
            if upsample and self.upsample == "bilinear":
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                upsample = False
            if maps is not None:
                x = resnet_block_fast(block, x, maps, upsample, self.label_network_cache)
            else:
                x = block(x, seg, upsample=upsample)
        if self.z_modulation is not None:
            x = self.modulate(x, self.z_modulation[-1], z)
        if self.class_modulation is not None:
            x = self.class_modulation(x, seg, z)
        # x is the last block's fresh output: at inference the ReLU may overwrite it.
        x = F.leaky_relu_(x, 0.2) if not torch.is_grad_enabled() else F.leaky_relu(x, 0.2)
        return torch.tanh(self.conv_img(x))


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: reflect-pad, conv, norm, ReLU, reflect-pad, conv, norm; plus x."""

    def __init__(self, channels: int, norm: NormSpec, kernel_size: int = 3):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(pad),
            add_norm(nn.Conv2d(channels, channels, kernel_size), norm),
            nn.ReLU(),
            nn.ReflectionPad2d(pad),
            add_norm(nn.Conv2d(channels, channels, kernel_size), norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class Pix2PixHDGenerator(nn.Module):
    """The pix2pixHD global generator as in the official SPADE repository (``--netG pix2pixhd``):
    conv-downsampling, residual blocks, transposed-conv upsampling, instance norm. The label map
    enters only at the input, so normalization can wash it out (paper Fig. 3)."""

    def __init__(
        self,
        label_channels: int,             # semantic map channels (one-hot + don't-care + edges)
        ngf: int = 64,
        n_downsample: int = 4,           # --resnet_n_downsample
        n_blocks: int = 9,               # --resnet_n_blocks
        kernel_size: int = 3,            # --resnet_kernel_size
        initial_kernel_size: int = 7,    # --resnet_initial_kernel_size
        norm: NormSpec | str = "instance",
        output_nc: int = 3,
    ):
        super().__init__()
        spec = parse_norm_spec(norm) if isinstance(norm, str) else norm
        model: list[nn.Module] = [
            nn.ReflectionPad2d(initial_kernel_size // 2),
            add_norm(nn.Conv2d(label_channels, ngf, initial_kernel_size), spec),
            nn.ReLU(),
        ]
        mult = 1
        for _ in range(n_downsample):
            model += [add_norm(nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), spec), nn.ReLU()]
            mult *= 2
        model += [ResnetBlock(ngf * mult, spec, kernel_size) for _ in range(n_blocks)]
        nc_out = ngf * mult
        for _ in range(n_downsample):
            nc_in, nc_out = ngf * mult, ngf * mult // 2
            model += [add_norm(nn.ConvTranspose2d(nc_in, nc_out, 3, stride=2, padding=1, output_padding=1), spec),
                      nn.ReLU()]
            mult //= 2
        model += [nn.ReflectionPad2d(3), nn.Conv2d(nc_out, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, seg: torch.Tensor, z: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model(seg)
