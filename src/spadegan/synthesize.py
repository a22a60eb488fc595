"""``spadegan synthesize`` as a function: label-map files in, a folder of PNGs and a gallery
page (``index.html``) out, all files or none (:class:`~spadegan.output.StagedFolder`).

Every input is found, sized and checked before the model runs; the images are made in batches
of one size (:func:`~spadegan.inference.batches_by_size`) by a
:class:`~spadegan.inference.Synthesizer`.
"""

from __future__ import annotations

import html
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

LABEL_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}
MAX_INPUT_PIXELS = 4096 * 4096  # the default bound on an input's pixels (--max_pixels)


@dataclass(frozen=True)
class SynthesisRequest:
    """What to synthesize, from what, and where to."""

    checkpoint: str | None            # a checkpoint folder or file (None: the bundled model)
    labels: list[str]                 # label-map files or folders of them
    out: str                          # the output folder
    instances: list[str] | None = None  # instance maps: a folder (by file name) or files in order
    style: str | None = None          # a reference picture for the image encoder
    seed: int | None = None           # sample k of every map uses seed + k (None: drawn, and printed)
    samples: int = 1                  # pictures per label map
    size: tuple[int, int] | None = None  # (height, width) to resize the label maps to (nearest)
    resize: bool = False              # resize the label maps to the model's size
    batch_size: int = 1
    max_pixels: int = MAX_INPUT_PIXELS  # refuse larger inputs from their headers
    epoch: str = "latest"
    precision: str = "fp32"
    device: torch.device | None = None
    reroll: str | None = None         # a mask (non-zero: the region) whose region is painted anew
    reroll_seed: int | None = None    # the region's new look, sample k: reroll_seed + k (None: drawn)


def synthesize_files(request: SynthesisRequest) -> int:
    """Write the request's pictures, label previews and gallery to ``request.out``; the number of
    pictures. ``ValueError`` / ``FileNotFoundError`` for bad input, before anything is written;
    ``OSError`` where writing fails, with nothing published."""
    from .output import StagedFolder
    from .seeds import seed_problem

    if request.samples < 1 or request.batch_size < 1:
        raise ValueError("--samples and --batch_size must be at least 1")
    labels = expand_inputs(request.labels)
    instances = match_instances(labels, request.instances)
    by_stem: dict[str, Path] = {}
    for label in labels:
        if label.stem in by_stem:
            raise ValueError(f"{by_stem[label.stem]} and {label} would both write "
                             f"{label.stem}.png; give label maps with distinct file names")
        by_stem[label.stem] = label
    if request.seed is not None and (problem := seed_problem(request.seed, request.samples)):
        raise ValueError(f"--seed {request.seed}: {problem}")
    if request.reroll is not None:
        if len(labels) != 1 or request.size is not None or request.resize:
            raise ValueError("--reroll: give one label map, at its own size (no --size or --resize): the mask "
                             "marks its pixels")
        if request.reroll_seed is not None and (problem := seed_problem(request.reroll_seed, request.samples)):
            raise ValueError(f"--reroll_seed {request.reroll_seed}: {problem}")
    plan = SynthesisPlan(labels, request.samples, None if request.style is None else Path(request.style))
    inputs = labels + [p for p in instances if p is not None] + ([plan.style] if plan.style else [])
    inputs += [Path(request.reroll)] if request.reroll is not None else []
    check_pixel_counts(inputs, request.max_pixels)
    # The output folder is checked, and its staging folder made, before the model runs; the
    # files reach it together at the end, or not at all.
    with StagedFolder(request.out, plan.files(), inputs) as out:
        count = _synthesize_into(out, plan, instances, request)
        out.publish()
    return count


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given; folders give their label-map files in sorted order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in LABEL_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"no label maps found in {', '.join(paths)}")
    return files


def match_instances(labels: list[Path], given: list[str] | None) -> list[Path | None]:
    """Instance maps for the label maps: a folder (matched by file name) or files in order."""
    if not given:
        return [None] * len(labels)
    if len(given) == 1 and Path(given[0]).is_dir():
        folder = Path(given[0])
        instances = [folder / label.name for label in labels]
    else:
        instances = [Path(p) for p in given]
        if len(instances) != len(labels):
            raise ValueError(f"{len(instances)} instance maps for {len(labels)} label maps: give one per "
                             "label map, in the same order, or a folder with the same file names")
    for path in instances:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such instance map")
    return instances


def read_mask(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """The H×W bool mask in an image file (:func:`~spadegan.imageio.mask_from_image`), of
    ``size`` (height, width); ``ValueError`` naming the file otherwise."""
    from .imageio import mask_from_image, open_image

    mask = mask_from_image(open_image(path))
    if tuple(mask.shape) != tuple(size):
        raise ValueError(f"{path}: a {mask.shape[1]}x{mask.shape[0]} mask for a {size[1]}x{size[0]} label map; "
                         "expected the label map's size")
    if not mask.any():
        raise ValueError(f"{path}: the mask marks no pixel (non-zero pixels mark the region to re-roll)")
    return torch.from_numpy(mask)


def check_pixel_counts(paths: list[Path], limit: int) -> None:
    """Refuse inputs over ``limit`` pixels from their headers, before any is decoded: decoding
    and resizing a label map holds tens of bytes per pixel."""
    from .imageio import allow_pixels, pixel_count_problem

    if limit < 1:
        raise ValueError(f"--max_pixels {limit}: expected a positive number of pixels")
    allow_pixels(limit)
    for path in paths:
        if problem := pixel_count_problem(path, limit):
            raise ValueError(problem)


class SynthesisPlan:
    """The files ``spadegan synthesize`` writes for its inputs, by name relative to ``--out``."""

    def __init__(self, labels: list[Path], samples: int, style: Path | None):
        self.labels, self.samples, self.style = labels, samples, style

    def output(self, index: int, k: int) -> str:
        stem = self.labels[index].stem
        return f"{stem}.png" if self.samples == 1 else f"{stem}_s{k}.png"

    def preview(self, index: int) -> str:
        return f"labels/{self.labels[index].stem}.png"

    def style_thumbnail(self) -> str | None:
        return None if self.style is None else f"style/{self.style.stem}.png"

    def files(self) -> list[str]:
        names = [self.output(i, k) for i in range(len(self.labels)) for k in range(self.samples)]
        names += [self.preview(i) for i in range(len(self.labels))]
        return names + [n for n in [self.style_thumbnail()] if n] + ["index.html"]


def _synthesize_into(out, plan: SynthesisPlan, instances: list[Path | None], request: SynthesisRequest) -> int:
    """Synthesize every planned image into the staged output ``out``; the number of images."""
    from PIL import Image

    from .imageio import read_image
    from .inference import Layout, Synthesizer, batches_by_size

    labels, samples, size = plan.labels, request.samples, request.size
    synthesizer = Synthesizer.from_checkpoint(request.checkpoint, device=request.device,
                                              epoch=request.epoch, precision=request.precision)
    if size is not None and (problem := synthesizer.size_problem(*size)):
        raise ValueError(f"--size {size[1]}x{size[0]} (width×height): {problem}")
    if samples > 1 and not synthesizer.takes_style:
        raise ValueError("--samples: this model takes no random style (no image encoder), "
                         "so every sample would be the same image")
    style = None
    if request.style is not None:
        style = read_image(request.style)
        synthesizer.encode_style(style, 1)  # the model has an encoder that fits, or an error now

    # Every input is read, mapped to ids, sized and checked before anything is written.
    layouts = [synthesizer.layout(label, instance, size=size, resize=request.resize).compact()
               for label, instance in tqdm(list(zip(labels, instances)), desc="read", unit="map",
                                           disable=len(labels) < 2)]
    seed = request.seed
    if seed is None and synthesizer.takes_style:
        seed = secrets.randbelow(2 ** 31)
        print(f"seed {seed} (pass --seed {seed} to make these images again)")
    seeds = [None if seed is None else seed + k for k in range(samples)]  # sample k: seed S + k (Fig. 9)
    reroll_mask, reroll_seeds = None, [None] * samples
    if request.reroll is not None:
        reroll_mask = read_mask(request.reroll, layouts[0].labels.shape[-2:])
        if seed is None:
            raise ValueError("--reroll: this model takes no noise or style code; there is nothing to re-roll")
        reroll_seed = request.reroll_seed
        if reroll_seed is None:
            reroll_seed = secrets.randbelow(2 ** 31)
            print(f"re-roll seed {reroll_seed} (pass --reroll_seed {reroll_seed} to make this region again)")
        reroll_seeds = [reroll_seed + k for k in range(samples)]

    batches = batches_by_size(layouts, samples, request.batch_size)
    with tqdm(total=len(labels) * samples, desc="synthesize", unit="img",
              disable=len(labels) * samples < 2) as progress:
        for batch in batches:
            layout = Layout.cat([layouts[index] for index, _ in batch])
            batch_seeds = None if seed is None else [seeds[k] for _, k in batch]
            images = synthesizer(layout, style=style, seed=batch_seeds, reroll_mask=reroll_mask,
                                 reroll_seed=None if reroll_mask is None else [reroll_seeds[k] for _, k in batch])
            for (index, k), image in zip(batch, images):
                out.write_png(plan.output(index, k), image)
            progress.update(len(batch))

    # Label previews (in the model's palette, as synthesized), the style thumbnail, the gallery.
    for index, layout in enumerate(layouts):
        out.write_png(plan.preview(index), label_preview(layout.labels[0, 0], synthesizer.palette))
    style_cell = []
    if request.style is not None:
        thumbnail = Image.open(request.style).convert("RGB")
        thumbnail.thumbnail((256, 256))
        style_cell = [plan.style_thumbnail()]
        out.write_png(style_cell[0], thumbnail)
    header = ["label map"]
    header += ["synthesized" if s is None else f"seed {s}" for s in seeds]
    header += [f"style: {Path(request.style).name}"] if request.style is not None else []
    rows = [(label.name, [plan.preview(index)] + [plan.output(index, k) for k in range(samples)]
             + style_cell) for index, label in enumerate(labels)]
    out.write_text("index.html", gallery_page(header, rows))
    return len(labels) * samples


def label_preview(ids: torch.Tensor, palette):
    """A label map in its palette's colours (``spadegan.inference.palette_for_model``)."""
    from PIL import Image

    return Image.fromarray(palette.colorize(ids.long().numpy()))


def gallery_page(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """The gallery (``index.html``): one row per input (its name, then images given by paths
    relative to the page: label map, outputs..., style)."""
    from urllib.parse import quote

    def cell(path: str) -> str:
        link = html.escape(quote(path))
        return f"<td><a href='{link}'><img src='{link}' alt='{html.escape(path)}'></a></td>"

    heads = "".join(f"<th>{html.escape(h)}</th>" for h in ["input", *header])
    body = "\n".join(f"<tr><td>{html.escape(name)}</td>{''.join(cell(p) for p in paths)}</tr>"
                     for name, paths in rows)
    return ("<!doctype html><meta charset='utf-8'><title>spadegan synthesize</title>"
            "<style>body{font-family:sans-serif}img{max-width:256px;image-rendering:pixelated}"
            "td{padding:4px;vertical-align:top}</style>"
            f"<table><tr>{heads}</tr>\n{body}</table>\n")
