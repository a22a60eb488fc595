"""The style benchmark: held-out landscape maps synthesized in the style of reference pictures of
other layouts, scored by :mod:`spadegan.evaluation.style`, beside the perfect transfer.

Maps and references are procedural landscapes (:mod:`spadegan.data.landscapes`) drawn by seed: map
*i* is the layout of sample (``map_seed``, *i*), reference *j* the picture of sample
(``reference_seed``, *j*), so the references never share a map's layout, and every model is
scored on the same pairs. Every map is synthesized in the style of every reference.

Procedural landscapes know their own appearance, which gives the yardstick: the **perfect
transfer** renders each map's layout under each reference's appearance (time of day, season,
weather, colour grade: ``generate_landscape(map, appearance_seed=reference)``). It is what an
ideal model would paint, and it does not score 1: the same appearance colours another layout's
classes a little differently (depth haze, light, texture). A model's style following is reported
as a fraction of it, channel by channel.

Seed variety: the first ``variety_maps`` maps, ``samples`` times each with random styles (the
perfect transfer: under the first ``samples`` references' appearances).

The synthesis is a callable, as in :mod:`spadegan.evaluation.protocol`, so this module never needs
the inference layer: a model comes as a :class:`StyleModel` (a synthesize callable and the facts
that decide whether it can take the benchmark), which ``spadegan evaluate --style_metrics`` fills in
from a :class:`spadegan.inference.Synthesizer`. :func:`style_benchmark_columns` runs the benchmark on
a list of models and gives the columns of their result rows (the perfect transfer's for the real
images' row) and a summary line for each.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.landscapes import MANIFEST, LandscapeSample, generate_landscape
from ..imageio import image_to_tensor, to_levels
from .protocol import REAL
from .style import (
    CHANNELS,
    MIN_FRACTION,
    StyleScores,
    class_colours,
    following_error,
    seed_variety,
    style_following,
)

# (N×1×H×W class ids, a 3×H×W reference in [-1, 1] or None for random styles, one seed per image)
# → N×3×H×W images in [-1, 1]
Synthesize = Callable[[torch.Tensor, torch.Tensor | None, list[int]], torch.Tensor]


@dataclass(frozen=True)
class StyleBenchmark:
    """Which maps, references and seeds; the defaults are the benchmark the README reports.

    The references outnumber the maps because the references set most of the uncertainty: a
    model's reaction to one reference (its code's chance shift of colour) acts on all of that
    reference's pairs and averages out only over references. Seed variety varies from map to
    map and takes more maps than the pairs need."""

    size: tuple[int, int]          # (width, height) of maps and references: the model's own size
    maps: int = 12                 # map i: the layout of landscape (map_seed, i)
    references: int = 32           # reference j: the picture of landscape (reference_seed, j)
    map_seed: int = 2              # the held-out set of the README's Table 1 (seed 1 trains)
    reference_seed: int = 4        # a set no model here trains or selects on
    variety_maps: int = 16         # maps 0, 1, ... sampled for seed variety ...
    samples: int = 4               # ... this many times each
    seed: int = 0                  # style seeds: image n of the run gets seed + n
    min_fraction: float = MIN_FRACTION   # see spadegan.evaluation.style.class_colours

    def __post_init__(self) -> None:
        if self.maps < 1 or self.references < 2:
            raise ValueError(f"the style benchmark needs at least 1 map and 2 references, got {self.maps} "
                             f"and {self.references}")
        if self.samples < 2 or self.variety_maps < 1:
            raise ValueError(f"seed variety needs at least 2 samples of at least 1 map, got {self.samples} "
                             f"samples of {self.variety_maps}")
        if self.map_seed == self.reference_seed:
            raise ValueError(f"maps and references both from seed {self.map_seed}: references must have other "
                             "layouts than the maps")

    def settings(self) -> dict:
        """What a result record keeps, so that a row says what it was measured on."""
        return asdict(self)

    def map_landscape(self, i: int, appearance: int | None = None) -> LandscapeSample:
        """Map ``i`` (its own picture, or under reference ``appearance``'s look)."""
        look = None if appearance is None else (self.reference_seed, appearance)
        return generate_landscape((self.map_seed, i), self.size, appearance_seed=look)

    def reference(self, j: int) -> LandscapeSample:
        return generate_landscape((self.reference_seed, j), self.size)


def _labels_tensor(labels: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(labels)).long()[:, None]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc[:30], unit="img", disable=not enabled, dynamic_ncols=True)


def perfect_transfer(benchmark: StyleBenchmark, progress: bool = True) -> StyleScores:
    """The yardstick: every map's layout rendered under every reference's appearance."""
    b = benchmark
    references = [class_colours(r.image, r.label, b.min_fraction) for r in map(b.reference, range(b.references))]
    grid = [[] for _ in range(b.references)]   # grid[j][i]: reference j, map i
    with _progress(b.maps * b.references + b.variety_maps * b.samples, "perfect transfer", progress) as bar:
        for i in range(b.maps):
            for j in range(b.references):
                render = b.map_landscape(i, appearance=j)
                grid[j].append((references[j], class_colours(render.image, render.label, b.min_fraction)))
            bar.update(b.references)
        variety = []
        for i in range(b.variety_maps):
            variety.append(np.stack([b.map_landscape(i, appearance=j).image for j in range(b.samples)]))
            bar.update(b.samples)
    return _scores(grid, variety)


def _scores(grid: list[list], variety: list[np.ndarray]) -> StyleScores:
    return StyleScores(style_following(pair for row in grid for pair in row), seed_variety(variety),
                       following_error(grid))


def run_style_benchmark(synthesize: Synthesize, benchmark: StyleBenchmark, batch_size: int = 8,
                        progress: bool = True, name: str = "style") -> StyleScores:
    """Synthesize every map in every reference's style (one seed per image, so the images do not
    depend on ``batch_size``) and the seed-variety samples; score them."""
    b = benchmark
    maps = [b.map_landscape(i).label for i in range(max(b.maps, b.variety_maps))]
    grid = []   # grid[j][i]: reference j, map i
    with _progress(b.maps * b.references + b.variety_maps * b.samples, name, progress) as bar:
        for j in range(b.references):
            reference = b.reference(j)
            wanted = class_colours(reference.image, reference.label, b.min_fraction)
            style = image_to_tensor(reference.image)
            grid.append([])
            for start in range(0, b.maps, batch_size):
                batch = range(start, min(start + batch_size, b.maps))
                seeds = [b.seed + j * b.maps + i for i in batch]
                images = to_levels(synthesize(_labels_tensor([maps[i] for i in batch]), style, seeds))
                grid[j] += [(wanted, class_colours(image, maps[i], b.min_fraction)) for i, image in zip(batch, images)]
                bar.update(len(batch))
        variety = _variety_samples(synthesize, b, maps, batch_size, bar)
    return _scores(grid, variety)


def _variety_samples(synthesize: Synthesize, b: StyleBenchmark, maps: list, batch_size: int, bar) -> list[np.ndarray]:
    """``samples`` pictures of each of the first ``variety_maps`` maps, random codes by seed."""
    first = b.seed + b.maps * b.references   # the variety samples' seeds follow the pairs'
    items = [(i, k) for i in range(b.variety_maps) for k in range(b.samples)]
    samples: dict[int, list[np.ndarray]] = {}
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        seeds = [first + i * b.samples + k for i, k in batch]
        images = to_levels(synthesize(_labels_tensor([maps[i] for i, _ in batch]), None, seeds))
        for (i, _), image in zip(batch, images):
            samples.setdefault(i, []).append(image)
        bar.update(len(batch))
    return [np.stack(s) for s in samples.values()]


def run_seed_variety(synthesize: Synthesize, benchmark: StyleBenchmark, batch_size: int = 8,
                     progress: bool = True, name: str = "variety") -> float:
    """The seed variety alone, for a model that draws a random code but takes no reference
    picture (OASIS's 3-D noise): the same maps and seeds as :func:`run_style_benchmark`'s."""
    b = benchmark
    maps = [b.map_landscape(i).label for i in range(b.variety_maps)]
    with _progress(b.variety_maps * b.samples, name, progress) as bar:
        return seed_variety(_variety_samples(synthesize, b, maps, batch_size, bar))


def summary(name: str, scores: StyleScores, perfect: StyleScores | None = None) -> str:
    """One line for a person: following per channel with its standard error, as a fraction of the
    perfect transfer's (when given), the spreads and the seed variety."""
    f = scores.following
    errors = scores.following_error or (None,) * 3
    parts = [", ".join(f"{c} {r:.2f}" + ("" if e is None else f" ± {e:.2f}")
                       for c, r, e in zip(CHANNELS, f.correlation, errors))]
    if perfect is not None:
        parts.append(", ".join("n/a" if q == 0 else f"{r / q:.0%}"
                               for r, q in zip(f.correlation, perfect.following.correlation))
                     + " of the perfect transfer's")
    parts.append(f"colour spread {f.output_spread:.1f} of the references' {f.reference_spread:.1f} levels "
                 f"({f.spread_ratio:.0%})")
    parts.append(f"seed variety {scores.seed_variety:.1f} levels")
    return f"{name}: style following " + "; ".join(parts)


def map_seed_of(dataroot: str | os.PathLike | None, default: int = StyleBenchmark.map_seed) -> int:
    """The seed of a landscapes folder ``dataroot`` (written by ``spadegan landscapes``), so that the
    style benchmark's maps are the evaluated set's first maps; ``default`` for any other folder
    or none (the benchmark's default is the README's held-out set)."""
    manifest = Path(dataroot) / MANIFEST if dataroot else None
    if manifest is not None and manifest.is_file():
        return int(json.loads(manifest.read_text())["seed"])
    return default


@dataclass(frozen=True)
class StyleModel:
    """What the style benchmark needs of a model: how it synthesizes, and the facts that decide
    whether it can take the benchmark's maps and references (see :func:`why_no_style_benchmark`)."""

    synthesize: Synthesize             # maps, a reference or None, seeds → images (see Synthesize)
    has_encoder: bool                  # whether it has an image encoder, so it takes a reference picture
    label_nc: int                      # the classes its label maps hold
    output_size: tuple[int, int]       # (height, width) of the images it makes
    takes_seed: bool = False           # whether it draws a random code (or noise) from a seed


def why_no_style_benchmark(model: StyleModel, size: tuple[int, int]) -> str | None:
    """Why ``model`` cannot take the style benchmark's maps and references of ``size``
    ((height, width)), or None when it can."""
    if not model.has_encoder and not model.takes_seed:
        return "it has no image encoder and no noise"
    if model.label_nc != 182:   # the landscapes' class ids are COCO-Stuff's
        return f"it takes {model.label_nc} classes, not the landscapes' COCO-Stuff ids"
    if model.output_size != size:
        return f"it makes {model.output_size[1]}×{model.output_size[0]} images, not {size[1]}×{size[0]}"
    return None


def style_benchmark_columns(benchmark: StyleBenchmark, models: Sequence[tuple[str, StyleModel]],
                            batch_size: int = 8, progress: bool = True) -> tuple[dict[str, dict], list[str]]:
    """Run ``benchmark`` on every (name, model) that can take it, and the perfect transfer.

    Returns the columns to add to each result row, by row name (:data:`spadegan.evaluation.protocol.REAL`,
    the real images' row, gets the perfect transfer's; a model's following is also given as a
    fraction of it), each with the benchmark's settings and its seconds; and one summary line per
    row, the perfect transfer's first, saying why for a model that cannot take the benchmark."""
    size = (benchmark.size[1], benchmark.size[0])
    started = time.perf_counter()
    perfect = perfect_transfer(benchmark, progress)
    columns = {REAL: {**perfect.columns(), "style_settings": benchmark.settings(),
                      "style_seconds": round(time.perf_counter() - started, 1)}}
    lines = [summary("perfect transfer (the real images' row)", perfect)]
    for name, model in models:
        if problem := why_no_style_benchmark(model, size):
            lines.append(f"{name}: no style benchmark: {problem}")
            continue
        started = time.perf_counter()
        if not model.has_encoder:  # noise, no reference picture: its variety only
            variety = run_seed_variety(model.synthesize, benchmark, batch_size, progress, f"variety {name}")
            columns[name] = {"seed_variety": variety, "style_settings": benchmark.settings(),
                             "style_seconds": round(time.perf_counter() - started, 1)}
            lines.append(f"{name}: no reference picture (no image encoder); seed variety {variety:.1f} levels")
            continue
        scores = run_style_benchmark(model.synthesize, benchmark, batch_size, progress, f"style {name}")
        columns[name] = {**scores.columns(perfect), "style_settings": benchmark.settings(),
                         "style_seconds": round(time.perf_counter() - started, 1)}
        lines.append(summary(name, scores, perfect))
    return columns, lines
