"""Seeds and noise: random streams as pure functions of a seed, and fractal noise (fBm) fields."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence
from PIL import Image



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
