"""Class names and colours of the datasets: the one place where they live.

A :class:`Palette` ties a dataset's class names to the colours the official SPADE code uses to
draw its label maps (``util.labelcolormap`` / ``util.Colorize``), and converts both ways:
ids → colours (:meth:`Palette.colorize`, :func:`colorize_label_tensor` for image grids) and
colour-coded label images → ids (:meth:`Palette.ids_from_colors`).

Three palettes are built once at import: :data:`CITYSCAPES` (35 label ids 0..34),
:data:`ADE20K` (150 classes, 0-based after the official ``label - 1`` shift, don't-care 150)
and :data:`COCO_STUFF` (182 classes, ids 0..181 = COCO-Stuff ids 1..182, don't-care 255).
:func:`palette_for` picks one from the options ``dataset_mode`` and ``label_nc``.

COCO special colours. The official ``labelcolormap(182)`` overwrites five colours by name,
looking the name up with ``util.coco.id2label(i)``, which returns the COCO-Stuff label of id
``i + 1`` (its ``labelmap`` is 1-based, ``0: 'unlabeled'``). The official index ``i`` therefore
*is* our 0-based id, and the special colours land on: 105 clouds (170, 170, 170),
123 grass (29, 195, 49), 154 sea (54, 62, 167), 156 sky-other (95, 219, 255),
168 tree (140, 104, 47).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .semantics import (
    DONTCARE_ID,  # "unlabeled" in the official datasets; always drawn black
)

# -- colour maps ----------------------------------------------------------------------------------

# The official Cityscapes table (util.labelcolormap(35)), indexed by the 35 Cityscapes label ids.
_CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81),
    (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
    (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90),
    (153, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
    (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 142),
)

# The official labelcolormap(182) overrides these by class name (see the module docstring).
_COCO_SPECIAL_COLORS: dict[str, tuple[int, int, int]] = {
    "sea": (54, 62, 167),
    "sky-other": (95, 219, 255),
    "tree": (140, 104, 47),
    "clouds": (170, 170, 170),
    "grass": (29, 195, 49),
}


def _bit_interleaved_colormap(n: int) -> np.ndarray:
    """The PASCAL-VOC-style colour map of the official code, vectorized over ids.

    Class ``i`` uses ``id = i + 1`` (the official "let's give 0 a color"), so no class is black.
    Round ``j`` (0..6) puts bits 0, 1, 2 of ``id`` at bit ``7 - j`` of r, g, b, then drops them.
    The official code XORs the bits into r, g, b; as every bit lands on a fresh position XOR is OR.
    """
    ids = np.arange(1, n + 1, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for j in range(7):
        for channel in range(3):
            rgb[:, channel] |= ((ids >> channel) & 1) << (7 - j)
        ids >>= 3
    return rgb.astype(np.uint8)


def labelcolormap(n: int) -> np.ndarray:
    """n×3 uint8 colours of the official ``util.labelcolormap(n)``.

    n == 35: the Cityscapes table; otherwise the bit-interleaving map, and for n == 182 the five
    COCO-Stuff special colours (sea, sky-other, tree, clouds, grass) on top.
    """
    if n < 0:
        raise ValueError(f"labelcolormap needs n >= 0, got {n}")
    if n == 35:
        return np.array(_CITYSCAPES_COLORS, dtype=np.uint8)
    cmap = _bit_interleaved_colormap(n)
    if n == 182:
        for name, color in _COCO_SPECIAL_COLORS.items():
            cmap[_COCO_STUFF_NAMES.index(name)] = color
    return cmap


# -- the palette ----------------------------------------------------------------------------------

def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) colours → (...,) int32 keys ``r << 16 | g << 8 | b``, one int per colour."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack_rgb(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def _as_rgb_array(rgb: np.ndarray) -> np.ndarray:
    """Validate a colour image: (..., 3), integer values in [0, 255]."""
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"a colour label image must be H×W×3 RGB, got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype.kind not in "iuf":
        raise ValueError(f"a colour label image must be numeric, got dtype {rgb.dtype}")
    if rgb.dtype.kind == "f" and not np.array_equal(rgb, np.rint(rgb)):
        raise ValueError("a colour label image must hold integer RGB values")
    if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
        raise ValueError(f"RGB values must lie in [0, 255], got [{rgb.min()}, {rgb.max()}]")
    return rgb.astype(np.uint8)


def _as_id_array(label: np.ndarray | torch.Tensor) -> np.ndarray:
    """Label ids as int64 numpy; float maps (as loaded by ToTensor × 255) are rounded."""
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    label = np.asarray(label)
    if label.dtype.kind == "f":
        label = np.rint(label)
    return label.astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make value equality/hash ambiguous
class Palette:
    """Names and colours of a dataset's classes, indexed by class id.

    ``colors`` is N×3 uint8 (stored read-only). ``dontcare_id`` is the id of "unlabeled" pixels
    (``None`` where the dataset has none); it is drawn black, like 255 and any id outside [0, N).
    """

    name: str
    names: tuple[str, ...]
    colors: np.ndarray
    dontcare_id: int | None
    # Lookup tables derived once from the fields above.
    _lut: np.ndarray = field(init=False, repr=False)        # (N+1)×3, last row black
    _keys: np.ndarray = field(init=False, repr=False)       # sorted packed colours
    _key_ids: np.ndarray = field(init=False, repr=False)    # class id of each key

    def __post_init__(self) -> None:
        names = tuple(self.names)
        colors = np.array(self.colors, dtype=np.uint8)  # a private copy
        if colors.shape != (len(names), 3):
            raise ValueError(f"palette {self.name!r}: colors must be {len(names)}×3, "
                             f"got shape {colors.shape}")
        colors.setflags(write=False)
        lut = np.concatenate([colors, np.zeros((1, 3), dtype=np.uint8)])
        lut.setflags(write=False)
        keys, key_ids = self._color_index(colors)
        for attr, value in (("names", names), ("colors", colors), ("_lut", lut),
                            ("_keys", keys), ("_key_ids", key_ids)):
            object.__setattr__(self, attr, value)

    def _color_index(self, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique packed colours and the id each one maps back to.

        np.unique's ``return_index`` gives the first occurrence, i.e. the lowest id among the
        classes sharing a colour. Black then goes to the don't-care id where there is one,
        because colorize draws don't-care pixels black.
        """
        keys, first = np.unique(_pack_rgb(colors), return_index=True)
        key_ids = first.astype(np.int64)
        if self.dontcare_id is not None:
            if keys.size and keys[0] == 0:  # black is the smallest key when present
                key_ids[0] = self.dontcare_id
            else:
                keys = np.concatenate([[0], keys]).astype(keys.dtype)
                key_ids = np.concatenate([[self.dontcare_id], key_ids])
        return keys, key_ids

    def __len__(self) -> int:
        return len(self.names)

    def _black_mask(self, ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Ids drawn black: outside [0, N), 255, and the don't-care id."""
        mask = (ids < 0) | (ids >= len(self)) | (ids == DONTCARE_ID)
        if self.dontcare_id is not None:
            mask = mask | (ids == self.dontcare_id)
        return mask

    def colorize(self, label: np.ndarray | torch.Tensor) -> np.ndarray:
        """H×W class ids (any shape) → H×W×3 uint8 colours; don't-care, 255 and ids ≥ N are black."""
        ids = _as_id_array(label)
        index = np.where(self._black_mask(ids), len(self), ids)
        return self._lut[index]

    def ids_from_colors(self, rgb: np.ndarray, source: str | None = None) -> np.ndarray:
        """H×W×3 colour-coded label image → H×W int64 class ids, exactly.

        Every pixel must carry a palette colour. A colour several classes share (e.g. Cityscapes
        pole/polegroup, car/license plate, the five black ids) maps to the lowest of their ids.
        Black maps to the don't-care id when the palette has one (it is how colorize draws
        don't-care pixels); without one, black is accepted only if a class has it.
        Raises ``ValueError`` naming an unknown colour as (r, g, b), its pixel count and
        ``source``.
        """
        rgb = _as_rgb_array(rgb)
        packed = _pack_rgb(rgb)
        # Sorting the distinct colours of the image, not its pixels, keeps the lookup cheap.
        uniq, inverse = np.unique(packed.ravel(), return_inverse=True)
        pos = np.minimum(np.searchsorted(self._keys, uniq), max(len(self._keys) - 1, 0))
        known = (self._keys[pos] == uniq) if len(self._keys) else np.zeros(uniq.shape, bool)
        if not known.all():
            counts = np.bincount(inverse.ravel(), minlength=len(uniq))
            raise self._unknown_colors_error(uniq[~known], counts[~known], source)
        return self._key_ids[pos][inverse.ravel()].reshape(packed.shape)

    def _unknown_colors_error(self, keys: np.ndarray, counts: np.ndarray,
                              source: str | None) -> ValueError:
        order = np.argsort(-counts, kind="stable")  # the most frequent offender first
        shown = ", ".join(f"{_unpack_rgb(int(keys[i]))} ({int(counts[i])} pixels)"
                          for i in order[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        where = f" in {source}" if source else ""
        return ValueError(f"colour label image{where} holds {len(keys)} colour(s) that are not "
                          f"in the {self.name} palette: {shown}{more}")

    def lut_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(N+1)×3 float colours in [-1, 1], last row black: the table behind colorize_label_tensor."""
        return torch.from_numpy(self._lut.astype(np.float32) / 127.5 - 1.0).to(device)


# -- class names ----------------------------------------------------------------------------------

_CITYSCAPES_NAMES: tuple[str, ...] = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic",
    "ground", "road", "sidewalk", "parking", "rail track", "building", "wall", "fence",
    "guard rail", "bridge", "tunnel", "pole", "polegroup", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "caravan",
    "trailer", "train", "motorcycle", "bicycle", "license plate",
)

# ADE20K SceneParsing (objectInfo150) first names, in official order; id = official label - 1.
_ADE20K_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)

# COCO-Stuff ids 1..182 (official labels, as in SPADE's util/coco.py); id = COCO-Stuff id - 1.
# The 91 "thing" ids keep the 11 ids COCO never annotates (street sign, hat, shoe, ...).
_COCO_THING_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window",
    "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
)
_COCO_STUFF_CLASS_NAMES: tuple[str, ...] = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
_COCO_STUFF_NAMES: tuple[str, ...] = _COCO_THING_NAMES + _COCO_STUFF_CLASS_NAMES

assert len(_CITYSCAPES_NAMES) == len(_CITYSCAPES_COLORS) == 35
assert len(_ADE20K_NAMES) == 150
assert len(_COCO_THING_NAMES) == 91 and len(_COCO_STUFF_CLASS_NAMES) == 91
assert len(_COCO_STUFF_NAMES) == 182

# -- the datasets' palettes -----------------------------------------------------------------------

CITYSCAPES = Palette("cityscapes", _CITYSCAPES_NAMES, labelcolormap(35), dontcare_id=None)
ADE20K = Palette("ade20k", _ADE20K_NAMES, labelcolormap(150), dontcare_id=150)
COCO_STUFF = Palette("coco", _COCO_STUFF_NAMES, labelcolormap(182), dontcare_id=DONTCARE_ID)

_BY_DATASET_MODE: dict[str, Palette] = {"cityscapes": CITYSCAPES, "ade20k": ADE20K,
                                        "coco": COCO_STUFF}


@lru_cache(maxsize=None)
def _generic_palette(label_nc: int) -> Palette:
    """'class 0'.. names and the official labelcolormap(label_nc) colours, no don't-care id."""
    names = tuple(f"class {i}" for i in range(label_nc))
    return Palette(f"generic-{label_nc}", names, labelcolormap(label_nc), dontcare_id=None)


def known_palette(name: str) -> Palette | None:
    """The palette of an official data set by its dataset mode (coco, ade20k, cityscapes), or None."""
    return _BY_DATASET_MODE.get(name)


def palette_for(dataset_mode: str, label_nc: int) -> Palette:
    """The palette for the options ``--dataset_mode`` / ``--label_nc``.

    coco / ade20k / cityscapes give their dataset's palette when label_nc matches its class
    count; any other mode ('custom', ...) or a mismatching label_nc gives a generic palette
    with the colours the official code would draw (labelcolormap(label_nc)).
    """
    palette = _BY_DATASET_MODE.get(dataset_mode)
    if palette is not None and len(palette) == label_nc:
        return palette
    return _generic_palette(label_nc)


def colorize_label_tensor(label: torch.Tensor, palette: Palette) -> torch.Tensor:
    """N×1×H×W, N×H×W or H×W class ids → N×3×H×W float colours in [-1, 1] (H×W gives N = 1).

    Same colours as :meth:`Palette.colorize`, scaled like the networks' images so label maps
    can sit next to them in a grid. Stays on the label's device.
    """
    if label.dim() == 2:
        label = label[None]
    elif label.dim() == 4 and label.shape[1] == 1:
        label = label[:, 0]
    elif label.dim() != 3:
        raise ValueError(f"label must be H×W, N×H×W or N×1×H×W, got shape {tuple(label.shape)}")
    ids = label.round().long() if label.is_floating_point() else label.long()
    index = torch.where(palette._black_mask(ids), torch.full_like(ids, len(palette)), ids)
    return palette.lut_tensor(label.device)[index].permute(0, 3, 1, 2).contiguous()


__all__ = ["ADE20K", "CITYSCAPES", "COCO_STUFF", "DONTCARE_ID", "Palette", "colorize_label_tensor",
           "labelcolormap", "palette_for"]


# -- a data set's own palette: read from a labelling tool's file, saved beside the data ----------

PALETTE_FILE = "palette.json"  # beside a converted data set: its classes' names and colours


def parse_color(value, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if re.fullmatch(r"[0-9a-fA-F]{6}", text):
            return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
        parts = re.split(r"[,\s]+", value.strip())
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        rgb = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"{where}: colour {value!r}: expected R,G,B (0-255 each) or #rrggbb")
    return rgb  # type: ignore[return-value]


def read_palette_file(path: str | os.PathLike) -> Palette:
    """A data set's classes from a labelling tool's palette file, in file order (class id i is
    the i-th entry, or the entry's ``id``):

    - JSON: a list of ``{"name": ..., "color": [r, g, b] | "#rrggbb"[, "id": i]}``, or an object
      ``{name: color}`` (our ``palette.json`` is the first form);
    - text, one class per line: ``r g b name`` (e.g. exported colour lists) or CVAT's
      ``labelmap.txt`` lines ``name:r,g,b::``; lines starting with ``#`` are comments.

    ``ValueError`` naming the file and line for anything else; two classes may not share a colour."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read it as a palette file ({error})") from None
    entries: list[tuple[int | None, str, tuple[int, int, int]]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        items = [{"name": k, "color": v} for k, v in data.items()] if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a list of {{name, color}} entries or a {{name: color}} object")
        for n, item in enumerate(items):
            where = f"{path}, entry {n}"
            if not isinstance(item, dict) or "name" not in item or "color" not in item:
                raise ValueError(f"{where}: expected {{\"name\": ..., \"color\": [r, g, b]}}, got {item!r}")
            index = item.get("id")
            if index is not None and (not isinstance(index, int) or index < 0):
                raise ValueError(f"{where}: id {index!r}: expected a class id ≥ 0")
            entries.append((index, str(item["name"]), parse_color(item["color"], where)))
    else:
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}, line {n}"
            if ":" in line:  # CVAT: name:r,g,b:parts:actions
                name, _, rest = line.partition(":")
                entries.append((None, name.strip(), parse_color(rest.split(":", 1)[0], where)))
                continue
            parts = line.split(maxsplit=3)
            if len(parts) < 4:
                raise ValueError(f"{where}: {raw.strip()!r}: expected 'r g b name' or 'name:r,g,b::'")
            entries.append((None, parts[3].strip(), parse_color(parts[:3], where)))
    if not entries:
        raise ValueError(f"{path}: no classes in it")
    if any(index is not None for index, _, _ in entries):
        if not all(index is not None for index, _, _ in entries):
            raise ValueError(f"{path}: give an id to every entry or to none")
        ids = [index for index, _, _ in entries]
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"{path}: the ids must be 0..{len(ids) - 1}, each once; got {sorted(ids)}")
        entries.sort(key=lambda e: e[0])
    seen: dict[tuple[int, int, int], str] = {}
    for _, name, rgb in entries:
        if rgb in seen:
            raise ValueError(f"{path}: {seen[rgb]!r} and {name!r} have the same colour {rgb}")
        seen[rgb] = name
    return Palette(path.stem, tuple(name for _, name, _ in entries),
                   np.array([rgb for _, _, rgb in entries], dtype=np.uint8), dontcare_id=None)


def palette_entries(palette: Palette) -> list[dict]:
    """``palette`` as JSON-able entries ``{"id", "name", "color"}`` (palette.json, checkpoints)."""
    return [{"id": i, "name": name, "color": [int(c) for c in palette.colors[i]]}
            for i, name in enumerate(palette.names)]


def palette_from_entries(name: str, entries: list[dict], dontcare_id: int | None) -> Palette:
    """The palette :func:`palette_entries` describes (ids 0..N-1 in order)."""
    ordered = sorted(entries, key=lambda e: e["id"])
    if [e["id"] for e in ordered] != list(range(len(ordered))):
        raise ValueError(f"palette {name!r}: ids must be 0..{len(ordered) - 1}")
    return Palette(name, tuple(str(e["name"]) for e in ordered),
                   np.array([parse_color(e["color"], name) for e in ordered], dtype=np.uint8), dontcare_id)


def write_palette_file(palette: Palette, path: str | os.PathLike) -> None:
    """``palette`` as :func:`read_palette_file` reads it back (JSON, ids in order)."""
    from .atomic import atomic_write

    entries = palette_entries(palette)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(entries, indent=1) + "\n"), durable=False)
