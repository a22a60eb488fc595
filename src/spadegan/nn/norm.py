"""Normalization layers and the parser for the official norm spec strings.

The official code names its normalization with strings such as ``spectralspadesyncbatch3x3``
(generator) or ``spectralinstance`` (discriminator, encoder). We parse such a string once into a
:class:`NormSpec` and build layers from that typed value, never from the string again.

Two families exist, both from the paper:

* **SPADE** (Sec. 3, Eq. 1): a parameter-free norm whose scale and shift come from the label map;
  the spec says which parameter-free norm and the kernel size of the label network.
* **Plain** norms after a convolution (discriminator, encoder, pix2pixHD): an optional spectral
  norm on the conv, then instance / batch / sync-batch norm, or none.

Sync-batch norm is built as :class:`torch.nn.BatchNorm2d`, which has the same parameters and
buffers; :func:`convert_sync_batchnorm` swaps it for :class:`torch.nn.SyncBatchNorm` only when
CUDA and a process group exist, so on CPU it is plain BatchNorm (as one process of the official
synchronized BatchNorm computes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .spectral import spectral_norm

ParamFreeKind = Literal["instance", "batch", "syncbatch", "none"]
_KIND_ALIASES = {"instance": "instance", "batch": "batch", "syncbatch": "syncbatch",
                 "sync_batch": "syncbatch", "none": "none", "": "none"}


@dataclass(frozen=True)
class NormSpec:
    """A parsed norm spec string.

    ``spectral``: spectral norm on the convolution weights; ``spadegan``: SPADE modulation;
    ``kind``: the parameter-free (or, without SPADE, affine) norm; ``kernel_size``: the kernel
    of SPADE's label network (3 for ``...3x3``), None for plain norms.
    """

    spectral: bool
    spade: bool
    kind: ParamFreeKind
    kernel_size: int | None = None

    def __str__(self) -> str:
        text = ("spectral" if self.spectral else "") + ("spade" if self.spade else "")
        kind = {"syncbatch": "syncbatch" if self.spade else "sync_batch"}.get(self.kind, self.kind)
        if self.spade:
            return f"{text}{kind}{self.kernel_size}x{self.kernel_size}"
        if kind == "none" and self.spectral:
            return text
        return text + kind


def parse_norm_spec(text: str) -> NormSpec:
    """Parse an official norm spec: ``spectralspadesyncbatch3x3``, ``spadeinstance5x5``,
    ``spectralinstance``, ``instance``, ``batch``, ``sync_batch``, ``spectral``, ``none``.

    Unlike the official ``get_nonspade_norm_layer`` (its issue #58), specs without the
    ``spectral`` prefix are fine here.
    """
    rest = text.strip()
    spectral = rest.startswith("spectral")
    if spectral:
        rest = rest[len("spectral"):]
    if rest.startswith("spade"):
        match = re.fullmatch(r"spade([a-z_]+?)(\d+)x(\d+)", rest)
        if match is None or match.group(2) != match.group(3):
            raise ValueError(f"norm spec {text!r}: expected 'spade<norm><k>x<k>', "
                             "e.g. 'spectralspadesyncbatch3x3'")
        kind = _KIND_ALIASES.get(match.group(1))
        if kind is None or kind == "none":
            raise ValueError(f"norm spec {text!r}: parameter-free norm {match.group(1)!r} is not "
                             "one of instance, batch, syncbatch")
        kernel = int(match.group(2))
        if kernel % 2 != 1:
            raise ValueError(f"norm spec {text!r}: kernel size {kernel} must be odd")
        return NormSpec(spectral=spectral, spade=True, kind=kind, kernel_size=kernel)
    kind = _KIND_ALIASES.get(rest)
    if kind is None:
        raise ValueError(f"norm spec {text!r}: expected [spectral](instance|batch|sync_batch|none) "
                         "or [spectral]spade<norm><k>x<k>")
    return NormSpec(spectral=spectral, spade=False, kind=kind)


class _ContiguousGradient(torch.autograd.Function):
    """Identity forward; makes the gradient flowing back through it contiguous."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` with a guard for a PyTorch CPU bug (seen in 2.13): with a batch of
    one, ``instance_norm``'s backward returns a wrong input gradient when the incoming gradient is
    channels-last (e.g. after a channels-last conv), although the values are the same. The guard
    hands it a contiguous gradient. Same parameters and buffers as ``nn.InstanceNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if out.requires_grad and x.shape[0] == 1:
            out = _ContiguousGradient.apply(out)
        return out


def param_free_norm(kind: ParamFreeKind, channels: int, affine: bool = False) -> nn.Module:
    """The normalization layer for ``kind`` (sync-batch starts as BatchNorm2d, see module doc)."""
    if kind == "instance":
        return InstanceNorm2d(channels, affine=affine)
    if kind in ("batch", "syncbatch"):
        return nn.BatchNorm2d(channels, affine=affine)
    raise ValueError(f"no normalization layer for kind {kind!r}")


def add_norm(layer: nn.Conv2d | nn.ConvTranspose2d, spec: NormSpec) -> nn.Module:
    """Wrap a conv the way the official ``get_nonspade_norm_layer`` does, with its key layout:
    spectral norm on the conv (``weight_orig/_u/_v``), then, unless the kind is ``none``, the conv
    bias is dropped (a norm right after it cancels it) and ``Sequential(conv, norm)`` returned."""
    if spec.spade:
        raise ValueError(f"add_norm takes a plain norm spec, got the SPADE spec {spec}")
    if spec.spectral:
        layer = spectral_norm(layer)
    if spec.kind == "none":
        return layer
    if layer.bias is not None:
        del layer.bias
        layer.register_parameter("bias", None)
    # Affine for batch norms, not for instance norm: as in the official code.
    norm = param_free_norm(spec.kind, layer.out_channels, affine=spec.kind != "instance")
    return nn.Sequential(layer, norm)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Use SyncBatchNorm for the BatchNorm layers when training on CUDA in a process group.

    Elsewhere (CPU, one process) BatchNorm is what a synchronized BatchNorm computes anyway.
    """
    if torch.cuda.is_available() and torch.distributed.is_available() and torch.distributed.is_initialized():
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
