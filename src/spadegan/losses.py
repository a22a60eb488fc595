"""Training losses of SPADE, reproducing the official NVlabs/SPADE semantics.

Sources: ``models/networks/loss.py`` (``GANLoss``, ``VGGLoss``, ``KLDLoss``) and the
feature-matching term of ``models/pix2pix_model.py``. Everything here is device-agnostic:
constant targets are created on the prediction's device and dtype.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .nn.vgg import VGG19Features

GAN_MODES = ("hinge", "ls", "original", "w")

# A single prediction, or the multiscale discriminator output: one list per scale whose last
# element is the prediction (the others are intermediate features).
DiscriminatorOutput = Union[torch.Tensor, Sequence[Union[torch.Tensor, Sequence[torch.Tensor]]]]


def _single_scale_loss(pred: torch.Tensor, target_is_real: bool, for_discriminator: bool,
                       mode: str) -> torch.Tensor:
    """``GANLoss.loss`` of the official code for one prediction tensor (a scalar)."""
    if mode == "original":
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(pred, target)
    if mode == "ls":
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        return F.mse_loss(pred, target)
    if mode == "hinge":
        if for_discriminator:
            zero = torch.zeros_like(pred)
            if target_is_real:
                return -torch.mean(torch.min(pred - 1, zero))
            return -torch.mean(torch.min(-pred - 1, zero))
        if not target_is_real:
            # The official code asserts this: the generator's hinge loss must aim for real.
            raise ValueError("the generator's hinge loss must be asked with target_is_real=True")
        return -torch.mean(pred)
    # mode == "w" (Wasserstein): ignores for_discriminator, like the official code.
    return -pred.mean() if target_is_real else pred.mean()


def gan_loss(pred: DiscriminatorOutput, target_is_real: bool, for_discriminator: bool = True,
             mode: str = "hinge") -> torch.Tensor:
    """The official ``GANLoss.__call__``.

    For a tensor, the scalar loss. For a multiscale list, the loss of each scale's last element,
    averaged over scales; the result then has shape (1,) exactly as in the official code (its
    per-scale ``mean(loss.view(bs, -1), dim=1)`` with ``bs = 1`` for a scalar loss).
    ``for_discriminator`` only matters for ``hinge``.
    """
    if mode not in GAN_MODES:
        raise ValueError(f"unknown gan mode {mode!r}; expected one of {', '.join(GAN_MODES)}")
    if isinstance(pred, torch.Tensor):
        return _single_scale_loss(pred, target_is_real, for_discriminator, mode)

    total: torch.Tensor | None = None
    for pred_i in pred:
        if not isinstance(pred_i, torch.Tensor):
            pred_i = pred_i[-1]
        loss = _single_scale_loss(pred_i, target_is_real, for_discriminator, mode)
        bs = 1 if loss.dim() == 0 else loss.size(0)
        new_loss = torch.mean(loss.view(bs, -1), dim=1)
        total = new_loss if total is None else total + new_loss
    if total is None:
        raise ValueError("gan_loss got an empty list of predictions")
    return total / len(pred)


def thumbnail_l1_loss(fake: torch.Tensor, real: torch.Tensor, downsample: int = 1) -> torch.Tensor:
    """Mean L1 distance between the two images average-pooled by ``downsample`` (1: full
    resolution, the pix2pix L1 term).

    Not a term of the paper's objective: a reconstruction term for training the image encoder
    without the VGG19 weights. In the paper the VGG loss is what ties G(E(x)) to x; with feature
    matching alone the encoder collapses to the prior (KL near 0) and the style code changes little.
    Pooled, the term asks only for the reference's colours and layout at that scale, leaving
    texture to the adversarial terms.
    """
    if downsample > 1:
        fake, real = F.avg_pool2d(fake, downsample), F.avg_pool2d(real, downsample)
    return (fake - real.detach()).abs().mean()


def region_statistics(images: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-region colour mean and standard deviation of ``images`` (B, 3, H, W) under the 0/1
    masks ``regions`` (B, R, H, W), each (B, R, 3), and each region's pixel count (B, R)."""
    regions = regions.to(images.dtype)
    count = regions.sum(dim=(2, 3))
    denominator = count.clamp(min=1).unsqueeze(-1)
    mean = torch.einsum("brhw,bchw->brc", regions, images) / denominator
    second = torch.einsum("brhw,bchw->brc", regions, images * images) / denominator
    std = (second - mean * mean).clamp(min=0).add(1e-8).sqrt()
    return mean, std, count


def region_colour_loss(fake: torch.Tensor, real: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """L1 between the fake's and the real image's colour mean and standard deviation in each
    region of the semantic map, weighted by the region's share of the picture.

    Not a term of the paper's objective: a reconstruction term for the image encoder that asks
    for what a style is (each class's colour and contrast: a dusk sky, a grey sea, pale snow) and
    for nothing of where things are inside a region. The pooled L1 term asks the generator for a
    blurred copy of the reference, and the sharpest way to lower it is flat colour; this one is
    met as well by any texture with the reference's statistics, and the standard deviation
    keeps textures from flattening.
    """
    fake_mean, fake_std, count = region_statistics(fake, regions)
    real_mean, real_std, _ = region_statistics(real.detach(), regions)
    share = count / count.sum(dim=1, keepdim=True).clamp(min=1)
    distance = (fake_mean - real_mean).abs() + (fake_std - real_std).abs()
    return (distance.mean(dim=2) * share).sum(dim=1).mean()


def feature_matching_loss(pred_fake: Sequence[Sequence[torch.Tensor]],
                          pred_real: Sequence[Sequence[torch.Tensor]],
                          weight: float = 10.0) -> torch.Tensor:
    """The official GAN feature-matching loss (``GAN_Feat`` in ``pix2pix_model.py``).

    For each of the ``num_D`` scales, the L1 distance between every intermediate feature of the
    fake and (detached) real discriminator outputs, the prediction (last element) excluded,
    each term weighted by ``weight / num_D`` (``lambda_feat / num_D``). Shape (1,), as the
    official code accumulates into a one-element tensor.
    """
    num_d = len(pred_fake)
    if num_d == 0:
        raise ValueError("feature_matching_loss got an empty list of discriminator outputs")
    ref = pred_fake[0][-1]
    total = torch.zeros(1, device=ref.device, dtype=ref.dtype)
    for fake_i, real_i in zip(pred_fake, pred_real):
        for j in range(len(fake_i) - 1):
            total = total + F.l1_loss(fake_i[j], real_i[j].detach()) * weight / num_d
    return total


def latent_regression_loss(mu: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BicycleGAN's cLR term (Zhu et al. 2017, Eq. 6): ``‖E(G(s, z)) − z‖₁`` (mean) for a code z
    drawn from the prior, with ``mu = E(G(s, z))``. Not in SPADE's objective: it makes z
    recoverable from the picture, so the generator cannot ignore it."""
    return (mu - z.detach()).abs().mean()


def mode_seeking_loss(fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019, Eq. 3): ``1 / (d(G(z_a), G(z_b)) / d(z_a, z_b) +
    eps)`` with mean L1 distances, for two codes on the same layouts: minimizing it pushes pictures
    of different codes apart. Not in SPADE's objective."""
    ratio = (fake_a - fake_b).abs().mean() / (z_a - z_b).detach().abs().mean()
    return 1 / (ratio + eps)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), sum-reduced over batch and dimensions (official
    ``KLDLoss``; the caller multiplies by ``lambda_kld``)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class VGGPerceptualLoss(nn.Module):
    """The official ``VGGLoss``: ``sum_i w_i * L1(vgg(x)[i], vgg(y)[i].detach())`` over
    relu1_1..relu5_1 with weights 1/32, 1/16, 1/8, 1/4, 1.

    Inputs are the [-1, 1] images themselves: like the official code, no ImageNet
    normalization is applied (see :class:`~spadegan.nn.vgg.VGG19Features`).
    """

    weights: tuple[float, ...] = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

    def __init__(self, vgg: VGG19Features) -> None:
        super().__init__()
        self.vgg = vgg

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_vgg, y_vgg = self.vgg(x), self.vgg(y)
        loss = x.new_zeros(())
        for w, fx, fy in zip(self.weights, x_vgg, y_vgg):
            loss = loss + w * F.l1_loss(fx, fy.detach())
        return loss
