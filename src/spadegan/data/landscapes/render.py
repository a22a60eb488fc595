"""Rendering a layout under an appearance (time of day, season, weather, sun, colour grade): a
texture per class from shared fractal noise fields."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.random import Generator

from .classes import (BUSH, CLOUDS, DIRT, FLOWER, FOG, GRASS, HILL, MOUNTAIN, RIVER, ROCK, SAND, SEA,
                      SEASONS, SKY, SNOW, TIMES_OF_DAY, TREE, _SEASON_ODDS, _TIME_ODDS)
from .layout import SceneLayout
from .noise import _rng, fbm



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
