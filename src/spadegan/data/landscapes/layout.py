"""The layout of a scene: label map, instance map and the per-pixel fields the renderer shades
with, composed back to front like a painter (see the package's docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from numpy.random import Generator

from .classes import (BUSH, CLOUDS, DIRT, FLOWER, FOG, GRASS, HILL, MAX_TREES, MOUNTAIN, RIVER, ROCK, SAND,
                      SCENE_KINDS, SEA, SKY, SNOW, TREE, _GROUND, _SCENE_ODDS)
from .noise import _rng, _size, fbm, fbm1d



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
