"""One generator step and one discriminator step of OASIS training (Schönfeld et al., ICLR 2021).

The same contract as :mod:`spadegan.training.steps` (a dict of loss terms; the loop does backward
and the optimizer steps), with the official ``OASIS_model`` losses: the discriminator segments
(N + 1 classes per pixel, :mod:`spadegan.oasis_losses`), the generator is asked for each pixel's
true class, and LabelMix regularises the discriminator. No feature matching, and no VGG loss
unless it is asked for (the paper's point: the segmentation loss supervises enough).
"""

from __future__ import annotations

import torch

from ..config import LossConfig
from ..oasis_losses import labelmix, labelmix_loss, labelmix_mask, segmentation_loss
from .steps import StepNetworks


def generator_losses(nets: StepNetworks, semantics: torch.Tensor, real: torch.Tensor, config: LossConfig,
                     dontcare_channel: int | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The generator's loss terms and its pictures (noise drawn inside the generator, as the
    official forward draws it). ``dontcare_channel``: the semantic channel whose pixels weigh
    nothing in the balanced loss (official: 0), None where there is none."""
    fake = nets.generator(semantics)
    logits = nets.discriminator(fake)
    losses = {"GAN": segmentation_loss(logits, semantics, real=True, balancing=not config.no_balancing_inloss,
                                       dontcare_channel=dontcare_channel)}
    if not config.no_vgg_loss:
        if nets.vgg_loss is None:
            raise ValueError("the VGG loss is on but no VGG19 network was given")
        losses["VGG"] = nets.vgg_loss(fake.float(), real.float()) * config.lambda_vgg
    return losses, fake


def discriminator_losses(nets: StepNetworks, semantics: torch.Tensor, real: torch.Tensor, config: LossConfig,
                         dontcare_channel: int | None) -> dict[str, torch.Tensor]:
    """The discriminator's loss terms: on a picture made without gradients (fake class), on the
    real picture (balanced classes), and LabelMix. Three forwards in the official order (fake,
    real, mixed): in train mode each iterates the spectral norms once."""
    with torch.no_grad():
        fake = nets.generator(semantics)
    logits_fake = nets.discriminator(fake)
    logits_real = nets.discriminator(real)
    balancing = not config.no_balancing_inloss
    losses = {"D_Fake": segmentation_loss(logits_fake, semantics, real=False),
              "D_real": segmentation_loss(logits_real, semantics, real=True, balancing=balancing,
                                          dontcare_channel=dontcare_channel)}
    if config.lambda_labelmix > 0:
        mask = labelmix_mask(semantics)
        logits_mixed = nets.discriminator(labelmix(mask, real, fake))
        losses["D_LabelMix"] = config.lambda_labelmix * labelmix_loss(mask, logits_mixed, logits_fake, logits_real)
    return losses
