"""What the page offers for a model: its classes in named groups (the painting palette), the
background class the eraser paints, style presets, and random example layouts.

For a COCO-Stuff model (182 classes, the GauGAN colours) the landscape classes of
:mod:`spadegan.data.landscapes` come first, as the "Landscape" group, then the other stuff classes,
then the things; the 11 thing ids COCO never annotates (street sign, hat, shoe, ...) are left
out, since no model has seen them. Other palettes give one group of all their classes.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image

from ..palettes import COCO_STUFF, Palette

# COCO thing ids without annotations in COCO (kept in the id space by the official label map).
_UNANNOTATED_COCO = ("street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window", "desk",
                     "door", "blender", "hair brush")
_N_COCO_THINGS = 91
_BACKGROUND_BY_PALETTE = {"coco": "sky-other", "ade20k": "sky", "cityscapes": "sky"}


@dataclass(frozen=True)
class ClassEntry:
    id: int
    name: str
    color: str     # "#rrggbb"
    group: str


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def class_groups(palette: Palette, dontcare: bool) -> list[tuple[str, list[ClassEntry]]]:
    """(group name, classes) in display order, for the painting palette."""

    def entry(i: int, group: str) -> ClassEntry:
        return ClassEntry(i, palette.names[i], _hex(palette.colors[i]), group)

    groups: list[tuple[str, list[int]]]
    if palette is COCO_STUFF:
        from ..data.landscapes import CLASS_IDS

        landscape = list(CLASS_IDS)
        stuff = sorted((i for i in range(_N_COCO_THINGS, len(palette)) if i not in CLASS_IDS),
                       key=lambda i: palette.names[i])
        things = sorted((i for i in range(_N_COCO_THINGS) if palette.names[i] not in _UNANNOTATED_COCO),
                        key=lambda i: palette.names[i])
        groups = [("Landscape", landscape), ("Stuff", stuff), ("Things", things)]
    else:
        groups = [("Classes", list(range(len(palette))))]
    out = [(name, [entry(i, name) for i in ids]) for name, ids in groups]
    if dontcare and palette.dontcare_id is not None:
        out.append(("Other", [ClassEntry(palette.dontcare_id, "don't care (unlabeled)", "#000000", "Other")]))
    return out


def background_class(palette: Palette, requested: str | int | None = None) -> int:
    """The class the canvas starts with and the eraser paints: ``requested`` (a name or an id),
    else sky for the palettes that have it, else class 0."""
    if requested is None:
        name = _BACKGROUND_BY_PALETTE.get(palette.name)
        return palette.names.index(name) if name in palette.names else 0
    if isinstance(requested, int) or str(requested).isdigit():
        index = int(requested)
        if not 0 <= index < len(palette) and index != palette.dontcare_id:
            raise ValueError(f"background class {index} is not one of the model's {len(palette)} classes")
        return index
    if requested not in palette.names:
        raise ValueError(f"background class {requested!r} is not a class of the {palette.name} palette")
    return palette.names.index(requested)


def encode_ids(ids: np.ndarray) -> dict:
    """An H×W id map as JSON: ``{"height", "width", "dtype", "data"}`` with ``data`` the base64 of
    the row-major ids, uint8 when every id fits, else little-endian uint16."""
    ids = np.asarray(ids)
    dtype = "uint8" if ids.size == 0 or int(ids.max()) <= 255 else "uint16"
    raw = ids.astype("<u2" if dtype == "uint16" else np.uint8).tobytes()
    return {"height": int(ids.shape[0]), "width": int(ids.shape[1]), "dtype": dtype,
            "data": base64.b64encode(raw).decode("ascii")}


def decode_ids(payload: dict) -> np.ndarray:
    """The inverse of :func:`encode_ids`."""
    dtype = np.uint8 if payload["dtype"] == "uint8" else np.dtype("<u2")
    flat = np.frombuffer(base64.b64decode(payload["data"]), dtype=dtype)
    return flat.reshape(payload["height"], payload["width"]).astype(np.int64)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# -- style presets ----------------------------------------------------------------------------------

# name, time of day (None: any), season (None: any), scene kind of the layout
_LANDSCAPE_PRESETS = (
    ("summer day", "day", "summer", "valley"),
    ("autumn", "day", "autumn", "forest"),
    ("golden hour", "golden hour", "summer", "mountains"),
    ("sunset", "sunset", "summer", "coast"),
    ("dusk", "dusk", None, "sea"),
    ("winter", "day", "winter", "winter"),
    ("overcast", "overcast", "autumn", "meadow"),
)


@dataclass(frozen=True)
class Preset:
    name: str
    image: Image.Image   # RGB, a reference picture whose style the encoder reads
    description: str = ""


def _first(predicate, limit: int = 4000) -> int:
    for seed in range(limit):
        if predicate(seed):
            return seed
    return 0


def landscape_presets(size: tuple[int, int]) -> list[Preset]:
    """Style references rendered by the procedural landscapes (:mod:`spadegan.data.landscapes`) at
    ``size`` (height, width): a scene of a fitting kind under a fitting appearance, found by
    trying seeds in order (deterministic, a fraction of a second)."""
    from ..data.landscapes import generate_landscape, generate_layout, sample_appearance

    def has_scene(seed: int, scene: str) -> bool:
        return generate_layout(seed, (64, 64)).scene.get("kind") == scene

    def has_look(seed: int, time_of_day: str | None, season: str | None) -> bool:
        look = sample_appearance(seed)
        return (time_of_day is None or look["time_of_day"] == time_of_day) and (season is None or look["season"] == season)

    height, width = size
    presets = []
    for name, time_of_day, season, scene in _LANDSCAPE_PRESETS:
        layout_seed = _first(partial(has_scene, scene=scene), 200)
        look = _first(partial(has_look, time_of_day=time_of_day, season=season))
        sample = generate_landscape(layout_seed, (width, height), appearance_seed=look)
        appearance = sample.appearance
        presets.append(Preset(name, Image.fromarray(sample.image),
                              f"{scene} scene, {appearance['time_of_day']}, {appearance['season']}"))
    return presets


def random_layout(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A procedural landscape layout (COCO-Stuff ids) of ``size`` (height, width)."""
    from ..data.landscapes import generate_layout

    return generate_layout(int(seed), (size[1], size[0])).label.astype(np.int64)
