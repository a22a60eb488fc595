"""Training on the real COCO-Stuff samples with tiny networks: exact resume, SIGKILL while
checkpointing, NaN stops, export/import, learning-rate schedule, the official command line."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spadegan.checkpoint import latest_checkpoint, load_checkpoint, load_official
from spadegan.cli import build_parser, main
from spadegan.data import build_dataset
from spadegan.config import (DiscriminatorConfig, GeneratorConfig, LossConfig, ModelConfig, SemanticsConfig, TrainConfig)
from spadegan.options import run_config_from_args
from spadegan.semantics import build_semantics, one_hot
from spadegan.training import loop, steps
from spadegan.training.loop import TrainingDiverged, learning_rates, train

from conftest import COCO_SAMPLES, check_error, checkpoint_weights, tiny_run

pytestmark = pytest.mark.skipif(not COCO_SAMPLES.is_dir(), reason=f"COCO-Stuff samples not found at {COCO_SAMPLES}")

# The tiny configuration on the command line (official names, plus ours).
TINY_FLAGS = ["--dataset_mode", "coco", "--dataroot", str(COCO_SAMPLES), "--preprocess_mode", "fixed",
              "--load_size", "64", "--crop_size", "64", "--ngf", "4", "--spade_hidden", "16", "--ndf", "8",
              "--n_layers_D", "3", "--no_vgg_loss", "--niter", "4", "--no_tensorboard", "--no_progress",
              "--gpu_ids", "-1"]


def test_resume_is_exact(tmp_path):
    """N steps, resume, M more == N + M steps in one go (deterministic mode, CPU), EMA included."""
    one_go = train(tiny_run(tmp_path / "a", max_steps=9, ema=True), progress=False)
    train(tiny_run(tmp_path / "b", max_steps=5, ema=True), progress=False)
    resumed = train(tiny_run(tmp_path / "b", max_steps=9, ema=True), resume=True, progress=False)
    assert one_go.step == resumed.step == 9
    a, b = checkpoint_weights(one_go.checkpoint), checkpoint_weights(resumed.checkpoint)
    assert a.keys() == b.keys() and any(k.startswith("generator_ema.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # and the run wrote its log, its grids and its page
    records = [json.loads(line) for line in (tmp_path / "a" / "logs" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 10))
    assert all(r["seconds_per_iteration"] > 0 and r["cpu_seconds_per_iteration"] > 0 for r in records)
    assert {"GAN", "GAN_Feat", "D_Fake", "D_real"} <= set(records[-1]["losses"])
    assert len(list((tmp_path / "a" / "web" / "images").glob("step_*.png"))) == 2
    assert "step_00000008.png" in (tmp_path / "a" / "web" / "index.html").read_text()


def test_gradients_stay_in_the_same_buffers_from_step_to_step(tmp_path, monkeypatch):
    """Both optimizers see each parameter's gradient in the buffer it had at the first step: the
    backward pass writes into it rather than making a new set (spadegan.memory's heap stays whole)."""
    seen: dict[int, list[dict[int, int]]] = {}
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.setdefault(id(self), []).append({id(p): p.grad.data_ptr() for group in self.param_groups
                                              for p in group["params"] if p.grad is not None})
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train(tiny_run(tmp_path / "run", max_steps=3), progress=False)
    assert len(seen) == 2  # G and D
    for calls in seen.values():
        assert len(calls) == 3 and calls[0]
        assert calls[1] == calls[0] and calls[2] == calls[0]


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        train(tiny_run(tmp_path / "none", max_steps=1), resume=True, progress=False)


def test_sigkill_while_writing_checkpoints_then_resume(tmp_path):
    """Kill the trainer at random moments while it checkpoints every step; resume from disk."""
    checkpoints = tmp_path / "runs" / "k" / "checkpoints"
    flags = ["train", *TINY_FLAGS, "--name", "k", "--checkpoints_dir", str(tmp_path / "runs"),
             "--save_latest_freq", "1", "--max_steps", "40", "--keep_checkpoints", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(7)

    def newest():
        return latest_checkpoint(checkpoints) if checkpoints.is_dir() else None

    kills = 0
    for _ in range(3):
        resume = ["--continue_train"] if newest() is not None else []
        process = subprocess.Popen([sys.executable, "-m", "spadegan.cli", *flags, *resume], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = newest()
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline and newest() in (None, first):
            time.sleep(0.02)  # wait until this run is writing checkpoints...
        time.sleep(rng.uniform(0.0, 1.0))  # ...then kill it at a random moment
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        assert newest() is not None
        load_checkpoint(newest())  # whatever is on disk after the kill loads
    assert kills >= 2
    assert main(flags + ["--continue_train"]) == 0
    final = load_checkpoint(latest_checkpoint(checkpoints))
    assert final.meta["step"] == 40 and final.training_state["step"] == 40
    leftovers = [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]
    assert all(p.endswith(".tmp") or p.endswith(".old") for p in leftovers)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real_losses = steps.generator_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses, fake = real_losses(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:
            losses["GAN"] = losses["GAN"] * float("nan")
        return losses, fake

    monkeypatch.setattr(steps, "generator_losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 5: a loss is not finite \(GAN = nan.*step_00000004"):
        train(tiny_run(tmp_path / "nan", max_steps=10, save_latest_freq=2), progress=False)
    kept = load_checkpoint(latest_checkpoint(tmp_path / "nan" / "checkpoints"))
    assert kept.meta["step"] == 4
    assert all(torch.isfinite(v.float()).all() for v in checkpoint_weights(kept.folder).values())


def test_export_to_official_and_import_back(tmp_path):
    result = train(tiny_run(tmp_path / "run", max_steps=2), progress=False)
    assert main(["export", str(tmp_path / "run"), "--official", str(tmp_path / "official")]) == 0
    official = load_official(tmp_path / "official")
    ours = load_checkpoint(result.checkpoint)
    for part in ("generator", "discriminator"):
        a, b = getattr(ours.networks, part).state_dict(), getattr(official.networks, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["import", str(tmp_path / "official"), "--out", str(tmp_path / "imported")]) == 0
    again = load_checkpoint(tmp_path / "imported")
    assert again.networks.config == ours.networks.config and again.training_state is None


def test_inference_export_in_float16_is_the_rounded_model(tmp_path):
    """--inference --half keeps the EMA generator and the encoder, rounded once to float16."""
    from spadegan.inference import Synthesizer

    result = train(tiny_run(tmp_path / "run", max_steps=2, ema=True), progress=False)
    assert main(["export", str(tmp_path / "run"), "--inference", str(tmp_path / "inf"), "--half"]) == 0
    files = sorted(p.name for p in (tmp_path / "inf").iterdir())
    assert files == ["config.json", "generator.safetensors"]
    stored = load_file(str(tmp_path / "inf" / "generator.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    ema = load_checkpoint(result.checkpoint).ema_generator.state_dict()
    assert stored.keys() == ema.keys()
    assert all(torch.equal(stored[k], ema[k].half()) for k in stored if stored[k].is_floating_point())
    # it loads as a float32 model whose weights are the rounded ones, and synthesizes
    synthesizer = Synthesizer.from_checkpoint(tmp_path / "inf", device="cpu")
    label = next((COCO_SAMPLES / "val_label").glob("*.png"))
    assert synthesizer.synthesize(label, resize=True).dtype == torch.float32
    # --no_ema: the trained generator instead (after two steps it differs from its average)
    assert main(["export", str(tmp_path / "run"), "--inference", str(tmp_path / "raw"), "--no_ema"]) == 0
    raw = load_file(str(tmp_path / "raw" / "generator.safetensors"))
    trained = load_checkpoint(result.checkpoint).networks.generator.state_dict()
    assert all(torch.equal(raw[k], trained[k]) for k in raw)
    assert any(not torch.equal(raw[k].half(), stored[k]) for k in raw if raw[k].is_floating_point())


def test_learning_rate_schedule_follows_the_official_code():
    config = TrainConfig(lr=0.0002, niter=2, niter_decay=4)
    assert learning_rates(config, 1) == learning_rates(config, 3) == (0.0001, 0.0004)  # TTUR
    lr_g, lr_d = learning_rates(config, 4)
    assert lr_g == pytest.approx(0.00015 / 2) and lr_d == pytest.approx(0.00015 * 2)
    assert learning_rates(config, 6)[0] == pytest.approx(0.00005 / 2)
    assert learning_rates(replace(config, no_TTUR=True), 1) == (0.0002, 0.0002)


def test_official_command_line_resolves_official_defaults(capsys):
    args = build_parser().parse_args(["train", "--name", "coco_run", "--dataset_mode", "coco", "--dataroot", "x"])
    run = run_config_from_args(args)
    assert run.model.semantics == SemanticsConfig(182, True, True)
    assert run.model.generator.norm_G == "spectralspadesyncbatch3x3" and run.model.generator.crop_size == 256
    assert (run.data.preprocess_mode, run.data.load_size) == ("resize_and_crop", 286)
    assert (run.train.beta1, run.train.beta2, run.train.no_TTUR) == (0.0, 0.9, False)
    assert run.train.run_dir == str(Path("./checkpoints") / "coco_run")
    city = run_config_from_args(build_parser().parse_args(["train", "--dataset_mode", "cityscapes", "--no_TTUR"]))
    assert city.model.generator.num_upsampling_layers == "more" and city.model.generator.aspect_ratio == 2.0
    assert (city.train.beta1, city.train.beta2) == (0.5, 0.999)
    assert run.train.fast_spade
    assert not run_config_from_args(build_parser().parse_args(["train", "--reference_spade"])).train.fast_spade
    p2p = run_config_from_args(build_parser().parse_args(["train", "--netG", "pix2pixhd"]))
    assert p2p.model.generator.norm_G == "instance"
    assert main(["train", "--dataset_mode", "ade20k", "--use_vae", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["encoder"]["latent_dim"] == 256 and printed["model"]["semantics"]["label_nc"] == 150


def test_vgg_loss_without_weights_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("SPADE_VGG19_WEIGHTS", raising=False)
    with pytest.raises(SystemExit, match=r"--vgg_path.*--no_vgg_loss"):
        main(["train", *[f for f in TINY_FLAGS if f != "--no_vgg_loss"], "--name", "v",
              "--checkpoints_dir", str(tmp_path), "--max_steps", "1"])


def test_a_new_run_never_replaces_an_earlier_one(tmp_path):
    flags = [*TINY_FLAGS, "--name", "x", "--checkpoints_dir", str(tmp_path), "--max_steps", "1"]
    assert main(["train", *flags]) == 0
    checkpoint = latest_checkpoint(tmp_path / "x" / "checkpoints")
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    with pytest.raises(SystemExit) as error:
        main(["train", *flags])
    message = str(error.value)
    assert message == (f"spadegan train: {tmp_path / 'x'} already holds a run (checkpoint {checkpoint.name}); "
                       "pass --continue_train to continue it, or choose another --name")
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before
    assert main(["train", *flags[:-1], "2", "--continue_train"]) == 0  # what the message suggests works
    assert json.loads((latest_checkpoint(tmp_path / "x" / "checkpoints") / "config.json").read_text())["step"] == 2


def test_a_failed_data_check_leaves_no_run_folder(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    flags = [f if f != str(COCO_SAMPLES) else str(empty) for f in TINY_FLAGS]
    with pytest.raises(SystemExit, match="spadegan train: "):
        main(["train", *flags, "--name", "r", "--checkpoints_dir", str(tmp_path / "runs"), "--max_steps", "1"])
    assert not (tmp_path / "runs" / "r").exists()


def test_vgg_weights_missing_leave_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SPADE_VGG19_WEIGHTS", raising=False)
    with pytest.raises(SystemExit, match=r"--vgg_path"):
        main(["train", *[f for f in TINY_FLAGS if f != "--no_vgg_loss"], "--name", "v",
              "--checkpoints_dir", str(tmp_path), "--max_steps", "1"])
    assert not (tmp_path / "v").exists()


@pytest.mark.numeric
def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo), global batch 2, against one process with batch 2.

    The processes end with bit-identical weights (the loop checks it and says so), and the
    gradients each optimizer takes its first step with, averaged over the processes by DDP, are
    the single process's gradients of the same two samples. Gradients, not weights after a few
    steps: Adam moves a weight by about lr at its first step whatever the size of its gradient,
    so where a gradient is near zero (D's weights for a label that first appears in a sliver,
    conv biases before a normalization) two reduction orders step in opposite directions, and the
    networks after training differ by several percent of what training moved them between any
    two ways of splitting a batch. A fault (a process without its own sample, gradients not
    averaged) changes a gradient by one sample's part of it, O(1) relative; splitting the batch
    changes it by float32 rounding, amplified by the random network's conditioning, orders of
    magnitude below the bound. A tensor whose gradient norm is within a few float32 ulps of its
    optimizer's total (8 eps) vanishes in exact arithmetic and holds only rounding: it has no
    relative error to compare. Instance norm in G:
    without SyncBatchNorm (CUDA only), BatchNorm statistics would be per process.
    """
    recorder = Path(__file__).parent / "first_step_gradients.py"
    common = [*TINY_FLAGS, "--norm_G", "spectralspadeinstance3x3", "--batchSize", "2",
              "--save_latest_freq", "4", "--checkpoints_dir", str(tmp_path), "--deterministic"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(recorder), str(tmp_path / "ddp_gradients"), "train", *common, "--max_steps", "2",
                          "--name", "ddp"], env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 processes ended with identical weights" in ddp.stderr
    single = subprocess.run([sys.executable, str(recorder), str(tmp_path / "single_gradients"), "train", *common,
                             "--max_steps", "1", "--name", "single"], env=env, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    for name in ("optimizer0", "optimizer1"):  # G's, then D's (the loop's order)
        ranks = [torch.load(tmp_path / "ddp_gradients" / f"rank{r}_{name}.pt", weights_only=True) for r in (0, 1)]
        ours = torch.load(tmp_path / "single_gradients" / f"rank0_{name}.pt", weights_only=True)
        assert all(torch.equal(a, b) for a, b in zip(*ranks)), f"{name}: the processes stepped with different gradients"
        total = sum(float(g.pow(2).sum()) for g in ours) ** 0.5
        rounding_only = 8 * torch.finfo(torch.float32).eps * total
        compared = [(a, b) for a, b in zip(ranks[0], ours) if float(b.norm()) > rounding_only]
        assert len(compared) >= len(ours) // 2, (name, len(compared), len(ours))
        worst = max(float((a - b).norm() / b.norm()) for a, b in compared)
        print(f"{name}: worst relative gradient difference, DDP vs one process: {worst:.3g}")
        check_error(f"{name}: DDP gradients vs one process", worst, 1e-3)


def test_synthesized_images_get_closer_to_the_photos(tmp_path):
    """Two COCO-Stuff training pairs, a tiny SPADE, 150 steps: the images G makes from the two
    label maps get measurably closer (L1) to the real photos."""
    run = tiny_run(tmp_path / "trend", max_steps=150, save_latest_freq=25, keep_checkpoints=10, niter=1000,
                   display_freq=1000, print_freq=1000)
    run = replace(run, data=replace(run.data, max_dataset_size=2, no_flip=True))
    train(run, progress=False)
    dataset = build_dataset(run.data, check=False)
    items = [dataset[i] for i in range(2)]
    semantics = build_semantics(torch.stack([x["label"] for x in items]), 182, True,
                                torch.stack([x["instance"] for x in items]), True)
    real = torch.stack([x["image"] for x in items])

    def distance(step):
        generator = load_checkpoint(tmp_path / "trend" / "checkpoints" / f"step_{step:08d}").networks.generator
        with torch.no_grad():
            return float((generator.eval()(semantics) - real).abs().mean())

    early, late = distance(25), distance(150)
    print(f"L1 to the photos: step 25 {early:.3f}, step 150 {late:.3f}")
    assert late < 0.75 * early, (early, late)


@pytest.mark.parametrize("flags, expected_losses", [
    (["--netG", "pix2pixhd", "--resnet_n_downsample", "2", "--resnet_n_blocks", "1"], {"GAN", "GAN_Feat"}),
    (["--use_vae", "--z_dim", "8", "--ema"], {"GAN", "GAN_Feat", "KLD"}),
    (["--gan_mode", "ls", "--no_ganFeat_loss", "--D_steps_per_G", "2", "--no_TTUR"], {"GAN"}),
    (["--amp", "bf16", "--channels_last", "--norm_G", "spectralspadebatch3x3", "--batchSize", "2"], {"GAN", "GAN_Feat"}),
    (["--vgg", "--lambda_vgg", "5"], {"GAN", "GAN_Feat", "VGG"}),
    (["--norm_mode", "clade"], {"GAN", "GAN_Feat"}),
])
def test_training_variants_run_and_log(tmp_path, flags, expected_losses):
    """Each variant trains a few steps, logs its loss terms and leaves a loadable checkpoint."""
    if "--vgg" in flags:
        from spadegan.nn.vgg import VGG19Features

        torch.save(VGG19Features().state_dict(), tmp_path / "vgg19.pth")
        flags = ["--vgg_path", str(tmp_path / "vgg19.pth"), *[f for f in flags if f != "--vgg"]]
        base = [f for f in TINY_FLAGS if f != "--no_vgg_loss"]
    else:
        base = TINY_FLAGS
    assert main(["train", *base, *flags, "--name", "v", "--checkpoints_dir", str(tmp_path),
                 "--max_steps", "3", "--print_freq", "1"]) == 0
    records = [json.loads(line) for line in (tmp_path / "v" / "logs" / "losses.jsonl").read_text().splitlines()]
    seen = set().union(*(r["losses"] for r in records))
    assert seen == expected_losses | {"D_Fake", "D_real"}
    checkpoint = load_checkpoint(latest_checkpoint(tmp_path / "v" / "checkpoints"))
    assert checkpoint.meta["step"] == 3
    if "--use_vae" in flags:
        assert checkpoint.networks.encoder is not None and checkpoint.ema_generator is not None
        assert checkpoint.networks.encoder.fc_mu.out_features == 8  # z_dim wide, unlike the official encoder


def test_max_minutes_stops_with_a_checkpoint_that_resumes(tmp_path, capsys):
    """--max_minutes 0: the first step is already late, so the run stops after it and saves; the
    progress bar says when the time limit stops the run."""
    stopped = train(tiny_run(tmp_path / "r", max_steps=9, max_minutes=0.0), progress=True)
    assert stopped.step == 1 and stopped.checkpoint.name == "step_00000001"
    assert re.search(r"train \(stops by \d\d:\d\d\)", capsys.readouterr().err)
    resumed = train(tiny_run(tmp_path / "r", max_steps=3), resume=True, progress=False)
    assert resumed.step == 3


def test_init_from_fine_tunes_with_another_norm(tmp_path):
    """--init_from: the weights come over (instance norm → batch norm: the same parameters, fresh
    running statistics), the step count and optimizers start afresh; a different architecture is
    an error that names the tensor."""
    instance = tiny_run(tmp_path / "in", max_steps=2, ema=True)
    instance = replace(instance, model=replace(instance.model, generator=replace(
        instance.model.generator, norm_G="spectralspadeinstance3x3")))
    source = train(instance, progress=False).checkpoint
    run = tiny_run(tmp_path / "bn", max_steps=1, ema=True, init_from=str(source))
    networks = loop.build_networks(run.model, "xavier", 0.02)
    ema = loop.EMA(networks.generator, 0.999)
    report = loop.warm_start(networks, ema.model, source)
    theirs = load_checkpoint(source, with_training_state=False)
    for mine, src in ((networks.generator, theirs.networks.generator), (ema.model, theirs.ema_generator),
                      (networks.discriminator, theirs.networks.discriminator)):
        src_state = src.state_dict()
        for key, value in mine.state_dict().items():
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert key not in src_state  # instance norm keeps none
            else:
                assert torch.equal(value, src_state[key]), key
    assert any("tensors fresh" in line for line in report)
    assert "EMA generator: from the source's EMA" in report
    # through the loop: a fresh step count, and the run trains from the copied weights
    result = train(run, progress=False)
    assert result.step == 1
    assert json.loads((tmp_path / "bn" / "run_config.json").read_text())["train"]["init_from"] == str(source)
    # a wider generator cannot take these weights
    wider = replace(run.model, generator=replace(run.model.generator, ngf=8))
    with pytest.raises(ValueError, match=r"the generator does not match this run's architecture: .*in the source"):
        loop.warm_start(loop.build_networks(wider, "xavier", 0.02), None, source)
    with pytest.raises(FileNotFoundError, match="--init_from .*: not a checkpoint folder"):
        loop.warm_start(networks, None, tmp_path)


@pytest.mark.parametrize("modulation", ["z_modulation", "class_modulation"])
def test_init_from_adds_a_modulation_exactly(tmp_path, modulation):
    """A model trained without --z_modulation (--class_modulation) continues with it: the new
    layers start at zero (the official initialization leaves them so), and the warm-started
    generator paints exactly what the source painted, for the same code; the option needs the
    image encoder and survives the checkpoint's opt.txt."""
    from spadegan.config import EncoderConfig, model_config_from_options, options_from_model_config

    run = tiny_run(tmp_path / "plain", max_steps=1)
    run = replace(run, model=replace(run.model, generator=replace(run.model.generator, z_dim=8),
                                     encoder=EncoderConfig(ndf=4, num_layers=5, latent_dim=8)))
    source = train(run, progress=False).checkpoint
    modulated = replace(run.model, generator=replace(run.model.generator, **{modulation: True}))
    networks = loop.build_networks(modulated, "xavier", 0.02)
    report = loop.warm_start(networks, None, source)
    assert any("tensors fresh" in line for line in report)
    assert all(not p.detach().any() for p in getattr(networks.generator, modulation).parameters())
    theirs = load_checkpoint(source, with_training_state=False).networks.generator.eval()
    torch.manual_seed(1)
    semantics = one_hot(torch.randint(0, 182, (1, 1, 64, 64)), 184, False)
    z = torch.randn(1, 8)
    with torch.no_grad():
        assert torch.equal(networks.generator.eval()(semantics, z), theirs(semantics, z))
    assert getattr(model_config_from_options(options_from_model_config(modulated)).generator, modulation)
    # an encoder of another norm (no instance norm: it keeps the colour statistics) starts fresh
    # when asked to, and is an error otherwise
    other_encoder = replace(modulated, encoder=replace(modulated.encoder, norm_E="spectral"))
    with pytest.raises(ValueError, match="the encoder does not match"):
        loop.warm_start(loop.build_networks(other_encoder, "xavier", 0.02), None, source)
    report = loop.warm_start(loop.build_networks(other_encoder, "xavier", 0.02), None, source, fresh=("encoder",))
    assert "encoder: fresh (--init_fresh)" in report and any(line.startswith("generator: from") for line in report)
    with pytest.raises(SystemExit, match="--init_fresh needs --init_from"):
        run_config_from_args(build_parser().parse_args(["train", "--dataroot", "x", "--init_fresh", "encoder"]))
    with pytest.raises(SystemExit, match=f"--{modulation} needs the SPADE generator with the image encoder"):
        run_config_from_args(build_parser().parse_args(["train", "--dataroot", "x", f"--{modulation}"]))
    config = run_config_from_args(build_parser().parse_args(["train", "--dataroot", "x", "--use_vae", f"--{modulation}"]))
    assert getattr(config.model.generator, modulation)


def test_pooled_l1_term_reaches_the_encoder():
    """--lambda_l1 adds an 'L1' generator term (the fake vs the real image, pooled by
    --l1_downsample) whose gradient reaches the image encoder through z; off by default, as in
    the paper's objective; bad values are refused by the options."""
    from spadegan.config import EncoderConfig
    from spadegan.models import build_networks
    from spadegan.training.steps import StepNetworks, generator_losses

    torch.manual_seed(0)
    model = ModelConfig(SemanticsConfig(5, False, False), GeneratorConfig(ngf=4, crop_size=64, z_dim=8, spade_hidden=8),
                        DiscriminatorConfig(ndf=4, n_layers_D=2, num_D=1), EncoderConfig(ndf=4, num_layers=5, latent_dim=8))
    networks = build_networks(model)
    nets = StepNetworks(networks.generator, networks.discriminator, networks.encoder)
    semantics = one_hot(torch.randint(0, 5, (2, 1, 64, 64)), 5, False)
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    losses, _ = generator_losses(nets, semantics, real, LossConfig(no_vgg_loss=True))
    assert "L1" not in losses
    losses, fake = generator_losses(nets, semantics, real, LossConfig(no_vgg_loss=True, lambda_l1=10.0, l1_downsample=16))
    pooled = torch.nn.functional.avg_pool2d
    assert torch.allclose(losses["L1"], 10 * (pooled(fake, 16) - pooled(real, 16)).abs().mean())
    losses["L1"].backward()
    assert float(networks.encoder.fc_mu.weight.grad.abs().sum()) > 0
    parser = build_parser()
    base = ["train", "--dataroot", "x", "--no_vgg_loss"]
    config = run_config_from_args(parser.parse_args(base + ["--lambda_l1", "5", "--l1_downsample", "8"]))
    assert (config.loss.lambda_l1, config.loss.l1_downsample) == (5.0, 8)
    with pytest.raises(SystemExit, match="--l1_downsample must be at least 1"):
        run_config_from_args(parser.parse_args(base + ["--lambda_l1", "5", "--l1_downsample", "0"]))


@pytest.mark.parametrize("modulation", ["z_modulation", "class_modulation"])
def test_freeze_generator_trains_only_the_modulation(tmp_path, modulation):
    """--freeze_generator: the generator's own weights stay as they were, its modulation layers
    and the encoder train; it needs a modulation (it would leave nothing of G to train) and
    the region term needs the encoder."""
    from spadegan.config import EncoderConfig

    run = tiny_run(tmp_path / "frozen", max_steps=2, freeze_generator=True)
    run = replace(run, model=replace(run.model, generator=replace(run.model.generator, z_dim=8, **{modulation: True}),
                                     encoder=EncoderConfig(ndf=4, num_layers=5, latent_dim=8)),
                  loss=replace(run.loss, lambda_region=10.0))
    torch.manual_seed(run.train.seed)
    before = loop.build_networks(run.model, run.train.init_type, run.train.init_variance)
    result = train(run, progress=False)
    after = load_checkpoint(result.checkpoint, with_training_state=False).networks
    initial = dict(before.generator.state_dict())
    changed = {name for name, p in after.generator.named_parameters() if not torch.equal(p, initial[name])}
    assert changed and all(name.startswith(f"{modulation}.") for name in changed), sorted(changed)[:5]
    assert any(not torch.equal(p, q) for p, q in zip(after.encoder.parameters(), before.encoder.parameters()))
    parser = build_parser()
    with pytest.raises(SystemExit, match="--freeze_generator trains only the modulation layers"):
        run_config_from_args(parser.parse_args(["train", "--dataroot", "x", "--use_vae", "--freeze_generator"]))
    with pytest.raises(SystemExit, match="--lambda_region needs the image encoder"):
        run_config_from_args(parser.parse_args(["train", "--dataroot", "x", "--lambda_region", "1"]))


def test_latent_regression_and_mode_seeking_terms():
    """--lambda_latent adds BicycleGAN's cLR term: a picture of a random code must encode back to
    it; its gradient reaches the generator, never the encoder's weights, and it leaves the
    encoder's spectral-norm vectors alone. --lambda_ms adds MSGAN's term between the pictures of
    the encoded and the random code. Both are off by default and need the encoder."""
    from spadegan.config import EncoderConfig
    from spadegan.losses import latent_regression_loss, mode_seeking_loss
    from spadegan.models import build_networks
    from spadegan.training.steps import StepNetworks, generator_losses

    torch.manual_seed(0)
    model = ModelConfig(SemanticsConfig(5, False, False),
                        GeneratorConfig(ngf=4, crop_size=64, z_dim=8, spade_hidden=8, norm_G="spectralspadebatch3x3"),
                        DiscriminatorConfig(ndf=4, n_layers_D=2, num_D=1), EncoderConfig(ndf=4, num_layers=5, latent_dim=8))
    networks = build_networks(model, init_type="xavier", init_gain=1.0)
    nets = StepNetworks(networks.generator, networks.discriminator, networks.encoder)
    semantics = one_hot(torch.randint(0, 5, (2, 1, 64, 64)), 5, False)
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    losses, _ = generator_losses(nets, semantics, real, LossConfig(no_vgg_loss=True))
    assert "Latent" not in losses and "MS" not in losses

    # The encoder's spectral-norm vectors move as in a step without the term (its forward on the
    # real image iterates them once; the term's forward does not).
    start = {n: b.clone() for n, b in networks.encoder.named_buffers()}
    vectors = []
    for lambda_latent in (0.0, 10.0):
        networks.encoder.load_state_dict({**networks.encoder.state_dict(), **start})
        losses, _ = generator_losses(nets, semantics, real, LossConfig(no_vgg_loss=True, lambda_latent=lambda_latent))
        vectors.append({n: b.clone() for n, b in networks.encoder.named_buffers() if n.endswith("weight_u")})
    assert vectors[1] and all(torch.equal(vectors[0][n], vectors[1][n]) for n in vectors[0])
    assert any(not torch.equal(start[n], vectors[1][n]) for n in vectors[1])
    assert networks.encoder.training
    networks.generator.zero_grad()
    networks.encoder.zero_grad()
    losses["Latent"].backward()
    assert all(p.grad is None for p in networks.encoder.parameters())
    assert float(networks.generator.fc.weight.grad.abs().sum()) > 0
    # --latent_trains_encoder: the same term, and its gradient reaches the encoder's weights too
    # (the same state and seed for both: spectral-norm vectors and BatchNorm statistics move per call)
    nets_all = (networks.generator, networks.discriminator, networks.encoder)
    state = [{k: v.clone() for k, v in net.state_dict().items()} for net in nets_all]

    def same_start():
        for net, saved in zip(nets_all, state):
            net.load_state_dict(saved)
        torch.manual_seed(5)

    same_start()
    fixed, _ = generator_losses(nets, semantics, real, LossConfig(no_vgg_loss=True, lambda_latent=1.0))
    same_start()
    trained, _ = generator_losses(nets, semantics, real,
                                  LossConfig(no_vgg_loss=True, lambda_latent=1.0, latent_trains_encoder=True))
    assert torch.equal(fixed["Latent"].detach(), trained["Latent"].detach())
    networks.generator.zero_grad()
    trained["Latent"].backward()
    assert float(networks.encoder.fc_mu.weight.grad.abs().sum()) > 0

    losses, fake = generator_losses(nets, semantics, real, LossConfig(no_vgg_loss=True, lambda_ms=2.0))
    assert "MS" in losses and "Latent" not in losses and float(losses["MS"].detach()) > 0

    # the terms by hand
    z_a, z_b = torch.zeros(2, 4), torch.full((2, 4), 2.0)
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    assert float(mode_seeking_loss(a, b, z_a, z_b, eps=0.0)) == pytest.approx(4.0)   # 1 / (0.5 / 2)
    assert float(latent_regression_loss(torch.ones(2, 4), z_a)) == pytest.approx(1.0)

    parser = build_parser()
    base = ["train", "--dataroot", "x", "--no_vgg_loss"]
    config = run_config_from_args(parser.parse_args(base + ["--use_vae", "--lambda_latent", "1", "--lambda_ms", "0.5"]))
    assert (config.loss.lambda_latent, config.loss.lambda_ms) == (1.0, 0.5)
    with pytest.raises(SystemExit, match="--lambda_latent needs the image encoder"):
        run_config_from_args(parser.parse_args(base + ["--lambda_latent", "1"]))
    with pytest.raises(SystemExit, match="--latent_trains_encoder needs the latent regression term"):
        run_config_from_args(parser.parse_args(base + ["--use_vae", "--latent_trains_encoder"]))
    with pytest.raises(SystemExit, match="--lambda_ms must not be negative"):
        run_config_from_args(parser.parse_args(base + ["--use_vae", "--lambda_ms", "-1"]))


def test_the_generator_step_computes_no_discriminator_weight_gradients():
    """With D's weights held fixed in the G step, the G step's losses and G's and E's gradients are
    the same bit for bit (the official code computes D's weight gradients there too, and zeroes
    them before the D step reads them), D's weights get none, and they take gradients again after."""
    import copy
    from contextlib import nullcontext
    from itertools import chain

    from spadegan.config import EncoderConfig
    from spadegan.models import build_networks
    from spadegan.training.steps import StepNetworks, generator_losses

    torch.manual_seed(0)
    model = ModelConfig(SemanticsConfig(5, False, False), GeneratorConfig(ngf=4, crop_size=64, z_dim=8, spade_hidden=8),
                        DiscriminatorConfig(ndf=4, n_layers_D=2, num_D=2), EncoderConfig(ndf=4, num_layers=5, latent_dim=8))
    networks = build_networks(model)
    semantics = one_hot(torch.randint(0, 5, (2, 1, 64, 64)), 5, False)
    real = torch.rand(2, 3, 64, 64) * 2 - 1

    def generator_step(held_fixed: bool):
        own = copy.deepcopy(networks)  # each step from the same weights and spectral-norm vectors
        nets = StepNetworks(own.generator, own.discriminator, own.encoder)
        torch.manual_seed(1)  # the encoder's sample
        with loop.discriminator_held_fixed(nets.discriminator) if held_fixed else nullcontext():
            losses, _ = generator_losses(nets, semantics, real, LossConfig(no_vgg_loss=True))
        sum(losses.values()).backward()
        return own, losses

    (plain, plain_losses), (fixed, fixed_losses) = generator_step(False), generator_step(True)
    assert plain_losses.keys() == fixed_losses.keys() == {"KLD", "GAN", "GAN_Feat"}
    assert all(torch.equal(plain_losses[k], fixed_losses[k]) for k in plain_losses)
    trained = [(a, b) for a, b in zip(chain(plain.generator.parameters(), plain.encoder.parameters()),
                                      chain(fixed.generator.parameters(), fixed.encoder.parameters()))]
    assert all(a.grad is not None for a, _ in trained)
    assert all(torch.equal(a.grad, b.grad) for a, b in trained)
    assert all(p.grad is not None for p in plain.discriminator.parameters())
    assert all(p.grad is None and p.requires_grad for p in fixed.discriminator.parameters())
