"""Parity with tensors recorded from the official SPADE implementation (see the fixtures' README).

The fixtures' random weights (std 0.15, not scaled by fan-in) grow the generator's activations to
hundreds before its last layers, so float32 rounding alone moves its image by ~1e-4, on the
official code's CPU as on ours. Its outputs are therefore compared in float64 against the
recording, with a bound that scales with the magnitudes it rounds (``float32_rounding_bound``), and every
other path is proven equal to the reference in float64; the float32 paths are compared on
well-conditioned networks in ``test_fast_spade`` and ``test_prepacked``."""

from __future__ import annotations

import copy

import pytest
import torch

from spadegan.checkpoint import load_official
from spadegan.inference import Synthesizer
from spadegan.semantics import build_semantics

from conftest import (FIXTURE_NAMES, FLOAT64_REL, OFFICIAL, assert_close_to_reference, check_error,
                      exact_official_output, float32_rounding_bound, float64_user_path_error, rounding_scale,
                      max_abs_diff, official_fixture, synthesize_fixture_pngs)

pytestmark = pytest.mark.numeric


def _loaded(name: str):
    return load_official(OFFICIAL / f"{name}_checkpoint")


def _semantics(fx: dict, networks) -> torch.Tensor:
    s = networks.config.semantics
    return build_semantics(fx["label"], s.label_nc, s.contain_dontcare_label, fx["instance"], s.use_instance)


def _z(fx: dict, networks):
    return fx["z"] if networks.config.generator.z_dim is not None else None


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_semantic_input_matches(name):
    fx = official_fixture(name)
    networks = _loaded(name).networks
    semantics = _semantics(fx, networks)
    assert semantics.shape[1] == fx["options"]["semantic_nc"]
    if fx["semantics"] is not None:  # recorded only where small enough
        assert torch.equal(semantics.bool(), fx["semantics"])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_generator_eval_mode(name):
    """The reference path in float64 is the function the official code computed in float32: the
    recording is within float32 rounding of it."""
    fx = official_fixture(name)
    networks = _loaded(name).networks
    generator = networks.generator.eval().double()
    generator.fast_spade = False
    semantics, z = _semantics(fx, networks).double(), _z(fx, networks)
    inputs = (semantics, None if z is None else z.double())
    with torch.no_grad():
        exact = generator(*inputs)
    bound = float32_rounding_bound(rounding_scale(generator, *inputs))
    check_error(f"{name} G eval (float64) vs recording", max_abs_diff(exact, fx["G_eval_out"]), bound)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fast_generator_computes_the_official_function(name):
    """The fast path is the same function as the reference path: in float64, to rounding."""
    fx = official_fixture(name)
    networks = _loaded(name).networks
    generator = networks.generator.eval().double()
    semantics, z = _semantics(fx, networks).double(), _z(fx, networks)
    z = None if z is None else z.double()
    with torch.no_grad():
        generator.fast_spade = False
        reference = generator(semantics, z)
        generator.fast_spade = True
        fast = generator(semantics, z)
    check_error(f"{name} fast vs reference (float64)", max_abs_diff(fast, reference) / float(reference.abs().max()),
                FLOAT64_REL)


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_generator_train_mode_and_buffers(name, fast):
    """Train mode: batch statistics, one spectral-norm power iteration, running stats updated. The
    image is compared in float64 (batch statistics of these random-weight activations make its
    float32 rounding ill-conditioned, as in eval mode); the buffers, averages of whole batches,
    in float32."""
    fx = official_fixture(name)
    for dtype in (torch.float64, torch.float32):
        networks = _loaded(name).networks
        generator = networks.generator.train().to(dtype)
        generator.fast_spade = fast
        semantics, z = _semantics(fx, networks).to(dtype), _z(fx, networks)
        inputs = (semantics, None if z is None else z.to(dtype))
        if dtype == torch.float64:
            scale = rounding_scale(copy.deepcopy(generator), *inputs)  # a forward of its own: a copy
        with torch.no_grad():
            out = generator(*inputs)
        if dtype == torch.float64:
            check_error(f"{name} G train (float64) vs recording", max_abs_diff(out, fx["G_train_out"]),
                        float32_rounding_bound(scale))
            continue
        state = generator.state_dict()
        recorded = fx["G_buffers_after_train_forward"]
        assert len(recorded) > 0
        for key, expected in recorded.items():
            if key.endswith("num_batches_tracked"):
                assert int(state[key]) == int(expected), key
            else:
                assert_close_to_reference(state[key], expected, f"{name} buffer {key}")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_discriminator_features(name):
    fx = official_fixture(name)
    networks = _loaded(name).networks.eval()
    with torch.no_grad():
        scales = networks.discriminator(torch.cat([_semantics(fx, networks), fx["G_eval_out"]], dim=1))
    recorded = fx["D_eval_out_on_fake"]
    assert len(scales) == len(recorded)
    for i, (features, expected_features) in enumerate(zip(scales, recorded)):
        assert len(features) == len(expected_features)
        for j, (feature, expected) in enumerate(zip(features, expected_features)):
            assert_close_to_reference(feature, expected, f"{name} D scale {i} feature {j}")


def test_encoder_mu_logvar():
    fx = official_fixture("ade20k_vae_more")
    networks = _loaded("ade20k_vae_more").networks.eval()
    # The official encoder is 256 wide although z_dim is 32: loaded as it is.
    assert networks.encoder.fc_mu.out_features == 256
    assert networks.generator.z_dim == 32
    with torch.no_grad():
        mu, logvar = networks.encoder(fx["image"])
    assert_close_to_reference(mu, fx["E_eval_out"][0], "E mu")
    assert_close_to_reference(logvar, fx["E_eval_out"][1], "E logvar")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_png_inputs_through_the_user_path(name):
    """The label/instance PNGs in the checkpoint folder, through Synthesizer as a user calls it
    (fast SPADE path, spectral norm folded, channels-last weights), in float32: within float32
    rounding of the official network's exact output (see ``exact_official_output`` for why not
    of the recorded float32 one)."""
    fx = official_fixture(name)
    folder = OFFICIAL / f"{name}_checkpoint"
    synthesizer = Synthesizer.from_checkpoint(folder, device="cpu")
    outputs = [synthesize_fixture_pngs(synthesizer, fx, folder, b) for b in range(fx["label"].shape[0])]
    networks = _loaded(name).networks
    generator = networks.generator.eval().double()
    z = _z(fx, networks)
    scale = rounding_scale(generator, _semantics(fx, networks).double(), None if z is None else z.double())
    check_error(f"{name} from PNG inputs", max_abs_diff(torch.cat(outputs), exact_official_output(name)),
                float32_rounding_bound(scale))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_user_path_in_float64_is_the_official_function(name):
    """The same path with the networks in float64 before folding: the official function to
    rounding level, so the float32 differences above are rounding, not a different computation."""
    check_error(f"{name} user path (float64)", float64_user_path_error(name, "cpu"), FLOAT64_REL)
