"""The fast SPADE path equals the reference path: outputs and gradients, eval and train mode,
on label maps with many small regions, with and without instance edges and don't-care.

Exactness is proven in float64 (the two paths are one function to rounding); the float32
comparisons run on networks whose activations stay O(1), where rounding is ~1e-6 relative (see
the bounds in ``conftest``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from spadegan.nn.fast_spade import label_maps_from_semantics
from spadegan.nn.generator import SPADEGenerator
from spadegan.nn.spade import SPADE
from spadegan.semantics import build_semantics

from conftest import (FLOAT32_REL, FLOAT64_REL, U_FLOAT32, assert_same_outputs_and_gradients, check_error,
                      forward_and_backward, max_abs_diff, random_label_maps, tiny_spade_generator)

pytestmark = pytest.mark.numeric


# Float64 proves the two paths one function in every mode. Float32 compares them where the network
# is well conditioned, with eval-mode batch norm: normalizing by the statistics of a few values
# (instance norm over the 2×2 maps of the first layers, batch norm over a batch of two) rounds
# to ~1e-5 of the output in float32, in either path.
MODES = [("spectralspadesyncbatch3x3", False, 2, torch.float64), ("spectralspadesyncbatch3x3", True, 2, torch.float64),
         ("spadeinstance3x3", True, 2, torch.float64), ("spadeinstance3x3", True, 1, torch.float64),
         ("spectralspadesyncbatch3x3", False, 2, torch.float32), ("spectralspadesyncbatch3x3", False, 1, torch.float32)]


@pytest.mark.parametrize("kind", ["noise", "blocks"])  # single-pixel regions; regions with interiors
@pytest.mark.parametrize("edges, dontcare", [(False, False), (True, True)])
@pytest.mark.parametrize("norm, train, batch, dtype", MODES,
                         ids=[f"{n}-{'train' if t else 'eval'}-{b}-{str(d)[6:]}" for n, t, b, d in MODES])
def test_fast_equals_reference(kind, edges, dontcare, norm, train, batch, dtype):
    classes = 7
    labels, instances = random_label_maps(kind, classes, 64)
    labels, instances = labels[:batch], instances[:batch]
    if dontcare:
        labels[:, :, :6, :6] = 255
    semantics = build_semantics(labels, classes, dontcare, instances, edges).to(dtype)
    g = tiny_spade_generator(semantics.shape[1], norm).to(dtype)
    if not train:
        with torch.no_grad():
            g.train()(semantics)  # batch-norm statistics of these activations, as after training
    state = {k: v.clone() for k, v in g.state_dict().items()}
    reference = forward_and_backward(g, semantics, fast=False, train=train)
    g.load_state_dict(state)  # train mode moved the running statistics and spectral vectors
    fast = forward_and_backward(g, semantics, fast=True, train=train)
    if dtype == torch.float64:
        assert_same_outputs_and_gradients(reference, fast, FLOAT64_REL)
    else:
        # Float32 gradients are ill-conditioned in either path, so they are proven equal in
        # float64 only: a bias's gradient sums thousands of terms of both signs into a small
        # fraction of their magnitudes, rounded in whatever order the CPU's kernels reduce.
        assert_same_outputs_and_gradients(reference, fast, FLOAT32_REL, gradients=False)


@pytest.mark.parametrize("kind", ["noise", "blocks"])
def test_training_keeps_no_rearranged_weights_or_row_tables(kind):
    """What the fast path keeps for the backward pass: the γ|β products keep the weights
    themselves (not their per-layer rearranged copies), and the modulation keeps at most the
    scale half of its row table, and only where it has fewer rows than the map has pixels (else
    the scale map). So no tensor kept is a rearranged γ|β weight, and no row table is as long as
    the largest map has pixels."""
    classes = 7
    labels, instances = random_label_maps(kind, classes, 64)
    semantics = build_semantics(labels, classes, True, instances, True)
    torch.manual_seed(0)
    g = SPADEGenerator(semantics.shape[1], ngf=8, crop_size=64, norm="spectralspadesyncbatch3x3", spade_hidden=24).train()
    parameters = {p.untyped_storage().data_ptr() for p in g.parameters()}
    kept_shapes = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in parameters:
            kept_shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        g(semantics)
    channels = {m.mlp_gamma.out_channels for m in g.modules() if hasattr(m, "mlp_gamma")}
    widths = {2 * c for c in channels}
    hidden = 24
    rearranged = [s for s in kept_shapes if len(s) == 2 and s[1] in widths and s[0] in (hidden, 9 * hidden)]
    assert not rearranged, rearranged
    pixels = semantics.shape[0] * 64 * 64
    long_rows = [s for s in kept_shapes if len(s) == 2 and s[1] in channels | widths and s[0] >= pixels]
    assert not long_rows, long_rows


def test_both_boundary_strategies_are_exercised():
    """Blocky maps take the distinct-pattern factoring, per-pixel noise the patch gather."""
    classes = 7
    blocky = label_maps_from_semantics(build_semantics(random_label_maps("blocks", classes, 64)[0], classes, False))
    noisy = label_maps_from_semantics(build_semantics(random_label_maps("noise", classes, 64)[0], classes, False))
    assert blocky.at((64, 64)).pattern_rep is not None
    assert bool(blocky.at((64, 64)).interior.any())
    assert noisy.at((64, 64)).pattern_rep is None and not bool(noisy.at((64, 64)).interior.any())


def test_resizing_the_ids_equals_resizing_the_one_hot_map():
    classes = 5
    labels = torch.randint(0, classes, (1, 1, 37, 53))
    semantics = build_semantics(labels, classes, False)
    maps = label_maps_from_semantics(semantics)
    for size in [(8, 8), (19, 27), (64, 64), (37, 53)]:
        expected = F.interpolate(semantics, size=size, mode="nearest").argmax(1)
        assert torch.equal(maps.at(size).ids, expected)


def _ids_by_definition(semantics):
    """What label_maps_from_semantics must return, test by test: (ids, edges or None, classes)."""
    if not bool(((semantics == 0) | (semantics == 1)).all()):
        return None
    if bool((semantics.sum(1) == 1).all()):
        return semantics.argmax(1, keepdim=True), None, semantics.shape[1]
    classes = semantics[:, :-1]
    if semantics.shape[1] > 1 and bool((classes.sum(1) == 1).all()):
        return classes.argmax(1, keepdim=True), semantics[:, -1:], semantics.shape[1] - 1
    return None


def test_one_hot_recognition_follows_its_definition():
    """Two passes (max, nonzero count) decide as the element-wise tests do, on every kind of map."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (2, 1, 9, 11), generator=g)
    one_hot = torch.zeros(2, 5, 9, 11).scatter_(1, ids, 1.0)
    edges = (torch.rand(2, 1, 9, 11, generator=g) > 0.7).float()
    cases = {
        "one-hot": one_hot,
        "one-hot, last class used (don't-care)": torch.zeros(2, 5, 9, 11).scatter_(1, ids.clamp(3, 4), 1.0),
        "one-hot + edges": torch.cat([one_hot, edges], 1),
        "one-hot + an edge channel that never fires": torch.cat([one_hot, torch.zeros_like(edges)], 1),
        "soft": one_hot * 0.5 + 0.1,
        "two classes at a pixel + edges": torch.cat([one_hot.clone().index_put_((torch.tensor([0]), torch.tensor([0]),
                                                   torch.tensor([0]), torch.tensor([0])), torch.tensor(1.0)), edges], 1),
        "a -1 beside a 1, a pixel of zeros elsewhere": one_hot.clone().index_put_(
            (torch.tensor([0, 1]), torch.tensor([(int(ids[0, 0, 0, 0]) + 1) % 5, int(ids[1, 0, 3, 3])]),
             torch.tensor([0, 3]), torch.tensor([0, 3])), torch.tensor([-1.0, 0.0])),
        "NaN": one_hot.clone().index_put_((torch.tensor([0]),) * 4, torch.tensor(float("nan"))),
        "edges not 0/1": torch.cat([one_hot, edges * 0.5], 1),
        "one channel": torch.ones(2, 1, 9, 11),
        "one channel of zeros": torch.zeros(2, 1, 9, 11),
    }
    for name, semantics in cases.items():
        expected, got = _ids_by_definition(semantics), label_maps_from_semantics(semantics)
        if expected is None:
            assert got is None, name
            continue
        assert got is not None, name
        assert torch.equal(got.ids, expected[0]) and got.num_classes == expected[2], name
        assert (got.edges is None) == (expected[1] is None), name
        if got.edges is not None:
            assert torch.equal(got.edges, expected[1]), name


def test_soft_labels_fall_back_to_the_reference_path():
    semantics = torch.full((1, 4, 16, 16), 0.25)
    assert label_maps_from_semantics(semantics) is None
    g = tiny_spade_generator(4, "spadeinstance3x3").eval()
    with torch.no_grad():
        g.fast_spade = True
        a = g(semantics)
        g.fast_spade = False
        assert torch.equal(a, g(semantics))


def test_inference_cache_follows_weight_updates():
    """The rearranged label-network weights are cached for inference; a weight change (an
    optimizer step, a load) must invalidate them."""
    classes = 7
    semantics = build_semantics(random_label_maps("blocks", classes, 64)[0], classes, False)
    g = tiny_spade_generator(classes, "spectralspadebatch3x3").eval()
    with torch.no_grad():
        before = g(semantics)
        g.head_0.norm_0.mlp_shared[0].weight.mul_(1.5)
        after_fast = g(semantics)
        g.fast_spade = False
        after_reference = g(semantics)
    assert not torch.allclose(before, after_fast)
    check_error("image", max_abs_diff(after_fast, after_reference) / float(after_reference.abs().max()), FLOAT32_REL)


def test_no_tables_are_kept_between_training_steps():
    """The discriminator step's forward runs without gradients in train mode: the rearranged
    weights it makes are not kept (the next step's weights differ), as they are in eval mode."""
    classes = 7
    semantics = build_semantics(random_label_maps("blocks", classes, 64)[0], classes, False)
    g = tiny_spade_generator(classes, "spectralspadebatch3x3")

    with torch.no_grad():
        g.train()(semantics)
        assert len(g.label_network_cache) == 0
        g.eval()(semantics)
        assert len(g.label_network_cache) == sum(isinstance(m, SPADE) for m in g.modules())
        g.train()(semantics)
        assert len(g.label_network_cache) == 0
    assert len(copy.deepcopy(g.eval()).label_network_cache) == 0  # a copy makes its own tables


def test_gamma_beta_weights_shared_with_the_tables():
    """For inference the γ and β weights become views of the fast path's weight matrix: one copy,
    the same numbers in the state dict, the same images bit for bit; a new state dict loaded into
    them updates the matrix with them, and a replaced weight is noticed."""
    from spadegan.nn.fast_spade import share_gamma_beta_storage

    classes = 7
    labels, instances = random_label_maps("blocks", classes, 64)
    semantics = build_semantics(labels, classes, True, instances, True)
    g = tiny_spade_generator(semantics.shape[1], "spectralspadesyncbatch3x3")
    with torch.no_grad():
        g.train()(semantics)  # batch-norm statistics
        g.eval()
        state = {k: v.clone() for k, v in g.state_dict().items()}
        before = g(semantics)
        layers = [m for m in g.modules() if isinstance(m, SPADE)]
        for layer in layers:
            share_gamma_beta_storage(layer)
        assert all(torch.equal(v, state[k]) for k, v in g.state_dict().items())
        assert torch.equal(g(semantics), before)
        maps = label_maps_from_semantics(semantics)

        def tables(layer):
            return g.label_network_cache.tables(layer, maps.num_classes, maps.at((64, 64)).edges is not None)

        for layer in layers:
            assert tables(layer).matrix.data_ptr() == layer.mlp_gamma.weight.data_ptr()
        other = {k: v * 1.25 if "mlp_gamma.weight" in k or "mlp_beta.weight" in k else v for k, v in state.items()}
        g.load_state_dict(other)
        shared = g(semantics)
        assert all(tables(m).matrix.data_ptr() == m.mlp_gamma.weight.data_ptr() for m in layers)
        fresh = tiny_spade_generator(semantics.shape[1], "spectralspadesyncbatch3x3")
        fresh.load_state_dict(other)
        assert torch.equal(shared, fresh.eval()(semantics))
        layers[0].mlp_beta.weight = torch.nn.Parameter(layers[0].mlp_beta.weight.detach().contiguous() * 2)
        g.fast_spade, fresh.fast_spade = True, False
        replaced = g(semantics)
        layers_fresh = [m for m in fresh.modules() if isinstance(m, SPADE)]
        layers_fresh[0].mlp_beta.weight.mul_(2)
        reference = fresh(semantics)
    check_error("image", max_abs_diff(replaced, reference) / float(reference.abs().max()), FLOAT32_REL)


def test_instance_norm_gradient_does_not_depend_on_the_gradient_layout():
    """Guards a PyTorch CPU bug: F.instance_norm's input gradient is wrong for a batch of one
    when the incoming gradient is channels-last. Our InstanceNorm2d must not be affected."""
    from spadegan.nn.norm import InstanceNorm2d

    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16, requires_grad=True)
    grad = torch.randn(1, 8, 16, 16)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x.grad = None
        InstanceNorm2d(8)(x).backward(grad.contiguous(memory_format=layout))
        results.append(x.grad.clone())
    check_error("input gradient", max_abs_diff(results[1], results[0]) / float(results[0].abs().max()), FLOAT32_REL)


def test_compiled_kernel_equals_the_pytorch_path(monkeypatch):
    """The compiled modulation kernel (built by the set-up) and the PyTorch ops give the same
    images (eval BatchNorm, the official generator norm; instance norm returns NCHW and keeps the
    PyTorch ops); skipped where no kernel could be built."""
    from spadegan.nn import kernels

    if kernels.load() is None:
        pytest.skip("the compiled SPADE kernel is not built (python -m spadegan.nn.kernels)")
    classes = 7
    labels, instances = random_label_maps("blocks", classes, 64)
    for norm in ("spectralspadesyncbatch3x3", "spectralspadebatch3x3"):
        semantics = build_semantics(labels, classes, False, instances, True)
        g = tiny_spade_generator(semantics.shape[1], norm)
        with torch.no_grad():
            g.train()(semantics)  # BatchNorm statistics of these activations, as after training
            g.eval()
            calls, pairs = [], []
            real_modulate, real_pair = kernels.modulate, kernels.modulate_pair
            split = []  # whether the boundary rows came as a second table (the pattern factoring)
            monkeypatch.setattr(kernels, "modulate",
                                lambda *a: calls.append(a[4]) or split.append(a[5] is not None) or real_modulate(*a))
            monkeypatch.setattr(kernels, "modulate_pair", lambda *a: pairs.append(a[1]) or calls.extend([a[3][3], a[4][3]]) or real_pair(*a))
            compiled = g(semantics)
            assert calls, "the kernel was not used"
            assert pairs and all(pairs), "the up blocks' norm_s and norm_0 did not run as one upsampling pass"
            assert any(split), "the boundary rows were never passed as a second table"
            assert 0.2 in calls and None in calls, "the leaky ReLU was not fused where it follows, or fused elsewhere"
            monkeypatch.setattr(kernels, "usable", lambda *a: False)
            pytorch = g(semantics)
            monkeypatch.undo()
        check_error(norm, max_abs_diff(compiled, pytorch) / float(pytorch.abs().max()), FLOAT32_REL)


def test_compiled_kernel_fuses_the_leaky_relu_exactly():
    """The kernel's modulation + leaky ReLU equals PyTorch's ops on the same rows, bit for bit."""
    from spadegan.nn import kernels

    if kernels.load() is None:
        pytest.skip("the compiled SPADE kernel is not built (python -m spadegan.nn.kernels)")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 9, 7, generator=g).contiguous(memory_format=torch.channels_last)
    rows = torch.randn(5, 32, generator=g)
    pixel_row = torch.randint(0, 5, (2 * 9 * 7,), generator=g)
    mean = torch.randn(16, generator=g)
    per_pixel = rows[pixel_row].view(2, 9, 7, 32).permute(0, 3, 1, 2)
    expected = (x - mean.view(1, -1, 1, 1)) * per_pixel[:, :16] + per_pixel[:, 16:]
    assert torch.equal(kernels.modulate(x, rows, pixel_row, mean), expected)
    assert torch.equal(kernels.modulate(x, rows, pixel_row, mean, 0.2), F.leaky_relu(expected, 0.2))
    assert (expected < 0).any() and (expected > 0).any()


@pytest.mark.parametrize("negative_slope", [0.2, None])
def test_compiled_training_kernel_equals_the_pytorch_ops(negative_slope, monkeypatch):
    """The channel-major kernel (training) against PyTorch's ops on the same rows, forward and
    backward, with worst-case rounding bounds (M = |x·s| + |t|): the kernel rounds x·s + t twice
    (product, then sum), within (2u + u²)·M of the exact value, where addcmul rounds once (u·M);
    the leaky ReLU's product with the slope (< 1) rounds once more in each, within u·slope·M·(1 + 3u):
    together under 4u·M. The input gradient is the same product g·s in both. A row's gradient
    sums its m pixels' terms in another order (runs of pixels first), and any order is within
    γ_m·Σ|terms| of the exact sum (γ_m = m·u / (1 − m·u); Higham, Accuracy and Stability of
    Numerical Algorithms, Eq. 3.5), so the two differ by at most twice that."""
    from spadegan.nn import kernels
    from spadegan.nn.fast_spade import modulate_rows

    if kernels.load() is None:
        pytest.skip("the compiled SPADE kernel is not built (python -m spadegan.nn.kernels)")
    g = torch.Generator().manual_seed(2)
    n, channels, h, w, num_rows = 2, 6, 12, 10, 9
    # Runs of one row along each line (regions), single pixels (boundaries), rows nobody takes.
    pixel_row = torch.randint(0, num_rows - 2, (n, h, w // 5), generator=g).repeat_interleave(5, dim=2)
    pixel_row[:, ::3, 3] = num_rows - 2
    pixel_row = pixel_row.reshape(-1)
    centred = torch.randn(n, channels, h, w, generator=g, requires_grad=True)
    rows = torch.randn(num_rows, 2 * channels, generator=g, requires_grad=True)
    upstream = torch.randn(n, channels, h, w, generator=g)
    calls = []
    real_forward, real_backward = kernels.modulate_planes, kernels.modulate_planes_backward
    monkeypatch.setattr(kernels, "modulate_planes", lambda *a: calls.append("forward") or real_forward(*a))
    monkeypatch.setattr(kernels, "modulate_planes_backward", lambda *a: calls.append("backward") or real_backward(*a))
    compiled = modulate_rows(centred, rows, pixel_row, negative_slope)
    compiled_grads = torch.autograd.grad(compiled, (centred, rows), upstream)
    with torch.no_grad():
        compiled_no_grad = modulate_rows(centred, rows, pixel_row, negative_slope)
    assert calls == ["forward", "backward", "forward"]
    monkeypatch.setattr(kernels, "planes_usable", lambda *a: False)
    ops = modulate_rows(centred, rows, pixel_row, negative_slope)
    ops_grads = torch.autograd.grad(ops, (centred, rows), upstream)
    assert len(calls) == 3

    u = U_FLOAT32
    compiled, compiled_no_grad, ops = compiled.detach(), compiled_no_grad.detach(), ops.detach()
    per_pixel = rows.detach().double()[pixel_row].view(n, h, w, 2 * channels).permute(0, 3, 1, 2)
    scale, shift = per_pixel[:, :channels], per_pixel[:, channels:]
    magnitude = (centred.detach().double() * scale).abs() + shift.abs()
    assert torch.equal(compiled, compiled_no_grad)
    check_error("image", float(((compiled.double() - ops.double()).abs() / magnitude).max()), 4 * u, worst_case=True)
    assert torch.equal(compiled_grads[0], ops_grads[0])
    # The terms each row's gradient sums, and how many: g'·x for the scales, g' for the shifts.
    activated = upstream.double()
    if negative_slope is not None:
        activated = torch.where(ops > 0, activated, activated * negative_slope)
    terms = torch.cat([activated * centred.detach().double(), activated], dim=1)
    index = pixel_row.view(n, 1, h * w).expand(n, 2 * channels, h * w)
    absolute = torch.zeros(n, 2 * channels, num_rows, dtype=torch.float64).scatter_add_(
        2, index, terms.abs().reshape(n, 2 * channels, -1)).sum(0).t()
    pixels = torch.bincount(pixel_row, minlength=num_rows).double()[:, None]
    gamma = pixels * u / (1 - pixels * u)
    error = (compiled_grads[1].double() - ops_grads[1].double()).abs()
    assert bool((error[pixels[:, 0] == 0] == 0).all())  # rows nobody takes get exactly 0
    taken = pixels[:, 0] > 0
    check_error("row gradients", float((error[taken] / (2 * gamma[taken] * absolute[taken])).max()), 1.0,
                worst_case=True)


@pytest.mark.parametrize("upsample", [True, False])
def test_compiled_pair_kernel_equals_upsampling_then_two_modulations(upsample):
    """Two modulations of one input in one pass, with the 2× nearest upsampling folded in: the
    same numbers as upsampling, then each modulation with PyTorch's ops, bit for bit; the second
    table's rows partly in a separate tensor, one layer with a mean and a ReLU, one without."""
    from spadegan.nn import kernels

    if kernels.load() is None:
        pytest.skip("the compiled SPADE kernel is not built (python -m spadegan.nn.kernels)")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 5, 7, generator=g).contiguous(memory_format=torch.channels_last)
    big = F.interpolate(x, scale_factor=2, mode="nearest") if upsample else x
    n, _, h, w = big.shape
    rows_a, rows_b = torch.randn(6, 32, generator=g), torch.randn(9, 32, generator=g)
    pixel_row = torch.randint(0, 6, (n * h * w,), generator=g)
    mean = torch.randn(16, generator=g)

    def reference(rows, centred):
        per_pixel = rows[pixel_row].view(n, h, w, 32).permute(0, 3, 1, 2)
        return centred * per_pixel[:, :16] + per_pixel[:, 16:]

    out_a, out_b = kernels.modulate_pair(x, upsample, pixel_row, (rows_a, None, mean, 0.2),
                                         (rows_b[:4], rows_b[4:], None, None))
    assert out_a.shape == out_b.shape == big.shape and out_a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out_a, F.leaky_relu(reference(rows_a, big - mean.view(1, -1, 1, 1)), 0.2))
    assert torch.equal(out_b, reference(rows_b[:6], big))


def test_distinct_rows_equal_torch_unique():
    """The packed numbering of distinct 9-column rows equals torch.unique over rows (the same
    order), also where packing would overflow and torch.unique itself is used."""
    from spadegan.nn.fast_spade import _distinct_rows

    g = torch.Generator().manual_seed(0)
    for base in (4, 3 * 10 ** 6):
        rows = torch.randint(0, base, (500, 9), generator=g)
        rows[250:] = rows[:250]  # duplicates
        distinct, inverse = _distinct_rows(rows, base)
        expected, expected_inverse = torch.unique(rows, dim=0, return_inverse=True)
        assert torch.equal(distinct, expected) and torch.equal(inverse, expected_inverse)
        assert torch.equal(distinct[inverse], rows)


@pytest.mark.parametrize("kind", ["noise", "blocks"])  # gathered patches / distinct patterns
@pytest.mark.parametrize("norm", ["spectralspadesyncbatch3x3", "spadeinstance3x3"])
def test_inference_row_tables_written_in_place_equal_the_differentiable_ones(kind, norm, monkeypatch):
    """Without autograd the row tables are written into one buffer: the same numbers, bit for bit
    (with the up blocks' paired modulation off: instance norm's statistics of x and of its
    upsampled copy round differently, see the next test)."""
    import spadegan.nn.fast_spade as fast_path

    monkeypatch.setattr(fast_path, "spade_modulate_pair", lambda *a: None)
    labels, instances = random_label_maps(kind, 7, 64)
    semantics = build_semantics(labels, 7, True, instances, True)
    g = tiny_spade_generator(semantics.shape[1], norm).eval()
    g.fast_spade = True
    with torch.no_grad():
        in_place = g(semantics)
    with torch.enable_grad():
        from_parts = g(semantics).detach()
    assert torch.equal(in_place, from_parts)


@pytest.mark.parametrize("norm", ["spectralspadesyncbatch3x3", "spadeinstance3x3"])
def test_paired_upsampling_modulation_equals_the_reference(norm):
    """Inference with norm_s and norm_0 in one pass over the not-yet-upsampled x (the compiled
    kernel) equals the reference path: exactly the same arithmetic for eval BatchNorm, and for
    instance norm statistics taken over x instead of its 2× copy (rounding only)."""
    from spadegan.nn import kernels

    if kernels.load() is None:
        pytest.skip("the compiled SPADE kernel is not built (python -m spadegan.nn.kernels)")
    labels, instances = random_label_maps("blocks", 7, 64)
    semantics = build_semantics(labels, 7, True, instances, True)
    g = tiny_spade_generator(semantics.shape[1], norm)
    with torch.no_grad():
        g.train()(semantics)
        g.eval()
        g.fast_spade = False
        reference = g(semantics)
        g.fast_spade = True
        paired = g(semantics)
    # the same arithmetic for BatchNorm; for instance norm, statistics summed over x instead of
    # its 2× copy: rounding only
    check_error("image", max_abs_diff(paired, reference) / float(reference.abs().max()), FLOAT32_REL)


def test_interiors_follow_their_definition():
    """A pixel is interior when its 5×5 window lies inside the image and holds one class and no
    instance edge: the equal-neighbour runs give exactly the pixels that 5×5 max/min pooling of
    the class ids and edges, with the border excluded, gives."""
    from spadegan.nn.fast_spade import _uniform_5x5

    g = torch.Generator().manual_seed(0)
    for size, classes in ((3, 2), (9, 2), (23, 3), (40, 5)):
        ids = torch.randint(0, classes, (2, 1, size // 8 + 1, size // 8 + 1), generator=g)
        ids = F.interpolate(ids.float(), size=(size, size + 2), mode="nearest").long()  # regions, not noise
        edges = (torch.rand(2, 1, size, size + 2, generator=g) < 0.01).float()
        edges[:, :, 2:9, 2:9] = 1  # a window of edge pixels only is not interior either
        as_float = ids.float()
        same = F.max_pool2d(as_float, 5, 1, 2) == -F.max_pool2d(-as_float, 5, 1, 2)
        no_edge = F.max_pool2d(edges, 5, 1, 2) == 0
        inside = torch.zeros_like(same)
        inside[:, :, 2:-2, 2:-2] = True
        expected = (same & no_edge & inside)[:, 0]
        keys = ids[:, 0] * 2 + edges[:, 0].long()
        found = _uniform_5x5(keys, 2 * classes)
        assert torch.equal(found, expected)
        assert size < 20 or (found.any() and not found.all())  # the larger maps have both kinds
