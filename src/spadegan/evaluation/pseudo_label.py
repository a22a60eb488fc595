"""Pseudo-labelling: turn an unlabeled photo collection into a SPADE training set.

The paper's landscape model (Sec. 4, "Flickr Landscapes") was trained on label maps that a
segmentation network predicted for 41k Flickr photos. :func:`pseudo_label` does the same for a
folder of photos with any registered segmenter (:mod:`spadegan.evaluation.segmenters`): every photo
gets a predicted label map, and the pairs are written in the folder layout the landscapes
data set uses, which ``--dataset_mode custom`` (or ``coco`` with ``--no_instance``) reads::

    OUT/train_label/NAME.png   8-bit class ids (16-bit if an id exceeds 255)
    OUT/train_img/NAME.png     the photo as the label map was predicted from it (RGB PNG)
    OUT/pseudo_labels.json     segmenter, weights, size, source of every sample

    spadegan train --dataset_mode custom --label_nc 182 --no_instance \\
        --label_dir OUT/train_label --image_dir OUT/train_img ...

``NAME`` is the photo's path relative to the input folder with ``/`` replaced by ``__`` (so two
``img.jpg`` in different subfolders do not collide). With ``size`` the photo is resized
(bicubic, shorter side = size, then centre-cropped to size × size when ``square``) before
segmentation, and the resized photo is what is written: label and image always have the same size.
Every file is written atomically (temporary file + rename); a run that stops can be rerun and
skips the photos whose two files are already there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from spadegan.imageio import save_png_atomic

from .segmenters.base import Segmenter

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABEL_DIR, IMAGE_DIR = "train_label", "train_img"   # as spadegan.data.landscapes writes them
MANIFEST = "pseudo_labels.json"


class PseudoLabelError(ValueError):
    """A problem with the input photos or the output folder, naming the file involved."""


@dataclass
class PseudoLabelResult:
    """What :func:`pseudo_label` did."""

    out: Path
    written: list[str] = field(default_factory=list)     # sample names written now
    skipped: list[str] = field(default_factory=list)     # already complete from an earlier run
    class_counts: dict[int, int] = field(default_factory=dict)   # predicted pixels per class id

    @property
    def label_dir(self) -> Path:
        return self.out / LABEL_DIR

    @property
    def image_dir(self) -> Path:
        return self.out / IMAGE_DIR


def find_photos(source: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Photo files under a folder (sorted; ``recursive`` descends into subfolders) or one file."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise PseudoLabelError(f"{source}: no such photo file or folder")
    pattern = "**/*" if recursive else "*"
    photos = sorted(p for p in source.glob(pattern)
                    if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))
    if not photos:
        raise PseudoLabelError(f"{source}: no photos ({', '.join(PHOTO_SUFFIXES)}) found"
                               + ("" if recursive else "; subfolders are searched with recursive=True (--recursive)"))
    return photos


def sample_name(photo: Path, root: Path) -> str:
    """A flat, unique file stem for a photo under ``root``."""
    relative = photo.relative_to(root) if root.is_dir() else Path(photo.name)
    return "__".join(relative.with_suffix("").parts)


def read_photo(path: Path) -> Image.Image:
    """An RGB PIL image, upright (EXIF orientation applied, as photo viewers show it), or a
    :class:`PseudoLabelError` naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except Exception as error:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError...)
        raise PseudoLabelError(f"{path}: cannot read it as an image ({type(error).__name__}: {error})") from error


def resize_photo(image: Image.Image, size: int | None, square: bool) -> Image.Image:
    """Shorter side → ``size`` (bicubic), then a centre crop to size × size when ``square``."""
    if size is None:
        return image
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new != image.size:
        image = image.resize(new, Image.BICUBIC)
    if square:
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return image


def _label_image(ids: np.ndarray) -> Image.Image:
    if ids.min() < 0:
        raise ValueError("segmenter predicted negative class ids")
    if ids.max() <= 255:
        return Image.fromarray(ids.astype(np.uint8), mode="L")
    return Image.fromarray(ids.astype(np.int32), mode="I")   # saved as a 16-bit PNG


def pseudo_label(photos: str | os.PathLike, segmenter: Segmenter, out: str | os.PathLike,
                 size: int | None = None, square: bool = False, recursive: bool = False,
                 batch_size: int = 1, overwrite: bool = False, progress: bool = True,
                 weights: str | None = None) -> PseudoLabelResult:
    """Predict a label map for every photo in ``photos`` and write a training set to ``out``.

    ``size``/``square``: resize before segmenting (see the module doc). ``batch_size`` photos of
    equal size are segmented together. Photos already written are skipped unless ``overwrite``.
    ``weights`` is only recorded in the manifest. Unreadable photos stop the run with an error
    naming the file (nothing half-written is left behind)."""
    source = Path(photos)
    out = Path(out)
    files = find_photos(source, recursive)
    names = [sample_name(p, source) for p in files]
    seen: dict[str, Path] = {}
    for name, path in zip(names, files):
        if name in seen:   # 'a.jpg' and 'a.png' in one folder
            raise PseudoLabelError(f"{path} and {seen[name]} would both be written as {name}.png: rename one")
        seen[name] = path
    result = PseudoLabelResult(out=out)
    (out / LABEL_DIR).mkdir(parents=True, exist_ok=True)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)

    pending: list[tuple[str, Path]] = []
    for name, path in zip(names, files):
        done = (out / LABEL_DIR / f"{name}.png").is_file() and (out / IMAGE_DIR / f"{name}.png").is_file()
        if done and not overwrite:
            result.skipped.append(name)
        else:
            pending.append((name, path))

    bar = tqdm(total=len(pending), desc=f"pseudo-label ({segmenter.name})", unit="photo", disable=not progress)
    index = 0
    while index < len(pending):
        # A batch: consecutive photos of the same size (after resizing), at most batch_size.
        batch: list[tuple[str, Image.Image]] = []
        while index < len(pending) and len(batch) < batch_size:
            name, path = pending[index]
            image = resize_photo(read_photo(path), size, square)
            if batch and image.size != batch[0][1].size:
                break
            batch.append((name, image))
            index += 1
        arrays = np.stack([np.asarray(image, dtype=np.uint8) for _, image in batch])
        images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)
        with torch.no_grad():
            labels = segmenter.predict(images).cpu()
        if labels.shape != (len(batch), *images.shape[-2:]):
            raise RuntimeError(f"segmenter {segmenter.name!r} returned label maps of shape {tuple(labels.shape)} "
                               f"for images of shape {tuple(images.shape)}")
        for (name, image), label in zip(batch, labels):
            # Image first, label last: a sample counts as done when both exist.
            save_png_atomic(image, out / IMAGE_DIR / f"{name}.png")
            save_png_atomic(_label_image(label.numpy()), out / LABEL_DIR / f"{name}.png")
            result.written.append(name)
        ids, counts = labels.unique(return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist()):
            result.class_counts[c] = result.class_counts.get(c, 0) + n
        bar.update(len(batch))
    bar.close()
    result.class_counts = dict(sorted(result.class_counts.items()))
    _write_manifest(out, segmenter, weights, size, square, source, files, names, result)
    return result


def _write_manifest(out: Path, segmenter: Segmenter, weights: str | None, size: int | None, square: bool,
                    source: Path, files: Sequence[Path], names: Sequence[str], result: PseudoLabelResult) -> None:
    from spadegan.atomic import atomic_write

    manifest = {"segmenter": segmenter.name, "weights": weights, "class_ids": list(segmenter.class_ids),
                "size": size, "square": square, "source": str(source),
                "samples": {name: str(path) for name, path in zip(names, files)},
                "label_dir": LABEL_DIR, "image_dir": IMAGE_DIR,
                "predicted_pixels_this_run": {str(c): n for c, n in result.class_counts.items()}}
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
