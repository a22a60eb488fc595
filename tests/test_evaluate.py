"""`spadegan evaluate`: the paper's protocol on a tiny landscapes set, with a tiny model and
segmenter of our own (the scores mean nothing; the bookkeeping is what is checked)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spadegan.checkpoint import save_checkpoint
from spadegan.cli import main
from spadegan.config import EncoderConfig, GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.data.landscapes import CLASS_IDS, CLASS_NAMES
from spadegan.evaluation.inception import FIDInceptionV3
from spadegan.evaluation.protocol import REAL, results_table
from spadegan.evaluation.segmentation import ConfusionMatrix
from spadegan.evaluation.segmenters.landscape import LandscapeNetConfig, LandscapeSegNet, save_landscape_segmenter
from spadegan.imageio import read_id_map, read_image
from spadegan.models import build_networks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    assert main(["landscapes", "--out", str(root / "val"), "--count", "6", "--size", "64", "--seed", "9",
                 "--workers", "1"]) == 0
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(182, True, False),
                         GeneratorConfig(ngf=4, crop_size=64, spade_hidden=8, z_dim=16, norm_G="spectralspadeinstance3x3"),
                         None, EncoderConfig(ndf=4, num_layers=5, latent_dim=16))
    save_checkpoint(root / "model", build_networks(config, "xavier"))
    torch.manual_seed(1)
    network = LandscapeSegNet(LandscapeNetConfig(num_classes=len(CLASS_IDS), widths=(4, 8, 8)))
    save_landscape_segmenter(root / "segmenter", network, CLASS_IDS, [CLASS_NAMES[c] for c in CLASS_IDS])
    return root


def _run(setup, out, *extra):
    return main(["evaluate", "--dataroot", str(setup / "val"), "--checkpoint", str(setup / "model"),
                 "--name", "tiny SPADE", "--segmenter_weights", str(setup / "segmenter"), "--out", str(out),
                 "--batch_size", "4", "--no_progress", "--gpu_ids", "-1", *extra])


def test_evaluate_scores_real_images_and_a_model(setup, tmp_path, capsys):
    assert _run(setup, tmp_path / "out", "--no_fid") == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in records] == [REAL, "tiny SPADE"]
    assert all(r["images"] == 6 and r["dataset"] == "landscapes" for r in records)
    real, model = records
    assert real["FD_seg"] is None and model["FD_seg"] is not None and model["FD_seg"] >= 0
    assert model["FID"] is None  # --no_fid
    assert "| tiny SPADE |" in printed and f"| {REAL} |" in printed and "landscapes mIoU" in printed

    # The real row is the segmenter's score on the real photos, recomputed here by hand.
    from spadegan.evaluation.segmenters import get_segmenter

    segmenter = get_segmenter("landscapes", weights=setup / "segmenter", device="cpu")
    matrix = ConfusionMatrix(182, valid_classes=segmenter.class_ids)
    for label_path in sorted((setup / "val" / "train_label").glob("*.png")):
        image = (read_image(setup / "val" / "train_img" / label_path.name)[None] + 1) / 2
        matrix.update(segmenter.predict(image), read_id_map(label_path)[None])
    scores = matrix.compute()
    assert real["mIoU"] == pytest.approx(scores.miou, abs=1e-12)
    assert real["pixel_accuracy"] == pytest.approx(scores.pixel_accuracy, abs=1e-12)

    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count("<img") == 6 * 3  # label | real | model, for every sample (6 < --keep 8)
    for name in ("label_000.png", "m0_000.png", "m1_005.png"):
        assert (tmp_path / "out" / "images" / name).is_file()


def test_fid_with_a_weight_file_and_outputs_independent_of_the_batch(setup, tmp_path, monkeypatch, capsys):
    torch.manual_seed(2)
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)
    assert _run(setup, tmp_path / "a", "--fid_weights", str(weights), "--max_images", "4") == 0
    assert _run(setup, tmp_path / "b", "--no_fid", "--max_images", "4", "--batch_size", "1") == 0
    a = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert a[1]["FID"] is not None and a[1]["FID"] >= 0 and a[0]["FID"] is None
    # one style seed per image: batch size 4 and 1 give the same images, hence the same scores
    assert a[1]["mIoU"] == pytest.approx(b[1]["mIoU"], abs=1e-9)
    assert "FID ↓" in capsys.readouterr().out


def test_missing_fid_weights_named_explicitly_is_an_error(setup, tmp_path):
    with pytest.raises(SystemExit, match="nowhere.pth"):
        _run(setup, tmp_path / "c", "--fid_weights", str(tmp_path / "nowhere.pth"))


def test_table_keeps_the_latest_record_and_puts_real_images_last():
    records = [{"method": REAL, "dataset": "d", "mIoU": 0.9, "pixel_accuracy": 0.95, "FID": None, "FD_seg": None},
               {"method": "A", "dataset": "d", "mIoU": 0.5, "pixel_accuracy": 0.6, "FID": None, "FD_seg": 3.0},
               {"method": "A", "dataset": "d", "mIoU": 0.7, "pixel_accuracy": 0.8, "FID": None, "FD_seg": 2.0}]
    lines = results_table(records).splitlines()
    assert lines[0] == "| method | d mIoU ↑ | d accu ↑ | d FD-seg ↓ |"
    assert lines[2] == "| A | 70.0 | 80.0 | 2.0 |"
    assert lines[3] == f"| {REAL} | 90.0 | 95.0 |  |"


def test_style_metrics_add_finite_style_columns_to_the_rows(setup, tmp_path, capsys):
    assert _run(setup, tmp_path / "style", "--no_fid", "--max_images", "2", "--style_metrics", "--style_maps", "3",
                "--style_references", "2", "--style_variety_maps", "2", "--style_samples", "2") == 0
    real, model = [json.loads(line) for line in (tmp_path / "style" / "results.jsonl").read_text().splitlines()]
    for record in (real, model):   # the real images' row holds the perfect transfer's scores
        for key in ("style_R", "style_G", "style_B", "style_R_stderr", "style_spread", "style_reference_spread",
                    "style_spread_ratio", "seed_variety"):
            assert math.isfinite(record[key]), (record["method"], key)
        assert record["style_settings"]["map_seed"] == 9   # the --dataroot's landscapes
        assert record["style_settings"]["maps"] == 3 and record["style_settings"]["size"] == [64, 64]
    assert all(math.isfinite(model[f"style_{c}_of_perfect"]) for c in "RGB")
    printed = capsys.readouterr().out
    assert "landscapes style R ↑" in printed and "landscapes seed variety" in printed
    assert "tiny SPADE: style following R " in printed and "of the perfect transfer's" in printed
