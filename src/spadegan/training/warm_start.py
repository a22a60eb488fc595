"""Start a training run from another checkpoint's weights (``spadegan train --init_from PATH``).

Fine-tuning, not resuming: the new run has its own options, a fresh step count and fresh
optimizers; only the weights come over. The architectures must match parameter for parameter,
with two exceptions. The generator's z and class modulations (``--z_modulation``,
``--class_modulation``) start at zero, where the generator computes what it did without them, so a
model trained without them continues exactly. And the parameter-free normalization of the generator: instance norm and batch
norm have the same parameters (none in SPADE, Eq. 1 takes γ and β from the label map), and differ
only in BatchNorm's running statistics. So a model trained with instance norm at batch 1 can go
on with batch norm at a larger batch, where the per-image statistics that instance norm erases
(the tint that the style code carries) survive normalization. Running statistics that the source
lacks start at mean 0 / variance 1, as in a fresh network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..checkpoint import is_checkpoint_folder, load_checkpoint, load_official, resolve_checkpoint
from ..models import Networks

_NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
# Layers that start at zero and leave the network's function as it was: a source without them
# is continued exactly (the generator's z and class modulations).
_IDENTITY_AT_START = ("z_modulation.", "class_modulation.")


def _source_networks(path: Path) -> tuple[Networks, nn.Module | None]:
    """(networks, EMA generator or None) of one of our checkpoint folders, a run folder (its
    newest checkpoint) or an official folder."""
    try:
        path = resolve_checkpoint(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--init_from {error}") from None
    if is_checkpoint_folder(path):
        checkpoint = load_checkpoint(path, with_training_state=False)
        return checkpoint.networks, checkpoint.ema_generator
    return load_official(path).networks, None


def copy_weights(target: nn.Module, source: nn.Module, what: str) -> list[str]:
    """Load ``source``'s parameters and buffers into ``target``; returns the normalization
    statistics (and the layers that start as the identity) that stayed fresh. Any other missing, extra or differently shaped tensor is an
    error naming it."""
    theirs = source.state_dict()
    ours = target.state_dict()
    problems = [f"{key}: {tuple(theirs[key].shape)} in the source, {tuple(ours[key].shape)} here"
                for key in ours.keys() & theirs.keys() if theirs[key].shape != ours[key].shape]
    missing = sorted(ours.keys() - theirs.keys())
    extra = sorted(theirs.keys() - ours.keys())
    fresh = [key for key in missing if key.endswith(_NORM_STATISTICS) or key.startswith(_IDENTITY_AT_START)]
    problems += [f"{key}: not in the source" for key in missing if key not in fresh]
    problems += [f"{key}: in the source only" for key in extra if not key.endswith(_NORM_STATISTICS)]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ValueError(f"--init_from: the {what} does not match this run's architecture: {shown}")
    target.load_state_dict({key: theirs[key] for key in ours.keys() & theirs.keys()}, strict=False)
    return fresh


def warm_start(networks: Networks, ema_generator: nn.Module | None, path: str | os.PathLike,
               fresh: Sequence[str] = ()) -> list[str]:
    """Copy the weights of the checkpoint at ``path`` into ``networks`` (and its EMA generator,
    or its generator where it has no EMA, into ``ema_generator``), in place, except the networks
    named in ``fresh`` ("discriminator", "encoder"), which keep their initialization. Returns
    lines for the log: what came over and what stayed fresh."""
    source, source_ema = _source_networks(Path(path))
    report = []
    pairs = [("generator", networks.generator, source.generator),
             ("discriminator", networks.discriminator, source.discriminator),
             ("encoder", networks.encoder, source.encoder)]
    for what, target, theirs in pairs:
        if target is None:
            continue
        if what in fresh:
            report.append(f"{what}: fresh (--init_fresh)")
            continue
        if theirs is None:
            if what == "generator" or what == "encoder":
                raise ValueError(f"--init_from {path}: it has no {what}, and this run trains one")
            report.append(f"{what}: fresh (the source has none)")
            continue
        kept = copy_weights(target, theirs, what)
        report.append(f"{what}: from {path}" + (f" ({len(kept)} tensors fresh: normalization statistics or "
                                                 "layers that start as the identity)" if kept else ""))
    if ema_generator is not None:
        copy_weights(ema_generator, source_ema if source_ema is not None else source.generator, "EMA generator")
        report.append("EMA generator: from the source's " + ("EMA" if source_ema is not None else "generator"))
    return report


def freeze_all_but_modulation(generator: nn.Module) -> None:
    """Hold the generator's weights fixed except its z- and class-modulation layers: a fine-tune
    that teaches a trained generator to follow its code without relearning what it paints (the
    layers start at zero, so it starts as the trained generator exactly)."""
    if getattr(generator, "z_modulation", None) is None and getattr(generator, "class_modulation", None) is None:
        raise ValueError("freezing the generator leaves nothing to train without --z_modulation or --class_modulation")
    for name, parameter in generator.named_parameters():
        parameter.requires_grad_(name.startswith(_IDENTITY_AT_START))
