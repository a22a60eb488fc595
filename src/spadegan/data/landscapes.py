"""Procedural landscapes: paired (label map, instance map, photo-like image) samples.

Outdoor scenes in the spirit of the GauGAN demo (Flickr landscapes), labelled with COCO-Stuff
classes (our 0-based ids, see :mod:`spadegan.palettes`), so that a SPADE model or a segmentation
network can be trained without downloading a data set.

A sample is made in two independent steps, each with its own random stream:

1. **Layout** (:func:`generate_layout`, a :class:`SceneLayout`): the label map, the instance map and a few per-pixel
   fields the renderer needs (depth for atmospheric perspective, object-local coordinates for
   shading, a per-object tint). Scenes are composed back to front like a painter: sky, clouds,
   mountain ranges (fractal ridgelines, snow caps above a snow line), hills, the ground (grass,
   sea with a sand beach, snow fields, dunes), rivers and dirt paths in perspective, flower
   patches, a fog band, then trees, bushes and rocks sorted by distance. A scene *kind*
   (coast, open sea, mountains, valley, forest, meadow, winter, dunes) sets the odds of each
   element, so the layouts vary a lot.
2. **Rendering** (:func:`render_layout`) under an *appearance* (:func:`sample_appearance`): time
   of day, season, weather, sun position and a colour grade. Each class has its own texture
   built from shared fractal noise (fBm) fields — wave stripes and sun glints on water, grass
   streaks, foliage clumps, rock cracks, sand ripples, cloud puffs, snow shading — so classes
   differ by texture as well as by colour, and one label map has many valid pictures.

Everything is a pure function of the seed: ``numpy.random.Generator(PCG64(...))`` streams made
from :class:`numpy.random.SeedSequence`, never global state, so the same seed gives
byte-identical arrays on every machine and in every process.

Instance maps follow the COCO-Stuff files (8-bit, see ``coco_stuff_samples/*_inst``): stuff
pixels hold their class id; each tree is an object with its own id 1..90 (below every stuff id
this module uses, so the two never collide).

Sizes are ``(width, height)``, as in PIL and as ``spadegan landscapes --size 512x256``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence
from PIL import Image

from spadegan.atomic import atomic_write
from spadegan.palettes import COCO_STUFF


def _class_id(name: str) -> int:
    return COCO_STUFF.names.index(name)


# COCO-Stuff ids (0-based, as our label maps store them), looked up by name.
SKY = _class_id("sky-other")
CLOUDS = _class_id("clouds")
MOUNTAIN = _class_id("mountain")
HILL = _class_id("hill")
ROCK = _class_id("rock")
SEA = _class_id("sea")
RIVER = _class_id("river")
SAND = _class_id("sand")
GRASS = _class_id("grass")
TREE = _class_id("tree")
BUSH = _class_id("bush")
FLOWER = _class_id("flower")
SNOW = _class_id("snow")
DIRT = _class_id("dirt")
FOG = _class_id("fog")

CLASS_IDS: tuple[int, ...] = (SKY, CLOUDS, MOUNTAIN, HILL, ROCK, SEA, RIVER, SAND, GRASS, TREE,
                              BUSH, FLOWER, SNOW, DIRT, FOG)
CLASS_NAMES: dict[int, str] = {i: COCO_STUFF.names[i] for i in CLASS_IDS}
MAX_TREES = 90  # tree instance ids 1..90 stay below the smallest stuff id used (bush, 96)
assert MAX_TREES < min(CLASS_IDS)

SCENE_KINDS = ("coast", "sea", "mountains", "valley", "forest", "meadow", "winter", "dunes")
_SCENE_ODDS = (0.16, 0.08, 0.16, 0.15, 0.13, 0.14, 0.10, 0.08)
TIMES_OF_DAY = ("day", "golden hour", "sunset", "dusk", "overcast")
_TIME_ODDS = (0.42, 0.15, 0.13, 0.08, 0.22)
SEASONS = ("summer", "spring", "autumn", "winter")
_SEASON_ODDS = (0.45, 0.15, 0.25, 0.15)

_GROUND = (GRASS, SNOW, SAND, DIRT, FLOWER)  # where trees, bushes and rocks may stand


# ---------------------------------------------------------------------------------------------
# Seeds and noise
# ---------------------------------------------------------------------------------------------

def _words(seed: int | Sequence[int]) -> list[int]:
    words = [seed] if np.ndim(seed) == 0 else list(seed)
    if any(int(w) < 0 for w in words):
        raise ValueError(f"seeds must be non-negative integers, got {seed!r}")
    return [int(w) for w in words]


def _rng(seed: int | Sequence[int], stream: int) -> Generator:
    """An independent PCG64 stream for (seed, stream): 0 = layout, 1 = appearance, 2 = textures.

    The word count leads the entropy: SeedSequence pads with zeros, so without it the seeds 7
    and (7, 0) would be the same stream."""
    words = _words(seed)
    return Generator(PCG64(SeedSequence([len(words), *words], spawn_key=(stream,))))


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    width, height = (size, size) if np.ndim(size) == 0 else size
    width, height = int(width), int(height)
    if width < 16 or height < 16:
        raise ValueError(f"landscapes need at least 16×16 pixels, got {width}×{height}")
    return width, height


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic upsampling of a small float grid to height×width (PIL's C resize: fast)."""
    image = Image.fromarray(np.ascontiguousarray(grid, dtype=np.float32))
    return np.asarray(image.resize((width, height), Image.BICUBIC), dtype=np.float32)


def fbm(rng: Generator, height: int, width: int, cells: tuple[float, float] = (4, 4),
        octaves: int = 4, gain: float = 0.5) -> np.ndarray:
    """Fractal Brownian motion: octaves of upsampled random grids, about zero mean, unit std.

    ``cells`` = (rows, columns) of the coarsest grid; each octave doubles them (up to the pixel
    grid) with amplitude × ``gain``. Unequal cells give anisotropic noise (more rows than
    columns: horizontal streaks).
    """
    rows, cols = cells
    # Octaves are summed on a grid 4× finer than the finest octave (no finer than the output),
    # then upsampled once: smooth noise needs no more pixels than that, and it is much faster.
    finest = 2 ** (octaves - 1)
    work_h, work_w = min(height, int(np.ceil(4 * rows * finest))), min(width, int(np.ceil(4 * cols * finest)))
    total = np.zeros((work_h, work_w), np.float32)
    amplitude, norm = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = min(int(np.ceil(rows)), height) + 1, min(int(np.ceil(cols)), width) + 1
        total += amplitude * _upsample(rng.standard_normal((gh, gw), dtype=np.float32), work_h, work_w)
        norm += amplitude ** 2
        amplitude *= gain
        rows, cols = rows * 2, cols * 2
    if (work_h, work_w) != (height, width):
        total = _upsample(total, height, width)
    # Bicubic upsampling smooths the grid values; 0.6 brings the std back to about 1.
    return total / np.float32(0.6 * np.sqrt(norm))


def fbm1d(rng: Generator, n: int, cells: float = 4, octaves: int = 6, gain: float = 0.55) -> np.ndarray:
    """1-D fractal noise (linear interpolation: midpoint-displacement-like ridgelines), in [0, 1]."""
    x = np.arange(n, dtype=np.float32)
    total = np.zeros(n, np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        knots = max(int(cells), 1) + 1
        values = rng.standard_normal(knots).astype(np.float32)
        total += amplitude * np.interp(x, np.linspace(0, n - 1, knots), values).astype(np.float32)
        amplitude *= gain
        cells *= 2
    span = total.max() - total.min()
    return (total - total.min()) / (span if span > 0 else 1.0)


# ---------------------------------------------------------------------------------------------
# SceneLayout
# ---------------------------------------------------------------------------------------------

@dataclass
class SceneLayout:
    """What a scene holds, per pixel: the labels and the fields the renderer shades with."""

    label: np.ndarray     # H×W uint8 COCO-Stuff ids
    instance: np.ndarray  # H×W uint8: class id for stuff, 1..90 for each tree
    depth: np.ndarray     # H×W float32, 0 near .. 1 far (atmospheric perspective)
    u: np.ndarray         # H×W float32 class-specific coordinate (object-local x, cloud density, ...)
    v: np.ndarray         # H×W float32 class-specific coordinate (object-local y, position in a band)
    tint: np.ndarray      # H×W float32 in [-1, 1]: colour variation of each object / range
    kind: np.ndarray      # H×W uint8 sub-kind (1 conifer, 2 trunk, 3 snow on a mountain;
                          # under fog: the class the fog covers)
    horizon: int          # row of the horizon
    scene: dict = field(default_factory=dict)  # the composition (kind and elements), for the record

    @property
    def size(self) -> tuple[int, int]:
        return self.label.shape[1], self.label.shape[0]


class _Canvas:
    """The layout under construction; :meth:`paint` puts a layer over what is there."""

    def __init__(self, width: int, height: int, horizon: int):
        self.w, self.h, self.horizon = width, height, horizon
        self.label = np.full((height, width), SKY, np.uint8)
        self.instance = np.full((height, width), SKY, np.uint8)
        self.depth = np.ones((height, width), np.float32)
        self.u = np.zeros((height, width), np.float32)
        self.v = np.zeros((height, width), np.float32)
        self.tint = np.zeros((height, width), np.float32)
        self.kind = np.zeros((height, width), np.uint8)
        self.yy = np.arange(height, dtype=np.float32)[:, None]
        self.xx = np.arange(width, dtype=np.float32)[None, :]

    def paint(self, mask: np.ndarray, cls: int, window: tuple[slice, slice] | None = None,
              instance: int | None = None, depth=1.0, u=0.0, v=0.0, tint=0.0, kind=0) -> None:
        """Set ``mask`` pixels (of ``window``, default the whole canvas) to class ``cls``.

        Field values are scalars or arrays broadcastable to the mask's shape."""
        window = window or (slice(None), slice(None))
        values = {"label": cls, "instance": cls if instance is None else instance, "depth": depth,
                  "u": u, "v": v, "tint": tint, "kind": kind}
        for name, value in values.items():
            target = getattr(self, name)[window]
            target[mask] = value if np.ndim(value) == 0 else np.broadcast_to(value, mask.shape)[mask]

    def ground_depth(self) -> np.ndarray:
        """Depth of flat ground by row: far (0.75) at the horizon, 0 at the bottom edge."""
        t = np.clip((self.yy - self.horizon) / max(self.h - self.horizon, 1), 0, 1)
        return (0.75 * (1 - t) ** 2.5).astype(np.float32)

    def perspective(self, y: float) -> float:
        """0 at the horizon .. 1 at the bottom edge (how near a point on the ground is)."""
        return float(np.clip((y - self.horizon) / max(self.h - self.horizon, 1), 0, 1))

    def finish(self, scene: dict) -> SceneLayout:
        return SceneLayout(self.label, self.instance, self.depth, self.u, self.v, self.tint, self.kind,
                      self.horizon, scene)


def _plan(rng: Generator) -> dict:
    """The scene's composition: its kind and which elements it holds (odds set by the kind)."""
    kind = SCENE_KINDS[rng.choice(len(SCENE_KINDS), p=_SCENE_ODDS)]
    odds = {  # kind: (mountains, hills, river, path, trees, bushes, flowers, rocks, fog)
        "coast": (0.35, 0.35, 0.0, 0.15, 0.35, 0.4, 0.15, 0.75, 0.15),
        "sea": (0.35, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.25),
        "mountains": (1.0, 0.35, 0.45, 0.25, 0.65, 0.4, 0.3, 0.6, 0.35),
        "valley": (0.5, 0.9, 0.8, 0.3, 0.8, 0.6, 0.4, 0.3, 0.3),
        "forest": (0.35, 0.5, 0.25, 0.55, 1.0, 0.7, 0.2, 0.3, 0.35),
        "meadow": (0.3, 0.7, 0.3, 0.45, 0.55, 0.7, 0.9, 0.3, 0.2),
        "winter": (0.9, 0.3, 0.3, 0.2, 0.7, 0.2, 0.0, 0.5, 0.35),
        "dunes": (0.35, 0.1, 0.1, 0.0, 0.0, 0.15, 0.0, 0.45, 0.1),
    }[kind]
    names = ("mountains", "hills", "river", "path", "trees", "bushes", "flowers", "rocks", "fog")
    plan = {"kind": kind, **{name: bool(rng.random() < p) for name, p in zip(names, odds)}}
    plan["ground"] = {"coast": SEA, "sea": SEA, "winter": SNOW, "dunes": SAND}.get(kind, GRASS)
    plan["clouds"] = float(rng.choice([0.0, rng.uniform(0.1, 0.35), rng.uniform(0.35, 0.7)],
                                      p=[0.2, 0.45, 0.35]))
    plan["snow_caps"] = plan["mountains"] and bool(rng.random() < (1.0 if kind == "winter" else 0.55))
    return plan


def _sky_and_clouds(c: _Canvas, rng: Generator, cover: float) -> None:
    """Clouds: thresholded horizontally stretched fBm, thinning toward the horizon."""
    if cover <= 0:
        return
    density = fbm(rng, c.h, c.w, cells=(3.0, 1.6), octaves=5, gain=0.55)
    # Fewer clouds low in the sky (they are farther and flatter there).
    height = np.clip(1 - c.yy / max(c.horizon, 1), 0, 1)
    density = density + 0.6 * height - 0.3
    threshold = np.quantile(density[: c.horizon], 1 - cover) if c.horizon > 0 else np.inf
    mask = (density > threshold) & (c.yy < c.horizon)
    c.paint(mask, CLOUDS, depth=0.95, u=np.clip((density - threshold) * 1.5, 0, 1))


def _ridge(rng: Generator, c: _Canvas, top: float, base: float, cells: float, octaves: int,
           sharpness: float) -> np.ndarray:
    """A ridgeline: row of the skyline per column, between ``top`` and ``base`` rows."""
    profile = fbm1d(rng, c.w, cells=cells, octaves=octaves) ** sharpness
    return (base - (base - top) * profile).astype(np.float32)


def _mountains(c: _Canvas, rng: Generator, snow_caps: bool) -> list[dict]:
    """One or two ranges, far to near; snow above a noisy snow line that follows each range."""
    ranges = []
    count = 1 + int(rng.random() < 0.55)
    for r in range(count):
        near = r == count - 1 and count > 1
        peak = c.horizon * rng.uniform(0.3, 0.75) * (0.7 if near else 1.0)
        top = c.horizon - peak
        base = c.horizon - peak * rng.uniform(-0.1, 0.35)  # may dip below the horizon: a gap
        ridge = _ridge(rng, c, top, base, cells=rng.uniform(2, 5), octaves=7, sharpness=1.4)
        bottom = c.horizon + 2
        mask = (c.yy >= ridge[None, :]) & (c.yy < bottom)
        height = np.maximum(bottom - ridge[None, :], 1)
        position = (c.yy - ridge[None, :]) / height  # 0 on the ridge .. 1 at the foot
        depth = 0.85 if not near else 0.7
        tint = rng.uniform(-1, 1)
        c.paint(mask, MOUNTAIN, depth=depth, u=position, v=ridge[None, :] / c.h, tint=tint)
        if snow_caps:
            snow_line = ridge.min() + (c.horizon - ridge.min()) * rng.uniform(0.25, 0.6)
            wobble = fbm(rng, c.h, c.w, cells=(6, 10), octaves=3) * (c.horizon - top) * 0.12
            # Snow lies in gullies below the line too: a fractal edge, not a straight cut.
            snow = mask & (c.yy + wobble < snow_line) & (position < 0.85)
            c.paint(snow, SNOW, depth=depth, u=position, v=ridge[None, :] / c.h, tint=tint, kind=3)
        ranges.append({"top": int(top), "snow": snow_caps})
    return ranges


def _hills(c: _Canvas, rng: Generator) -> int:
    """One or two layers of smooth rounded hills standing on the horizon."""
    layers = 1 + int(rng.random() < 0.4)
    for layer in range(layers):
        height = c.h * rng.uniform(0.05, 0.2) * (0.7 if layer else 1.0)
        ridge = _ridge(rng, c, c.horizon - height, c.horizon + 0.01 * c.h, cells=rng.uniform(1, 3),
                       octaves=3, sharpness=0.8)
        foot = c.horizon + 1 + fbm1d(rng, c.w, cells=3, octaves=2) * 0.02 * c.h
        mask = (c.yy >= ridge[None, :]) & (c.yy < foot[None, :])
        position = (c.yy - ridge[None, :]) / np.maximum(foot - ridge, 1)[None, :]
        c.paint(mask, HILL, depth=0.6 - 0.12 * layer, u=position, v=ridge[None, :] / c.h,
                tint=rng.uniform(-1, 1))
    return layers


def _ground(c: _Canvas, rng: Generator, plan: dict) -> dict:
    """Everything below the horizon: grass, snow or sand; sea with a beach on coasts."""
    below = np.broadcast_to(c.yy >= c.horizon, (c.h, c.w))
    depth = c.ground_depth()
    t = np.clip((c.yy - c.horizon) / max(c.h - c.horizon, 1), 0, 1)
    ground = plan["ground"]
    info: dict = {}
    if ground != SEA:
        c.paint(below, ground, depth=depth, u=t)
        # Patches of another ground (bare dirt in grass, grass through thin snow, sand in dunes).
        other = {GRASS: DIRT, SNOW: GRASS, SAND: DIRT}[ground]
        if rng.random() < 0.45:
            patches = fbm(rng, c.h, c.w, cells=(6, 3), octaves=3)
            c.paint(below & (patches > rng.uniform(1.1, 1.8)), other, depth=depth, u=t)
        return info
    c.paint(below, SEA, depth=depth, u=t)
    if plan["kind"] == "sea":
        return info
    # A shoreline across the view, sloping and wobbling: sand beach below it, land further down.
    level = c.horizon + (c.h - c.horizon) * rng.uniform(0.15, 0.7)
    slope = rng.uniform(-0.4, 0.4) * (c.h - c.horizon) / c.w
    wobble = (fbm1d(rng, c.w, cells=4, octaves=5) - 0.5) * 0.15 * (c.h - c.horizon)
    shore = level + slope * (c.xx[0] - c.w / 2) + wobble
    beach = c.yy >= shore[None, :]
    c.paint(beach & below, SAND, depth=depth, u=t)
    if rng.random() < 0.5:  # grass behind the beach
        width = (c.h - c.horizon) * rng.uniform(0.15, 0.4)
        land = shore + width + (fbm1d(rng, c.w, cells=5, octaves=4) - 0.5) * 0.3 * width
        c.paint((c.yy >= land[None, :]) & below, GRASS, depth=depth, u=t)
    info["shore"] = float(level)
    return info


def _winding_band(c: _Canvas, rng: Generator, start: float, near_width: float, far_width: float) -> np.ndarray:
    """A band on the ground that winds from row ``start`` down to the bottom edge, in perspective.

    Its centre meanders (sines of random phase, wider swings when near), and its width grows
    from ``far_width`` to ``near_width`` pixels as it comes closer.
    """
    t = np.clip((c.yy[:, 0] - c.horizon) / max(c.h - c.horizon, 1), 0, 1)
    x0, x1 = rng.uniform(0.2, 0.8) * c.w, rng.uniform(-0.1, 1.1) * c.w
    swing = rng.uniform(0.05, 0.25) * c.w
    turns, phase = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi)
    centre = x0 + (x1 - x0) * t + swing * t * np.sin(turns * np.pi * np.sqrt(t) * 2 + phase)
    half = 0.5 * (far_width + (near_width - far_width) * t ** 1.5)
    across = (c.xx - centre[:, None]) / np.maximum(half[:, None], 0.5)
    return np.where(c.yy >= start, across, np.inf)  # inf: not in the band


def _river(c: _Canvas, rng: Generator) -> None:
    """A river from the horizon to the bottom edge, over land only."""
    across = _winding_band(c, rng, c.horizon + 1, c.w * rng.uniform(0.25, 0.6), max(1.5, 0.01 * c.w))
    mask = (np.abs(across) < 1) & np.isin(c.label, (GRASS, SNOW, SAND, DIRT))
    t = np.clip((c.yy - c.horizon) / max(c.h - c.horizon, 1), 0, 1)
    c.paint(mask, RIVER, depth=c.ground_depth(), u=t, v=across)


def _path(c: _Canvas, rng: Generator) -> None:
    """A dirt path from part way up the ground down to the bottom edge."""
    start = c.horizon + (c.h - c.horizon) * rng.uniform(0.05, 0.5)
    across = _winding_band(c, rng, start, c.w * rng.uniform(0.08, 0.2), max(1.5, 0.01 * c.w))
    mask = (np.abs(across) < 1) & np.isin(c.label, (GRASS, SNOW, SAND))
    c.paint(mask, DIRT, depth=c.ground_depth(), u=0.0, v=across)


def _flowers(c: _Canvas, rng: Generator) -> None:
    """Flower patches on the nearer grass."""
    patches = fbm(rng, c.h, c.w, cells=(5, 4), octaves=3)
    t = np.clip((c.yy - c.horizon) / max(c.h - c.horizon, 1), 0, 1)
    mask = (patches > rng.uniform(0.3, 1.0)) & (c.label == GRASS) & (t > 0.15)
    c.paint(mask, FLOWER, depth=c.ground_depth(), u=t, tint=rng.uniform(-1, 1))


def _fog(c: _Canvas, rng: Generator) -> None:
    """A translucent fog band in the distance, over land, water and mountains (not the sky)."""
    centre = c.horizon + c.h * rng.uniform(-0.12, 0.04)
    thickness = c.h * rng.uniform(0.03, 0.09)
    line = centre + (fbm1d(rng, c.w, cells=3, octaves=4) - 0.5) * 2 * thickness
    patchy = fbm(rng, c.h, c.w, cells=(4, 2), octaves=4)
    inside = np.abs(c.yy - line[None, :]) < thickness * (1 + 0.5 * patchy)
    mask = inside & (patchy > -0.7) & ~np.isin(c.label, (SKY, CLOUDS))
    # The fog keeps what lies under it: its class in ``kind`` (shaded first, then washed over),
    # its depth and coordinates; ``tint`` holds the fog's opacity, thickest mid-band.
    opacity = 0.3 + 0.6 * np.clip(1 - np.abs(c.yy - line[None, :]) / thickness, 0, 1) + 0.05 * patchy
    c.kind[mask] = c.label[mask]
    c.tint[mask] = np.clip(opacity, 0.3, 0.95)[mask]
    c.label[mask] = FOG
    c.instance[mask] = FOG


# -- objects: trees, bushes, rocks ----------------------------------------------------------------

def _window(c: _Canvas, x0: float, y0: float, x1: float, y1: float):
    """The canvas window covering the box, its local coordinate grids, or None if off canvas."""
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, c.h)
    q0, q1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, c.w)
    if r0 >= r1 or q0 >= q1:
        return None
    return (slice(r0, r1), slice(q0, q1)), c.yy[r0:r1] + 0.5, c.xx[:, q0:q1] + 0.5


def _wobbly_radius(rng: Generator, angle: np.ndarray, amount: float, lobes: int = 5) -> np.ndarray:
    """1 + a few random sines of the angle: an irregular round outline (crowns, bushes, rocks)."""
    radius = np.ones_like(angle)
    for k in range(2, 2 + lobes):
        radius += amount / k * np.sin(k * angle + rng.uniform(0, 2 * np.pi))
    return radius


def _deciduous(c: _Canvas, rng: Generator, x: float, base: float, height: float, ident: int,
               tint: float, depth: float) -> None:
    """A broad-leaved tree: trunk and a lumpy round crown, one instance."""
    rx, ry = height * rng.uniform(0.25, 0.4), height * rng.uniform(0.3, 0.4)
    cy = base - height + ry
    trunk_w = max(height * 0.06, 1.0)
    found = _window(c, x - trunk_w, cy, x + trunk_w, base)
    if found:
        window, yy, xx = found
        c.paint(np.broadcast_to(np.abs(xx - x) <= trunk_w / 2 + 0.3, (yy.size, xx.size)), TREE, window,
                instance=ident, depth=depth, u=(xx - x) / trunk_w, v=0.0, tint=tint, kind=2)
    found = _window(c, x - 1.4 * rx, cy - 1.4 * ry, x + 1.4 * rx, cy + 1.4 * ry)
    if found:
        window, yy, xx = found
        dx, dy = (xx - x) / rx, (yy - cy) / ry
        inside = np.hypot(dx, dy) < _wobbly_radius(rng, np.arctan2(dy, dx), 0.35)
        c.paint(inside, TREE, window, instance=ident, depth=depth, u=dx, v=dy, tint=tint)


def _conifer(c: _Canvas, rng: Generator, x: float, base: float, height: float, ident: int,
             tint: float, depth: float) -> None:
    """A conifer: a short trunk and a narrow cone of sawtooth tiers, one instance."""
    half = height * rng.uniform(0.15, 0.24)
    trunk = height * 0.1
    found = _window(c, x - half, base - height, x + half, base)
    if not found:
        return
    window, yy, xx = found
    s = np.clip((base - trunk - yy) / (height - trunk), 0, 1)  # 0 at the crown's foot .. 1 at the tip
    tiers = rng.integers(4, 8)
    teeth = 0.65 + 0.35 * ((s * tiers) % 1.0)
    width = half * (1 - s) * (0.55 + 0.45 * teeth)
    crown = (np.abs(xx - x) <= width + 0.3) & (yy <= base - trunk) & (s < 1)
    stem = (np.abs(xx - x) <= max(height * 0.03, 0.5)) & (yy > base - trunk - 1)
    local_u = (xx - x) / half
    c.paint(np.broadcast_to(stem, crown.shape), TREE, window, instance=ident, depth=depth, u=local_u,
            tint=tint, kind=2)
    c.paint(crown, TREE, window, instance=ident, depth=depth, u=local_u, v=s * 2 - 1, tint=tint, kind=1)


def _bush(c: _Canvas, rng: Generator, x: float, base: float, size: float, depth: float) -> None:
    """A bush: a cluster of overlapping lumpy half-domes on the ground."""
    found = _window(c, x - 1.5 * size, base - 1.2 * size, x + 1.5 * size, base)
    if not found:
        return
    window, yy, xx = found
    mask = np.zeros((yy.size, xx.size), bool)
    for _ in range(rng.integers(2, 5)):
        bx, r = x + rng.uniform(-0.7, 0.7) * size, size * rng.uniform(0.45, 0.8)
        by = base - r * 0.6
        dx, dy = (xx - bx) / r, (yy - by) / r
        mask |= (np.hypot(dx, dy) < _wobbly_radius(rng, np.arctan2(dy, dx), 0.2)) & (yy <= base)
    c.paint(mask, BUSH, window, depth=depth, u=(xx - x) / size, v=(yy - base) / size + 0.5,
            tint=rng.uniform(-1, 1))


def _rock(c: _Canvas, rng: Generator, x: float, base: float, size: float, depth: float) -> None:
    """A boulder: an irregular dome with a flat bottom."""
    width, height = size * rng.uniform(0.8, 1.6), size * rng.uniform(0.5, 1.0)
    found = _window(c, x - 1.4 * width, base - 1.4 * height, x + 1.4 * width, base + 0.2 * height)
    if not found:
        return
    window, yy, xx = found
    dx, dy = (xx - x) / width, (yy - base) / height
    mask = (np.hypot(dx, dy) < _wobbly_radius(rng, np.arctan2(dy, dx), 0.3, lobes=4)) & (dy <= 0.15)
    c.paint(mask, ROCK, window, depth=depth, u=dx, v=dy, tint=rng.uniform(-1, 1))


def _objects(c: _Canvas, rng: Generator, plan: dict) -> tuple[list, int]:
    """Trees, bushes and rocks to draw, as (base row, draw function) sorted far to near."""
    ground_rows = max(c.h - c.horizon, 1)
    items: list[tuple[float, str, float, float]] = []  # (base row, what, x, nearness t)

    def scatter(what: str, count: int, t_range=(0.0, 1.0), power=1.0):
        for _ in range(count):
            t = t_range[0] + (t_range[1] - t_range[0]) * rng.random() ** power
            base = c.horizon + 1 + t * (ground_rows + 0.15 * c.h)
            items.append((base, what, rng.uniform(-0.1, 1.1) * c.w, t))

    kind = plan["kind"]
    if plan["trees"]:
        conifer_odds = {"winter": 0.95, "mountains": 0.8, "forest": 0.5}.get(kind, 0.2)
        dense = kind == "forest"
        count = int(rng.integers(12, 40) if dense else rng.integers(1, 12))
        for _ in range(count):
            what = "conifer" if rng.random() < conifer_odds else "deciduous"
            scatter(what, 1, power=1.6)
        if dense or rng.random() < 0.4:  # a tree line along the horizon, crowns overlapping
            line_t = rng.uniform(0.0, 0.12)
            what = "conifer" if rng.random() < conifer_odds else "deciduous"
            spacing = max(c.w * rng.uniform(0.02, 0.05), 2.0)
            for x in np.arange(rng.uniform(0, spacing), c.w, spacing):
                t = line_t + rng.uniform(0, 0.04)
                items.append((c.horizon + 1 + t * ground_rows, what, x + rng.normal(0, spacing * 0.2), t))
    if plan["bushes"]:
        scatter("bush", int(rng.integers(2, 12)), t_range=(0.1, 1.0))
    if plan["rocks"]:
        scatter("rock", int(rng.integers(2, 9)), t_range=(0.1, 1.0))
    items.sort(key=lambda item: item[0])
    trees = [i for i, item in enumerate(items) if item[1] in ("conifer", "deciduous")]
    if len(trees) > MAX_TREES:  # keep the nearest trees: ids are 8-bit, below the stuff ids
        drop = set(trees[: len(trees) - MAX_TREES])
        items = [item for i, item in enumerate(items) if i not in drop]
    return items, ground_rows


def _draw_objects(c: _Canvas, rng: Generator, items: list, ground_rows: int, fog_row: float | None) -> int:
    """Draw objects far to near, each only where it stands on ground (or, rocks, in water)."""
    ident = 0
    for base, what, x, t in items:
        if fog_row is not None and base > fog_row:
            return ident  # the rest are drawn after the fog by the caller
        ident = _draw_one(c, rng, base, what, x, t, ground_rows, ident)
    return ident


def _draw_one(c: _Canvas, rng: Generator, base: float, what: str, x: float, t: float,
              ground_rows: int, ident: int) -> int:
    scale = 0.04 + 0.96 * t  # perspective: objects on the horizon are small
    row, col = int(min(base, c.h - 1)), int(np.clip(x, 0, c.w - 1))
    under = c.label[row, col]
    depth = float(0.75 * (1 - t) ** 2.5)
    if what in ("conifer", "deciduous"):
        if under not in _GROUND or ident >= MAX_TREES:
            return ident
        height = max(scale * c.h * rng.uniform(0.45, 0.9), 3.0)
        draw = _conifer if what == "conifer" else _deciduous
        draw(c, rng, x, base, height, ident + 1, rng.uniform(-1, 1), depth)
        return ident + 1
    if what == "bush" and under in _GROUND:
        _bush(c, rng, x, base, max(scale * c.h * rng.uniform(0.08, 0.2), 1.5), depth)
    elif what == "rock" and under in _GROUND + (SEA, RIVER):
        _rock(c, rng, x, base, max(scale * c.h * rng.uniform(0.06, 0.2), 1.5), depth)
    return ident


def generate_layout(seed: int | Sequence[int], size: int | tuple[int, int] = (256, 256)) -> SceneLayout:
    """The layout of sample ``seed`` (an int or a tuple of ints, e.g. (data set seed, index)).

    ``size`` is (width, height) or one int for a square. Deterministic: the same seed and size
    give identical arrays.
    """
    width, height = _size(size)
    rng = _rng(seed, 0)
    plan = _plan(rng)
    horizon = int(height * rng.uniform(0.32, 0.62))
    c = _Canvas(width, height, horizon)
    _sky_and_clouds(c, rng, plan["clouds"])
    scene = {"kind": plan["kind"], "horizon": horizon}
    if plan["mountains"]:
        scene["mountains"] = _mountains(c, rng, plan["snow_caps"])
    if plan["hills"]:
        scene["hills"] = _hills(c, rng)
    scene.update(_ground(c, rng, plan))
    if plan["river"] and plan["ground"] != SEA:
        _river(c, rng)
        scene["river"] = True
    if plan["path"]:
        _path(c, rng)
        scene["path"] = True
    if plan["flowers"]:
        _flowers(c, rng)
        scene["flowers"] = True
    items, ground_rows = _objects(c, rng, plan)
    fog_row = horizon + 0.12 * height if plan["fog"] else None
    ident = _draw_objects(c, rng, items, ground_rows, fog_row)
    if plan["fog"]:
        _fog(c, rng)
        scene["fog"] = True
        for base, what, x, t in items:
            if base > fog_row:
                ident = _draw_one(c, rng, base, what, x, t, ground_rows, ident)
    scene["trees"] = ident
    return c.finish(scene)


# ---------------------------------------------------------------------------------------------
# Appearance
# ---------------------------------------------------------------------------------------------

# Sky (zenith, horizon), sunlight colour and shadow strength for each time of day (RGB 0..1).
_SKIES = {
    "day": ((0.23, 0.47, 0.82), (0.68, 0.81, 0.93), (1.0, 0.98, 0.94), 1.0),
    "golden hour": ((0.33, 0.52, 0.78), (0.98, 0.80, 0.55), (1.12, 0.93, 0.70), 1.1),
    "sunset": ((0.20, 0.22, 0.50), (0.98, 0.52, 0.28), (1.15, 0.75, 0.55), 1.1),
    "dusk": ((0.08, 0.10, 0.26), (0.60, 0.42, 0.48), (0.55, 0.50, 0.66), 0.6),
    "overcast": ((0.55, 0.58, 0.63), (0.78, 0.79, 0.80), (0.86, 0.88, 0.92), 0.35),
}

# Vegetation colours by season (grass, broad-leaved foliage, bush, hill).
_SEASON_COLORS = {
    "summer": ((0.33, 0.55, 0.18), (0.17, 0.36, 0.13), (0.27, 0.42, 0.15), (0.42, 0.52, 0.25)),
    "spring": ((0.42, 0.66, 0.22), (0.30, 0.52, 0.18), (0.36, 0.52, 0.20), (0.48, 0.60, 0.28)),
    "autumn": ((0.55, 0.52, 0.24), (0.70, 0.36, 0.10), (0.50, 0.38, 0.15), (0.58, 0.50, 0.28)),
    "winter": ((0.55, 0.50, 0.36), (0.30, 0.23, 0.18), (0.38, 0.34, 0.26), (0.55, 0.52, 0.45)),
}


def sample_appearance(seed: int | Sequence[int]) -> dict:
    """A global look for a picture: time of day, season, weather, sun position, colour grade.

    Returns a JSON-friendly dict (it is recorded next to the data set).
    """
    rng = _rng(seed, 1)
    time = TIMES_OF_DAY[rng.choice(len(TIMES_OF_DAY), p=_TIME_ODDS)]
    season = SEASONS[rng.choice(len(SEASONS), p=_SEASON_ODDS)]
    weather = "overcast" if time == "overcast" else str(rng.choice(["clear", "hazy", "clear"]))
    return {
        "time_of_day": time,
        "season": season,
        "weather": weather,
        "sun_x": float(rng.uniform(0.1, 0.9)),                  # across the view
        "haze": float(rng.uniform(0.15, 0.35) + (0.3 if weather == "hazy" else 0.0)),
        "saturation": float(rng.uniform(0.8, 1.2)),
        "contrast": float(rng.uniform(0.9, 1.15)),
        "exposure": float(rng.uniform(0.9, 1.1)),
        "white_balance": [float(g) for g in rng.normal(1.0, 0.035, 3)],
        "rock_color": [float(v) for v in rng.uniform(0.32, 0.52) + rng.normal(0, 0.03, 3)],
        "water_color": [float(v) for v in (0.06, 0.20, 0.32) + rng.normal(0, 0.03, 3)],
        "flower_colors": [[float(v) for v in c] for c in rng.choice(_FLOWER_COLORS, 3, replace=False)],
        "wave_scale": float(rng.uniform(0.7, 1.4)),
    }


_FLOWER_COLORS = np.array([(0.95, 0.85, 0.2), (0.9, 0.2, 0.15), (0.95, 0.95, 0.95), (0.7, 0.35, 0.85),
                           (0.95, 0.5, 0.7), (0.35, 0.45, 0.95), (1.0, 0.6, 0.1)], np.float32)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

class _Fields:
    """Shared noise fields and per-pixel layout values, read at a selection of pixels."""

    def __init__(self, layout: SceneLayout, rng: Generator):
        h, w = layout.label.shape
        self.h, self.w, self.horizon = h, w, layout.horizon
        scale = max(h, w) / 256  # noise features keep their size in pixels at any resolution
        self.maps = {
            "large": fbm(rng, h, w, cells=(3, 3), octaves=4),
            "mid": fbm(rng, h, w, cells=(12 * scale, 12 * scale), octaves=3),
            "fine": fbm(rng, h, w, cells=(48 * scale, 48 * scale), octaves=2),
            "grain": rng.standard_normal((h, w), dtype=np.float32),
            "vstreak": fbm(rng, h, w, cells=(24 * scale, 110 * scale), octaves=2),  # grass blades
            "hstreak": fbm(rng, h, w, cells=(80 * scale, 6 * scale), octaves=2),    # waves, ripples
            "depth": layout.depth, "u": layout.u, "v": layout.v, "tint": layout.tint,
            "row": np.broadcast_to(np.arange(h, dtype=np.float32)[:, None] / h, (h, w)),
            "col": np.broadcast_to(np.arange(w, dtype=np.float32)[None, :] / w, (h, w)),
        }
        self.kind = layout.kind
        self.sel: np.ndarray | None = None

    def select(self, flat_index: np.ndarray) -> None:
        self.sel = flat_index

    def __getitem__(self, name: str) -> np.ndarray:
        # 1×n: broadcasts against 3×1 colours into 3×n planes. (n×1 against 1×3 would make numpy
        # run inner loops of length 3, several times slower.)
        return self.maps[name].reshape(-1)[self.sel][None, :]

    def kinds(self) -> np.ndarray:
        return self.kind.reshape(-1)[self.sel][None, :]


def _rgb(color) -> np.ndarray:
    """A colour as a 3×1 column (the renderer works on 3×n colour planes)."""
    return np.asarray(color, np.float32)[:, None]


def _mix(a, b, t):
    return a + (b - a) * t


def _shade_sky(f: _Fields, a: dict) -> np.ndarray:
    zenith, horizon_color, _, _ = _SKIES[a["time_of_day"]]
    t = np.clip(f["row"] * f.h / max(f.horizon, 1), 0, 1) ** 1.6  # 0 at the top, 1 on the horizon
    color = _mix(_rgb(zenith), _rgb(horizon_color), t)
    # Glow around the sun, low in the sky at golden hour / sunset.
    if a["time_of_day"] in ("golden hour", "sunset", "day"):
        sun_row = f.horizon / f.h * (0.2 if a["time_of_day"] == "day" else 0.9)
        dist2 = ((f["col"] - a["sun_x"]) * f.w / f.h) ** 2 + (f["row"] - sun_row) ** 2
        glow = np.exp(-dist2 / 0.02) * (0.25 if a["time_of_day"] == "day" else 0.5)
        disc = (dist2 < 0.0008).astype(np.float32) * (0.0 if a["time_of_day"] == "day" else 1.0)
        color = color + glow * _rgb((1.0, 0.85, 0.6)) + disc
    return color * (1 + 0.015 * f["large"])


def _shade_clouds(f: _Fields, a: dict) -> np.ndarray:
    _, horizon_color, light, _ = _SKIES[a["time_of_day"]]
    density = f["u"]
    # Puffy: brighter where the cloud is thick and at the top of each puff (mid noise as relief).
    lit = np.clip(0.6 + 0.35 * density + 0.12 * f["mid"] + 0.06 * f["fine"], 0.3, 1.15)
    base = _mix(_rgb(horizon_color), _rgb((0.97, 0.97, 1.0)), 0.6) * _rgb(light)
    shadow = _rgb((0.55, 0.57, 0.65)) * _mix(_rgb(light), _rgb((1, 1, 1)), 0.5)
    cloud = _mix(shadow, base, np.clip(lit - 0.3, 0, 1) / 0.85)
    # Thin at the edges: the sky shows through where the cloud is not dense.
    return _mix(_shade_sky(f, a), cloud, np.clip(0.35 + density * 2.5 + 0.1 * f["fine"], 0, 1))


def _light(f: _Fields, a: dict, normal_x: np.ndarray, normal_y: np.ndarray) -> np.ndarray:
    """Diffuse light for a surface tilted by (normal_x, normal_y): sun from its side, above."""
    side = 1.0 if a["sun_x"] > 0.5 else -1.0
    strength = _SKIES[a["time_of_day"]][3]
    return 1 + strength * 0.35 * np.clip(side * normal_x - 0.8 * normal_y, -1.5, 1.5)


def _shade_mountain(f: _Fields, a: dict) -> np.ndarray:
    rock = _rgb(a["rock_color"]) * (1 + 0.12 * f["tint"] * _rgb((1.0, 0.8, 0.6)))
    # Ridged noise: bright crests and dark gullies running down the slopes.
    crests = 1 - 2 * np.abs(f["mid"] * 0.5)
    facet = _light(f, a, f["large"] * 0.8 + f["mid"] * 0.4, -0.3 * np.ones_like(f["u"]))
    green = _rgb((0.25, 0.33, 0.18)) * np.clip(f["u"] * 1.5 - 0.3 + 0.3 * f["large"], 0, 1)  # vegetated foot
    color = _mix(rock, green + rock * 0.4, np.clip(f["u"] * 1.2 - 0.4, 0, 0.6))
    return color * facet * (1 + 0.18 * crests + 0.06 * f["fine"])


def _shade_snow(f: _Fields, a: dict) -> np.ndarray:
    facet = _light(f, a, f["large"] * 0.8 + f["mid"] * 0.4, -0.3 * np.ones_like(f["u"]))
    white, shade = _rgb((0.96, 0.97, 1.0)), _rgb((0.62, 0.70, 0.86))
    color = _mix(shade, white, np.clip(facet - 0.55, 0, 1) * 1.1)
    on_mountain = f.kinds() == 3
    # Ground snow: bright and smooth, soft drifts with blue hollows, a little sparkle.
    hollow = np.clip(-f["large"] * 0.5 - 0.15 * f["hstreak"], 0, 1)
    ground = _mix(white, _rgb((0.78, 0.84, 0.95)), hollow) * (1 + 0.015 * f["grain"])
    ground = ground + (f["grain"] > 2.3) * 0.15
    return np.where(on_mountain, color * (1 + 0.05 * f["fine"]), ground)


def _shade_hill(f: _Fields, a: dict) -> np.ndarray:
    base = _rgb(_SEASON_COLORS[a["season"]][3])
    # Patchwork of fields and copses: noise cut into bands, each a slightly different green.
    patch = np.floor(f["large"] * 2.5 + f["mid"] * 0.6) * 0.09
    top_lit = 1.1 - 0.25 * f["u"]  # rounded: the crest catches light, the foot is in shade
    hedges = np.where(np.abs(f["mid"]) < 0.06, 0.7, 1.0)
    return base * (1 + patch * _rgb((1.0, 0.6, 0.2)) + 0.1 * f["tint"]) * top_lit * hedges


def _shade_grass(f: _Fields, a: dict) -> np.ndarray:
    base = _rgb(_SEASON_COLORS[a["season"]][0])
    dry = _rgb((0.62, 0.58, 0.30))
    color = _mix(base, dry, np.clip(0.25 + 0.25 * f["large"], 0, 0.6))
    # Vertical blade streaks, strongest near the viewer; clumps of darker grass.
    near = f["u"]
    # Blades: short vertical streaks and speckle, coarser and stronger near the viewer.
    blades = (0.12 * f["vstreak"] + 0.07 * f["grain"]) * (0.25 + near)
    tips = np.clip(f["vstreak"] - 1.2, 0, 1) * 0.25 * near  # sunlit tips
    return color * (1 + 0.16 * f["mid"] + 0.08 * f["fine"] + blades + tips)


def _shade_flower(f: _Fields, a: dict) -> np.ndarray:
    grass = _shade_grass(f, a)
    colors = np.asarray(a["flower_colors"], np.float32)
    which = np.clip(((f["large"][0] + f["tint"][0]) * 1.2 + 1.5).astype(int), 0, 2)
    dots = (f["grain"] > 0.35) | (f["fine"] > 1.2)
    petal = colors[which].T * (0.85 + 0.15 * f["mid"])
    return np.where(dots, petal, grass * 0.8)


def _foliage(f: _Fields, a: dict, base: np.ndarray, clump: np.ndarray) -> np.ndarray:
    """Leaves: clumps of light and shadow, lit from the sun's side and from above."""
    light = _light(f, a, f["u"] * 0.6, f["v"] * 0.9)
    gaps = np.where(clump < -0.9, 0.55, 1.0)  # dark holes between leaf masses
    return base * light * (1 + 0.22 * clump) * gaps


def _shade_tree(f: _Fields, a: dict) -> np.ndarray:
    season = _SEASON_COLORS[a["season"]]
    kind = f.kinds()
    leaves = _rgb(season[1]) * (1 + 0.15 * f["tint"] * _rgb((1.2, 0.9, 0.5)))
    if a["season"] == "autumn":  # autumn trees differ: yellow, orange, red
        leaves = _mix(leaves, _rgb((0.72, 0.58, 0.12)), np.clip(f["tint"], 0, 1))
    needles = _rgb((0.10, 0.24, 0.14)) * (1 + 0.1 * f["tint"])
    if a["season"] == "winter":  # bare crowns: a fine speckle of twigs, not leaf clumps (or rock-like blotches)
        broad = _foliage(f, a, leaves, 0.3 * f["fine"] + 0.9 * f["grain"]) * (1 + 0.15 * f["vstreak"])
    else:
        broad = _foliage(f, a, leaves, f["fine"] + 0.5 * f["mid"])
    # Conifer tiers: a dark band under each row of branches (v runs up the tree).
    tiers = 1 + 0.25 * np.sin(f["v"] * 18 + f["fine"]) + 0.1 * f["grain"]
    cone = _foliage(f, a, needles, f["fine"]) * tiers
    bark = _rgb((0.25, 0.18, 0.12)) * (1 + 0.2 * f["vstreak"] - 0.2 * np.abs(f["u"]))
    return np.where(kind == 2, bark, np.where(kind == 1, cone, broad))


def _shade_bush(f: _Fields, a: dict) -> np.ndarray:
    base = _rgb(_SEASON_COLORS[a["season"]][2]) * (1 + 0.12 * f["tint"])
    # Smaller, rounder leaf clumps than trees (grain-level speckle), darker at the foot.
    return _foliage(f, a, base, 0.8 * f["fine"] + 0.4 * f["grain"]) * (1.05 - 0.3 * np.clip(f["v"], 0, 1))


def _shade_rock(f: _Fields, a: dict) -> np.ndarray:
    base = _rgb(a["rock_color"]) * (0.95 + 0.08 * f["tint"])
    # Flat facets (quantised normals) and dark cracks along noise zero lines.
    facet = _light(f, a, np.round(f["u"] * 2 + 0.4 * f["mid"]) / 2, np.round(f["v"] * 2) / 2)
    cracks = np.where(np.abs(f["fine"] + 0.3 * f["mid"]) < 0.08, 0.55, 1.0)
    lichen = _mix(_rgb((1, 1, 1)), _rgb((1.05, 1.0, 0.8)), np.clip(f["large"], 0, 1))
    return base * facet * cracks * lichen * (1 + 0.08 * f["grain"])


def _water(f: _Fields, a: dict, deep: np.ndarray, across_flow: bool) -> np.ndarray:
    _, horizon_color, light, strength = _SKIES[a["time_of_day"]]
    near = f["u"]  # 0 on the horizon .. 1 at the bottom
    # Perspective wave stripes: wavelength grows toward the viewer.
    rows_from_horizon = np.maximum(f["row"] * f.h - f.horizon, 0) + 2
    phase = 14 * a["wave_scale"] * np.log(rows_from_horizon) * (f.h / 256) ** 0 + 2.5 * f["hstreak"]
    if not across_flow:  # rivers flow toward the viewer: streaks along the flow
        phase = phase * 0.3 + 3 * f["vstreak"]
    waves = np.sin(phase * 2.3)
    reflect = np.clip((1 - near) ** 3 * 0.8, 0, 0.8)
    color = _mix(deep, _rgb(horizon_color), reflect) * (1 + 0.14 * waves + 0.04 * f["fine"])
    # Sun glints: a column of bright crests under the sun.
    if strength > 0.5:
        under_sun = np.exp(-((f["col"] - a["sun_x"]) / (0.08 + 0.15 * near)) ** 2)
        glint = ((waves > 0.85) & (f["grain"] > 0.6)) * under_sun * strength
        color = color + glint * _rgb(light) * 0.8
    return color


def _shade_sea(f: _Fields, a: dict) -> np.ndarray:
    return _water(f, a, _rgb(a["water_color"]), across_flow=True)


def _shade_river(f: _Fields, a: dict) -> np.ndarray:
    deep = _rgb(a["water_color"]) * _rgb((1.1, 1.35, 1.1))
    bank = np.clip(np.abs(f["v"]) - 0.75, 0, 1) * 1.6  # shallower, browner at the banks
    return _mix(_water(f, a, deep, across_flow=False), _rgb((0.35, 0.32, 0.22)), bank)


def _shade_sand(f: _Fields, a: dict) -> np.ndarray:
    base = _rgb((0.80, 0.71, 0.52))
    ripples = np.sin(f["row"] * f.h * 0.9 + 4 * f["hstreak"] + 2 * f["mid"])
    wet = np.clip(0.3 - f["u"] * 2, 0, 0.3)  # darker, wet sand at the waterline
    return base * (1 + 0.07 * ripples + 0.08 * f["large"] + 0.07 * f["grain"] - wet)


def _shade_dirt(f: _Fields, a: dict) -> np.ndarray:
    base = _rgb((0.45, 0.34, 0.23)) * (1 + 0.08 * f["large"] * _rgb((1, 0.9, 0.8)))
    pebbles = np.where(f["grain"] > 1.7, 1.35, 1.0) * np.where(f["grain"] < -2.0, 0.7, 1.0)
    ruts = 1 - 0.12 * np.exp(-((np.abs(f["v"]) - 0.45) / 0.12) ** 2)  # two worn tracks
    return base * pebbles * ruts * (1 + 0.12 * f["mid"] + 0.06 * f["fine"])


_SHADERS = {SKY: _shade_sky, CLOUDS: _shade_clouds, MOUNTAIN: _shade_mountain, SNOW: _shade_snow,
            HILL: _shade_hill, GRASS: _shade_grass, FLOWER: _shade_flower, TREE: _shade_tree,
            BUSH: _shade_bush, ROCK: _shade_rock, SEA: _shade_sea, RIVER: _shade_river,
            SAND: _shade_sand, DIRT: _shade_dirt}


def _fog_over(image: np.ndarray, layout: SceneLayout, f: _Fields, a: dict) -> None:
    """Fog: the scene behind shows through, washed toward a pale horizon colour."""
    fog = (layout.label == FOG).reshape(-1)
    if not fog.any():
        return
    index = np.flatnonzero(fog)
    f.select(index)
    _, horizon_color, light, _ = _SKIES[a["time_of_day"]]
    color = _mix(_rgb(horizon_color), _rgb((0.92, 0.93, 0.95)) * _rgb(light), 0.6)
    opacity = f["tint"] * (1 + 0.1 * f["large"])
    flat = image.reshape(3, -1)
    flat[:, index] = _mix(flat[:, index], color * (1 + 0.04 * f["mid"]), np.clip(opacity, 0, 1))


def _grade(image: np.ndarray, layout: SceneLayout, f: _Fields, a: dict) -> np.ndarray:
    """Atmospheric perspective, sunlight colour, then a camera-like colour grade.

    Whole-image arithmetic with per-pixel weights (cheaper than boolean indexing of RGB rows)."""
    _, horizon_color, light, _ = _SKIES[a["time_of_day"]]
    h, w = layout.label.shape
    column = lambda values: np.asarray(values, np.float32)[:, None, None]  # noqa: E731 (3×1×1)
    land = _LAND[layout.label][None]  # 1×H×W; the sky already has the light's colours
    depth = layout.depth[None]
    haze = np.clip(np.float32(a["haze"] * 1.6) * depth * np.sqrt(depth), 0, 0.9) * land  # depth ** 1.5
    light_gain = 1 + land * (column(light) - 1)
    image = image * light_gain * (1 - haze) + column(horizon_color) * haze
    gray = (image[0] + image[1] + image[2])[None] * np.float32(1 / 3)
    image = gray + (image - gray) * np.float32(a["saturation"])
    # Contrast about mid-grey, exposure, white balance and a soft lens vignette in one product.
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    vignette = (1 - 0.12 * (xx ** 2 + yy ** 2))[None]
    gain = column(np.float32(a["exposure"]) * np.asarray(a["white_balance"], np.float32))
    contrast = np.float32(a["contrast"])
    return ((image - 0.45) * contrast + 0.45) * (vignette * gain)


_LAND = np.ones(256, np.float32)
_LAND[[SKY, CLOUDS]] = 0


def render_layout(layout: SceneLayout, appearance: dict, seed: int | Sequence[int] = 0) -> np.ndarray:
    """The H×W×3 uint8 picture of ``layout`` under ``appearance``; ``seed`` sets the texture noise."""
    h, w = layout.label.shape
    f = _Fields(layout, _rng(seed, 2))
    image = np.zeros((3, h * w), np.float32)  # colour planes (see _Fields.__getitem__)
    flat_label = layout.label.reshape(-1)
    # Group pixels by class once (a stable sort), so each shader sees only its own pixels.
    order = np.argsort(flat_label, kind="stable")
    classes, starts = np.unique(flat_label[order], return_index=True)
    bounds = list(starts[1:]) + [order.size]
    for cls, start, stop in zip(classes, starts, bounds):
        shader = _SHADERS.get(int(cls))
        if shader is None:  # fog is drawn over the rest afterwards
            continue
        index = order[start:stop]
        f.select(index)
        image[:, index] = shader(f, appearance)
    fog = flat_label == FOG
    if fog.any():
        # What the fog covers is shaded as itself (its class is in ``kind``), then washed over.
        index = np.flatnonzero(fog)
        under = layout.kind.reshape(-1)[index]
        for cls in np.unique(under):
            part = index[under == cls]
            f.select(part)
            image[:, part] = _SHADERS.get(int(cls), _shade_hill)(f, appearance)
    image = image.reshape(3, h, w)
    _fog_over(image, layout, f, appearance)
    image = _grade(image, layout, f, appearance)
    return np.ascontiguousarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LandscapeSample:
    """One training pair: label map, instance map, picture, and the appearance it was drawn with."""

    label: np.ndarray     # H×W uint8 COCO-Stuff ids (0-based), never 255
    instance: np.ndarray  # H×W uint8: class id for stuff, 1..90 for trees
    image: np.ndarray     # H×W×3 uint8 RGB
    appearance: dict
    scene: dict           # the layout's composition (kind, elements)


def generate_landscape(seed: int | Sequence[int], size: int | tuple[int, int] = (256, 256),
                       appearance_seed: int | Sequence[int] | None = None) -> LandscapeSample:
    """Sample ``seed``: its layout, drawn under appearance ``appearance_seed`` (default: ``seed``).

    ``seed`` is an int or a tuple of ints ((data set seed, index) in ``spadegan landscapes``).
    The same ``seed`` with another ``appearance_seed`` gives the same label and instance maps
    and a different picture (other time of day, season, colours, texture noise).
    """
    layout = generate_layout(seed, size)
    look = seed if appearance_seed is None else appearance_seed
    appearance = sample_appearance(look)
    image = render_layout(layout, appearance, look)
    return LandscapeSample(layout.label, layout.instance, image, appearance, layout.scene)


# ---------------------------------------------------------------------------------------------
# Writing a data set
# ---------------------------------------------------------------------------------------------

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


__all__ = [
    "CLASS_IDS", "CLASS_NAMES", "SceneLayout", "LandscapeSample", "MAX_TREES", "SCENE_KINDS", "fbm",
    "fbm1d", "generate_landscape", "generate_layout", "prepare_folder", "render_layout",
    "sample_appearance", "sample_paths", "write_dataset", "write_sample",
]
