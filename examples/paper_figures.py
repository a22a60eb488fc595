"""The paper's qualitative figures, in miniature, from trained checkpoints.

- ``uniform.png`` (Fig. 3): label maps of one class each; SPADE keeps the class, while a generator
  that feeds the label map through instance normalization (pix2pixHD) loses it, since a uniform
  input is normalized to the same zeros whatever the class.
- ``styles.png`` (Fig. 1): rows are label maps, columns reference images whose style the image
  encoder reads; the first column shows the label maps.
- ``multimodal.png`` (Fig. 9): one label map, several random style codes.
- ``comparison.png`` (Fig. 5), with ``--pix2pixhd``: held-out label maps, the real photos,
  pix2pixHD's pictures and SPADE's (random style).

    python examples/paper_figures.py --spade CKPT [--pix2pixhd CKPT] --labels DIR --images DIR --out DIR
        [--colors 256]

``--labels`` / ``--images`` are a ``custom``-layout data set (e.g. a landscapes validation set);
label maps are taken in sorted order, style images by index. Each figure is also written as a
small HTML page (``figures.html``) with captions.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from spadegan.imageio import read_id_map, save_png_atomic, to_pil
from spadegan.inference import Synthesizer
from spadegan.palettes import COCO_STUFF

# Classes shown in the uniform-map figure (COCO-Stuff ids by name, as the landscapes use them).
UNIFORM_CLASSES = ("sky-other", "sea", "grass", "tree", "mountain", "sand", "snow", "rock")


def class_id(name: str) -> int:
    return COCO_STUFF.names.index(name)


def grid(rows: list[list[Image.Image]], captions: list[str] | None = None, cell: int = 160,
         pad: int = 4, header: int = 18) -> Image.Image:
    """Images in rows of equal length, each scaled to ``cell`` px, with optional column captions."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    top = header if captions else 0
    sheet = Image.new("RGB", (n_cols * (cell + pad) + pad, top + n_rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for c, caption in enumerate(captions or []):
        draw.text((pad + c * (cell + pad) + 2, 3), caption, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            resample = Image.NEAREST if image.info.get("label_map") else Image.BICUBIC  # never blend ids
            sheet.paste(image.resize((cell, cell), resample),
                        (pad + c * (cell + pad), top + pad + r * (cell + pad)))
    return sheet


def colorized(label: torch.Tensor) -> Image.Image:
    image = Image.fromarray(COCO_STUFF.colorize(label.numpy()))
    image.info["label_map"] = True
    return image


def uniform_figure(spade: Synthesizer, pix2pixhd: Synthesizer | None, seed: int) -> Image.Image:
    height, width = spade.output_size
    columns, captions = [], []
    for name in UNIFORM_CLASSES:
        label = torch.full((height, width), class_id(name), dtype=torch.long)
        column = [colorized(label), spade(label, seed=seed)[0]]
        if pix2pixhd is not None:
            column.append(pix2pixhd(label)[0])
        columns.append(column)
        captions.append(name)
    rows = [list(row) for row in zip(*columns)]  # rows: label, SPADE, pix2pixHD
    return grid(rows, captions)


def style_figure(spade: Synthesizer, labels: list[Path], styles: list[Path]) -> Image.Image:
    rows = []
    for label_path in labels:
        label = read_id_map(label_path)
        rows.append([colorized(label)] + [spade(label, style=style, seed=0)[0] for style in styles])
    header = [Image.new("RGB", (8, 8), "white")] + [Image.open(s).convert("RGB") for s in styles]
    return grid([header] + rows, ["label \\ style"] + [f"style {i + 1}" for i in range(len(styles))])


def comparison_figure(spade: Synthesizer, pix2pixhd: Synthesizer, labels: list[Path],
                      images: list[Path]) -> Image.Image:
    columns = []
    for label_path, image_path in zip(labels, images):
        label = read_id_map(label_path)
        columns.append([colorized(label), Image.open(image_path).convert("RGB"), pix2pixhd(label)[0],
                        spade(label, seed=0)[0]])
    rows = [list(row) for row in zip(*columns)]  # rows: label, photo, pix2pixHD, SPADE
    return grid(rows)


def multimodal_figure(spade: Synthesizer, label_path: Path, image_path: Path, samples: int) -> Image.Image:
    label = read_id_map(label_path)
    row = [colorized(label), Image.open(image_path).convert("RGB")]
    row += [spade(label, seed=seed)[0] for seed in range(samples)]
    return grid([row], ["label", "real"] + [f"seed {s}" for s in range(samples)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spade", required=True, help="SPADE checkpoint with an image encoder")
    parser.add_argument("--pix2pixhd", help="pix2pixHD checkpoint (for the uniform-map and side-by-side comparisons)")
    parser.add_argument("--labels", required=True, help="folder of label maps (class ids)")
    parser.add_argument("--images", required=True, help="folder of the matching photos (style references)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--styles", type=int, default=5)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colors", type=int, default=0,
                        help="store each figure with at most this many colours (256 makes the PNGs about "
                             "four times smaller, as docs/figures holds them); 0: full colour")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    spade = Synthesizer.from_checkpoint(args.spade, device="cpu")
    pix2pixhd = Synthesizer.from_checkpoint(args.pix2pixhd, device="cpu") if args.pix2pixhd else None
    labels = sorted(Path(args.labels).glob("*.png"))
    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(labels) < args.rows + args.styles or len(images) != len(labels):
        raise SystemExit(f"{args.labels}: need at least {args.rows + args.styles} label maps with one photo each")
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(labels), args.rows + args.styles, replace=False)
    row_labels = [labels[i] for i in picks[:args.rows]]
    style_images = [images[i] for i in picks[args.rows:]]

    out = Path(args.out)
    figures = {
        "uniform.png": ("Fig. 3 in miniature: label maps of a single class (top), SPADE (middle)"
                        + (", pix2pixHD (bottom)" if pix2pixhd else ""), uniform_figure(spade, pix2pixhd, args.seed)),
        "styles.png": ("Fig. 1 in miniature: label maps (rows) rendered in the style of reference photos "
                       "(columns) read by the image encoder", style_figure(spade, row_labels, style_images)),
        "multimodal.png": ("Fig. 9 in miniature: one label map, several random style codes",
                           multimodal_figure(spade, row_labels[0], images[picks[0]], args.samples)),
    }
    if pix2pixhd is not None:
        figures["comparison.png"] = (
            "Fig. 5 in miniature: held-out label maps, the real photos, pix2pixHD, SPADE (random style)",
            comparison_figure(spade, pix2pixhd, [labels[i] for i in picks], [images[i] for i in picks]))
    for name, (_, image) in figures.items():
        save_png_atomic(image.quantize(args.colors, kmeans=1) if args.colors else image, out / name)
    page = "".join(f"<figure><img src='{name}'><figcaption>{html.escape(caption)}</figcaption></figure>"
                   for name, (caption, _) in figures.items())
    (out / "figures.html").write_text(f"<!doctype html><meta charset='utf-8'><title>figures</title>{page}\n")
    print(f"wrote {', '.join(figures)} and figures.html to {out}")


if __name__ == "__main__":
    main()
