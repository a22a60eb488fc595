"""Training losses of OASIS (Schönfeld et al., ICLR 2021), as the official code computes them.

The discriminator segments (:class:`~spadegan.nn.oasis.OASISDiscriminator`): its N + 1 logits
per pixel are scored by cross-entropy against the pixel's class + 1 for a real picture and
against class 0 ("fake") for a generated one (paper Eq. 2). Real pixels are weighted by the
inverse frequency of their class in the batch, so that small classes count as much as large
ones; the generator is scored as a real picture (Eq. 3). LabelMix (Eq. 4) mixes a real and a
generated picture by a mask made of whole classes and asks the discriminator's logits on the
mix to be the same mix of its logits on the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_balancing_weights(semantics: torch.Tensor, dontcare_channel: int | None = 0) -> torch.Tensor:
    """N×1×H×W weight of each pixel: α_c = N·H·W / (K · Σ t_c) for a pixel of class c, where
    Σ t_c counts the class's pixels in the batch and K counts the classes present (official
    ``get_class_balancing``). The don't-care channel (official: 0, "unknown"; None: none) weighs
    0 and is not counted in K. ``semantics``: the N×C×H×W one-hot map."""
    counts = semantics.sum(dim=(0, 2, 3))
    if dontcare_channel is not None:
        counts[dontcare_channel] = 0
    present = (counts > 0).sum()
    # Absent classes get 1/0 = inf; no pixel looks them up. Written as the official code
    # writes it (the reciprocal times N·C·H·W over K·C), so that it rounds the same.
    coefficients = torch.reciprocal(counts) * semantics.numel() / (present * semantics.shape[1])
    if dontcare_channel is not None:
        coefficients[dontcare_channel] = 0
    return coefficients[semantics.argmax(dim=1, keepdim=True)]


def segmentation_targets(semantics: torch.Tensor, real: bool) -> torch.Tensor:
    """N×H×W class of each pixel for the discriminator's N + 1 outputs: the semantic class + 1
    for a real picture, 0 ("fake") for a generated one (official ``get_n1_target``)."""
    classes = semantics.argmax(dim=1)
    return classes + 1 if real else torch.zeros_like(classes)


def segmentation_loss(logits: torch.Tensor, semantics: torch.Tensor, real: bool, balancing: bool = True,
                      dontcare_channel: int | None = 0) -> torch.Tensor:
    """The (N+1)-class cross-entropy of the discriminator's ``logits``: weighted by
    :func:`class_balancing_weights` for real targets (the discriminator on real pictures, the
    generator on its own), a plain mean for the fake class (official: not class-balanced)."""
    loss = F.cross_entropy(logits, segmentation_targets(semantics, real), reduction="none")
    if real and balancing:
        return torch.mean(loss * class_balancing_weights(semantics, dontcare_channel)[:, 0])
    return torch.mean(loss)


def labelmix_mask(semantics: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N×1×H×W float mask, 1 where LabelMix takes the real picture: each class present in the
    batch draws 0 or 1 (one draw per class for the whole batch, classes in ascending order, on
    ``generator``, else the global generator, as the official ``generate_labelmix`` does).

    As in the official code the class map is relabelled in place, class by class: pixels that
    took a draw of 1 read as class 1 when class 1's turn comes and take its draw, so class 0's
    pixels end with class 1's draw whenever class 0 draws 1 and class 1 is in the batch (later
    classes come after both values have had their turn)."""
    target = semantics.argmax(dim=1, keepdim=True)
    for value in torch.unique(target):
        target[target == value] = torch.randint(0, 2, (1,), generator=generator).to(target.device)
    return target.to(semantics.dtype if semantics.is_floating_point() else torch.float32)


def labelmix(mask: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The mixed picture (or logits): ``mask·real + (1 − mask)·fake``."""
    return mask * real + (1 - mask) * fake


def labelmix_loss(mask: torch.Tensor, logits_mixed: torch.Tensor, logits_fake: torch.Tensor,
                  logits_real: torch.Tensor) -> torch.Tensor:
    """LabelMix consistency (Eq. 4, before λ_LM): the mean squared difference between the
    discriminator's logits on the mixed picture and the same mix of its logits on the real and
    the generated picture."""
    return F.mse_loss(labelmix(mask, logits_real, logits_fake), logits_mixed)
