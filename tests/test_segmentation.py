"""Segmentation scores, the segmenter registry, the bundled landscape segmenter, the adapters of
the paper's segmenters (on weight files we make from the architectures) and pseudo-labelling."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spadegan.config import DataConfig
from spadegan.data import build_dataset
from spadegan.evaluation.segmentation import ConfusionMatrix, evaluate_segmenter, segmentation_scores
from spadegan.evaluation.segmenters import (
    get_segmenter,
    list_segmenters,
    register_segmenter,
    unregister_segmenter,
)
from spadegan.evaluation.segmenters.deeplab import DeepLabV2, DeepLabV2Config
from spadegan.evaluation.segmenters.drn import CITYSCAPES_TRAIN_TO_LABEL_ID, DRNConfig, DRNSeg
from spadegan.evaluation.segmenters.landscape import (
    LandscapeNetConfig,
    LandscapeSegNet,
    packaged_weights_folder,
    save_landscape_segmenter,
)
from spadegan.evaluation.segmenters.upernet import UperNet, UperNetConfig

# ---------------------------------------------------------------------------------------------
# Metrics, by hand
# ---------------------------------------------------------------------------------------------

# 3 classes, 255 = unlabeled. Rows: target class, read off the two maps below:
#   target 0 (4 px): predicted 0, 0, 0, 1        -> TP0 = 3
#   target 1 (6 px): predicted 1, 1, 1, 1, 1, 2  -> TP1 = 5
#   target 2 (4 px): predicted 2, 1, 0, 2        -> TP2 = 2
# The two unlabeled pixels (predicted 2 and 0) are not counted: 14 pixels.
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 1, 1],
                       [2, 2, 255, 255]])
PREDICTED = torch.tensor([[0, 0, 1, 1],
                          [0, 1, 1, 1],
                          [2, 1, 1, 2],
                          [0, 2, 2, 0]])


def close(value: float, fraction: Fraction) -> bool:
    return abs(value - float(fraction)) < 1e-12


def test_scores_by_hand():
    scores = segmentation_scores(PREDICTED, TARGET, num_classes=3)
    assert scores.pixels == 14
    # Confusion matrix (rows target, columns predicted, last column: predicted outside the classes).
    matrix = ConfusionMatrix(3)
    matrix.update(PREDICTED, TARGET)
    assert matrix.matrix.tolist() == [[3, 1, 0, 0], [0, 5, 1, 0], [1, 1, 2, 0]]
    # Overall pixel accuracy: (3 + 5 + 2) / 14.
    assert close(scores.pixel_accuracy, Fraction(10, 14))
    # Mean class accuracy: (3/4 + 5/6 + 2/4) / 3.
    assert close(scores.mean_class_accuracy, (Fraction(3, 4) + Fraction(5, 6) + Fraction(2, 4)) / 3)
    # IoU = TP / (target + predicted - TP); predicted counts per class: 4, 7, 3.
    assert close(scores.per_class_iou[0], Fraction(3, 4 + 4 - 3))   # 3/5
    assert close(scores.per_class_iou[1], Fraction(5, 6 + 7 - 5))   # 5/8
    assert close(scores.per_class_iou[2], Fraction(2, 4 + 3 - 2))   # 2/5
    assert close(scores.miou, (Fraction(3, 5) + Fraction(5, 8) + Fraction(2, 5)) / 3)
    assert scores.per_class_accuracy == {0: 0.75, 1: 5 / 6, 2: 0.5}
    assert scores.target_pixels == {0: 4, 1: 6, 2: 4}


def test_classes_absent_from_target_and_prediction_are_not_averaged():
    # A 4th class absent from both maps changes nothing.
    scores = segmentation_scores(PREDICTED, TARGET, num_classes=4)
    assert 3 not in scores.per_class_iou
    assert close(scores.miou, (Fraction(3, 5) + Fraction(5, 8) + Fraction(2, 5)) / 3)
    # Predicted but absent from the target: IoU 0, averaged (it lowers mIoU), not in class accuracy.
    predicted = PREDICTED.clone()
    predicted[0, 0] = 3                      # a class-0 pixel now predicted as 3: TP0 = 2
    scores = segmentation_scores(predicted, TARGET, num_classes=4)
    assert scores.per_class_iou[3] == 0.0
    assert close(scores.per_class_iou[0], Fraction(2, 4 + 3 - 2))
    assert close(scores.miou, (Fraction(2, 5) + Fraction(5, 8) + Fraction(2, 5) + 0) / 4)
    assert close(scores.pixel_accuracy, Fraction(9, 14))
    assert close(scores.mean_class_accuracy, (Fraction(2, 4) + Fraction(5, 6) + Fraction(2, 4)) / 3)
    assert 3 not in scores.per_class_accuracy


def test_ignore_handling():
    # Target ids 255, out of range (the don't-care id label_nc) and negative are never counted.
    target = TARGET.clone()
    target[3, 2], target[3, 3] = 3, -1
    assert segmentation_scores(PREDICTED, target, num_classes=3) == segmentation_scores(PREDICTED, TARGET, 3)
    # Another ignore id.
    other = torch.where(TARGET == 255, torch.full_like(TARGET, 7), TARGET)
    assert segmentation_scores(PREDICTED, other, 8, ignore_index=7).pixels == 14
    # valid_classes: target class 2 is not counted; predicting 2 counts as a miss, no false positive.
    scores = segmentation_scores(PREDICTED, TARGET, num_classes=3, valid_classes=[0, 1])
    assert scores.pixels == 10
    assert close(scores.pixel_accuracy, Fraction(8, 10))
    assert close(scores.per_class_iou[0], Fraction(3, 4 + 3 - 3))
    assert close(scores.per_class_iou[1], Fraction(5, 6 + 6 - 5))
    assert set(scores.per_class_iou) == {0, 1}
    # Predictions outside the classes: misses for the target class, nobody's false positive.
    scores = segmentation_scores(torch.full_like(TARGET, 200), TARGET, num_classes=3)
    assert scores.pixel_accuracy == 0 and scores.miou == 0 and scores.pixels == 14


def test_streaming_equals_one_shot():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (5, 17, 23), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = 255
    predicted = torch.where(torch.rand(target.shape, generator=generator) < 0.7, target,
                            torch.randint(0, 6, target.shape, generator=generator))
    one_shot = ConfusionMatrix(6)
    one_shot.update(predicted, target)
    streamed, merged = ConfusionMatrix(6), ConfusionMatrix(6)
    for start, stop in ((0, 1), (1, 3), (3, 5)):
        streamed.update(predicted[start:stop], target[start:stop])
        part = ConfusionMatrix(6)
        part.update(predicted[start:stop].flatten(), target[start:stop].flatten())  # any shape
        merged.merge(part)
    assert torch.equal(streamed.matrix, one_shot.matrix) and torch.equal(merged.matrix, one_shot.matrix)
    assert streamed.compute() == one_shot.compute()
    assert one_shot.matrix.dtype == torch.int64 and int(one_shot.matrix.sum()) == int((target != 255).sum())


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        ConfusionMatrix(3).update(PREDICTED[:2], TARGET)
    with pytest.raises(TypeError, match="logits"):
        ConfusionMatrix(3).update(PREDICTED.float(), TARGET)
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(3, valid_classes=[5])
    assert np.isnan(ConfusionMatrix(3).compute().miou)


class ThresholdSegmenter:
    """A tiny segmenter for tests: bright pixels are sky (156), the others grass (123)."""

    name = "test-threshold"
    class_ids = (123, 156)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.where(images.mean(dim=1) > 0.5, torch.tensor(156), torch.tensor(123))


def test_evaluate_segmenter_scores_generated_images():
    labels = torch.full((2, 1, 8, 8), 123)
    labels[:, :, :4] = 156
    labels[1, 0, 0, 0] = 255                                 # unlabeled
    labels[1, 0, 7, 7] = 5                                   # a class the segmenter cannot predict

    def generate(batch: dict) -> torch.Tensor:              # images in [-1, 1], as a generator gives
        return torch.where(batch["label"] == 156, 1.0, -1.0).expand(-1, 3, -1, -1)

    scores = evaluate_segmenter(ThresholdSegmenter(), [{"label": labels}], num_classes=182, generate=generate)
    assert scores.pixels == 2 * 64 - 2 and scores.miou == 1.0 and scores.pixel_accuracy == 1.0


# ---------------------------------------------------------------------------------------------
# Registry and the bundled segmenter
# ---------------------------------------------------------------------------------------------

def test_registry():
    assert {"landscapes", "drn-d-105", "deeplabv2", "upernet-101"} <= set(list_segmenters())
    register_segmenter("test-threshold", lambda weights, device: ThresholdSegmenter())
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_segmenter("test-threshold", lambda weights, device: ThresholdSegmenter())
        segmenter = get_segmenter("test-threshold", device="cpu")
        assert segmenter.predict(torch.ones(1, 3, 2, 2)).tolist() == [[[156, 156], [156, 156]]]
    finally:
        unregister_segmenter("test-threshold")
    with pytest.raises(KeyError, match="landscapes"):
        get_segmenter("no-such-segmenter")
    for name, hint in (("drn-d-105", "drn_d_105"), ("deeplabv2", "cocostuff164k"), ("upernet-101", "encoder_epoch")):
        with pytest.raises(ValueError, match=hint):
            get_segmenter(name, weights=None, device="cpu")


def test_landscape_segmenter_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    network = LandscapeSegNet(LandscapeNetConfig(num_classes=3, widths=(4, 8, 8)))
    save_landscape_segmenter(tmp_path / "seg", network, [156, 123, 154], ["sky-other", "grass", "sea"],
                             training={"note": "test"})
    segmenter = get_segmenter("landscapes", weights=tmp_path / "seg" / "model.safetensors", device="cpu")
    images = torch.rand(2, 3, 21, 30)                         # not a multiple of the stride
    ids = segmenter.predict(images)
    assert ids.shape == (2, 21, 30) and ids.dtype == torch.long
    assert set(ids.unique().tolist()) <= {156, 123, 154}
    with torch.no_grad():
        expected = torch.tensor([156, 123, 154])[network.eval()((images - 0.5) / 0.5).argmax(1)]
    assert torch.equal(ids, expected)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmenter.predict(images * 2 - 1)


def test_bundled_landscape_segmenter():
    folder = packaged_weights_folder()
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"no trained landscape segmenter in {folder} yet (scripts/train_segmenter.py --export)")
    from spadegan.data.landscapes import CLASS_IDS, generate_landscape

    segmenter = get_segmenter("landscapes", device="cpu")     # from package data
    config = json.loads((folder / "config.json").read_text())
    assert segmenter.class_ids == tuple(CLASS_IDS) == tuple(config["class_ids"])
    assert (folder / "model.safetensors").stat().st_size <= 8 * 2**20
    assert config["training"]["validation"]["real"]["miou"] >= 0.8
    # Fresh landscapes (a seed neither training nor validation used), at full resolution.
    samples = [generate_landscape((987654, i), (256, 256)) for i in range(2)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]).float() / 255
    labels = torch.stack([torch.from_numpy(s.label.astype(np.int64)) for s in samples])
    ids = segmenter.predict(images)
    assert set(ids.unique().tolist()) <= set(CLASS_IDS)
    assert segmentation_scores(ids, labels, 182).pixel_accuracy > 0.8


# ---------------------------------------------------------------------------------------------
# Adapters of the paper's segmenters: full-size layouts, and weight files we make ourselves
# ---------------------------------------------------------------------------------------------

def test_full_size_architectures_have_the_public_layouts():
    with torch.device("meta"):
        drn, deeplab, upernet = DRNSeg(), DeepLabV2(), UperNet()
    # DRN-D-105: 54.8 M parameters with its 1000-class fc (fyu/drn README) = backbone + 512×1000 + 1000.
    backbone = sum(p.numel() for n, p in drn.named_parameters() if n.startswith("base."))
    assert backbone + 513_000 == 54_801_304
    assert drn.state_dict()["base.6.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert drn.state_dict()["base.7.0.weight"].shape == (512, 2048, 3, 3)
    assert drn.state_dict()["up.weight"].shape == (19, 1, 16, 16)
    # DeepLabV2: the ResNet-101 backbone has torchvision's resnet101 count (44,549,160) minus its fc.
    backbone = sum(p.numel() for n, p in deeplab.named_parameters() if not n.startswith("aspp."))
    assert backbone == 44_549_160 - 2_049_000
    assert deeplab.state_dict()["layer4.block23.conv3x3.conv.weight"].shape == (256, 256, 3, 3)
    assert deeplab.state_dict()["layer2.block1.shortcut.bn.running_var"].shape == (256,)
    assert deeplab.state_dict()["aspp.c3.weight"].shape == (182, 2048, 3, 3)
    # UperNet-101: deep stem (3→64→64→128), fpn_dim 512, 150 classes.
    encoder, decoder = upernet.encoder.state_dict(), upernet.decoder.state_dict()
    assert encoder["conv3.weight"].shape == (128, 64, 3, 3) and encoder["layer1.0.conv1.weight"].shape == (64, 128, 1, 1)
    assert "layer3.22.conv3.weight" in encoder and "layer3.23.conv1.weight" not in encoder
    assert decoder["ppm_last_conv.0.weight"].shape == (512, 2048 + 4 * 512, 3, 3)
    assert decoder["fpn_out.2.0.0.weight"].shape == (512, 512, 3, 3)
    assert decoder["conv_last.1.weight"].shape == (150, 512, 1, 1)


def _randomize_norms(network: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics, so a wrong layer order would show in the outputs."""
    generator = torch.Generator().manual_seed(1)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return network.eval()


def test_drn_adapter_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    network = _randomize_norms(DRNSeg(DRNConfig(layers=(1, 1, 1, 2, 1, 1, 1, 1), channels=(4, 4, 4, 4, 4, 4, 8, 8))))
    with torch.no_grad():   # the classifier says 'car' (train id 13) everywhere
        network.seg.weight.zero_()
        network.seg.bias.copy_(torch.nn.functional.one_hot(torch.tensor(13), 19).float())
    # A training checkpoint of segment.py: {'state_dict': DataParallel keys}.
    path = tmp_path / "checkpoint_latest.pth.tar"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    segmenter = get_segmenter("drn-d-105", weights=path, device="cpu")
    images = torch.rand(2, 3, 32, 40)
    ids = segmenter.predict(images)
    assert ids.shape == (2, 32, 40) and set(ids.unique().tolist()) == {26}   # car's Cityscapes label id
    assert segmenter.class_ids == CITYSCAPES_TRAIN_TO_LABEL_ID
    # Random classifier: the same arg-max as the network's own forward on the preprocessed input.
    torch.manual_seed(1)
    network.seg.reset_parameters()
    torch.save(network.state_dict(), path)
    with torch.no_grad():
        x = (images - torch.tensor([0.290101, 0.328081, 0.286964]).view(1, 3, 1, 1)) / \
            torch.tensor([0.182954, 0.186566, 0.184475]).view(1, 3, 1, 1)
        expected = torch.tensor(CITYSCAPES_TRAIN_TO_LABEL_ID)[network(x).argmax(1)]
    assert torch.equal(get_segmenter("drn-d-105", weights=path, device="cpu").predict(images), expected)
    # Another size than a multiple of 8 still gives full-size maps.
    assert segmenter.predict(torch.rand(1, 3, 27, 35)).shape == (1, 27, 35)
    # A file of another layout names the file and the first key.
    state = network.state_dict()
    del state["base.4.1.conv2.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"checkpoint_latest\.pth\.tar.*missing keys 'base\.4\.1\.conv2\.weight'"
                                         r".*unexpected keys 'extra\.weight'"):
        get_segmenter("drn-d-105", weights=path, device="cpu")


def test_deeplab_adapter_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    network = _randomize_norms(DeepLabV2(DeepLabV2Config(blocks=(1, 2, 1, 1), width=4)))
    path = tmp_path / "deeplabv2_resnet101_msc-cocostuff164k-100000.pth"
    torch.save({f"base.{k}": v for k, v in network.state_dict().items()}, path)   # as MSC saves it
    segmenter = get_segmenter("deeplabv2", weights=path, device="cpu")
    assert segmenter.class_ids == tuple(range(182))
    images = torch.rand(2, 3, 33, 41)
    with torch.no_grad():   # single scale, by hand: Caffe BGR input minus the mean, logits upsampled
        x = images.flip(1) * 255 - torch.tensor([104.008, 116.669, 122.675]).view(1, 3, 1, 1)
        full = network(x)
        half = torch.nn.functional.interpolate(x, size=(16, 20), mode="bilinear", align_corners=False)
        multi = torch.maximum(full, torch.nn.functional.interpolate(network(half), size=full.shape[-2:],
                                                                     mode="bilinear", align_corners=False))
        single_expected = torch.nn.functional.interpolate(full, size=(33, 41), mode="bilinear",
                                                          align_corners=False).argmax(1)
        multi_expected = torch.nn.functional.interpolate(multi, size=(33, 41), mode="bilinear",
                                                         align_corners=False).argmax(1)
    assert torch.equal(get_segmenter("deeplabv2", weights=path, device="cpu", scales=(1.0,)).predict(images),
                       single_expected)
    assert torch.equal(get_segmenter("deeplabv2", weights=path, device="cpu", scales=(1.0, 0.5)).predict(images),
                       multi_expected)
    assert segmenter.predict(images).shape == (2, 33, 41)
    # The repo's first releases: 'scale.' prefix, 'proj' shortcuts, 'aspp.stages.cN'.
    legacy = {("scale." + k).replace(".shortcut.", ".proj.").replace("aspp.", "aspp.stages."): v
              for k, v in network.state_dict().items()}
    torch.save(legacy, path)
    assert torch.equal(get_segmenter("deeplabv2", weights=path, device="cpu", scales=(1.0,)).predict(images),
                       single_expected)


def test_upernet_adapter_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    network = _randomize_norms(UperNet(UperNetConfig(blocks=(1, 1, 2, 1), width=4, fpn_dim=8, ppm_dim=8)))
    folder = tmp_path / "ade20k-resnet101-upernet"
    folder.mkdir()
    torch.save(network.encoder.state_dict(), folder / "encoder_epoch_50.pth")
    torch.save(network.decoder.state_dict(), folder / "decoder_epoch_50.pth")
    images = torch.rand(1, 3, 40, 56)
    with torch.no_grad():   # one scale by hand: short side 64 → 64×89.6 → rounded up to 64×96
        x = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
            torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = torch.nn.functional.interpolate(x, size=(64, 96), mode="bilinear", align_corners=False, antialias=True)
        expected = torch.nn.functional.interpolate(network(x), size=(40, 56), mode="bilinear",
                                                   align_corners=False).argmax(1)
    for weights in (folder, folder / "encoder_epoch_50.pth"):
        segmenter = get_segmenter("upernet-101", weights=weights, device="cpu", image_sizes=(64,))
        assert segmenter.class_ids == tuple(range(150))
        assert torch.equal(segmenter.predict(images), expected)
    # One SegmentationModule-style file with encoder./decoder. keys; two scales averaged.
    combined = tmp_path / "combined.pth"
    torch.save({f"module.{k}": v for k, v in network.state_dict().items()}, combined)
    assert get_segmenter("upernet-101", weights=combined, device="cpu",
                         image_sizes=(32, 48)).predict(images).shape == (1, 40, 56)
    (folder / "decoder_epoch_50.pth").unlink()
    with pytest.raises(FileNotFoundError, match="decoder"):
        get_segmenter("upernet-101", weights=folder / "encoder_epoch_50.pth", device="cpu")


# ---------------------------------------------------------------------------------------------
# Pseudo-labelling
# ---------------------------------------------------------------------------------------------

def test_pseudo_label_cli_writes_a_custom_dataset(tmp_path: Path, capsys):
    from spadegan.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for index, (top, bottom) in enumerate(((230, 20), (240, 40), (10, 200))):
        array = np.zeros((32, 64, 3), np.uint8)   # 'none' preprocessing keeps multiples of 32
        array[:16], array[16:] = top, bottom
        Image.fromarray(array).save(photos / f"photo{index}.{'png' if index == 2 else 'jpg'}", quality=95)
    register_segmenter("test-threshold", lambda weights, device: ThresholdSegmenter())
    try:
        out = tmp_path / "pseudo"
        assert main(["pseudo-label", str(photos), "--segmenter", "test-threshold", "--out", str(out),
                     "--gpu_ids", "-1"]) == 0
        assert "--label_dir" in capsys.readouterr().out
        names = sorted(p.name for p in (out / "train_label").iterdir())
        assert names == ["photo0.png", "photo1.png", "photo2.png"]
        assert sorted(p.name for p in (out / "train_img").iterdir()) == names
        config = DataConfig(dataset_mode="custom", label_dir=str(out / "train_label"),
                            image_dir=str(out / "train_img"), label_nc=182, preprocess_mode="none",
                            use_instance=False, is_train=False)
        dataset = build_dataset(config)
        assert len(dataset) == 3
        first, last = dataset[0], dataset[2]
        assert first["label"].shape == (1, 32, 64) and first["image"].shape == (3, 32, 64)
        assert (first["label"][0, :16] == 156).all() and (first["label"][0, 16:] == 123).all()
        assert (last["label"][0, :16] == 123).all() and (last["label"][0, 16:] == 156).all()
        manifest = json.loads((out / "pseudo_labels.json").read_text())
        assert manifest["segmenter"] == "test-threshold" and len(manifest["samples"]) == 3
        # A rerun skips what is there; an unreadable photo stops with its name.
        (photos / "broken.jpg").write_bytes(b"not a picture")
        with pytest.raises(SystemExit, match=r"broken\.jpg"):
            main(["pseudo-label", str(photos), "--segmenter", "test-threshold", "--out", str(out), "--gpu_ids", "-1"])
        assert not (out / "train_label" / "broken.png").exists()
        # --size resizes (shorter side) before segmenting; --square crops the centre.
        sized = tmp_path / "sized"
        (photos / "broken.jpg").unlink()
        main(["pseudo-label", str(photos), "--segmenter", "test-threshold", "--out", str(sized),
              "--size", "6", "--square", "--gpu_ids", "-1"])
        assert Image.open(sized / "train_label" / "photo0.png").size == (6, 6)
        assert Image.open(sized / "train_img" / "photo0.png").size == (6, 6)
    finally:
        unregister_segmenter("test-threshold")


def test_pseudo_label_reads_photos_upright(tmp_path: Path):
    from spadegan.evaluation.pseudo_label import pseudo_label

    photos = tmp_path / "photos"
    photos.mkdir()
    array = np.zeros((8, 20, 3), np.uint8)
    array[:, :10] = 255                                        # bright left half
    exif = Image.Exif()
    exif[0x0112] = 6                                           # orientation: rotate 90° clockwise to view
    Image.fromarray(array).save(photos / "camera.jpg", exif=exif, quality=95)
    result = pseudo_label(photos, ThresholdSegmenter(), tmp_path / "out", progress=False)
    assert result.written == ["camera"] and set(result.class_counts) == {123, 156}
    label = np.asarray(Image.open(tmp_path / "out" / "train_label" / "camera.png"))
    assert label.shape == (20, 8)                              # upright: 8 wide, 20 high
    assert (label[:10] == 156).all() and (label[10:] == 123).all()   # the bright half is now on top
