"""Tests for spadegan.palettes: class names, official colours, and ids ↔ colours conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spadegan.palettes import (ADE20K, CITYSCAPES, COCO_STUFF, Palette, colorize_label_tensor,
                            labelcolormap, palette_for)

PALETTES = [CITYSCAPES, ADE20K, COCO_STUFF]


def _shared_color_ids(palette: Palette) -> set[int]:
    """Ids whose colour another class also has."""
    packed = [tuple(c) for c in palette.colors.tolist()]
    return {i for i, c in enumerate(packed) if packed.count(c) > 1}


def test_class_counts() -> None:
    assert (len(CITYSCAPES), len(ADE20K), len(COCO_STUFF)) == (35, 150, 182)
    for palette in PALETTES:
        assert palette.colors.shape == (len(palette), 3) and palette.colors.dtype == np.uint8
        assert len(set(palette.names)) == len(palette)


def test_known_names() -> None:
    assert CITYSCAPES.names[7] == "road" and CITYSCAPES.names[26] == "car"
    assert CITYSCAPES.names[34] == "license plate"
    assert ADE20K.names[0] == "wall" and ADE20K.names[12] == "person" and ADE20K.names[149] == "flag"
    assert COCO_STUFF.names[0] == "person" and COCO_STUFF.names[90] == "hair brush"
    assert COCO_STUFF.names[91] == "banner" and COCO_STUFF.names[181] == "wood"
    # COCO-Stuff id - 1, as in the official labels (sky-other is 157, tree 169 there).
    special = {name: COCO_STUFF.names.index(name)
               for name in ("clouds", "grass", "sea", "sky-other", "tree")}
    assert special == {"clouds": 105, "grass": 123, "sea": 154, "sky-other": 156, "tree": 168}


def test_known_colors() -> None:
    assert tuple(CITYSCAPES.colors[7]) == (128, 64, 128)
    assert tuple(CITYSCAPES.colors[23]) == (70, 130, 180)
    assert (CITYSCAPES.colors[:5] == 0).all()
    expected = {"sky-other": (95, 219, 255), "sea": (54, 62, 167), "tree": (140, 104, 47),
                "clouds": (170, 170, 170), "grass": (29, 195, 49)}
    for name, color in expected.items():
        assert tuple(COCO_STUFF.colors[COCO_STUFF.names.index(name)]) == color, name
    # Away from the special classes COCO uses the plain bit-interleaving map.
    assert tuple(COCO_STUFF.colors[0]) == (128, 0, 0)
    assert (ADE20K.colors == labelcolormap(150)).all()


def _hand_color(class_id: int) -> tuple[int, int, int]:
    """Bit-interleaving written out for small ids: bits 0/1/2 of id+1 → bit 7 of r/g/b, bits
    3/4/5 → bit 6, and so on."""
    value = class_id + 1
    rgb = [0, 0, 0]
    for shift in (7, 6, 5):
        for channel in range(3):
            if value & (1 << channel):
                rgb[channel] += 1 << shift
        value >>= 3
    return tuple(rgb)


def test_labelcolormap_bit_interleaving() -> None:
    cmap = labelcolormap(10)
    assert [tuple(c) for c in cmap[:3].tolist()] == [(128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert tuple(cmap[7]) == (64, 0, 0)  # id 8: its bit 3 lands on bit 6 of red
    assert [tuple(c) for c in cmap.tolist()] == [_hand_color(i) for i in range(10)]
    assert tuple(labelcolormap(200)[72]) == (224, 0, 0)  # id 73 = 0b001_001_001: red bits 7, 6, 5
    assert (labelcolormap(35) == CITYSCAPES.colors).all()


@pytest.mark.parametrize("palette", PALETTES, ids=lambda p: p.name)
def test_round_trip(palette: Palette) -> None:
    rng = np.random.default_rng(0)
    shared = _shared_color_ids(palette)
    unique_ids = np.array([i for i in range(len(palette)) if i not in shared])
    label = rng.choice(unique_ids, size=(37, 41))
    rgb = palette.colorize(label)
    assert rgb.shape == (37, 41, 3) and rgb.dtype == np.uint8
    assert np.array_equal(palette.ids_from_colors(rgb), label)


def test_shared_colors_map_to_lowest_id() -> None:
    label = np.array([[0, 1, 2, 3, 4], [17, 18, 26, 34, 7]])
    ids = CITYSCAPES.ids_from_colors(CITYSCAPES.colorize(label))
    assert ids.tolist() == [[0, 0, 0, 0, 0], [17, 17, 26, 26, 7]]


def test_black_is_dontcare() -> None:
    for palette, dontcare in ((ADE20K, 150), (COCO_STUFF, 255)):
        label = np.array([[dontcare, 255, 3], [len(palette) + 7, -1, 0]])
        rgb = palette.colorize(label)
        assert (rgb[0, :2] == 0).all() and (rgb[1, :2] == 0).all()
        assert (rgb[0, 2] != 0).any() and (rgb[1, 2] != 0).any()
        assert palette.ids_from_colors(rgb).tolist() == [[dontcare, dontcare, 3],
                                                         [dontcare, dontcare, 0]]


def test_colorize_accepts_tensors() -> None:
    label = torch.tensor([[7.0, 23.0], [255.0, 26.0]])
    rgb = CITYSCAPES.colorize(label)
    assert [tuple(c) for c in rgb.reshape(-1, 3).tolist()] == [
        (128, 64, 128), (70, 130, 180), (0, 0, 0), (0, 0, 142)]


def test_unknown_color_error() -> None:
    rgb = COCO_STUFF.colorize(np.zeros((4, 5), dtype=np.int64))
    rgb[0, :3] = (1, 2, 3)
    with pytest.raises(ValueError) as err:
        COCO_STUFF.ids_from_colors(rgb, source="maps/a.png")
    message = str(err.value)
    assert "(1, 2, 3)" in message and "3 pixels" in message and "maps/a.png" in message


def test_generic_palette_rejects_black() -> None:
    palette = palette_for("custom", 12)
    with pytest.raises(ValueError, match=r"\(0, 0, 0\) \(6 pixels\)"):
        palette.ids_from_colors(np.zeros((2, 3, 3), dtype=np.uint8))


def test_large_map_converts() -> None:
    # Exercises the vectorized path on a full-size map; timings are not asserted.
    label = np.random.default_rng(1).integers(0, 182, size=(1024, 1024))
    assert np.array_equal(COCO_STUFF.ids_from_colors(COCO_STUFF.colorize(label)), label)


def test_palette_for() -> None:
    assert palette_for("coco", 182) is COCO_STUFF
    assert palette_for("ade20k", 150) is ADE20K
    assert palette_for("cityscapes", 35) is CITYSCAPES
    generic = palette_for("custom", 13)
    assert len(generic) == 13 and generic.names[12] == "class 12" and generic.dontcare_id is None
    assert (generic.colors == labelcolormap(13)).all()
    mismatch = palette_for("ade20k", 20)
    assert mismatch is not ADE20K and len(mismatch) == 20


def test_colorize_label_tensor() -> None:
    label = torch.tensor([[[[7, 23], [255, 26]]], [[[0, 11], [11, 34]]]])
    out = colorize_label_tensor(label, CITYSCAPES)
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    expected = np.stack([CITYSCAPES.colorize(label[i, 0]) for i in range(2)])
    back = ((out.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    assert np.array_equal(back, expected)
    single = colorize_label_tensor(label[0, 0].float(), CITYSCAPES)
    assert torch.equal(single, out[:1])
    with pytest.raises(ValueError):
        colorize_label_tensor(torch.zeros(2, 3, 4, 4), CITYSCAPES)


def test_colors_are_read_only() -> None:
    with pytest.raises(ValueError):
        COCO_STUFF.colors[0] = (1, 2, 3)
