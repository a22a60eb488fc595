"""Convolutions with oneDNN-packed weights: same outputs, same parameters, fresh after changes."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spadegan.config import GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.export import inference_copy, prepare_for_inference
from spadegan.models import build_networks
from spadegan.nn import prepacked
from spadegan.nn.prepacked import (PackedOnlyConv2d, PrepackedConv2d, prepack_convolutions, release_plain_weights,
                                unpack_convolutions)
from spadegan.nn.spade import SPADE
from spadegan.semantics import build_semantics

from conftest import FLOAT32_REL, FLOAT64_REL, U_BFLOAT16, check_error, max_abs_diff, well_conditioned_

pytestmark = pytest.mark.numeric
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
        check_error(f"{tuple(shape)}", max_abs_diff(got, expected) / float(expected.abs().max()), FLOAT32_REL)
    assert all(calls), "the packed oneDNN convolution did not run"


@needs_onednn
@pytest.mark.parametrize("cls", [PrepackedConv2d, PackedOnlyConv2d])
def test_packed_weight_takes_the_layout_each_input_shape_picks(cls, monkeypatch):
    """oneDNN picks the weight's blocked layout per problem (batch and picture size included); a
    weight packed in another layout is reordered again inside every call. The held weight must
    be in the layout picked for the shape it is called with, and a shape seen before packs nothing."""
    conv = _conv(64, 64, 3)
    packed = cls.from_conv(conv)
    reorders = []
    reorder = prepacked._reorder
    monkeypatch.setattr(prepacked, "_reorder", lambda *a: reorders.append(a[2]) or reorder(*a))
    for shape in [(1, 64, 16, 32), (1, 64, 64, 128), (2, 64, 16, 32)]:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
            got = packed(x)
            again = len(reorders)
            assert torch.equal(packed(x), got), "the same shape again computes the same bits"
        assert len(reorders) == again, f"{shape} seen before: nothing to pack"
        check_error(f"{shape}", max_abs_diff(got, expected) / float(expected.abs().max()), FLOAT32_REL)
        if prepacked._serialized_layout is not None:
            picked = reorder(packed, conv.weight.detach(), shape)
            assert prepacked._layout(packed._packed, shape) == prepacked._layout(picked, shape), \
                f"{shape}: the held weight is not in the layout oneDNN picks for it"


@needs_onednn
def test_packed_weight_follows_in_place_changes():
    conv = _conv(8, 8, 3)
    packed = PrepackedConv2d.from_conv(conv)
    x = torch.randn(1, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = packed(x)
        conv.weight.mul_(-2.0)          # shared parameter, changed in place (as load_state_dict does)
        after = packed(x)
        expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
        check_error("after the change", max_abs_diff(after, expected) / float(expected.abs().max()), FLOAT32_REL)
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", ["noise", "blocks"])  # single-pixel regions; regions with interiors
def test_prepared_generator_matches_the_reference_and_exports_plain(monkeypatch, dtype, kind):
    """The inference copy (spectral norm folded, channels-last, packed convs, fast or plain SPADE)
    computes the reference network: in float64 to rounding (oneDNN packs float32 only, so there
    the convs take the plain path), in float32 on a well-conditioned network. The maps hold
    don't-care pixels and instance edges."""
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, True), GeneratorConfig(ngf=8, crop_size=64, spade_hidden=16))
    generator = well_conditioned_(build_networks(config, init_type=None).generator).to(dtype)
    g = torch.Generator().manual_seed(1)
    if kind == "noise":
        labels = torch.randint(0, 5, (2, 1, 64, 64), generator=g)
    else:
        labels = torch.randint(0, 5, (2, 1, 16, 16), generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    labels[:, :, :5, :7] = 255
    semantics = build_semantics(labels, 5, True, labels % 3, True).to(dtype)
    rel = FLOAT64_REL if dtype == torch.float64 else FLOAT32_REL
    outputs = {}
    with torch.no_grad():
        generator.train()(semantics)  # batch-norm statistics and spectral vectors as after training
        generator.eval()
        generator.fast_spade = False
        reference = generator(semantics)
        scale = float(reference.abs().max())
        for usable in (False, prepacked._usable):
            monkeypatch.setattr(prepacked, "_usable", usable)
            prepared = prepare_for_inference(copy.deepcopy(generator))
            packed = [m for m in prepared.modules() if isinstance(m, PrepackedConv2d)]
            assert len(packed) == sum(isinstance(m, nn.Conv2d) for m in generator.modules())
            for fast in (False, True):
                prepared.fast_spade = fast
                outputs[usable, fast] = prepared(semantics)
                check_error(f"packed {usable}, fast {fast}", max_abs_diff(outputs[usable, fast], reference) / scale, rel)
            assert all(m._packed is not None for m in packed) == (usable and dtype == torch.float32)
    if prepacked._usable:
        # Packing hands oneDNN the weight pre-arranged; at some thread counts it then runs
        # another kernel (another summation order), so the two agree to float32 rounding, not bit
        # for bit.
        for fast in (False, True):
            check_error(f"packed vs plain, fast {fast}", max_abs_diff(outputs[True, fast], outputs[False, fast]) / scale, rel)
    exported = inference_copy(prepared)
    assert not any(isinstance(m, PrepackedConv2d) for m in exported.modules())


@pytest.mark.parametrize("packable", [True, False])
def test_bf16_compute_dtype_runs_the_conv_in_bf16(packable, monkeypatch):
    if packable and not prepacked._bf16_usable:
        pytest.skip("oneDNN packs bfloat16 weights only on CPUs with native bf16 conversions")
    monkeypatch.setattr(prepacked, "_usable", packable)
    conv = _conv(16, 8, 3).to(memory_format=torch.channels_last)
    packed = PrepackedConv2d.from_conv(conv)
    packed.compute_dtype = torch.bfloat16
    x = torch.randn(2, 16, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = packed(x)
        exact = F.conv2d(x, conv.weight, conv.bias, padding=1)
    assert got.dtype == torch.float32
    assert packed._packed.dtype == torch.bfloat16 or packed._packed.is_mkldnn
    assert packed._packed_key[-1] == packable
    assert not torch.equal(got, exact)  # bf16 operands and output (8 significant bits): not fp32
    # The worst case of that arithmetic, element by element: each product of operands rounded by
    # up to u carries 2u + u² of |w·x|, float32 accumulation adds at most K·u_fp32 (< 0.1 u for
    # the K = 144 terms here), the bias is rounded by u and the output by u of itself.
    with torch.no_grad():
        magnitude = F.conv2d(x.abs().double(), conv.weight.abs().double(), conv.bias.abs().double(), padding=1)
    bound = 2.1 * U_BFLOAT16 * magnitude + 1.01 * U_BFLOAT16 * exact.abs().double()
    check_error("bf16 conv / worst case", float(((got.double() - exact.double()).abs() / bound).max()), 1.0,
                worst_case=True)
    packed.compute_dtype = None                       # back to the exact path
    with torch.no_grad():
        check_error("fp32 again", max_abs_diff(packed(x), exact) / float(exact.abs().max()), FLOAT32_REL)


@needs_onednn
def test_packed_only_conv_computes_what_the_packed_conv_computes():
    """Keeping only the packed weight changes where the weight lives, not the call: same bits."""
    conv = _conv(16, 8, 3).to(memory_format=torch.channels_last)
    packed, packed_only = PrepackedConv2d.from_conv(conv), PackedOnlyConv2d.from_conv(conv)
    x = torch.randn(2, 16, 9, 11).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(packed_only(x), packed(x))
    assert "weight" not in dict(packed_only.named_parameters())


@needs_onednn
def test_packed_only_weight_reads_back_exactly_and_travels():
    """A reorder moves values without rounding them: the weight read back, the state dict, a deep
    copy, a pickle and a state dict loaded into another one all hold the plain weight's bits."""
    conv = _conv(6, 5, 3, seed=2)
    packed_only = PackedOnlyConv2d.from_conv(conv)
    assert torch.equal(packed_only.weight, conv.weight.detach())
    state = packed_only.state_dict()
    assert list(state) == list(conv.state_dict())
    assert all(torch.equal(state[k], v) for k, v in conv.state_dict().items())
    x = torch.randn(1, 6, 7, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = packed_only(x)
        for other in (copy.deepcopy(packed_only), pickle.loads(pickle.dumps(packed_only))):
            assert torch.equal(other(x), expected)
        loaded = PackedOnlyConv2d.from_conv(_conv(6, 5, 3, seed=3))
        loaded.load_state_dict(conv.state_dict())
        assert torch.equal(loaded(x), expected)
    with pytest.raises(RuntimeError, match="size mismatch"):
        PackedOnlyConv2d.from_conv(_conv(6, 4, 3)).load_state_dict(conv.state_dict())


@needs_onednn
def test_packed_only_conv_takes_the_plain_conv_for_other_inputs_and_refuses_moves():
    conv = _conv(4, 3, 3, seed=4)
    packed_only = PackedOnlyConv2d.from_conv(conv)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)  # needs a gradient: the plain conv, on the unpacked weight
    got = packed_only(x)
    assert torch.equal(got, F.conv2d(x, conv.weight, conv.bias, padding=1))
    got.sum().backward()
    assert x.grad is not None
    with pytest.raises(RuntimeError, match="float32 inference on the CPU"):
        packed_only.to(torch.float64)
    unpacked = unpack_convolutions(nn.Sequential(packed_only))[0]
    assert type(unpacked) is nn.Conv2d and torch.equal(unpacked.weight, conv.weight)


@needs_onednn
def test_release_plain_weights_keeps_the_label_networks_plain():
    """The fast SPADE path reads the label networks' weights as tables: they keep a plain weight;
    every other convolution keeps its packed weight only, and the generator computes the same bits."""
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, True), GeneratorConfig(ngf=8, crop_size=64, spade_hidden=16))
    generator = well_conditioned_(build_networks(config, init_type=None).generator)
    labels = torch.randint(0, 5, (1, 1, 16, 16)).repeat_interleave(4, 2).repeat_interleave(4, 3)
    semantics = build_semantics(labels, 5, True, labels % 3, True)
    with torch.no_grad():
        generator.train()(semantics)
        prepared = prepare_for_inference(generator.eval())
        expected = prepared(semantics)
        release_plain_weights(prepared, keep=(SPADE,))
        got = prepared(semantics)
    in_spade = {id(m) for s in prepared.modules() if isinstance(s, SPADE) for m in s.modules()}
    convs = [m for m in prepared.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, PackedOnlyConv2d) != (id(m) in in_spade) for m in convs)
    assert torch.equal(got, expected)
