"""One generator step and one discriminator step of SPADE training (paper Sec. 3, Appendix A).

Pure functions over the networks and a batch: they compute the losses of the official
``Pix2PixModel`` (hinge GAN loss, feature matching, VGG perceptual loss, KL of the encoder)
and return them as a dict; the loop does backward and the optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import LossConfig
from ..losses import (VGGPerceptualLoss, feature_matching_loss, gan_loss, kl_divergence, latent_regression_loss,
                      mode_seeking_loss, region_colour_loss, thumbnail_l1_loss)
from ..nn.encoder import reparameterize


@dataclass
class StepNetworks:
    """The (possibly DDP-wrapped) networks a step runs."""

    generator: nn.Module
    discriminator: nn.Module
    encoder: nn.Module | None = None
    vgg_loss: VGGPerceptualLoss | None = None


def generate(nets: StepNetworks, semantics: torch.Tensor, real: torch.Tensor, with_kld: bool,
             lambda_kld: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Fake images, the weighted KL term when the encoder is used, and the code z (official
    ``generate_fake``): z is encoded from the real image and sampled by reparameterization
    (Sec. 3.3)."""
    z, kld = None, None
    if nets.encoder is not None:
        mu, logvar = nets.encoder(real)
        z = reparameterize(mu, logvar)
        if with_kld:
            kld = kl_divergence(mu, logvar) * lambda_kld
    return nets.generator(semantics, z), kld, z


def encode_for_latent_regression(encoder: nn.Module, images: torch.Tensor, train_encoder: bool) -> torch.Tensor:
    """μ of ``images`` for the latent regression term. By default the encoder's weights are held
    fixed there, so the gradient reaches the images (and so the generator) only, as BicycleGAN
    updates G alone with its cLR term, so that E and G cannot agree on a code the pictures do not
    show. With ``train_encoder`` the weights take its gradient too: E learns to read the code
    from G's pictures, which is what it needs to read a reference picture's style when its
    reconstruction term alone leaves it at the prior. Eval mode either way: the spectral-norm
    vectors are not iterated a second time in the step."""
    module = getattr(encoder, "module", encoder)  # DDP's wrapped module: its hooks are on the parameters
    weights = {name: p if train_encoder else p.detach() for name, p in module.named_parameters()}
    training = module.training
    module.eval()
    try:
        mu, _ = torch.func.functional_call(module, weights, (images,))
    finally:
        module.train(training)
    return mu


def discriminate(discriminator: nn.Module, semantics: torch.Tensor, fake: torch.Tensor,
                 real: torch.Tensor) -> tuple[list, list]:
    """D on (semantics, fake) and (semantics, real) in one batch, as the official code does (so
    batch-statistics norms and spectral-norm updates see the same thing), then split. The pairs
    go in as the semantic maps and the images apart: the same D, faster to train."""
    out = discriminator(semantics, torch.cat([fake, real], dim=0))
    half = fake.shape[0]
    pred_fake = [[t[:half] for t in scale] for scale in out]
    pred_real = [[t[half:] for t in scale] for scale in out]
    return pred_fake, pred_real


def generator_losses(nets: StepNetworks, semantics: torch.Tensor, real: torch.Tensor,
                     config: LossConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The generator's loss terms (each a scalar) and the fake images."""
    fake, kld, z = generate(nets, semantics, real, with_kld=True, lambda_kld=config.lambda_kld)
    losses: dict[str, torch.Tensor] = {}
    if kld is not None:
        losses["KLD"] = kld
    if config.lambda_latent > 0 or config.lambda_ms > 0:
        if z is None:
            raise ValueError("latent regression and mode seeking need the image encoder")
        z_random = torch.randn_like(z)                    # a code from the prior (cLR-GAN)
        fake_random = nets.generator(semantics, z_random)
        if config.lambda_latent > 0:
            mu = encode_for_latent_regression(nets.encoder, fake_random, config.latent_trains_encoder)
            losses["Latent"] = latent_regression_loss(mu, z_random) * config.lambda_latent
        if config.lambda_ms > 0:
            losses["MS"] = mode_seeking_loss(fake, fake_random, z, z_random) * config.lambda_ms
    pred_fake, pred_real = discriminate(nets.discriminator, semantics, fake, real)
    losses["GAN"] = gan_loss(pred_fake, True, for_discriminator=False, mode=config.gan_mode).mean()
    if not config.no_ganFeat_loss:
        losses["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, config.lambda_feat).mean()
    if not config.no_vgg_loss:
        if nets.vgg_loss is None:
            raise ValueError("the VGG loss is on but no VGG19 network was given")
        losses["VGG"] = nets.vgg_loss(fake.float(), real.float()) * config.lambda_vgg
    if config.lambda_l1 > 0:
        losses["L1"] = thumbnail_l1_loss(fake.float(), real.float(), config.l1_downsample) * config.lambda_l1
    if config.lambda_region > 0:
        losses["Region"] = region_colour_loss(fake.float(), real.float(), semantics) * config.lambda_region
    return losses, fake


def discriminator_losses(nets: StepNetworks, semantics: torch.Tensor, real: torch.Tensor,
                         config: LossConfig) -> dict[str, torch.Tensor]:
    """The discriminator's loss terms on a fake made without gradients (official)."""
    with torch.no_grad():
        fake, _, _ = generate(nets, semantics, real, with_kld=False, lambda_kld=config.lambda_kld)
    # The official code also marks the fake as requiring a gradient, which nothing reads: D's
    # first layer would compute an input gradient for nothing.
    pred_fake, pred_real = discriminate(nets.discriminator, semantics, fake, real)
    return {"D_Fake": gan_loss(pred_fake, False, for_discriminator=True, mode=config.gan_mode).mean(),
            "D_real": gan_loss(pred_real, True, for_discriminator=True, mode=config.gan_mode).mean()}
