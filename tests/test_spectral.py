"""Spectral norm with the closed-form backward: torch's forward and power iteration bit for bit,
its gradient to float64 rounding, and one buffer of the weight's size in the backward pass."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spadegan.nn.spectral import LeanSpectralNorm, spectral_norm

from conftest import FLOAT64_REL, check_error

pytestmark = pytest.mark.numeric


def _pair(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The layer with torch's spectral norm and with ours, from the same weights and vectors."""
    theirs, ours = layer, copy.deepcopy(layer)
    torch.manual_seed(1)
    torch.nn.utils.spectral_norm(theirs)
    torch.manual_seed(1)
    spectral_norm(ours)
    return theirs, ours


@pytest.mark.parametrize("make", [
    lambda: nn.Conv2d(12, 6, 3, padding=1), lambda: nn.Linear(10, 7),
    lambda: nn.Conv2d(12, 6, 3, padding=1).to(memory_format=torch.channels_last),  # --channels_last training
], ids=["conv", "linear", "conv-channels-last"])
def test_same_forward_and_power_iteration_bits_and_float64_gradient(make):
    torch.manual_seed(0)
    theirs, ours = _pair(make().double())
    assert any(isinstance(h, LeanSpectralNorm) for h in ours._forward_pre_hooks.values())
    shape = (2, 12, 7, 9) if isinstance(theirs, nn.Conv2d) else (5, 10)
    for step in range(3):  # train mode: the vectors move at each forward
        x = torch.randn(shape, dtype=torch.float64)
        if theirs.weight_orig.dim() == 4 and theirs.weight_orig.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        y_theirs, y_ours = theirs(x), ours(x)
        assert torch.equal(y_theirs, y_ours) and torch.equal(theirs.weight_u, ours.weight_u)
        g_theirs = torch.autograd.grad(y_theirs.sin().sum(), theirs.weight_orig)[0]
        g_ours = torch.autograd.grad(y_ours.sin().sum(), ours.weight_orig)[0]
        # The same closed form, two orders of float64 operations: rounding of a few products each.
        check_error(f"step {step}: gradient", float((g_ours - g_theirs).abs().max() / g_theirs.abs().max()),
                    FLOAT64_REL)
    theirs.eval(), ours.eval()
    with torch.no_grad():
        assert torch.equal(theirs(x), ours(x))
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_backward_makes_one_weight_sized_buffer():
    """What the backward allocates at the weight's size: the convolution's gradient of W/σ and the
    gradient of W; torch's chain of divisions, products and a negation makes five more. Counted by
    the profiler's memory events."""
    torch.manual_seed(0)
    theirs, ours = _pair(nn.Conv2d(64, 64, 3, padding=1))
    x = torch.randn(1, 64, 4, 4)
    weight_bytes = 64 * 64 * 9 * 4

    def weight_sized_allocations(layer: nn.Module) -> int:
        loss = layer(x).square().sum()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            loss.backward()
        return sum(1 for e in prof.events() if e.cpu_memory_usage >= weight_bytes and e.name.startswith("aten::")
                   and e.cpu_memory_usage == e.self_cpu_memory_usage)

    ours_count, theirs_count = weight_sized_allocations(ours), weight_sized_allocations(theirs)
    assert ours_count <= 2 < theirs_count, (ours_count, theirs_count)


def test_removal_and_copies_keep_it():
    torch.manual_seed(0)
    layer = spectral_norm(nn.Conv2d(4, 4, 3))
    clone = copy.deepcopy(layer)
    assert any(isinstance(h, LeanSpectralNorm) for h in clone._forward_pre_hooks.values())
    torch.nn.utils.remove_spectral_norm(layer)  # export folds it as before
    assert not hasattr(layer, "weight_orig") and isinstance(layer.weight, nn.Parameter)
