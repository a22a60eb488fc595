"""Writing a data set of landscapes: files that appear whole, a manifest, parallel workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from spadegan.atomic import atomic_write

from .classes import CLASS_NAMES
from .noise import _size
from .sample import generate_landscape



LABEL_DIR, IMAGE_DIR, INSTANCE_DIR = "train_label", "train_img", "train_inst"
MANIFEST = "landscapes.json"


def sample_name(index: int) -> str:
    return f"{index:07d}"


def _save_atomic(image: Image.Image, path: Path, **options) -> None:
    """A PNG that is whole or absent (the data set is made again, not fsynced)."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", **options), durable=False)


def sample_paths(root: Path, index: int) -> tuple[Path, Path, Path]:
    """(label, instance, image) files of sample ``index`` under ``root``."""
    name = sample_name(index)
    return (root / LABEL_DIR / f"{name}.png", root / INSTANCE_DIR / f"{name}.png",
            root / IMAGE_DIR / f"{name}.png")


def write_sample(root: str | os.PathLike, seed: int, index: int, size: tuple[int, int]) -> bool:
    """Generate sample ``index`` of the data set ``seed`` and write its three PNGs.

    The image is written last, so a sample whose image exists is complete. Returns False when it
    was already there (nothing written).
    """
    label_path, instance_path, image_path = sample_paths(Path(root), index)
    if image_path.exists() and label_path.exists() and instance_path.exists():
        return False
    sample = generate_landscape((seed, index), size)
    # PNG, lossless (JPEG would blur the class textures); compress_level 1: files ~4% larger than
    # the default level 6 for a quarter of its encoding time (which would otherwise dominate).
    _save_atomic(Image.fromarray(sample.label), label_path, compress_level=1)
    _save_atomic(Image.fromarray(sample.instance), instance_path, compress_level=1)
    _save_atomic(Image.fromarray(sample.image), image_path, compress_level=1)
    return True


def manifest(seed: int, count: int, size: tuple[int, int]) -> dict:
    """What ``spadegan landscapes`` records in landscapes.json; a rerun must ask for the same."""
    return {"generator": "spadegan.data.landscapes", "seed": seed, "size": list(size),
            "count": count, "classes": {str(k): v for k, v in sorted(CLASS_NAMES.items())}}


def prepare_folder(root: str | os.PathLike, seed: int, count: int, size: tuple[int, int],
                   overwrite: bool = False) -> None:
    """Create the folders and the manifest; refuse a folder made with another seed or size.

    A folder made with the same seed and size is resumed (complete samples are kept); with
    ``overwrite`` its samples are deleted first.
    """
    root = Path(root)
    wanted = manifest(seed, count, size)
    path = root / MANIFEST
    folders = [root / name for name in (LABEL_DIR, INSTANCE_DIR, IMAGE_DIR)]
    if overwrite:
        for folder in folders:
            for old in folder.glob("*.png") if folder.is_dir() else ():
                old.unlink()
    elif path.exists():
        found = json.loads(path.read_text())
        if (found.get("seed"), found.get("size")) != (wanted["seed"], wanted["size"]):
            raise ValueError(f"{root} holds landscapes of seed {found.get('seed')} and size "
                             f"{found.get('size')}, not {seed} and {list(size)}: use another folder "
                             "or --overwrite")
    elif any(folder.is_dir() and any(folder.iterdir()) for folder in folders):
        raise ValueError(f"{root} holds files that spadegan landscapes did not write: use another "
                         "folder or --overwrite")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by an interrupted run
            stale.unlink(missing_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(wanted, indent=2) + "\n"), durable=False)


def _write_task(task: tuple[str, int, int, tuple[int, int]]) -> bool:
    return write_sample(*task)


def write_dataset(root: str | os.PathLike, count: int, size: tuple[int, int] = (256, 256),
                  seed: int = 0, workers: int = 1, overwrite: bool = False, progress: bool = True) -> int:
    """Write ``count`` samples under ``root`` in the COCO-Stuff folder layout; returns how many
    were written (samples already complete are skipped).

    Sample ``i`` comes from seed ``(seed, i)``: any subset, any number of ``workers``, gives the
    same files.
    """
    from tqdm import tqdm

    size = _size(size)
    prepare_folder(root, seed, count, size, overwrite=overwrite)
    tasks = [(str(root), seed, index, size) for index in range(count)]
    bar = tqdm(total=count, desc="landscapes", unit="sample", disable=not progress)
    written = 0
    if workers <= 1:
        for task in tasks:
            written += _write_task(task)
            bar.update()
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for done in pool.imap_unordered(_write_task, tasks, chunksize=8):
                written += done
                bar.update()
    bar.close()
    return written
