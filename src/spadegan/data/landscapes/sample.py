"""One sample: a layout rendered under an appearance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .layout import generate_layout
from .render import render_layout, sample_appearance



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
