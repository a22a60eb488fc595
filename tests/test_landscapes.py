"""Tests for spadegan.data.landscapes: determinism, label conventions, textures, the data set writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spadegan.cli import main as cli_main
from spadegan.config import DataConfig
from spadegan.data.datasets import build_dataset
from spadegan.data.landscapes import (CLASS_IDS, CLASS_NAMES, FOG, GRASS, MAX_TREES, SEA, TREE,
                                   generate_landscape, generate_layout, write_dataset)
from spadegan.palettes import COCO_STUFF

SIZE = (64, 64)


def test_class_ids_are_the_coco_stuff_names() -> None:
    assert CLASS_NAMES[156] == "sky-other" and CLASS_NAMES[105] == "clouds" and CLASS_NAMES[154] == "sea"
    assert CLASS_NAMES[123] == "grass" and CLASS_NAMES[168] == "tree"
    assert sorted(CLASS_NAMES.values()) == sorted(
        ["sky-other", "clouds", "mountain", "hill", "rock", "sea", "river", "sand", "grass", "tree",
         "bush", "flower", "snow", "dirt", "fog"])
    assert all(COCO_STUFF.names[i] == name for i, name in CLASS_NAMES.items())


def test_same_seed_same_sample_and_seeds_differ() -> None:
    a, b = generate_landscape(7, SIZE), generate_landscape(7, SIZE)
    assert np.array_equal(a.label, b.label) and np.array_equal(a.instance, b.instance)
    assert np.array_equal(a.image, b.image) and a.appearance == b.appearance
    c = generate_landscape(8, SIZE)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.label, c.label)
    # A tuple seed (data set seed, index) is its own stream, not the same as either part.
    assert not np.array_equal(generate_landscape((7, 0), SIZE).image, a.image)


def test_shapes_dtypes_and_sizes() -> None:
    for size in [(64, 64), (96, 48), 80]:
        width, height = (size, size) if isinstance(size, int) else size
        sample = generate_landscape(3, size)
        assert sample.label.shape == (height, width) and sample.label.dtype == np.uint8
        assert sample.instance.shape == (height, width) and sample.instance.dtype == np.uint8
        assert sample.image.shape == (height, width, 3) and sample.image.dtype == np.uint8
    assert generate_landscape(3).label.shape == (256, 256)


def test_labels_are_the_allowed_classes_and_every_class_appears() -> None:
    seen: set[int] = set()
    for seed in range(30):
        sample = generate_landscape(seed, SIZE)
        ids = set(np.unique(sample.label).tolist())
        assert ids <= set(CLASS_IDS), f"seed {seed}: unexpected ids {ids - set(CLASS_IDS)}"
        assert 255 not in ids  # every pixel gets a class
        seen |= ids
    missing = {CLASS_NAMES[i] for i in set(CLASS_IDS) - seen}
    assert not missing, f"classes never drawn in 30 samples: {missing}"


def test_instances_trees_are_objects_stuff_is_its_class() -> None:
    trees_seen = 0
    for seed in range(30):
        sample = generate_landscape(seed, (128, 128))
        stuff = sample.label != TREE
        assert np.array_equal(sample.instance[stuff], sample.label[stuff])
        tree_ids = np.unique(sample.instance[~stuff])
        assert np.all((tree_ids >= 1) & (tree_ids <= MAX_TREES))
        trees_seen = max(trees_seen, tree_ids.size)
    assert trees_seen >= 5  # some scene holds several trees, each with its own id


def test_same_layout_other_appearance() -> None:
    a = generate_landscape(11, SIZE)
    b = generate_landscape(11, SIZE, appearance_seed=1234)
    assert np.array_equal(a.label, b.label) and np.array_equal(a.instance, b.instance)
    assert a.appearance != b.appearance
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 5


def _local_std(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean over 4×4 blocks entirely of ``mask`` of the std of the luminance inside the block."""
    gray = image.astype(np.float32).mean(axis=2)
    h, w = (gray.shape[0] // 4) * 4, (gray.shape[1] // 4) * 4
    blocks = gray[:h, :w].reshape(h // 4, 4, w // 4, 4).transpose(0, 2, 1, 3).reshape(h // 4, w // 4, 16)
    inside = mask[:h, :w].reshape(h // 4, 4, w // 4, 4).all(axis=(1, 3))
    return float(blocks[inside].std(axis=1).mean()) if inside.any() else float("nan")


def test_textures_are_not_flat_colour() -> None:
    found = {GRASS: [], SEA: [], TREE: []}
    for seed in range(40):
        sample = generate_landscape(seed, (128, 128))
        for cls in found:
            std = _local_std(sample.image, sample.label == cls)
            if not np.isnan(std):
                found[cls].append(std)
    for cls, stds in found.items():
        assert stds, f"no {CLASS_NAMES[cls]} region found"
        # 8-bit luminance: a flat fill gives ~0; the textures give several levels within 4 pixels.
        assert np.median(stds) > 2.0, f"{CLASS_NAMES[cls]} local std {np.median(stds):.2f}"


def test_fog_is_translucent_and_in_the_distance() -> None:
    for seed in range(200):
        layout = generate_layout(seed, SIZE)
        if (layout.label == FOG).any():
            rows = np.nonzero((layout.label == FOG).any(axis=1))[0]
            assert rows.min() >= layout.horizon - 0.2 * SIZE[1]
            return
    pytest.fail("no fog in 200 layouts")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_cli_writes_a_dataset_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "landscapes"
    assert cli_main(["landscapes", "--out", str(out), "--count", "5", "--size", "64x32",
                     "--seed", "2", "--workers", "1"]) == 0
    files = _files(out)
    assert len(files) == 15 and not list(out.rglob("*.tmp"))
    config = DataConfig(dataset_mode="custom", label_dir=str(out / "train_label"),
                        image_dir=str(out / "train_img"), instance_dir=str(out / "train_inst"),
                        use_instance=True, label_nc=182, preprocess_mode="none", no_flip=True)
    dataset = build_dataset(config)
    assert len(dataset) == 5
    item = dataset[3]
    sample = generate_landscape((2, 3), (64, 32))
    assert item["label"].shape == (1, 32, 64) and item["image"].shape == (3, 32, 64)
    assert torch.equal(item["label"][0], torch.from_numpy(sample.label.astype(np.int64)))
    assert torch.equal(item["instance"][0], torch.from_numpy(sample.instance.astype(np.int64)))
    # The coco mode reads the same folders.
    coco = build_dataset(DataConfig(dataset_mode="coco", dataroot=str(out), use_instance=True,
                                    contain_dontcare_label=True, preprocess_mode="none", no_flip=True))
    assert len(coco) == 5


def test_workers_give_the_same_files_and_reruns_resume(tmp_path: Path) -> None:
    write_dataset(tmp_path / "one", 6, (48, 40), seed=5, workers=1, progress=False)
    write_dataset(tmp_path / "two", 6, (48, 40), seed=5, workers=2, progress=False)
    one = _files(tmp_path / "one")
    assert one == _files(tmp_path / "two") and len(one) == 18
    # A rerun with more samples writes only the new ones; another seed is refused.
    assert write_dataset(tmp_path / "one", 8, (48, 40), seed=5, progress=False) == 2
    with pytest.raises(ValueError, match="seed"):
        write_dataset(tmp_path / "one", 8, (48, 40), seed=6, progress=False)
    assert write_dataset(tmp_path / "one", 2, (48, 40), seed=6, overwrite=True, progress=False) == 2
    assert len(_files(tmp_path / "one")) == 6
