"""OASIS: parity with tensors recorded from the official implementation (the fixtures' README in
``official_oasis``), and the properties the paper claims of its 3-D noise.

As for SPADE, the fixtures' random weights are not scaled by fan-in, so the networks' float32
rounding is large: outputs are computed in float64 and compared with the recording under a bound
that scales with the magnitudes the float32 computation rounded (``float32_rounding_bound``).
The losses, LabelMix and the targets are computed from recorded tensors by the same arithmetic
as the official code, so they are compared exactly or to a few float32 roundings."""

from __future__ import annotations

import bz2
import copy
import shutil
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from spadegan.nn.oasis import OASISDiscriminator, OASISGenerator, official_oasis_keys
from spadegan.oasis_losses import (class_balancing_weights, labelmix, labelmix_loss, labelmix_mask,
                                   segmentation_loss, segmentation_targets)
from spadegan.official_oasis import load_official_oasis

from conftest import (FLOAT64_REL, SHARED, U_FLOAT32, check_error, float32_rounding_bound, max_abs_diff,
                      rounding_scale)

pytestmark = pytest.mark.numeric

OASIS = SHARED / "fixtures" / "official_oasis"
CONFIGS = ["ade20k_like", "cityscapes_like"]


@lru_cache(maxsize=None)
def _fixture(name: str) -> dict:
    if not OASIS.is_dir():
        pytest.skip(f"official OASIS fixtures not found at {OASIS}")
    return torch.load(OASIS / f"{name}.pt", weights_only=True)


@lru_cache(maxsize=None)
def _losses() -> dict:
    return torch.load(OASIS / "losses.pt", weights_only=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The official checkpoint folders as the official code writes them (the fixtures store
    each .pth bz2-compressed)."""
    if not OASIS.is_dir():
        pytest.skip(f"official OASIS fixtures not found at {OASIS}")
    out = {}
    for name in CONFIGS:
        source = OASIS / "checkpoints" / name
        folder = tmp_path_factory.mktemp(name)
        shutil.copy(source / "opt.txt", folder / "opt.txt")
        (folder / "models").mkdir()
        for packed in (source / "models").glob("*.pth.bz2"):
            (folder / "models" / packed.name[:-len(".bz2")]).write_bytes(bz2.decompress(packed.read_bytes()))
        out[name] = folder
    return out


def _load(folders, name: str):
    options = _fixture(name)["options"]
    return load_official_oasis(folders[name], crop_size=options["crop_size"], aspect_ratio=options["aspect_ratio"])


def _semantics(name: str, dtype=torch.float64) -> torch.Tensor:
    return _fixture(name)["semantics"].to(dtype)


def _noise(name: str, key: str, dtype=torch.float64):
    noise = _fixture(name)[key]
    return None if noise is None else noise.to(dtype)


@pytest.mark.parametrize("name", CONFIGS)
def test_checkpoint_loads_with_every_key(folders, name):
    """Every official key has a place, and ours map back to the official names."""
    loaded = _load(folders, name)
    assert loaded.networks.discriminator is not None and loaded.ema_generator is None  # recorded with --no_EMA
    official = torch.load(folders[name] / "models" / "latest_G.pth", weights_only=True)
    assert set(official_oasis_keys(loaded.networks.generator.state_dict(), to_official=True)) == set(official)
    assert loaded.networks.generator.z_dim == (None if _fixture(name)["options"]["no_3dnoise"] else 64)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_generator_matches_the_recording(folders, name, mode):
    """The generator in float64 is the function the official code computed in float32 (eval:
    running statistics; train: batch statistics and one spectral-norm power iteration)."""
    fx = _fixture(name)
    generator = _load(folders, name).networks.generator.double().train(mode == "train")
    inputs = (_semantics(name), _noise(name, f"noise_G_{mode}"))
    scale = rounding_scale(copy.deepcopy(generator), *inputs)  # a forward of its own: a copy
    with torch.no_grad():
        out = generator(*inputs)
    check_error(f"{name} G {mode} (float64) vs recording", max_abs_diff(out, fx[f"G_{mode}_out"]),
                float32_rounding_bound(scale))


@pytest.mark.parametrize("name", CONFIGS)
def test_generator_buffers_after_a_train_forward(folders, name):
    """Running statistics and spectral-norm vectors after one train-mode forward, in float32:
    averages and normalised vectors, O(1) quantities rounded a handful of times."""
    fx = _fixture(name)
    generator = _load(folders, name).networks.generator.train()
    loaded = official_oasis_keys(generator.state_dict(), to_official=True)
    loaded = {key: value.clone() for key, value in loaded.items()}
    with torch.no_grad():
        generator(_semantics(name, torch.float32), _noise(name, "noise_G_train", torch.float32))
    state = official_oasis_keys(generator.state_dict(), to_official=True)
    recorded = fx["G_buffers_after_train_forward"]
    assert recorded
    for key, expected in recorded.items():
        if key.endswith("num_batches_tracked"):
            # The official synchronized batch norm calls batch_norm itself and never counts;
            # PyTorch's counts each train forward. With a fixed momentum (0.1) the count is not
            # read by any computation.
            assert int(expected) == int(loaded[key]) and int(state[key]) == int(loaded[key]) + 1, key
            continue
        scale = max(1.0, float(expected.abs().max()))
        check_error(f"{name} {key}", max_abs_diff(state[key], expected) / scale, 1e-4)


def test_generator_draws_the_official_noise(folders):
    """With no z given, the generator draws one z per picture as the official forward does after
    ``torch.manual_seed``: float32 ``torch.randn(N, z_dim)`` on the global generator, before any
    other draw. (PyTorch's normal sampler rounds differently without AVX2, so the recording is
    matched where the CPU draws as the recording's did.)"""
    fx = _fixture("ade20k_like")
    generator = _load(folders, "ade20k_like").networks.generator.double().eval()
    semantics = _semantics("ade20k_like")
    seed = fx["seeds"]["G_eval"]
    torch.manual_seed(seed)
    official_draw = torch.randn(semantics.shape[0], 64)
    torch.manual_seed(seed)
    assert torch.equal(generator.noise(semantics), official_draw.double())
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        assert torch.equal(official_draw, fx["noise_G_eval"])
    torch.manual_seed(seed)
    with torch.no_grad():
        assert torch.equal(generator(semantics), generator(semantics, official_draw.double()))


def test_discriminator_eval_matches_the_recording(folders):
    """cityscapes_like: D in eval mode on the real picture and on the generator's picture."""
    fx = _fixture("cityscapes_like")
    discriminator = _load(folders, "cityscapes_like").networks.discriminator.double().eval()
    for key, image in (("D_eval_out_real", fx["image"]), ("D_eval_out_fake", fx["G_eval_out"])):
        image = image.double()
        scale = rounding_scale(discriminator, image)
        with torch.no_grad():
            out = discriminator(image)
        check_error(f"D eval {key}", max_abs_diff(out, fx[key]), float32_rounding_bound(scale))


@pytest.mark.parametrize("name", CONFIGS)
def test_discriminator_train_forwards_and_spectral_vectors(folders, name):
    """The three forwards of the discriminator's step in train mode (fake, real, mixed), each
    with its spectral-norm power iteration, in order: the logits (float64, against the
    recording) and the vectors left after them (float32)."""
    fx = _fixture(name)
    mixed = fx["labelmix_mixed_image"]
    inputs = {"fake": fx["lossD_fake"], "real": fx["image"], "mixed": mixed}
    for dtype in (torch.float64, torch.float32):
        discriminator = _load(folders, name).networks.discriminator.to(dtype).train()
        for kind, image in inputs.items():
            image = image.to(dtype)
            if dtype == torch.float64:
                scale = rounding_scale(copy.deepcopy(discriminator), image)
            with torch.no_grad():
                out = discriminator(image)
            key = f"D_train_out_{kind}" + ("_b0" if name == "ade20k_like" else "")
            if dtype == torch.float64 and key in fx:
                expected = fx[key]
                check_error(f"{name} {key} (float64)", max_abs_diff(out[:expected.shape[0]], expected),
                            float32_rounding_bound(scale))
        if dtype == torch.float32:
            state = discriminator.state_dict()
            for key, expected in fx["D_buffers_after_losses_D"].items():
                check_error(f"{name} D {key}", max_abs_diff(state[key], expected), 1e-4)


@pytest.mark.parametrize("name", CONFIGS)
def test_labelmix_mask_and_its_in_place_relabelling(name):
    """The official draws, one per class for the whole batch in ascending order, give the
    recorded mask; class 0 drew 1 and so took class 1's draw (0): the in-place relabelling."""
    fx = _fixture(name)
    semantics = _semantics(name, torch.float32)

    def seed_as_the_step() -> None:
        torch.manual_seed(fx["seeds"]["losses_D"])
        if fx["lossD_noise"] is not None:
            torch.randn(*fx["lossD_noise"].shape)  # the generator's draw comes first in the step

    seed_as_the_step()
    assert torch.cat([torch.randint(0, 2, (1,)) for _ in fx["labelmix_classes"]]).tolist() == \
        fx["labelmix_draws"].tolist()
    seed_as_the_step()
    mask = labelmix_mask(semantics)
    assert torch.equal(mask, fx["labelmix_mask"])
    assert fx["labelmix_draws"][:2].tolist() == [1, 0]
    classes = semantics.argmax(1, keepdim=True)
    assert bool((mask[classes == 0] == 0).all())
    mixed = labelmix(mask, fx["image"], fx["lossD_fake"])
    assert torch.equal(mixed, fx["labelmix_mixed_image"])


@pytest.mark.parametrize("name", CONFIGS)
def test_class_balancing_and_targets(name):
    """Weights and N+1 targets as the official functions return them: the same operations on the
    same integers and counts, so the same bits."""
    fx, recorded = _fixture(name), _losses()[name]
    semantics = _semantics(name, torch.float32)
    assert torch.equal(class_balancing_weights(semantics, has_dontcare=True), recorded["class_balancing_weight_map"])
    assert torch.equal(segmentation_targets(semantics, real=True), recorded["n1_target_real"])
    assert torch.equal(segmentation_targets(semantics, real=False), recorded["n1_target_fake"])
    # Eq. 2's weights: N·H·W / (K · pixels of c); don't-care (class 0) weighs nothing.
    counts = semantics.sum((0, 2, 3))
    present = int((counts[1:] > 0).sum())
    ids = semantics.argmax(1)
    pixel = (ids == ids.max()).nonzero()[0]
    expected = ids.numel() / (present * float(counts[ids.max()]))
    weights = recorded["class_balancing_weight_map"][:, 0]
    assert abs(float(weights[tuple(pixel)]) - expected) <= 4 * U_FLOAT32 * expected
    assert bool((weights[ids == 0] == 0).all())


def test_losses_from_the_recorded_logits():
    """The discriminator's losses from the recorded logits (cityscapes_like: ade20k_like keeps
    only sample 0 of them). Each is a float32 mean of M non-negative terms, which the official
    code rounded within M·u of the exact mean (Higham's bound for a sum); computed here in
    float64, the difference is that rounding."""
    name = "cityscapes_like"
    fx, recorded = _fixture(name), _losses()[name]
    semantics = _semantics(name)
    fake, real, mixed = (fx[f"D_train_out_{k}"].double() for k in ("fake", "real", "mixed"))
    pixels = semantics.shape[0] * semantics.shape[2] * semantics.shape[3]
    mask = fx["labelmix_mask"].double()
    computed = {
        "loss_D_fake": (segmentation_loss(fake, semantics, real=False), pixels),
        "loss_D_real": (segmentation_loss(real, semantics, real=True), pixels),
        "loss_D_lm": (recorded["lambda_labelmix"] * labelmix_loss(mask, mixed, fake, real), real.numel()),
    }
    for key, (value, terms) in computed.items():
        check_error(key, abs(float(value) - float(recorded[key])), terms * U_FLOAT32 * abs(float(recorded[key])))
    total = sum(float(value) for value, _ in computed.values())
    check_error("loss_D", abs(total - float(recorded["loss_D"])),
                sum(terms * U_FLOAT32 * abs(float(recorded[key])) for key, (_, terms) in computed.items())
                + 2 * U_FLOAT32 * abs(float(recorded["loss_D"])))


def test_noise_map_per_pixel():
    """3-D noise (paper Sec. 3.3): a z per pixel. One z per picture is that map with the same
    vector everywhere (the official draw), and a map that differs inside one region changes the
    picture there. (How local the change stays is learned: an untrained generator's
    low-resolution blocks see the whole picture.)"""
    torch.manual_seed(0)
    classes, size, z_dim = 5, 64, 8
    generator = OASISGenerator(classes, crop_size=size, ngf=2, z_dim=z_dim).eval()
    ids = torch.zeros(1, size, size, dtype=torch.long)
    ids[:, :, size // 2:] = 1
    semantics = torch.nn.functional.one_hot(ids, classes).permute(0, 3, 1, 2).float()
    z = torch.randn(1, z_dim)
    z_map = z[:, :, None, None].expand(-1, -1, size, size).clone()
    region = (ids[:, None] == 1).expand_as(z_map)
    rerolled = z_map.clone()
    rerolled[region] = torch.randn(z_dim, 1).expand(-1, size * size // 2).reshape(-1)  # one new z for the region
    with torch.no_grad():
        picture = generator(semantics, z)
        assert torch.equal(generator(semantics, z_map), picture)
        changed = (generator(semantics, rerolled) - picture).abs().amax(1)[0]
    assert float(changed[:, size // 2:].mean()) > 1e-3


def test_fast_path_computes_the_reference_function_without_noise():
    """Without 3-D noise the label networks read a one-hot map: the fast SPADE path applies and
    computes the reference function (float64)."""
    torch.manual_seed(0)
    classes, size = 6, 64
    generator = OASISGenerator(classes, crop_size=size, ngf=2, z_dim=None).double()
    ids = torch.randint(0, classes, (2, size // 8, size // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    semantics = torch.nn.functional.one_hot(ids, classes).permute(0, 3, 1, 2).double()
    with torch.no_grad():
        generator.train()(semantics)
        generator.eval()
        generator.fast_spade = False
        reference = generator(semantics)
        generator.fast_spade = True
        fast = generator(semantics)
    check_error("OASIS fast vs reference (float64)", max_abs_diff(fast, reference) / float(reference.abs().max()),
                FLOAT64_REL)


def test_discriminator_shapes_and_widths():
    """N + 1 logits per pixel at the picture's size; ``ndf`` 64 is the official network."""
    discriminator = OASISDiscriminator(semantic_channels=4, ndf=4)
    logits = discriminator(torch.randn(2, 3, 64, 128))
    assert logits.shape == (2, 5, 64, 128)
    official = OASISDiscriminator(semantic_channels=35)
    assert sum(p.numel() for p in official.parameters()) > 22_000_000


def test_import_and_synthesize(folders, tmp_path):
    """``spadegan import`` turns an official OASIS folder into ours, and ``spadegan synthesize``
    paints with it: the label map's ids are the official one-hot channels, and the picture has
    the size the generator was trained at."""
    import numpy as np
    from PIL import Image

    from spadegan.cli import main
    from spadegan.inference import Synthesizer

    fx = _fixture("cityscapes_like")
    ours = tmp_path / "imported"
    assert main(["import", str(folders["cityscapes_like"]), "--out", str(ours), "--crop_size", "128",
                 "--aspect_ratio", "2"]) == 0
    label = tmp_path / "label.png"
    Image.fromarray(fx["label"][0, 0].numpy().astype(np.uint8)).save(label)
    synthesizer = Synthesizer.from_checkpoint(ours, device="cpu")
    assert torch.equal(synthesizer.semantics(label).bool(), fx["semantics"])
    assert main(["synthesize", str(label), "--checkpoint", str(ours), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "label.png").size == (128, 64)
