"""Colour-coded masks → a data set of class-id maps (``spadegan dataset convert``).

Labelling tools export masks in colours; SPADE reads class ids. Each mask colour is looked up in
a palette (a file the tool exports, or a known data set's colours) exactly: a colour that is not
in it is an error naming the file, the colour and its pixel count, never a guess. Where the
unknown pixels sit on the borders between classes, the error says so, since that is what a
mask drawn or saved with anti-aliasing looks like; ``max_distance`` then maps each such colour to
the nearest palette colour within that distance (RGB Euclidean), and no further.

The result is a ``custom``-layout data set (``train_label/`` 8-bit id maps, 255 for don't-care;
``train_img/`` the photos; ``palette.json``), written in a folder beside the target and renamed
into place when complete: it appears whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spadegan.data.datasets import IMAGE_SUFFIXES
from spadegan.palettes import PALETTE_FILE, Palette, write_palette_file

DONTCARE_FILE_ID = 255  # don't-care in the id maps, as the custom layout reads it


class ConvertError(ValueError):
    """A mask or photo that cannot be converted; the message names the file."""


@dataclass(frozen=True)
class ConvertResult:
    out: Path
    pairs: int
    approximated_pixels: int  # pixels mapped to a palette colour within max_distance


def _pairs(masks: Path, images: Path) -> list[tuple[Path, Path]]:
    for folder, what in ((masks, "masks"), (images, "photos")):
        if not folder.is_dir():
            raise ConvertError(f"{folder}: no such folder ({what})")
    photos = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    mask_files = sorted(p for p in masks.iterdir() if p.suffix.lower() == ".png")
    if not mask_files:
        raise ConvertError(f"{masks}: no PNG masks in it")
    missing = [m.name for m in mask_files if m.stem not in photos]
    if missing:
        raise ConvertError(f"{len(missing)} masks have no photo of the same name in {images} (the first: "
                           f"{missing[0]}; photos may be {', '.join(IMAGE_SUFFIXES)})")
    return [(m, photos[m.stem]) for m in mask_files]


def _on_borders(unknown: np.ndarray, known_ids: np.ndarray) -> float:
    """The share of ``unknown`` pixels whose 3×3 neighbourhood holds two or more known classes."""
    ids = np.where(unknown, -1, known_ids)
    padded = np.pad(ids, 1, mode="edge")
    h, w = ids.shape
    windows = np.stack([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])
    known = windows >= 0
    big = np.iinfo(np.int64).max
    low = np.where(known, windows, big).min(0)
    high = np.where(known, windows, -1).max(0)
    borders = (low != big) & (high > low)
    return float(borders[unknown].mean()) if unknown.any() else 0.0


def mask_to_ids(rgb: np.ndarray, palette: Palette, source: str, dontcare: tuple[int, int, int] | None = None,
                max_distance: float | None = None) -> tuple[np.ndarray, int]:
    """H×W×3 mask → (H×W uint8 ids, pixels mapped by nearest colour). ``dontcare``: the colour
    written as 255."""
    colours = palette.colors.astype(np.int64)
    table: dict[tuple[int, ...], int] = {}
    if dontcare is not None:
        table[tuple(dontcare)] = DONTCARE_FILE_ID
    for i, colour in enumerate(colours.tolist()):
        table.setdefault(tuple(colour), i)  # a colour several classes share: the lowest id
    flat = rgb.reshape(-1, 3).astype(np.int64)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse = np.unique(packed, return_inverse=True)
    lookup = np.full(len(uniq), -1, np.int64)
    for k, key in enumerate(uniq.tolist()):
        lookup[k] = table.get(((key >> 16) & 255, (key >> 8) & 255, key & 255), -1)
    counts = np.bincount(inverse, minlength=len(uniq))
    approximated = 0
    unknown_keys = np.flatnonzero(lookup < 0)
    if len(unknown_keys) and max_distance is not None:
        targets = np.array(list(table.keys()), np.int64)
        target_ids = np.array(list(table.values()), np.int64)
        for k in unknown_keys:
            key = int(uniq[k])
            colour = np.array([(key >> 16) & 255, (key >> 8) & 255, key & 255])
            distance = np.sqrt(((targets - colour) ** 2).sum(1))
            nearest = int(distance.argmin())
            if distance[nearest] <= max_distance:
                lookup[k] = target_ids[nearest]
                approximated += int(counts[k])
        unknown_keys = np.flatnonzero(lookup < 0)
    ids = lookup[inverse].reshape(rgb.shape[:2])
    if len(unknown_keys):
        order = unknown_keys[np.argsort(-counts[unknown_keys], kind="stable")]
        shown = ", ".join(f"({(int(uniq[k]) >> 16) & 255}, {(int(uniq[k]) >> 8) & 255}, {int(uniq[k]) & 255}) "
                          f"({int(counts[k])} pixels)" for k in order[:5])
        more = f" and {len(order) - 5} more" if len(order) > 5 else ""
        unknown = ids < 0
        edges = _on_borders(unknown, ids)
        hint = (f"; {100 * edges:.0f}% of these pixels lie on borders between classes, as anti-aliased edges "
                "do: save masks without anti-aliasing, or pass --max_distance to map such colours to the "
                "nearest palette colour") if edges >= 0.5 else ""
        limit = f" within --max_distance {max_distance:g}" if max_distance is not None else ""
        raise ConvertError(f"{source}: {len(order)} colour(s) not in the palette {palette.name!r}{limit}: "
                           f"{shown}{more}{hint}")
    return ids.astype(np.uint8), approximated


def convert_masks(masks: str | os.PathLike, images: str | os.PathLike, palette: Palette, out: str | os.PathLike,
                  dontcare: tuple[int, int, int] | None = None, max_distance: float | None = None,
                  progress: bool = True) -> ConvertResult:
    """Convert every mask in ``masks`` (PNG, paired by name with a photo in ``images``) into
    ``out`` (must not exist yet): ``train_label/``, ``train_img/``, ``palette.json``."""
    out = Path(out)
    if out.exists():
        raise ConvertError(f"{out}: exists; give a new folder")
    if len(palette) + (dontcare is not None) > DONTCARE_FILE_ID:
        raise ConvertError(f"palette {palette.name!r}: {len(palette)} classes; 8-bit id maps hold at most "
                           f"{DONTCARE_FILE_ID} besides don't-care")
    pairs = _pairs(Path(masks), Path(images))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    approximated = 0
    try:
        (staging / "train_label").mkdir()
        (staging / "train_img").mkdir()
        for mask, photo in tqdm(pairs, desc="convert", unit="mask", disable=not progress or len(pairs) < 16):
            try:
                with Image.open(mask) as image:
                    image.load()
                    if image.mode not in ("RGB", "RGBA", "P"):
                        raise ConvertError(f"{mask}: an image of mode {image.mode}, not a colour mask")
                    rgb = np.asarray(image.convert("RGB"))
                with Image.open(photo) as picture:
                    size = picture.size
            except ConvertError:
                raise
            except Exception as error:  # noqa: BLE001 - Pillow raises many types for unreadable files
                raise ConvertError(f"{mask} or {photo}: cannot read it as an image ({error})") from None
            if size != (rgb.shape[1], rgb.shape[0]):
                raise ConvertError(f"{mask} is {rgb.shape[1]}×{rgb.shape[0]} but {photo} is {size[0]}×{size[1]}")
            ids, mapped = mask_to_ids(rgb, palette, str(mask), dontcare, max_distance)
            approximated += mapped
            Image.fromarray(ids).save(staging / "train_label" / f"{mask.stem}.png")
            shutil.copyfile(photo, staging / "train_img" / photo.name)
        write_palette_file(palette, staging / PALETTE_FILE)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConvertResult(out, len(pairs), approximated)
