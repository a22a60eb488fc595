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

import numpy as np
import pytest
import torch

from spadegan.nn.oasis import OASISDiscriminator, OASISGenerator, official_oasis_keys
from spadegan.oasis_losses import (class_balancing_weights, labelmix, labelmix_loss, labelmix_mask,
                                   segmentation_loss, segmentation_targets)
from spadegan.official_oasis import load_official_oasis

from conftest import (FLOAT64_REL, SHARED, U_FLOAT32, check_error, float32_rounding_bound, max_abs_diff,
                      rounding_scale)

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


@pytest.mark.numeric
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


@pytest.mark.numeric
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


@pytest.mark.numeric
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


@pytest.mark.numeric
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


@pytest.mark.numeric
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


@pytest.mark.numeric
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


@pytest.mark.numeric
@pytest.mark.parametrize("name", CONFIGS)
def test_class_balancing_and_targets(name):
    """Weights and N+1 targets as the official functions return them: the same operations on the
    same integers and counts, so the same bits."""
    fx, recorded = _fixture(name), _losses()[name]
    semantics = _semantics(name, torch.float32)
    assert torch.equal(class_balancing_weights(semantics, dontcare_channel=0), recorded["class_balancing_weight_map"])
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


@pytest.mark.numeric
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


@pytest.mark.numeric
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


# ---------------------------------------------------------------------------------------------
# Training: the same loop, data, checkpoints, EMA and resume as SPADE


def _tiny_oasis_run(run_dir: Path, **train):
    from dataclasses import replace

    from spadegan.config import (DataConfig, DiscriminatorConfig, GeneratorConfig, LossConfig, ModelConfig, RunConfig,
                                 SemanticsConfig, TrainConfig)
    from conftest import COCO_SAMPLES

    base = TrainConfig(run_dir=str(run_dir), niter=4, deterministic=True, print_freq=1, display_freq=4,
                       save_latest_freq=1000, tensorboard=False, no_TTUR=True, beta1=0.0, beta2=0.999,
                       lr_G=1e-4, lr_D=4e-4)
    return RunConfig(
        model=ModelConfig(SemanticsConfig(182, True, False),
                          GeneratorConfig(netG="oasis", ngf=2, crop_size=64, z_dim=8),
                          DiscriminatorConfig(netD="oasis", ndf=4)),
        data=DataConfig(dataset_mode="coco", dataroot=str(COCO_SAMPLES), preprocess_mode="fixed", load_size=64,
                        crop_size=64, label_nc=182, contain_dontcare_label=True, use_instance=False),
        loss=LossConfig(no_vgg_loss=True),
        train=replace(base, **train))


def test_official_oasis_options_resolve():
    """``--netG oasis`` takes the official OASIS defaults: the segmenting D, 64-channel 3-D noise,
    no VGG loss, no instance maps, Adam (0, 0.999) at 1e-4 for G and 4e-4 for D (4e-4 and λ_LM 5
    for Cityscapes)."""
    from spadegan.cli import build_parser
    from spadegan.options import run_config_from_args

    run = run_config_from_args(build_parser().parse_args(["train", "--netG", "oasis", "--dataset_mode", "ade20k"]))
    g, d = run.model.generator, run.model.discriminator
    assert (g.netG, g.z_dim, d.netD, run.model.encoder) == ("oasis", 64, "oasis", None)
    assert run.loss.no_vgg_loss and run.loss.lambda_labelmix == 10.0 and not run.model.semantics.use_instance
    assert (run.train.beta1, run.train.beta2, run.train.lr_G, run.train.lr_D) == (0.0, 0.999, 1e-4, 4e-4)
    city = run_config_from_args(build_parser().parse_args(["train", "--netG", "oasis", "--dataset_mode", "cityscapes",
                                                           "--no_3dnoise"]))
    assert city.model.generator.z_dim is None and city.loss.lambda_labelmix == 5.0 and city.train.lr_G == 4e-4
    with pytest.raises(SystemExit, match="options of --netG oasis"):
        run_config_from_args(build_parser().parse_args(["train", "--lambda_labelmix", "3"]))
    with pytest.raises(SystemExit, match="image encoder"):
        run_config_from_args(build_parser().parse_args(["train", "--netG", "oasis", "--use_vae"]))


def test_oasis_training_resumes_exactly_and_paints_by_seed(tmp_path):
    """N steps, resume, M more == N + M steps in one go, EMA included; the losses logged are
    OASIS's; the trained model paints a different picture for each seed (its noise)."""
    import json

    from spadegan.cli import main
    from spadegan.training.loop import train
    from conftest import checkpoint_weights, landscape

    one_go = train(_tiny_oasis_run(tmp_path / "a", max_steps=5, ema=True), progress=False)
    train(_tiny_oasis_run(tmp_path / "b", max_steps=3, ema=True), progress=False)
    resumed = train(_tiny_oasis_run(tmp_path / "b", max_steps=5, ema=True), resume=True, progress=False)
    a, b = checkpoint_weights(one_go.checkpoint), checkpoint_weights(resumed.checkpoint)
    assert a.keys() == b.keys() and any(k.startswith("generator_ema.") for k in a)
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    records = [json.loads(line) for line in (tmp_path / "a" / "logs" / "losses.jsonl").read_text().splitlines()]
    assert set(records[-1]["losses"]) == {"GAN", "D_Fake", "D_real", "D_LabelMix"}

    from PIL import Image
    label = tmp_path / "map.png"
    Image.fromarray(landscape()).save(label)
    out = tmp_path / "out"
    assert main(["synthesize", str(label), "--checkpoint", str(one_go.checkpoint), "--out", str(out),
                 "--seed", "3", "--samples", "2", "--gpu_ids", "-1"]) == 0
    first, second = (np.asarray(Image.open(out / f"map_s{k}.png"), dtype=float) for k in (0, 1))
    assert np.abs(first - second).mean() > 0


def test_reroll_one_region(tmp_path):
    """``--reroll MASK``: the picture of the seed with the mask's region painted with new noise.
    Outside the region the pixels are the old picture's exactly: the generator's receptive field
    covers the whole picture (its start is 1/32 of it and each 3×3 conv there reaches 32 pixels
    further), so locality is not left to it. Inside, the region changes. The same for a SPADE
    model with the image encoder (a new style code, taken in the region only); a model with
    neither has nothing to re-roll."""
    from PIL import Image

    from spadegan.cli import main
    from spadegan.inference import Synthesizer
    from spadegan.training.loop import train
    from conftest import landscape, save_tiny_model

    checkpoint = train(_tiny_oasis_run(tmp_path / "run", max_steps=1), progress=False).checkpoint
    ids = landscape()
    label, mask_path = tmp_path / "map.png", tmp_path / "mask.png"
    Image.fromarray(ids).save(label)
    sea = ids == int(np.median(ids[ids.shape[0] // 2 + 2]))
    Image.fromarray((sea * 255).astype(np.uint8)).save(mask_path)
    out, rerolled = tmp_path / "out", tmp_path / "rerolled"
    common = ["--checkpoint", str(checkpoint), "--seed", "5", "--gpu_ids", "-1"]
    assert main(["synthesize", str(label), "--out", str(out), *common]) == 0
    assert main(["synthesize", str(label), "--out", str(rerolled), "--reroll", str(mask_path),
                 "--reroll_seed", "9", *common]) == 0
    before, after = (np.asarray(Image.open(folder / "map.png"), dtype=np.int16) for folder in (out, rerolled))
    change = np.abs(before - after).max(axis=-1)
    assert change[~sea].max() == 0
    assert change[sea].mean() > 0

    spade = Synthesizer.from_checkpoint(save_tiny_model(tmp_path / "spade"), device="cpu")
    semantics = spade.semantics(label)
    z = torch.randn(1, spade.config.generator.z_dim)
    with torch.no_grad():
        plain = spade.synthesize(label, z=z)
        region = spade.synthesize(label, z=z, reroll_mask=torch.from_numpy(sea), reroll_seed=9)
    mask = torch.from_numpy(sea)[None, None].expand_as(plain)
    assert torch.equal(region[~mask], plain[~mask]) and not torch.equal(region[mask], plain[mask])
    assert semantics.shape[-2:] == sea.shape
    no_code = Synthesizer.from_checkpoint(save_tiny_model(tmp_path / "plain", encoder=False), device="cpu")
    with pytest.raises(ValueError, match="nothing to re-roll"):
        no_code.synthesize(label, reroll_mask=torch.from_numpy(sea), reroll_seed=1)


def test_oasis_trains_with_ddp(tmp_path):
    """torchrun with 2 CPU processes (gloo): the three discriminator forwards of a step, the noise
    and the LabelMix draws of each process (its own), gradients averaged by DDP; the processes end
    with bit-identical weights (the loop checks it and says so). Instance norm in G: without
    SyncBatchNorm (CUDA only) BatchNorm's running statistics would be each process's own."""
    import os
    import subprocess
    import sys

    from conftest import COCO_SAMPLES

    flags = ["--netG", "oasis", "--norm_G", "spectralspadeinstance3x3", "--dataset_mode", "coco", "--dataroot", str(COCO_SAMPLES), "--preprocess_mode",
             "fixed", "--load_size", "64", "--crop_size", "64", "--ngf", "2", "--ndf", "4", "--z_dim", "8",
             "--niter", "4", "--no_tensorboard", "--no_progress", "--gpu_ids", "-1", "--batchSize", "2",
             "--checkpoints_dir", str(tmp_path), "--name", "ddp", "--max_steps", "2", "--deterministic"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "spadegan.cli", "train", *flags], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 processes ended with identical weights" in ddp.stderr


@pytest.mark.numeric
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_code_path_computes_the_reference_function(train):
    """With one code per picture (the official draw), the label networks' first conv as a lookup
    plus the code's constant part is the reference function: outputs and every gradient in
    float64, on maps with single pixels, borders and a batch of 2."""
    torch.manual_seed(0)
    classes, size, z_dim = 6, 64, 5
    generator = OASISGenerator(classes, crop_size=size, ngf=2, z_dim=z_dim).double()
    ids = torch.randint(0, classes, (2, size // 8, size // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    ids[0, 3, 5] = (ids[0, 3, 5] + 1) % classes          # a single pixel of another class
    semantics = torch.nn.functional.one_hot(ids, classes).permute(0, 3, 1, 2).double()
    z = torch.randn(2, z_dim, dtype=torch.float64)
    with torch.no_grad():
        generator.train()(semantics, z)  # batch-norm statistics
    results = {}
    for fast in (False, True):
        g = copy.deepcopy(generator).train(train)
        g.fast_spade = fast
        code = z.clone().requires_grad_()
        out = g(semantics, code)
        out.square().mean().backward()
        grads = {name: p.grad for name, p in g.named_parameters()}
        results[fast] = (out.detach(), grads, code.grad)
    (ref, ref_grads, ref_code), (got, got_grads, got_code) = results[False], results[True]
    check_error("OASIS code path vs reference (float64)", max_abs_diff(got, ref) / float(ref.abs().max()), FLOAT64_REL)
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    check_error("gradients", max(max_abs_diff(got_grads[k], v) for k, v in ref_grads.items()) / scale, FLOAT64_REL)
    check_error("code gradient", max_abs_diff(got_code, ref_code) / float(ref_code.abs().max()), FLOAT64_REL)
