"""The image encoder of the VAE variant (paper Sec. 3.3, Appendix B, Fig. 14).

A strided conv net maps an image to the mean and log-variance of a Gaussian; ``reparameterize``
draws ``z = μ + ε·σ``. The generator then starts from ``z``, so a reference image sets the style
(Fig. 1) and fresh draws give multimodal results (Fig. 9). Names follow the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import NormSpec, add_norm, parse_norm_spec


class ConvEncoder(nn.Module):
    """Six (or five) 3×3 stride-2 convs with leaky ReLU, then two linear heads for μ and log σ².

    The input is resized (bilinear) to ``4 · 2**num_layers`` pixels square so the last feature map
    is 4×4: 256 with the six layers the official code uses for ``crop_size >= 256``. The official
    code always resizes to 256, so its five-layer variant (``crop_size < 256``) cannot run; with
    five layers we resize to 128 instead. The official encoder also outputs 256-wide μ whatever
    ``--z_dim`` says; here ``latent_dim`` is an argument (official checkpoints load with 256).
    """

    def __init__(
        self,
        ndf: int = 64,                   # the official code passes --ngf here, not --nef
        num_layers: int = 6,             # 6 when crop_size >= 256, else 5 (official)
        latent_dim: int = 256,           # width of μ and log σ² (= the generator's z_dim)
        norm: NormSpec | str = "spectralinstance",
    ):
        super().__init__()
        if num_layers not in (5, 6):
            raise ValueError(f"num_layers {num_layers}: the encoder has 5 or 6 layers")
        spec = parse_norm_spec(norm) if isinstance(norm, str) else norm
        self.input_size = 4 * 2 ** num_layers
        widths = [3, ndf, ndf * 2, ndf * 4, ndf * 8, ndf * 8, ndf * 8][: num_layers + 1]
        for i in range(num_layers):
            self.add_module(f"layer{i + 1}", add_norm(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), spec))
        self.num_layers = num_layers
        self.fc_mu = nn.Linear(ndf * 8 * 4 * 4, latent_dim)
        self.fc_var = nn.Linear(ndf * 8 * 4 * 4, latent_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1], N×3×H×W → (μ, log σ²), each N×latent_dim."""
        x = image
        if x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        for i in range(self.num_layers):
            layer = getattr(self, f"layer{i + 1}")
            x = layer(x if i == 0 else F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = μ + ε · exp(½ log σ²), ε ~ N(0, I): the reparameterization trick (Kingma & Welling)."""
    std = torch.exp(0.5 * logvar)
    eps = torch.randn(std.shape, dtype=std.dtype, device=std.device, generator=generator)
    return eps * std + mu
