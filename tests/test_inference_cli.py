"""Synthesizer and ``spadegan synthesize``: the path a user takes from PNG files to PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spadegan.checkpoint import save_official
from spadegan.cli import device_from_gpu_ids, main
from spadegan.config import EncoderConfig, GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.imageio import to_pil
from spadegan.inference import Synthesizer
from spadegan.models import build_networks

from conftest import OFFICIAL, official_fixture, require_official


def test_cli_writes_the_official_outputs(tmp_path):
    fx = official_fixture("cityscapes_like")
    folder = OFFICIAL / "cityscapes_like_checkpoint"
    out = tmp_path / "out"
    code = main(["synthesize", str(folder / "input_label_0.png"), str(folder / "input_label_1.png"),
                 "--instances", str(folder / "input_instance_0.png"), str(folder / "input_instance_1.png"),
                 "--checkpoint", str(folder), "--out", str(out), "--gpu_ids", "-1"])
    assert code == 0
    for b in range(2):
        written = np.array(Image.open(out / f"input_label_{b}.png"))
        expected = np.array(to_pil(fx["G_eval_out"][b]))
        # Outputs match the official ones to ≤ 1e-4 before 8-bit rounding: at most 1 level apart.
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1
    assert (out / "index.html").read_text().count("<img") == 4


def _write(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_bad_label_maps_get_errors_naming_the_file(tmp_path):
    require_official()
    synthesizer = Synthesizer.from_checkpoint(OFFICIAL / "cityscapes_like_checkpoint", device="cpu")
    # An RGB label map is read in the model's palette (Cityscapes here): unknown colours are named.
    colours = np.zeros((64, 128, 3), np.uint8)
    colours[:3, :4] = (1, 2, 3)
    rgb = _write(tmp_path / "rgb.png", colours)
    with pytest.raises(ValueError, match=r"rgb.png holds 1 colour\(s\) that are not in the cityscapes palette: "
                       r"\(1, 2, 3\) \(12 pixels\)"):
        synthesizer(rgb)
    cmyk = tmp_path / "cmyk.tif"
    Image.new("CMYK", (128, 64)).save(cmyk)
    with pytest.raises(ValueError, match=r"cmyk.tif: a label map must hold class ids .* mode 'CMYK'"):
        synthesizer(cmyk)
    ids = np.zeros((64, 128), np.uint8)
    ids[:2, :5] = 200
    bad = _write(tmp_path / "ids.png", ids)
    with pytest.raises(ValueError, match=r"label id 200 \(10 pixels\) in .*ids.png"):
        synthesizer(bad)
    small = _write(tmp_path / "small.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"small.png is 32×32.*128×64"):
        synthesizer(small)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        synthesizer(tmp_path / "missing.png")
    with pytest.raises(SystemExit, match="instance maps for 1 label maps"):
        main(["synthesize", str(bad), "--instances", str(bad), str(bad),
              "--checkpoint", str(OFFICIAL / "cityscapes_like_checkpoint"), "--out", str(tmp_path / "o")])


def test_official_vae_checkpoint_with_mismatched_encoder_says_why():
    require_official()
    synthesizer = Synthesizer.from_checkpoint(OFFICIAL / "ade20k_vae_more_checkpoint", device="cpu")
    label = OFFICIAL / "ade20k_vae_more_checkpoint" / "input_label_0.png"
    with pytest.raises(ValueError, match="256-wide codes but the generator takes z_dim 32"):
        synthesizer.synthesize(label, style=torch.zeros(3, 256, 256))
    # A random style still works on CPU (the official code fails there).
    a, b = synthesizer.synthesize(label, seed=1), synthesizer.synthesize(label, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, synthesizer.synthesize(label, seed=2))


def test_style_image_sets_the_style(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(3, False, False),
                         GeneratorConfig(ngf=2, crop_size=64, z_dim=8, norm_G="spectralspadeinstance3x3", spade_hidden=8),
                         None, EncoderConfig(ndf=2, num_layers=5, latent_dim=8))
    networks = build_networks(config, init_type="normal", init_gain=0.2)
    save_official(tmp_path / "ckpt", networks)
    synthesizer = Synthesizer.from_checkpoint(tmp_path / "ckpt", device="cpu")
    labels = torch.randint(0, 3, (64, 64))
    red = torch.tensor([1.0, -1, -1])[:, None, None].expand(3, 64, 64)
    blue = torch.tensor([-1.0, -1, 1])[:, None, None].expand(3, 64, 64)
    red_1, red_2 = (synthesizer.synthesize(labels, style=red, seed=s) for s in (1, 2))
    blue_1 = synthesizer.synthesize(labels, style=blue, seed=1)
    assert not torch.equal(red_1, blue_1)
    assert torch.equal(red_1, synthesizer.synthesize(labels, style=red, seed=1))
    assert not torch.equal(red_1, red_2)  # the code is sampled (reparameterization), as official
    images = synthesizer(labels, seed=3)
    assert len(images) == 1 and images[0].size == (64, 64) and images[0].mode == "RGB"


def test_gpu_ids_follow_the_official_meaning():
    assert device_from_gpu_ids("-1") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            device_from_gpu_ids("0")
    else:
        assert device_from_gpu_ids("0") == torch.device("cuda:0")


def test_every_option_takes_both_spellings():
    """The official underscore names, and the hyphenated spelling of every option (and the
    reverse): users arrive with either."""
    from spadegan.cli import accept_both_spellings, build_parser

    parser = accept_both_spellings(build_parser())
    serve = parser.parse_args(["serve", "--max-batch", "2", "--max_waiting", "3", "--max-upload-mb", "1.5"])
    assert (serve.max_batch, serve.max_waiting, serve.max_upload_mb) == (2, 3, 1.5)
    synth = parser.parse_args(["synthesize", "map.png", "--out", "o", "--batch-size", "5", "--gpu-ids", "-1"])
    assert (synth.batch_size, synth.gpu_ids) == (5, "-1")
    train = parser.parse_args(["train", "--name", "x", "--no-vgg-loss", "--label-nc", "7", "--dry_run"])
    assert (train.no_vgg_loss, train.label_nc, train.dry_run) == (True, 7, True)
    with pytest.raises(SystemExit):  # an unknown option stays an error in either spelling
        parser.parse_args(["serve", "--max-batches", "2"])
