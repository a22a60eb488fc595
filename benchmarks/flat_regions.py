"""Streaks and grids in flat regions: what a model paints into sky, sea and snow where the label map
says nothing but "sky".

Usage: python benchmarks/flat_regions.py [--checkpoint FOLDER ...] [--seeds N] [--out DIR]

For each model (default: the bundled one), three flat layouts at 256×256 (sky over sea, sky over
snow, sky over grass; COCO-Stuff ids), each synthesized with N random styles. In the sky, away
from the borders and the horizon, on the grey level:
- **streak**: each row's mean is removed (the sky's vertical gradient), the columns are averaged
  per picture, and the column profiles are averaged over the styles. Texture and style average
  out; what stays is painted at a fixed place whatever the style: a vertical band or a vignette.
  Reported as the standard deviation of that profile, in 8-bit levels (0: none).
- **grid**: the spectrum of each picture's column profile and row profile at the periods of the
  generator's nearest 2× upsamplings (32, 16 and 8 pixels for a 256-pixel generator that starts
  at 8×8), against the median of the spectrum: a ratio of 1 is no grid; block edges left by
  the upsampling give peaks at those periods.
With ``--out``, writes each model's first layout in all styles, for looking at 100% zoom.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spadegan.inference import Synthesizer

SKY, SEA, SNOW, GRASS, CLOUDS = 156, 154, 158, 123, 105  # COCO-Stuff ids (sky-other, sea, snow, grass, clouds)
LAYOUTS = {"sky over sea": SEA, "sky over snow": SNOW, "sky over grass": GRASS}
HORIZON = 160
PERIODS = (32, 16, 8, 4, 2)


def flat_layout(ground: int, size: int = 256) -> np.ndarray:
    labels = np.full((size, size), SKY, np.uint8)
    labels[HORIZON:] = ground
    return labels


def sky_grey(images: np.ndarray) -> np.ndarray:
    """The sky of each picture, 8 pixels in from the borders and 10 above the horizon, grey."""
    return images[:, 8:HORIZON - 10, 8:-8].astype(np.float64).mean(-1)


def fixed_pattern(sky: np.ndarray) -> float:
    """What is painted at the same place in every style: each row's mean removed (the sky's
    vertical gradient), columns averaged per picture, then over the pictures; the standard
    deviation of that profile, in 8-bit levels."""
    rows_removed = sky - sky.mean(2, keepdims=True)
    return float(rows_removed.mean(1).mean(0).std())


def roughness(sky: np.ndarray) -> tuple[float, float]:
    """Mean absolute difference of horizontal and of vertical neighbours, in 8-bit levels: a
    clear sky changes by a fraction of a level from pixel to pixel; thin vertical streaks raise
    the horizontal one."""
    return float(np.abs(np.diff(sky, axis=2)).mean()), float(np.abs(np.diff(sky, axis=1)).mean())


def block_edges(sky: np.ndarray, period: int, offset: tuple[int, int] = (8, 8)) -> float:
    """Mean |difference| across the edges of the period×period blocks that nearest 2×
    upsampling from a (256/period)-pixel map leaves, over the mean |difference| elsewhere, both
    directions: 1 when the blocks do not show. ``offset``: where the crop starts in the picture."""
    ratios = []
    for axis, start in ((2, offset[1]), (1, offset[0])):
        d = np.abs(np.diff(sky, axis=axis))
        positions = np.arange(d.shape[axis]) + start  # the difference between pixels p and p + 1
        at_edge = (positions + 1) % period == 0
        on, off = np.compress(at_edge, d, axis=axis).mean(), np.compress(~at_edge, d, axis=axis).mean()
        ratios.append(on / max(off, 1e-9))
    return float(np.mean(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", default=[None], help="model folders (default: the bundled model)")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--out", default=None)
    parser.add_argument("--photos", default=None, help="also score the photos of a landscapes data set folder "
                        "whose label maps are sky (or clouds) over the same crop: what a clean sky scores")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{'model':<36} {'layout':<16} {'fixed':>6} {'|dx|':>5} {'|dy|':>5} "
          + " ".join(f"{f'edges {p}':>8}" for p in PERIODS))
    if args.photos:
        root = Path(args.photos)
        photos = []
        for label_file in sorted((root / "train_label").glob("*.png")):
            labels = np.asarray(Image.open(label_file))
            if np.isin(labels[8:HORIZON - 10, 8:-8], (SKY, CLOUDS)).mean() > 0.99:
                photo = next((root / "train_img").glob(label_file.stem + ".*"))
                photos.append(np.asarray(Image.open(photo).convert("RGB")))
        if photos:
            sky = sky_grey(np.stack(photos))
            dx, dy = roughness(sky)
            print(f"{f'photos ({len(photos)} skies)':<36} {'':<16} {fixed_pattern(sky):>6.2f} {dx:>5.2f} {dy:>5.2f} "
                  + " ".join(f"{block_edges(sky, p):>8.2f}" for p in PERIODS))
    for checkpoint in args.checkpoint:
        synthesizer = Synthesizer.from_checkpoint(checkpoint)
        name = "bundled" if checkpoint is None else Path(checkpoint).name
        for number, (layout, ground) in enumerate(LAYOUTS.items()):
            pictures = synthesizer(flat_layout(ground), seed=list(range(args.seeds)))
            images = np.stack([np.asarray(picture) for picture in pictures])
            sky = sky_grey(images)
            dx, dy = roughness(sky)
            print(f"{name:<36} {layout:<16} {fixed_pattern(sky):>6.2f} {dx:>5.2f} {dy:>5.2f} "
                  + " ".join(f"{block_edges(sky, p):>8.2f}" for p in PERIODS))
            if args.out and number == 0:
                out = Path(args.out)
                out.mkdir(parents=True, exist_ok=True)
                columns = 4
                rows = [np.concatenate(list(images[r:r + columns]), 1) for r in range(0, len(images) - columns + 1,
                                                                                       columns)]
                Image.fromarray(np.concatenate(rows, 0)).save(out / f"{name}_flat.png")


if __name__ == "__main__":
    main()
