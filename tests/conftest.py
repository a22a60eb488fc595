"""Shared test helpers: where the official fixtures are, numeric bounds, tiny models, maps and runs."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spadegan import bundled
from spadegan.checkpoint import Checkpoint, save_inference_checkpoint
from spadegan.config import (DataConfig, DiscriminatorConfig, EncoderConfig, GeneratorConfig, LossConfig, ModelConfig,
                             RunConfig, SemanticsConfig, TrainConfig)
from spadegan.data.landscapes import generate_layout
from spadegan.inference import Synthesizer
from spadegan.models import build_networks
from spadegan.nn.generator import SPADEGenerator
from spadegan.palettes import COCO_STUFF
from spadegan.semantics import build_semantics

# The shared fixtures and samples: $SPADE_SHARED, else ../shared beside the repository (CI's
# layout), else shared/ inside it.
_REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPADE_SHARED") or next(
    (p for p in (_REPO.parent / "shared", _REPO / "shared") if p.is_dir()), _REPO.parent / "shared"))
OFFICIAL = SHARED / "fixtures" / "official_spade"
COCO_SAMPLES = SHARED / "data" / "coco_stuff_samples"
FIXTURE_NAMES = ["cityscapes_like", "ade20k_vae_more"]

torch.set_num_threads(min(2, torch.get_num_threads()))


def require_official() -> Path:
    if not OFFICIAL.is_dir():
        pytest.skip(f"official fixtures not found at {OFFICIAL}")
    return OFFICIAL


@lru_cache(maxsize=None)
def _load_fixture(name: str) -> dict:
    return torch.load(OFFICIAL / f"{name}.pt", weights_only=True)


def official_fixture(name: str) -> dict:
    require_official()
    return _load_fixture(name)


# ---------------------------------------------------------------------------------------------
# Numeric bounds
#
# Each bound below follows from the unit roundoff u of the dtype and the conditioning of the
# computation; none is a measured error with a little added. ``check_error`` records every
# comparison in $SPADE_NUMERIC_LOG when that is set: ``scripts/numeric_isa.py`` runs the tests
# marked ``numeric`` under other instruction sets and reports each bound's margin over the largest
# error seen.
# ---------------------------------------------------------------------------------------------

U_FLOAT32 = 2.0 ** -24
U_FLOAT64 = 2.0 ** -53

# Float32, relative to the result's largest magnitude, on networks whose activations stay O(1)
# (variance-preserving weights, batch-norm statistics of their own activations): every layer
# sums K ≤ 9·C products whose rounding errors add like a random walk, √K·u ≤ 2e-6 relative, and
# normalizations do not amplify them; a dozen such layers stay near 1e-5. 1e-4 leaves that
# margin again and still rejects a different function, which moves the output by O(1).
FLOAT32_REL = 1e-4

U_BFLOAT16 = 2.0 ** -8

# Float64, relative: the same growth from u = 1.1e-16 stays below 1e-12, so 1e-9 leaves 1000×
# and proves that two paths compute one function (any other function differs by far more).
FLOAT64_REL = 1e-9


def float32_rounding_bound(scale: float) -> float:
    """Absolute bound on a float32 result's rounding error, for networks that are *not* well
    conditioned (the official fixtures: random weights not scaled by fan-in, tiny batch-norm
    variances): 100·u·S, with S from :func:`rounding_scale`.

    A float32 sum is rounded relative to the magnitudes of its terms (Higham: at worst K·u·Σ|w·x|
    for K terms, like a random walk √K·u·Σ|w·x| in practice), and the later layers pass such
    errors on with gains of order one (each is normalized again). 100·u·S allows the growth of
    sums of up to thousands of terms and is still far below the change a wrong layer, norm or
    bias makes, which is of the order of S's own layer outputs."""
    return 100 * U_FLOAT32 * scale


def rounding_scale(network: torch.nn.Module, *inputs) -> float:
    """The largest magnitude a float32 evaluation of ``network`` rounds relative to, in one
    forward (no grad): over every convolution and linear layer the largest Σ|w·x| + |b| of its
    sums, and over every submodule the largest |output|."""
    largest = [0.0]

    def record(module, args, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            largest[0] = max(largest[0], float(output.detach().abs().max()))
        bias = None if getattr(module, "bias", None) is None else module.bias.abs()
        if isinstance(module, torch.nn.Conv2d):
            magnitudes = torch.nn.functional.conv2d(args[0].abs(), module.weight.abs(), bias, module.stride,
                                                    module.padding, module.dilation, module.groups)
        elif isinstance(module, torch.nn.Linear):
            magnitudes = torch.nn.functional.linear(args[0].abs(), module.weight.abs(), bias)
        else:
            return
        largest[0] = max(largest[0], float(magnitudes.max()))

    hooks = [m.register_forward_hook(record) for m in network.modules()]
    try:
        with torch.no_grad():
            network(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return largest[0]


def check_error(what: str, error: float, bound: float, worst_case: bool = False) -> float:
    """``assert error <= bound``, recorded for ``scripts/numeric_isa.py``; returns the error.

    ``worst_case``: the bound is a proven worst-case bound of the arithmetic (every operand's
    rounding at its maximum, in any summation order), which no CPU can exceed by computing the
    same thing in another order; the script lists these apart instead of asking them for a
    margin over the typical error."""
    log = os.environ.get("SPADE_NUMERIC_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        with open(log, "a") as f:
            f.write(json.dumps({"test": test, "what": what, "error": float(error), "bound": float(bound),
                                "worst_case": worst_case}) + "\n")
    assert error <= bound, f"{what}: error {error:.3g} > bound {bound:.3g}"
    return error


def max_abs_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return float((actual.double() - expected.double()).abs().max())


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, what: str,
                              rel: float = FLOAT32_REL) -> float:
    """Max abs difference ≤ rel × the expected tensor's largest magnitude; returns the ratio."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = float(expected.double().abs().max()) or 1.0
    return check_error(what, max_abs_diff(actual, expected) / scale, rel)


def well_conditioned_(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw ``network``'s weights so that its activations stay O(1): Xavier-normal weights
    (gain 1, variance-preserving), biases N(0, 0.1²), norm scales 1 and shifts 0; in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if p.dim() > 1:
                fan_in, fan_out = p.shape[1] * p[0, 0].numel(), p.shape[0] * p[0, 0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / (fan_in + fan_out)) ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.fill_(1.0)
    return network


@lru_cache(maxsize=None)
def exact_official_output(name: str) -> torch.Tensor:
    """The official generator's eval output on the fixture's inputs, computed in float64 through
    the reference path (which in float32 reproduces the recorded output bit for bit).

    Float32 paths that order their arithmetic differently (channels-last convolutions, another
    device, the fast SPADE path) are compared with this, not with the recorded float32 output:
    on these random-weight fixtures, float32 rounding alone moves the image by ~1e-4 (the
    recording itself is 6e-5 from this result on ``cityscapes_like``), so two float32 evaluations
    can differ by up to twice that without either being wrong."""
    from spadegan.checkpoint import load_official
    from spadegan.semantics import build_semantics

    fx = official_fixture(name)
    networks = load_official(OFFICIAL / f"{name}_checkpoint").networks
    s = networks.config.semantics
    semantics = build_semantics(fx["label"], s.label_nc, s.contain_dontcare_label, fx["instance"], s.use_instance)
    generator = networks.generator.eval().double()
    generator.fast_spade = False
    z = fx["z"].double() if networks.config.generator.z_dim is not None else None
    with torch.no_grad():
        return generator(semantics.double(), z)


def synthesize_fixture_pngs(synthesizer, fx: dict, folder: Path, index: int,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Image ``index`` of a fixture from the PNG inputs in its checkpoint folder, on the CPU:
    through ``synthesize`` as a user calls it in float32; the same steps by hand otherwise."""
    config = synthesizer.config
    label = folder / f"input_label_{index}.png"
    instance = folder / f"input_instance_{index}.png" if config.semantics.use_instance else None
    z = fx["z"][index: index + 1] if config.generator.z_dim is not None else None
    if dtype == torch.float32:
        return synthesizer.synthesize(label, instance, z=z).cpu()
    semantics = synthesizer.semantics(label, instance).to(dtype)
    with torch.no_grad():
        return synthesizer.networks.generator(semantics, None if z is None else z.to(synthesizer.device, dtype)).cpu()


def float64_user_path_error(name: str, device: str) -> float:
    """Max |Δ| between the official network's exact output and the user path (fast SPADE,
    spectral norm folded, channels-last) run on ``device`` with the networks in float64 before
    folding."""
    from spadegan.checkpoint import load_official
    from spadegan.inference import Synthesizer

    fx = official_fixture(name)
    folder = OFFICIAL / f"{name}_checkpoint"
    networks = load_official(folder).networks
    networks.generator.double()
    synthesizer = Synthesizer(networks, device=device, fold=True)
    outputs = [synthesize_fixture_pngs(synthesizer, fx, folder, b, torch.float64) for b in range(fx["label"].shape[0])]
    return float((torch.cat(outputs) - exact_official_output(name)).abs().max())


# -- helpers shared by several test modules ------------------------------------------------------

TINY_SIZE = 64  # the tiny models' images


def random_label_maps(kind: str, classes: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":  # every pixel its own region: all boundary, distinct patterns galore
        labels = torch.randint(0, classes, (2, 1, size, size), generator=g)
    else:  # blocks of 4–8 px: interiors, boundaries and few distinct patterns
        coarse = torch.randint(0, classes, (2, 1, size // 4, size // 4), generator=g)
        labels = coarse.repeat_interleave(4, 2).repeat_interleave(4, 3)
        labels[:, :, size // 3: size // 3 + 5, :] = classes - 1  # a thin stripe
    instances = torch.randint(0, 3, (2, 1, size // 8, size // 8), generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
    return labels, instances * 1000 + labels


def tiny_spade_generator(label_channels: int, norm: str, seed: int = 0) -> SPADEGenerator:
    torch.manual_seed(seed)  # the spectral-norm vectors
    g = SPADEGenerator(label_channels, ngf=4, crop_size=64, norm=norm, spade_hidden=16)
    return well_conditioned_(g, seed)


def forward_and_backward(g: SPADEGenerator, semantics: torch.Tensor, fast: bool, train: bool):
    g.fast_spade = fast
    g.train(train)
    g.zero_grad(set_to_none=True)
    out = g(semantics)
    (out * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in g.named_parameters()}
    return out.detach(), grads


def assert_same_outputs_and_gradients(reference, fast, rel: float, gradients: bool = True) -> None:
    """Image and every parameter gradient, each relative to its largest value: per gradient
    tensor would compare rounding noise where the exact gradient is 0 (conv biases right before a
    normalization), in both paths."""
    (out_ref, grads_ref), (out_fast, grads_fast) = reference, fast
    check_error("image", max_abs_diff(out_fast, out_ref) / float(out_ref.abs().max()), rel)
    if gradients:
        scale = max(float(grad.abs().max()) for grad in grads_ref.values())
        check_error("gradients", max(max_abs_diff(grads_fast[name], grad) for name, grad in grads_ref.items()) / scale, rel)


def tiny_run(run_dir: Path, **train) -> RunConfig:
    base = TrainConfig(run_dir=str(run_dir), niter=4, deterministic=True, print_freq=1, display_freq=4,
                       save_latest_freq=1000, tensorboard=False)
    return RunConfig(
        model=ModelConfig(SemanticsConfig(182, True, True), GeneratorConfig(ngf=4, crop_size=64, spade_hidden=16),
                          DiscriminatorConfig(ndf=8, n_layers_D=3, num_D=2)),
        data=DataConfig(dataset_mode="coco", dataroot=str(COCO_SAMPLES), preprocess_mode="fixed", load_size=64,
                        crop_size=64, label_nc=182, contain_dontcare_label=True, use_instance=True),
        loss=LossConfig(no_vgg_loss=True),
        train=replace(base, **train))


def checkpoint_weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("generator", "discriminator", "generator_ema"):
        path = folder / f"{name}.safetensors"
        if path.is_file():
            out.update({f"{name}.{k}": v for k, v in load_file(str(path)).items()})
    return out


def landscape(variant: int = 0, size: int = TINY_SIZE) -> np.ndarray:
    """A small landscape in COCO-Stuff ids: sky, clouds, mountain, sea, sand, a tree, don't-care."""
    ids = np.full((size, size), COCO_STUFF.names.index("sky-other"), np.uint8)
    horizon = size // 3 + variant
    ids[horizon:] = COCO_STUFF.names.index("sea")
    ids[size * 2 // 3:] = COCO_STUFF.names.index("sand")
    ids[horizon - 6 - variant:horizon, 10:30] = COCO_STUFF.names.index("mountain")
    ids[4:9, 3 + variant:20] = COCO_STUFF.names.index("clouds")
    ids[size - 20:size - 4, 40:44 + variant] = COCO_STUFF.names.index("tree")
    ids[:2, :2] = 255  # don't-care
    return ids


def bf16_is_close_on_the_bundled_model(device: str) -> None:
    """bf16 convolutions on trained weights: images close to the exact ones, still float32 and on
    ``device`` (also run on CUDA by ``test_cuda``)."""
    if bundled.bundled_model_path() is None:
        pytest.skip("the bundled model is not installed")
    exact = Synthesizer.from_checkpoint(device=device)
    low = Synthesizer.from_checkpoint(device=device, precision="bf16")
    assert exact.precision == "fp32" and low.precision == "bf16"
    style = torch.rand(3, 256, 256) * 2 - 1
    for variant in range(2):
        label = landscape(variant, size=256)
        for kwargs in ({"seed": 3}, {"style": style, "seed": 3}):
            a, b = exact.synthesize(label, **kwargs), low.synthesize(label, **kwargs)
            assert a.device.type == b.device.type == device and a.dtype == b.dtype == torch.float32
            error = (a - b).abs()                           # the image spans [-1, 1]
            # bf16 keeps 8 significant bits (u = 2^-8, half a level of an 8-bit picture at full
            # scale). Each convolution's result moves by a few u of the magnitudes it sums
            # (operands and output rounded), the normalizations pass such errors on with gains of
            # order one, and the network's ~20 layers add theirs: a few u on average, more where
            # the last layer's sum cancels. 4u on average, 32u at 99.9% of the values and 64u
            # anywhere still say "the same picture" (wrong weights or a missing norm move it by
            # far more), whatever order a CPU's or GPU's kernels sum in.
            assert float(error.max()) > 0                    # bf16 did run
            check_error("mean", float(error.mean()), 4 * U_BFLOAT16)
            check_error("99.9th percentile", float(error.flatten().quantile(0.999)), 32 * U_BFLOAT16)
            check_error("largest", float(error.max()), 64 * U_BFLOAT16)


def save_tiny_model(folder: Path, *, encoder: bool = True, dontcare: bool = True, seed: int = 0) -> Path:
    """A tiny COCO-Stuff model with BatchNorm statistics from a few procedural landscapes."""
    torch.manual_seed(seed)
    config = ModelConfig(SemanticsConfig(182, dontcare, False),
                         GeneratorConfig(ngf=4, crop_size=TINY_SIZE, z_dim=8 if encoder else None, spade_hidden=8), None,
                         EncoderConfig(ndf=4, num_layers=5, latent_dim=8) if encoder else None)
    networks = build_networks(config, init_type="xavier", init_gain=1.0)
    norms = [m for m in networks.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    maps = torch.from_numpy(np.stack([generate_layout(i, TINY_SIZE).label for i in range(4)])).long()[:, None]
    with torch.no_grad():
        networks.generator.train()
        for _ in range(3):
            networks.generator(build_semantics(maps, 182, dontcare))
    networks.generator.eval()
    checkpoint = Checkpoint(folder=folder, meta={}, networks=networks, ema_generator=None, training_state=None)
    return save_inference_checkpoint(folder, checkpoint, dtype=torch.float16)
