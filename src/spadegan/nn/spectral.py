"""Spectral normalization (Miyato et al., ICLR 2018) as the official code applies it
(``torch.nn.utils.spectral_norm``: the same parameters, buffers, state-dict keys, power iteration
and forward arithmetic), with a backward pass that makes one buffer of the weight's size.

The normalized weight is W/σ with σ = uᵀ W v (W as a matrix, u and v held fixed), so with
G = ∂L/∂(W/σ)

    ∂L/∂W = (G − ⟨G, W/σ⟩ · u vᵀ) / σ.

Autograd reaches the same through a chain of divisions, products, a negation and an outer product,
each a temporary as large as W: for the 1024-channel 3×3 convolutions of a SPADE generator, 36 MiB
each, several per layer and step. Here the gradient is that one buffer, the rank-one term added
in place.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _torch_spectral_norm

# The class behind torch.nn.utils.spectral_norm (the function shadows its module's name).
_SpectralNorm = sys.modules["torch.nn.utils.spectral_norm"].SpectralNorm


class _DivideBySigma(torch.autograd.Function):
    """W / σ, σ = uᵀ (W as a height × rest matrix) v, differentiable in W only (see the module)."""

    @staticmethod
    def forward(ctx, weight, u, v):
        sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
        normalized = weight / sigma
        ctx.save_for_backward(normalized, u, v, sigma)  # the layer keeps W/σ for its own backward anyway
        return normalized

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        normalized, u, v, sigma = ctx.saved_tensors
        inner = _inner_product(grad, normalized)                      # ⟨G, W/σ⟩
        grad_weight = grad / sigma
        # − (⟨G, W/σ⟩/σ) u vᵀ, added in place in whatever memory layout the gradient has
        # (channels-last too), as a broadcast product: no matrix of it is made.
        scaled_u = (u * (-inner / sigma)).view(-1, *(1,) * (grad.dim() - 1))
        grad_weight.addcmul_(scaled_u, v.view(1, *grad.shape[1:]))
        return grad_weight, None, None


def _inner_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ a·b over all elements, without a copy where both lie in memory in the same dense order
    (a contiguous or channels-last weight and its gradient); else through their product."""
    order = sorted(range(a.dim()), key=lambda d: -a.stride(d))
    if a.stride() == b.stride() and a.permute(order).is_contiguous():
        return torch.dot(a.permute(order).reshape(-1), b.permute(order).reshape(-1))
    return (a * b).sum()


class LeanSpectralNorm(_SpectralNorm):
    """torch's spectral-norm hook, computing the normalized weight through :class:`_DivideBySigma`
    where it takes a gradient (weights normalized along their first dimension: convolutions and
    linear layers); elsewhere torch's own computation."""

    def compute_weight(self, module: nn.Module, do_power_iteration: bool) -> torch.Tensor:
        weight = getattr(module, self.name + "_orig")
        if self.dim != 0 or not (torch.is_grad_enabled() and weight.requires_grad):
            return super().compute_weight(module, do_power_iteration)
        u = getattr(module, self.name + "_u")
        v = getattr(module, self.name + "_v")
        if do_power_iteration:
            # torch's power iteration, in place on the buffers (so replicas' updates reach the
            # module), then clones: a later forward's update must not change what this one keeps.
            weight_mat = weight.reshape(weight.shape[0], -1)
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    v = F.normalize(torch.mv(weight_mat.t(), u), dim=0, eps=self.eps, out=v)
                    u = F.normalize(torch.mv(weight_mat, v), dim=0, eps=self.eps, out=u)
                if self.n_power_iterations > 0:
                    u = u.clone(memory_format=torch.contiguous_format)
                    v = v.clone(memory_format=torch.contiguous_format)
        return _DivideBySigma.apply(weight, u, v)


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """``torch.nn.utils.spectral_norm(module, name)`` with the lean backward of this module."""
    _torch_spectral_norm(module, name)
    for hook in module._forward_pre_hooks.values():
        if type(hook) is _SpectralNorm and hook.name == name:
            hook.__class__ = LeanSpectralNorm
    return module
