"""Convolutions with oneDNN-packed weights: same outputs, same parameters, fresh after changes."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spade.config import GeneratorConfig, ModelConfig, SemanticsConfig
from spade.export import inference_copy, prepare_for_inference
from spade.models import build_networks
from spade.nn import prepacked
from spade.nn.prepacked import PrepackedConv2d, prepack_convolutions, unpack_convolutions
from spade.semantics import build_semantics

needs_onednn = pytest.mark.skipif(not prepacked._usable, reason="this torch build has no oneDNN convolution op")


def _conv(cin, cout, k, stride=1, padding=1, bias=True, seed=0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias)


@needs_onednn
@pytest.mark.parametrize("cin,cout,k,stride,padding,bias", [
    (16, 8, 3, 1, 1, True), (8, 16, 1, 1, 0, False), (6, 5, 3, 2, 1, True), (3, 4, 7, 1, 3, True),
])
def test_packed_conv_equals_conv2d(cin, cout, k, stride, padding, bias):
    conv = _conv(cin, cout, k, stride, padding, bias).to(memory_format=torch.channels_last)
    packed = PrepackedConv2d.from_conv(conv)
    calls = []
    for shape in [(1, cin, 13, 17), (3, cin, 8, 8)]:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = F.conv2d(x, conv.weight, conv.bias, stride, padding)
            got = packed(x)
        calls.append(packed._packed is not None)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert all(calls), "the packed oneDNN convolution did not run"


@needs_onednn
def test_packed_weight_follows_in_place_changes():
    conv = _conv(8, 8, 3)
    packed = PrepackedConv2d.from_conv(conv)
    x = torch.randn(1, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = packed(x)
        conv.weight.mul_(-2.0)          # shared parameter, changed in place (as load_state_dict does)
        after = packed(x)
        torch.testing.assert_close(after, F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_gradients_and_other_dtypes_take_the_plain_conv():
    conv = _conv(4, 4, 3)
    packed = PrepackedConv2d.from_conv(conv)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    packed(x).square().sum().backward()           # grad mode: plain nn.Conv2d, differentiable
    assert x.grad is not None and conv.weight.grad is not None
    assert packed._packed is None
    with torch.no_grad():
        y = packed.double()(x.detach().double())
    assert y.dtype == torch.float64 and packed._packed is None


def test_swapping_keeps_parameters_and_state_dict():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 2, 1)))
    keys = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net[0].weight
    prepack_convolutions(net)
    assert isinstance(net[0], PrepackedConv2d) and isinstance(net[2][0], PrepackedConv2d)
    assert net[0].weight is weight
    assert net.state_dict().keys() == keys.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in keys.items())
    x = torch.randn(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = net(x)
    clone = pickle.loads(pickle.dumps(copy.deepcopy(net)))  # the opaque packed weight is not copied
    assert clone[0]._packed is None
    with torch.no_grad():
        torch.testing.assert_close(clone(x), y, rtol=0, atol=0)
    unpack_convolutions(net)
    assert type(net[0]) is nn.Conv2d and net[0].weight is weight


def test_prepared_generator_matches_the_reference_and_exports_plain(monkeypatch):
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, True), GeneratorConfig(ngf=8, crop_size=64, spade_hidden=16))
    generator = build_networks(config, init_type="normal", init_gain=0.2).generator
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (2, 1, 16, 16), generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    semantics = build_semantics(labels, 5, True, labels, True)
    outputs = {}
    with torch.no_grad():
        generator.train()(semantics)
        generator.eval()
        generator.fast_spade = False
        reference = generator(semantics)
        # The exact value: the same network in float64. Both float32 paths are held to the issue's
        # 1e-4 from it; compared with each other, their rounding errors (each up to 9e-5 on this
        # saturated random model) can add up past 1e-4 on some CPUs.
        truth = copy.deepcopy(generator).double()(semantics.double())
        torch.testing.assert_close(reference.double(), truth, rtol=0, atol=1e-4)
        for usable in (False, prepacked._usable):
            monkeypatch.setattr(prepacked, "_usable", usable)
            prepared = prepare_for_inference(copy.deepcopy(generator))
            packed = [m for m in prepared.modules() if isinstance(m, PrepackedConv2d)]
            assert len(packed) == sum(isinstance(m, nn.Conv2d) for m in generator.modules())
            for fast in (False, True):
                prepared.fast_spade = fast
                outputs[usable, fast] = prepared(semantics)
                # Channels-last convs round differently from the NCHW reference, not worse: measured
                # 8.1e-5 / 9.1e-5 from float64 (fast / plain SPADE) against the reference's 6.5e-5.
                torch.testing.assert_close(outputs[usable, fast].double(), truth, rtol=0, atol=1e-4)
            assert all(m._packed is not None for m in packed) == usable
    if prepacked._usable:  # packing changes how oneDNN gets the weight, not the arithmetic
        for fast in (False, True):
            assert torch.equal(outputs[True, fast], outputs[False, fast])
    exported = inference_copy(prepared)
    assert not any(isinstance(m, PrepackedConv2d) for m in exported.modules())


@pytest.mark.parametrize("packable", [True, False])
def test_bf16_compute_dtype_runs_the_conv_in_bf16(packable, monkeypatch):
    if packable and not prepacked._usable:
        pytest.skip("this torch build has no oneDNN convolution op")
    monkeypatch.setattr(prepacked, "_usable", packable)
    conv = _conv(16, 8, 3).to(memory_format=torch.channels_last)
    packed = PrepackedConv2d.from_conv(conv)
    packed.compute_dtype = torch.bfloat16
    x = torch.randn(2, 16, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = packed(x)
        exact = F.conv2d(x, conv.weight, conv.bias, padding=1)
        in_bf16 = F.conv2d(x.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16(), padding=1).float()
    assert got.dtype == torch.float32
    assert packed._packed.dtype == torch.bfloat16 or packed._packed.is_mkldnn
    assert packed._packed_key[-1] == packable
    # bf16 operands and output (8-bit mantissa): off the fp32 conv, on the bf16 conv.
    assert not torch.equal(got, exact)
    torch.testing.assert_close(got, exact, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got, in_bf16, rtol=1e-2, atol=1e-2)
    packed.compute_dtype = None                       # back to the exact path
    with torch.no_grad():
        torch.testing.assert_close(packed(x), exact, rtol=1e-5, atol=1e-5)
