"""Datasets and preprocessing: official layouts, pairing, file checks, transforms, conventions."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spadegan.config import DataConfig
from spadegan.data import (
    DatasetError,
    PairedDataset,
    TransformParams,
    apply_transform,
    build_dataset,
    check_samples,
    dataset_defaults,
    find_samples,
    sample_params,
)

COCO_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_stuff_samples"
W, H = 40, 30


def write_label(path: Path, ids: np.ndarray | int = 1, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[1], size[0]), ids, dtype=np.uint8) if np.isscalar(ids) else ids.astype(np.uint8)
    Image.fromarray(array, mode="L").save(path)
    return path


def write_photo(path: Path, size=(W, H), color=(10, 120, 240)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def custom_config(root: Path, **changes) -> DataConfig:
    config = DataConfig(dataset_mode="custom", label_dir=str(root / "labels"), image_dir=str(root / "images"),
                        preprocess_mode="none", label_nc=5, load_size=32, crop_size=32)
    return replace(config, **changes)


def make_custom(root: Path, names=("a", "b", "c"), instances=False) -> None:
    for name in names:
        write_label(root / "labels" / f"{name}.png")
        write_photo(root / "images" / f"{name}.jpg")
        if instances:
            write_label(root / "instances" / f"{name}.png", 3)


# ---------------------------------------------------------------- layouts


def test_custom_layout(tmp_path):
    make_custom(tmp_path, names=("img10", "img2", "img1"), instances=True)
    samples = find_samples(custom_config(tmp_path, instance_dir=str(tmp_path / "instances"), use_instance=True))
    # Official natural sort: img1, img2, img10.
    assert [s.label.name for s in samples] == ["img1.png", "img2.png", "img10.png"]
    assert [s.image.name for s in samples] == ["img1.jpg", "img2.jpg", "img10.jpg"]
    assert [s.instance.name for s in samples] == ["img1.png", "img2.png", "img10.png"]
    assert all(s.instance is None for s in find_samples(custom_config(tmp_path)))
    assert len(find_samples(custom_config(tmp_path, max_dataset_size=2))) == 2


def test_coco_layout(tmp_path):
    for phase in ("train", "val"):
        for name in (f"{phase}1", f"{phase}2"):
            write_label(tmp_path / f"{phase}_label" / f"{name}.png")
            write_photo(tmp_path / f"{phase}_img" / f"{name}.jpg")
            write_label(tmp_path / f"{phase}_inst" / f"{name}.png")
    config = DataConfig(dataset_mode="coco", dataroot=str(tmp_path), use_instance=True)
    train = find_samples(config)
    assert [s.label.name for s in train] == ["train1.png", "train2.png"]
    assert train[0].image == tmp_path / "train_img" / "train1.jpg"
    assert train[0].instance == tmp_path / "train_inst" / "train1.png"
    test = find_samples(replace(config, phase="test", is_train=False, use_instance=False))
    assert [(s.label.name, s.instance) for s in test] == [("val1.png", None), ("val2.png", None)]


def test_coco_portrait_folders(tmp_path):
    for kind, writer, ext in (("label", write_label, "png"), ("img", write_photo, "jpg")):
        writer(tmp_path / f"train_{kind}" / f"x.{ext}")
        writer(tmp_path / f"train_{kind}_portrait" / f"p.{ext}")
    config = DataConfig(dataset_mode="coco", dataroot=str(tmp_path))
    assert [s.label.name for s in find_samples(config)] == ["x.png", "p.png"]
    assert [s.label.name for s in find_samples(replace(config, coco_no_portraits=True))] == ["x.png"]


def test_ade20k_layout(tmp_path):
    for phase, folder in (("train", "training"), ("val", "validation")):
        for i in (1, 2):
            write_photo(tmp_path / "images" / folder / f"ADE_{phase}_0000000{i}.jpg")
            write_label(tmp_path / "annotations" / folder / f"ADE_{phase}_0000000{i}.png")
    config = DataConfig(dataset_mode="ade20k", dataroot=str(tmp_path))
    train = find_samples(config)
    assert [(s.label.name, s.image.name, s.instance) for s in train] == [
        ("ADE_train_00000001.png", "ADE_train_00000001.jpg", None),
        ("ADE_train_00000002.png", "ADE_train_00000002.jpg", None)]
    assert all("validation" in str(s.label) for s in find_samples(replace(config, phase="test")))
    with pytest.raises(DatasetError, match="instance"):
        find_samples(replace(config, use_instance=True))


def test_cityscapes_layout(tmp_path):
    for city in ("aachen", "bonn"):
        stem = f"{city}_000000_000019"
        write_label(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png")
        write_label(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_instanceIds.png")
        write_label(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_color.png")
        write_photo(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png")
    samples = find_samples(DataConfig(dataset_mode="cityscapes", dataroot=str(tmp_path), use_instance=True))
    assert [(s.label.name, s.image.name, s.instance.name) for s in samples] == [
        ("aachen_000000_000019_gtFine_labelIds.png", "aachen_000000_000019_leftImg8bit.png",
         "aachen_000000_000019_gtFine_instanceIds.png"),
        ("bonn_000000_000019_gtFine_labelIds.png", "bonn_000000_000019_leftImg8bit.png",
         "bonn_000000_000019_gtFine_instanceIds.png")]


def test_missing_folder_names_it_and_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"train_label.*layout"):
        find_samples(DataConfig(dataset_mode="coco", dataroot=str(tmp_path)))
    with pytest.raises(DatasetError, match=r"gtFine.*labelIds"):
        find_samples(DataConfig(dataset_mode="cityscapes", dataroot=str(tmp_path)))
    with pytest.raises(DatasetError, match="label_dir"):
        find_samples(DataConfig(dataset_mode="custom"))
    with pytest.raises(DatasetError, match="dataset_mode"):
        find_samples(DataConfig(dataset_mode="pascal"))


# ---------------------------------------------------------------- pairing


def test_label_without_image_names_both_sides(tmp_path):
    make_custom(tmp_path, names=("a", "b"))
    write_photo(tmp_path / "images" / "zz.jpg")
    write_label(tmp_path / "labels" / "c.png")
    with pytest.raises(DatasetError) as error:
        find_samples(custom_config(tmp_path))
    message = str(error.value)
    assert "labels/c.png has no image" in message and "named c" in message
    assert str(tmp_path / "images") in message and "no_pairing_check" in message
    # Same names pass without complaint once the stray files pair up.
    (tmp_path / "images" / "zz.jpg").rename(tmp_path / "images" / "c.jpg")
    assert len(find_samples(custom_config(tmp_path))) == 3


def test_count_mismatch(tmp_path):
    make_custom(tmp_path, names=("a", "b"))
    write_label(tmp_path / "labels" / "c.png")
    with pytest.raises(DatasetError, match=r"3 label maps but 2 image.*labels/c\.png has no image"):
        find_samples(custom_config(tmp_path))
    # Position pairing needs equal counts, with or without the name check.
    with pytest.raises(DatasetError, match="3 label maps but 2 image"):
        find_samples(custom_config(tmp_path, no_pairing_check=True))


def test_name_mismatch_passes_with_no_pairing_check(tmp_path):
    for i, (label, image) in enumerate((("a", "x"), ("b", "y"))):
        write_label(tmp_path / "labels" / f"{label}.png")
        write_photo(tmp_path / "images" / f"{image}.jpg")
    with pytest.raises(DatasetError, match=r"labels/a\.png has no image.*no_pairing_check"):
        find_samples(custom_config(tmp_path))
    samples = find_samples(custom_config(tmp_path, no_pairing_check=True))
    assert [(s.label.stem, s.image.stem) for s in samples] == [("a", "x"), ("b", "y")]


def test_instance_pairing_checked(tmp_path):
    make_custom(tmp_path, names=("a", "b"), instances=True)
    (tmp_path / "instances" / "b.png").rename(tmp_path / "instances" / "q.png")
    with pytest.raises(DatasetError, match=r"labels/b\.png has no instance"):
        find_samples(custom_config(tmp_path, instance_dir=str(tmp_path / "instances"), use_instance=True))


# ---------------------------------------------------------------- file checks


def test_rgb_label_map_is_refused_naming_the_file(tmp_path):
    make_custom(tmp_path, names=("a",))
    write_photo(tmp_path / "labels" / "a.png")  # a colour picture saved as the label
    config = custom_config(tmp_path)
    with pytest.raises(DatasetError, match=r"labels/a\.png.*class-id map.*colour picture"):
        check_samples(find_samples(config), config, progress=False)


def test_size_mismatch_names_all_files(tmp_path):
    make_custom(tmp_path, names=("a",), instances=True)
    write_photo(tmp_path / "images" / "a.jpg", size=(W + 2, H))
    config = custom_config(tmp_path, instance_dir=str(tmp_path / "instances"), use_instance=True)
    samples = find_samples(config)
    with pytest.raises(DatasetError) as error:
        check_samples(samples, config, progress=False)
    message = str(error.value)
    for path, size in ((samples[0].label, "40×30"), (samples[0].image, "42×30"), (samples[0].instance, "40×30")):
        assert f"{path} is {size}" in message
    with pytest.raises(DatasetError, match="same size"):
        PairedDataset(samples, config)[0]


def test_out_of_range_id_names_file_id_and_count(tmp_path):
    make_custom(tmp_path, names=("a",))
    ids = np.ones((H, W), np.uint8)
    ids[:2, :3] = 9  # 6 pixels of class 9 for a 5-class model
    write_label(tmp_path / "labels" / "a.png", ids)
    config = custom_config(tmp_path)
    with pytest.raises(DatasetError, match=r"label id 9 \(6 pixels\) in .*labels/a\.png"):
        check_samples(find_samples(config), config, progress=False)


def test_dontcare_needs_contain_dontcare_label(tmp_path):
    make_custom(tmp_path, names=("a",))
    write_label(tmp_path / "labels" / "a.png", 255)
    config = custom_config(tmp_path)
    with pytest.raises(DatasetError, match="255.*contain_dontcare_label"):
        check_samples(find_samples(config), config, progress=False)
    config = replace(config, contain_dontcare_label=True)
    check_samples(find_samples(config), config, progress=False)


def test_unreadable_file_is_named(tmp_path):
    make_custom(tmp_path, names=("a",))
    (tmp_path / "images" / "a.jpg").write_bytes(b"not a jpeg")
    config = custom_config(tmp_path)
    dataset = PairedDataset(find_samples(config), config)
    with pytest.raises(DatasetError, match=r"images/a\.jpg: cannot read"):
        dataset[0]
    with pytest.raises(DatasetError, match=r"images/a\.jpg: cannot read"):
        check_samples(dataset.samples, config, progress=False)


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("mode, expected", [
    ("resize_and_crop", (32, 32)), ("crop", (32, 32)), ("scale_width", (64, 45)),
    ("scale_width_and_crop", (32, 32)), ("scale_shortside", (89, 64)),
    ("scale_shortside_and_crop", (32, 32)), ("fixed", (32, 16)), ("none", (64, 64))])
def test_preprocess_mode_output_size(mode, expected):
    config = DataConfig(preprocess_mode=mode, load_size=64, crop_size=32, aspect_ratio=2.0)
    for seed in range(5):
        params = sample_params((70, 50), config, random.Random(seed))
        for method, img in ((Image.BICUBIC, Image.new("RGB", (70, 50))), (Image.NEAREST, Image.new("L", (70, 50)))):
            out = apply_transform(img, params, config, method)
            assert out.size == expected and out.mode == img.mode


def test_none_mode_rounds_each_side_to_32():
    config = DataConfig(preprocess_mode="none")
    assert apply_transform(Image.new("RGB", (100, 50)), TransformParams((0, 0), False), config,
                           Image.BICUBIC).size == (96, 64)


def test_scale_shortside_scales_the_short_side_of_portraits():
    config = DataConfig(preprocess_mode="scale_shortside_and_crop", load_size=64, crop_size=64)
    for seed in range(10):
        params = sample_params((50, 70), config, random.Random(seed))
        assert params.crop_pos[0] == 0 and 0 <= params.crop_pos[1] <= 89 - 64
        assert apply_transform(Image.new("L", (50, 70)), params, config, Image.NEAREST).size == (64, 64)


def test_unknown_mode_and_oversized_crop_are_errors():
    with pytest.raises(ValueError, match="scale_shortside_and_crop"):
        sample_params((70, 50), DataConfig(preprocess_mode="resize_crop"), random.Random(0))
    config = DataConfig(preprocess_mode="crop", crop_size=64)
    with pytest.raises(ValueError, match=r"64×64 crop .* 70×50"):
        apply_transform(Image.new("RGB", (70, 50)), sample_params((70, 50), config, random.Random(0)),
                        config, Image.BICUBIC)


def test_nearest_keeps_label_ids():
    rng = np.random.default_rng(0)
    ids = rng.choice(np.array([0, 7, 42, 181, 255], np.uint8), size=(50, 70))
    config = DataConfig(preprocess_mode="resize_and_crop", load_size=93, crop_size=61)
    for mode, array in (("L", ids), ("I", ids.astype(np.int32) * 300), ("I;16", ids.astype(np.uint16) * 200)):
        img = Image.fromarray(array) if mode != "L" else Image.fromarray(array, mode="L")
        assert img.mode == mode
        out = np.array(apply_transform(img, sample_params(img.size, config, random.Random(1)), config,
                                       Image.NEAREST))
        assert set(np.unique(out)) <= set(np.unique(array)) and out.shape == (61, 61)


def _half_red_sample(root: Path) -> None:
    label = np.zeros((H, W), np.uint8)
    label[:, : W // 2] = 1
    photo = np.zeros((H, W, 3), np.uint8)
    photo[:, : W // 2] = (255, 0, 0)
    (root / "labels").mkdir(parents=True)
    (root / "images").mkdir()
    write_label(root / "labels" / "a.png", label)
    Image.fromarray(photo, mode="RGB").save(root / "images" / "a.png")


def test_flip_is_joint(tmp_path):
    _half_red_sample(tmp_path)
    config = custom_config(tmp_path, preprocess_mode="resize_and_crop", load_size=40, crop_size=24)
    dataset = PairedDataset(find_samples(config), config)
    flips = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        item = dataset[0]
        params = dataset.params(0, (W, H))
        flips.add(params.flip)
        red = item["image"][0] > 0.5
        assert torch.equal(red, item["label"][0] == 1)
        # The 40×30 → 40×40 resize keeps columns; crop column j holds source column x + j.
        expected = torch.arange(24) + params.crop_pos[0] < W // 2
        expected = expected.flip(0) if params.flip else expected
        assert torch.equal(red, expected.expand(24, 24))
    assert flips == {True, False}
    no_flip = PairedDataset(find_samples(config), replace(config, no_flip=True))
    for epoch in range(4):
        no_flip.set_epoch(epoch)
        assert torch.equal(no_flip[0]["image"][0] > 0.5, no_flip[0]["label"][0] == 1)


def test_augmentation_is_a_function_of_seed_epoch_index(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        write_label(tmp_path / "labels" / f"{name}.png", rng.integers(0, 5, (H, W)))
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{name}.png")
    config = custom_config(tmp_path, preprocess_mode="resize_and_crop", load_size=40, crop_size=16)
    samples = find_samples(config)
    first, second = PairedDataset(samples, config, seed=3), PairedDataset(samples, config, seed=3)
    first.set_epoch(5)
    second.set_epoch(5)
    a, b = first[1], second[1]
    assert all(torch.equal(a[k], b[k]) for k in ("label", "image")) and a["path"] == b["path"]
    crops = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        crops.add(first.params(1, (W, H)))
    assert len(crops) > 1


# ---------------------------------------------------------------- label conventions


def test_ade20k_shift(tmp_path):
    # 64×32: a multiple of 32, so preprocess_mode 'none' leaves it as it is.
    ids = np.zeros((32, 64), np.uint8)
    ids[:, 10:] = 1
    ids[:, 20:] = 150
    write_label(tmp_path / "annotations" / "training" / "ADE_train_00000001.png", ids)
    write_photo(tmp_path / "images" / "training" / "ADE_train_00000001.jpg", size=(64, 32))
    config = DataConfig(dataset_mode="ade20k", dataroot=str(tmp_path), label_nc=150, contain_dontcare_label=True,
                        preprocess_mode="none", no_flip=True)
    label = build_dataset(config)[0]["label"][0]
    assert label.dtype == torch.int64
    assert set(label[:, :10].unique().tolist()) == {150}
    assert set(label[:, 10:20].unique().tolist()) == {0}
    assert set(label[:, 20:].unique().tolist()) == {149}
    write_label(tmp_path / "annotations" / "training" / "ADE_train_00000001.png", 151, size=(64, 32))
    with pytest.raises(DatasetError, match="label id 151"):
        build_dataset(config)


def test_coco_dontcare_becomes_label_nc(tmp_path):
    ids = np.full((32, 64), 255, np.uint8)  # a multiple of 32: unchanged by preprocess_mode 'none'
    ids[:, :10] = 3
    write_label(tmp_path / "train_label" / "x.png", ids)
    write_photo(tmp_path / "train_img" / "x.jpg", size=(64, 32))
    config = DataConfig(dataset_mode="coco", dataroot=str(tmp_path), label_nc=182, contain_dontcare_label=True,
                        preprocess_mode="none", no_flip=True)
    item = build_dataset(config)[0]
    assert set(item["label"][0, :, :10].unique().tolist()) == {3}
    assert set(item["label"][0, :, 10:].unique().tolist()) == {182}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 64)
    assert "instance" not in item


# ---------------------------------------------------------------- defaults


def test_dataset_defaults():
    assert dataset_defaults("coco", True)["load_size"] == 286
    assert dataset_defaults("coco", False)["load_size"] == 256
    assert dataset_defaults("ade20k", True)["label_nc"] == 150
    assert dataset_defaults("cityscapes", True)["preprocess_mode"] == "fixed"
    assert dataset_defaults("custom", True)["label_nc"] == 13
    with pytest.raises(ValueError):
        dataset_defaults("pascal", True)
    fields = set(DataConfig.__dataclass_fields__)
    for mode in ("coco", "ade20k", "cityscapes", "custom"):
        known = {k: v for k, v in dataset_defaults(mode, True).items() if k in fields}
        replace(DataConfig(dataset_mode=mode), **known)  # every shared key is a valid DataConfig value


# ---------------------------------------------------------------- real COCO-Stuff samples


def test_real_coco_stuff_samples():
    if not COCO_SAMPLES.is_dir():
        pytest.skip(f"COCO-Stuff samples not found at {COCO_SAMPLES}")
    config = DataConfig(dataset_mode="coco", dataroot=str(COCO_SAMPLES), use_instance=True,
                        contain_dontcare_label=True, label_nc=182, load_size=286, crop_size=256)
    dataset = build_dataset(config, seed=1)
    assert len(dataset) == len(list((COCO_SAMPLES / "train_label").glob("*.png")))
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
        assert -1 <= float(item["image"].min()) and float(item["image"].max()) <= 1
        assert item["label"].shape == (1, 256, 256) and item["label"].dtype == torch.int64
        assert 0 <= int(item["label"].min()) and int(item["label"].max()) <= 182
        assert item["instance"].shape == (1, 256, 256) and item["instance"].dtype == torch.int64
        assert item["path"].endswith(".png") and "train_label" in item["path"]
