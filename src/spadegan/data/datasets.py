"""Paired (label map, photo[, instance map]) datasets in the official folder layouts.

Reproduces NVlabs/SPADE ``data/pix2pix_dataset.py`` and its subclasses (``coco``, ``ade20k``,
``cityscapes``, ``custom``): the same files are found, sorted (natural sort, as the official
``util.natural_sort``), truncated to ``max_dataset_size``, paired by position and checked by
name; the same joint preprocessing is applied; the same label conventions produce the same ids.

What differs is what the official code leaves to chance: every problem — a missing folder, an
unpaired file, a colour label picture, sizes that disagree, ids outside the model's classes — is a
:class:`DatasetError` naming the files, raised before training (:func:`check_samples`) rather than
as a crash or silent garbage hours in. And the augmentation randomness is a pure function of
(seed, epoch, index), so resumed runs, DDP ranks and DataLoader workers reproduce it exactly.

Official per-dataset option defaults (``modify_commandline_options``), see :func:`dataset_defaults`:

============  ================  =========  =========  ========  ======================  ============
dataset_mode  preprocess_mode   load_size  crop_size  label_nc  contain_dontcare_label  other
============  ================  =========  =========  ========  ======================  ============
coco          resize_and_crop   286 / 256  256        182       True                    filelist cache on
ade20k        resize_and_crop   286 / 256  256        150       True                    no_instance
cityscapes    fixed             512        512        35        (False)                 aspect_ratio 2,
                                                                                         upsampling more,
                                                                                         batchSize 16
custom        resize_and_crop   286 / 256  256        13        False
============  ================  =========  =========  ========  ======================  ============

(load_size: train / test; display_winsize equals crop_size.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from spadegan.config import DataConfig
from spadegan.data.transforms import TransformParams, apply_transform, sample_params
from spadegan.imageio import ID_MODES
from spadegan.semantics import validate_labels

DATASET_MODES = ("coco", "ade20k", "cityscapes", "custom")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LABEL_SUFFIXES = (".png",)
_PROGRESS_MIN_FILES = 16  # no progress bar for a handful of files


class DatasetError(ValueError):
    """A dataset problem, with a message that names the files involved."""


@dataclass(frozen=True)
class Sample:
    """The files of one training pair."""

    label: Path
    image: Path
    instance: Path | None


# ---------------------------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------------------------

def _natural_key(path: Path) -> list:
    """Official ``util.natural_sort`` key (on the full path): digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _sorted(paths) -> list[Path]:
    return sorted(paths, key=_natural_key)


def _require_dir(folder: Path, layout: str) -> None:
    if not folder.is_dir():
        raise DatasetError(f"folder {folder} does not exist; expected layout: {layout}")


def _files(folder: Path, suffixes: tuple[str, ...], layout: str, pattern: str = "*") -> list[Path]:
    """Files directly in ``folder`` (``pattern``) with one of ``suffixes`` (case-insensitive)."""
    _require_dir(folder, layout)
    return [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in suffixes]


@dataclass(frozen=True)
class _Listing:
    """What a mode found, and how its files pair: ``key`` maps a file to its pairing name,
    ``expected[kind](key)`` is the file name the partner should have, ``places[kind]`` where."""

    labels: list[Path]
    images: list[Path]
    instances: list[Path] | None
    key: Callable[[Path], str]
    expected: dict[str, Callable[[str], str]]
    places: dict[str, str]


def _stem(path: Path) -> str:
    """Official ``paths_match``: file names without extension."""
    return path.stem


def _cityscapes_key(path: Path) -> str:
    """Official cityscapes ``paths_match``: the first three '_' parts, [city]_[id1]_[id2]."""
    return "_".join(path.name.split("_")[:3])


def _coco_phase(config: DataConfig) -> str:
    # Official coco: 'val' if opt.phase == 'test' else opt.phase (ade20k/cityscapes force 'train').
    return "val" if config.phase == "test" else config.phase


def _train_or_val(config: DataConfig) -> str:
    return "val" if config.phase == "test" else "train"


def _list_coco(config: DataConfig) -> _Listing:
    root, phase = Path(config.dataroot), _coco_phase(config)
    layout = (f"{{dataroot}}/{phase}_label/*.png, {phase}_img/*.jpg"
              + (f", {phase}_inst/*.png" if config.use_instance else ""))
    kinds = [("label", LABEL_SUFFIXES), ("img", IMAGE_SUFFIXES)]
    if config.use_instance:
        kinds.append(("inst", LABEL_SUFFIXES))
    found = {}
    for kind, suffixes in kinds:
        paths = _files(root / f"{phase}_{kind}", suffixes, layout)
        # Official: when training without --coco_no_portraits, the optional {phase}_{kind}_portrait
        # folders (COCO portrait images) are added to the list.
        portrait = root / f"{phase}_{kind}_portrait"
        if config.is_train and not config.coco_no_portraits and portrait.is_dir():
            paths += _files(portrait, suffixes, layout)
        found[kind] = _sorted(paths)
    return _Listing(
        labels=found["label"], images=found["img"], instances=found.get("inst"), key=_stem,
        expected={"image": lambda k: f"{k}.jpg (or .png)", "instance": lambda k: f"{k}.png",
                  "label": lambda k: f"{k}.png"},
        places={"label": str(root / f"{phase}_label"), "image": str(root / f"{phase}_img"),
                "instance": str(root / f"{phase}_inst")})


def _list_ade20k(config: DataConfig) -> _Listing:
    if config.use_instance:
        # Official: ade20k sets no_instance=True (a store_true flag, so it cannot be turned off).
        raise DatasetError("ade20k has no instance maps: set use_instance to False (official no_instance)")
    root, phase = Path(config.dataroot), _train_or_val(config)
    layout = (f"ADEChallengeData2016: {{dataroot}}/images/training/ADE_{phase}_00000001.jpg and "
              f"annotations/training/ADE_{phase}_00000001.png (validation/ for the val phase)")
    _require_dir(root, layout)
    # Official: every file under dataroot whose path contains '_{phase}_'; here the *name* must
    # contain it, so a dataroot like /data/my_train_set/ does not match every file.
    tag = f"_{phase}_"
    files = [p for p in root.rglob("*") if tag in p.name and p.is_file()]
    return _Listing(
        labels=_sorted(p for p in files if p.suffix.lower() == ".png"),
        images=_sorted(p for p in files if p.suffix.lower() == ".jpg"),
        instances=None, key=_stem,
        expected={"image": lambda k: f"{k}.jpg", "label": lambda k: f"{k}.png"},
        places={"label": f"{root} (annotations/)", "image": f"{root} (images/)"})


def _list_cityscapes(config: DataConfig) -> _Listing:
    root, phase = Path(config.dataroot), _train_or_val(config)
    label_dir, image_dir = root / "gtFine" / phase, root / "leftImg8bit" / phase
    layout = (f"{{dataroot}}/gtFine/{phase}/<city>/<city>_<id1>_<id2>_gtFine_labelIds.png "
              f"(and _instanceIds.png), {{dataroot}}/leftImg8bit/{phase}/<city>/"
              "<city>_<id1>_<id2>_leftImg8bit.png")
    labels = _files(label_dir, LABEL_SUFFIXES, layout, "*/*_labelIds.png")
    images = _files(image_dir, IMAGE_SUFFIXES, layout, "*/*_leftImg8bit.png")
    instances = None
    if config.use_instance:
        instances = _files(label_dir, LABEL_SUFFIXES, layout, "*/*_instanceIds.png")
    return _Listing(
        labels=_sorted(labels), images=_sorted(images),
        instances=_sorted(instances) if instances is not None else None, key=_cityscapes_key,
        expected={"image": lambda k: f"{k}_leftImg8bit.png", "label": lambda k: f"{k}_gtFine_labelIds.png",
                  "instance": lambda k: f"{k}_gtFine_instanceIds.png"},
        places={"label": f"{label_dir}/<city>", "image": f"{image_dir}/<city>",
                "instance": f"{label_dir}/<city>"})


def _list_custom(config: DataConfig) -> _Listing:
    layout = ("label_dir/*.png, image_dir/*.jpg|.jpeg|.png|.bmp|.webp, optional instance_dir/*.png, "
              "paired by sorted file name")
    if not config.label_dir or not config.image_dir:
        raise DatasetError(f"custom mode needs label_dir and image_dir; expected layout: {layout}")
    if config.use_instance and not config.instance_dir:
        raise DatasetError("use_instance is set but custom mode has no instance_dir: give instance_dir "
                           "or set use_instance to False (official no_instance)")
    label_dir, image_dir = Path(config.label_dir), Path(config.image_dir)
    instance_dir = Path(config.instance_dir) if config.use_instance else None
    return _Listing(
        labels=_sorted(_files(label_dir, LABEL_SUFFIXES, layout)),
        images=_sorted(_files(image_dir, IMAGE_SUFFIXES, layout)),
        instances=_sorted(_files(instance_dir, LABEL_SUFFIXES, layout)) if instance_dir else None,
        key=_stem,
        expected={"image": lambda k: f"{k}.jpg (or .jpeg .png .bmp .webp)",
                  "label": lambda k: f"{k}.png", "instance": lambda k: f"{k}.png"},
        places={"label": str(label_dir), "image": str(image_dir), "instance": str(instance_dir)})


_LISTERS: dict[str, Callable[[DataConfig], _Listing]] = {
    "coco": _list_coco, "ade20k": _list_ade20k, "cityscapes": _list_cityscapes, "custom": _list_custom}


def _check_mode(dataset_mode: str) -> None:
    if dataset_mode not in DATASET_MODES:
        raise DatasetError(f"dataset_mode {dataset_mode!r} is not one of: {', '.join(DATASET_MODES)}")


_BYPASS = ("the official --no_pairing_check (no_pairing_check=True) skips the name check but "
           "pairing by position still needs as many files of each kind")


def _first_unpaired(labels: list[Path], others: list[Path], kind: str, listing: _Listing) -> str:
    """Describe the first position where the sorted lists stop pairing by name."""
    other_keys = {listing.key(p) for p in others}
    label_keys = {listing.key(p) for p in labels}
    for position in range(max(len(labels), len(others))):
        label = labels[position] if position < len(labels) else None
        other = others[position] if position < len(others) else None
        if label is not None and other is not None and listing.key(label) == listing.key(other):
            continue
        if label is not None and listing.key(label) not in other_keys:
            key = listing.key(label)
            return (f"label {label} has no {kind}: expected a file named {listing.expected[kind](key)} "
                    f"in {listing.places[kind]}")
        if other is not None and listing.key(other) not in label_keys:
            key = listing.key(other)
            return (f"{kind} {other} has no label: expected a file named {listing.expected['label'](key)} "
                    f"in {listing.places['label']}")
        # Both names have partners elsewhere (e.g. two images with one stem): the order is off.
        return (f"after sorting, label {label or '(none)'} and {kind} {other or '(none)'} share "
                f"position {position} but their names do not pair")
    return "the lists pair by name"  # not reached: called only after a mismatch was seen


def _check_pairing(labels: list[Path], others: list[Path], kind: str, listing: _Listing,
                   check_names: bool) -> None:
    """Official pairing: sorted lists paired by position; names compared unless no_pairing_check."""
    names_differ = check_names and any(listing.key(a) != listing.key(b) for a, b in zip(labels, others))
    if len(labels) != len(others):
        # The official code would fail later with an IndexError (or silently drop files).
        detail = _first_unpaired(labels, others, kind, listing) if check_names else ""
        raise DatasetError(f"{len(labels)} label maps but {len(others)} {kind} files"
                           f"{': ' + detail if detail else ''} ({_BYPASS})")
    if names_differ:
        raise DatasetError(f"{_first_unpaired(labels, others, kind, listing)}. If the files are "
                           f"paired by sorted order on purpose, set no_pairing_check "
                           f"(official --no_pairing_check)")


def find_samples(config: DataConfig) -> list[Sample]:
    """The (label, image[, instance]) files of ``config``'s dataset, in the official order."""
    _check_mode(config.dataset_mode)
    listing = _LISTERS[config.dataset_mode](config)
    # Official: each list is truncated to max_dataset_size before pairing.
    limit = config.max_dataset_size
    labels, images = listing.labels[:limit], listing.images[:limit]
    instances = listing.instances[:limit] if listing.instances is not None else None
    if not labels:
        raise DatasetError(f"no label maps found for dataset_mode {config.dataset_mode!r} in "
                           f"{listing.places['label']}")
    check_names = not config.no_pairing_check
    _check_pairing(labels, images, "image", listing, check_names)
    if instances is not None:
        # Not checked by the official code; a shifted instance list silently misaligns edges.
        _check_pairing(labels, instances, "instance", listing, check_names)
    return [Sample(label=label, image=image, instance=instances[i] if instances is not None else None)
            for i, (label, image) in enumerate(zip(labels, images))]


# ---------------------------------------------------------------------------------------------
# Reading and checking files
# ---------------------------------------------------------------------------------------------

def _open(path: Path, decode: bool = True) -> Image.Image:
    """Open an image file; ``decode=False`` reads only the header (size and mode)."""
    try:
        image = Image.open(path)
        if decode:
            image.load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except Exception as error:
        raise DatasetError(f"{path}: cannot read it as an image ({error})") from error
    return image


def _check_id_image(image: Image.Image, path: Path, what: str) -> None:
    """A label / instance map must store one integer id per pixel."""
    if image.mode in ID_MODES:
        return
    picture = " (a colour picture)" if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr") else ""
    raise DatasetError(
        f"{path}: a {what} must be a class-id map — one integer id per pixel (8-bit grayscale, "
        f"palette-index or 16-bit PNG) — not an image of mode {image.mode}{picture}. A colour "
        "visualisation cannot be read back as ids without its palette")


def _open_id_map(path: Path, what: str) -> Image.Image:
    image = _open(path)
    _check_id_image(image, path, what)
    return image


def _ids(image: Image.Image) -> torch.Tensor:
    """H×W int64 ids of an integer image (8-bit values as they are, 16/32-bit as ints)."""
    return torch.from_numpy(np.array(image, dtype=np.int64))


def _check_sizes(sample: Sample, sizes: dict[Path, tuple[int, int]]) -> None:
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{path} is {w}×{h}" for path, (w, h) in sizes.items())
        raise DatasetError(f"label map, image{' and instance map' if sample.instance else ''} of one "
                           f"sample must have the same size: {listed}")


def to_class_ids(raw: torch.Tensor, config: DataConfig) -> torch.Tensor:
    """The official label conventions (``label_tensor[== 255] = label_nc``, ade20k ``postprocess``).

    ade20k stores class + 1 with 0 = unlabeled: ids shift down by one and 0 becomes label_nc.
    The other datasets store the unlabeled id 255, which becomes label_nc. The don't-care class
    is thus always ``label_nc``, the extra channel when contain_dontcare_label is set."""
    if config.dataset_mode == "ade20k":
        return torch.where(raw == 0, torch.full_like(raw, config.label_nc), raw - 1)
    return torch.where(raw == 255, torch.full_like(raw, config.label_nc), raw)


def _validate_ids(raw: torch.Tensor, config: DataConfig, path: Path) -> None:
    """Ids valid after :func:`to_class_ids`, with messages in the ids the file stores."""
    try:
        if config.dataset_mode == "ade20k":
            # File ids may be 0..label_nc (class + 1). Checked on the file ids, not the shifted
            # ones: a file id label_nc + 1 would shift onto label_nc and pass as don't-care.
            validate_labels(raw, config.label_nc + 1, False, source=str(path))
            if not config.contain_dontcare_label and bool((raw == 0).any()):
                raise ValueError(f"label map {path} has {int((raw == 0).sum())} unlabeled pixels (id 0, "
                                 "ade20k's don't-care): enable contain_dontcare_label to accept them")
        else:
            # Equivalent to checking after 255 → label_nc (validate_labels treats 255 and label_nc
            # alike), but the message then names the id the file really holds.
            validate_labels(raw, config.label_nc, config.contain_dontcare_label, source=str(path))
    except ValueError as error:
        ade20k = config.dataset_mode == "ade20k"
        note = " (ade20k label files store class id + 1; 0 is unlabeled)" if ade20k else ""
        raise DatasetError(f"{error}{note}") from None


def _check_sample(sample: Sample, config: DataConfig) -> None:
    label = _open_id_map(sample.label, "label map")
    # Photos: header only (size); decoding every photo would dominate the check's cost.
    sizes = {sample.label: label.size, sample.image: _open(sample.image, decode=False).size}
    if sample.instance is not None:
        sizes[sample.instance] = _open_id_map(sample.instance, "instance map").size
    _check_sizes(sample, sizes)
    _validate_ids(_ids(label), config, sample.label)


def check_samples(samples: list[Sample], config: DataConfig, progress: bool = True) -> None:
    """Open every file before training: label (and instance) maps must be integer-id images of
    the photo's size, with ids valid for the model. ``no_pairing_check`` does not skip this (the
    official flag only skips the name comparison)."""
    bar = tqdm(samples, desc="checking dataset", unit="sample",
               disable=not progress or len(samples) < _PROGRESS_MIN_FILES)
    for sample in bar:
        _check_sample(sample, config)


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------

def _image_tensor(image: Image.Image) -> torch.Tensor:
    """RGB → 3×H×W float32 in [-1, 1], with torchvision's exact arithmetic (``ToTensor`` divides
    by 255, ``Normalize((0.5,)*3, (0.5,)*3)`` subtracts then divides), so values match bitwise."""
    array = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))
    return array.permute(2, 0, 1).float().div(255).sub(0.5).div(0.5).contiguous()


class PairedDataset(torch.utils.data.Dataset):
    """Items ``{'label': int64 1×H×W, 'image': float32 3×H×W in [-1, 1], ['instance': int64 1×H×W],
    'path': str}`` with the official joint preprocessing and label conventions.

    The random crop / flip of item ``index`` in epoch ``epoch`` is drawn from
    ``random.Random(f"{seed}:{epoch}:{index}")``: a pure function, so a resumed run or another
    DDP rank reproduces it without saving loader state, whatever the number of workers. Call
    :meth:`set_epoch` before each epoch; with ``persistent_workers=True`` DataLoader workers keep
    their own copy of the dataset and do not see it, so leave persistent workers off."""

    def __init__(self, samples: list[Sample], config: DataConfig, seed: int = 0):
        if config.use_instance and any(s.instance is None for s in samples):
            raise DatasetError("use_instance is set but some samples have no instance map")
        self.samples = list(samples)
        self.config = config
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def params(self, index: int, size: tuple[int, int]) -> TransformParams:
        """The augmentation of item ``index`` in the current epoch (see the class doc)."""
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        return sample_params(size, self.config, rng)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        sample = self.samples[index]
        label = _open_id_map(sample.label, "label map")
        image = _open(sample.image)
        instance = _open_id_map(sample.instance, "instance map") if self.config.use_instance else None
        sizes = {sample.label: label.size, sample.image: image.size}
        if instance is not None:
            sizes[sample.instance] = instance.size
        _check_sizes(sample, sizes)
        # Official: one set of parameters, drawn from the label map's size, for all three.
        params = self.params(index, label.size)
        try:
            label = apply_transform(label, params, self.config, Image.NEAREST)
            image = apply_transform(image.convert("RGB"), params, self.config, Image.BICUBIC)
            if instance is not None:
                instance = apply_transform(instance, params, self.config, Image.NEAREST)
        except ValueError as error:
            raise DatasetError(f"{sample.label}: {error}") from error
        raw = _ids(label)
        _validate_ids(raw, self.config, sample.label)
        item = {"label": to_class_ids(raw, self.config)[None], "image": _image_tensor(image),
                "path": str(sample.label)}
        if instance is not None:
            item["instance"] = _ids(instance)[None]
        return item


def build_dataset(config: DataConfig, seed: int = 0, check: bool = True, progress: bool = True) -> PairedDataset:
    """Find the files of ``config``'s dataset, check them all (unless ``check`` is False; with a
    progress bar unless ``progress`` is False) and return the dataset."""
    samples = find_samples(config)
    if check:
        check_samples(samples, config, progress)
    return PairedDataset(samples, config, seed=seed)


# ---------------------------------------------------------------------------------------------
# Official per-dataset option defaults
# ---------------------------------------------------------------------------------------------

def dataset_defaults(dataset_mode: str, is_train: bool) -> dict[str, object]:
    """The options each official dataset class sets in ``modify_commandline_options`` (official
    option names; see the table in the module doc)."""
    _check_mode(dataset_mode)
    square = {"preprocess_mode": "resize_and_crop", "load_size": 286 if is_train else 256,
              "crop_size": 256, "display_winsize": 256}
    if dataset_mode == "coco":
        return {**square, "label_nc": 182, "contain_dontcare_label": True,
                "cache_filelist_read": True, "cache_filelist_write": True}
    if dataset_mode == "ade20k":
        return {**square, "label_nc": 150, "contain_dontcare_label": True,
                "cache_filelist_read": False, "cache_filelist_write": False, "no_instance": True}
    if dataset_mode == "cityscapes":
        return {"preprocess_mode": "fixed", "load_size": 512, "crop_size": 512, "display_winsize": 512,
                "label_nc": 35, "aspect_ratio": 2.0, "batchSize": 16, "num_upsampling_layers": "more"}
    return {**square, "label_nc": 13, "contain_dontcare_label": False}
