"""How well synthesized images take a reference picture's look: per-class colour statistics.

A model with an image encoder (paper Sec. 3.3, Fig. 1) should paint a label map *in the style of*
a reference picture. Style is measured here by colour, class by class, because a colour is what a
reference and an output of another layout have in common: both have sky, grass or sea, at other
places and sizes.

**Style following.** For every (map, reference) pair and every class present in both, take the
class's mean colour in the reference (over the reference's own pixels of that class) and in the
output (over the map's pixels of that class). Centre each class's colours by that class's average
over all pairs, separately for references and outputs: what remains is how *this* reference's sky
differs from the typical sky, and how *this* output's sky differs from the typical output sky. A
model that paints every sky the same blue scores nothing for it, however blue the references are.
The score is Pearson's correlation of the centred reference and output colours over all (pair,
class) entries, one per RGB channel: 1 when outputs move with their references (up to scale), 0
when they move independently of them.

**Colour spread.** Correlation ignores scale: outputs that copy a tenth of each reference's tint
correlate perfectly. The spread (mean absolute centred colour, in 8-bit levels, over entries and
channels) of the outputs against that of the references says how far the outputs move; their
ratio is 1 for outputs that move as far as their references.

**Uncertainty.** A model's reaction to one reference (the chance colour shift its code brings)
acts on all of that reference's pairs, so the correlation averages over references, not over
pairs: :func:`following_error` bootstraps references and maps to give its standard error.

**Seed variety.** The mean absolute difference, in 8-bit levels, between samples of one map with
different random styles: whether the style code changes the picture at all.

Images are 8-bit levels (0–255, as saved), label maps class ids; everything here is NumPy and pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

CHANNELS = ("R", "G", "B")
MIN_FRACTION = 0.01   # a class counts in a picture from 1% of its pixels on


def class_colours(image: np.ndarray, labels: np.ndarray,
                  min_fraction: float = MIN_FRACTION) -> dict[int, np.ndarray]:
    """Mean colour (3 floats, 8-bit levels) of each class of ``labels`` in ``image`` (H×W×3).

    Only classes covering at least ``min_fraction`` of the picture count: the mean of a few
    pixels (a distant rock, the fringe of a fog band) is mostly texture and edge noise, and
    would weigh as much as a sky in the correlation. The default, 1%, is 655 pixels at 256×256."""
    if image.shape[:2] != labels.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {image.shape} and label map {labels.shape}: expected H×W×3 and H×W")
    flat_labels = labels.reshape(-1)
    flat_image = image.reshape(-1, 3).astype(np.float64)
    ids, counts = np.unique(flat_labels, return_counts=True)
    minimum = min_fraction * flat_labels.size
    return {int(c): flat_image[flat_labels == c].mean(axis=0) for c, n in zip(ids, counts) if n >= minimum}


@dataclass(frozen=True)
class StyleFollowing:
    """What :func:`style_following` measures (see the module doc)."""

    correlation: tuple[float, float, float]   # Pearson r per channel (R, G, B) of centred class colours
    output_spread: float                      # mean |centred output colour|, 8-bit levels
    reference_spread: float                   # mean |centred reference colour|, same entries
    entries: int                              # (pair, class) entries the statistics are over

    @property
    def spread_ratio(self) -> float:
        """Outputs' spread over the references': 1 when outputs move as far as their references."""
        return self.output_spread / self.reference_spread


def style_following(pairs: Iterable[tuple[Mapping[int, np.ndarray], Mapping[int, np.ndarray]]]) -> StyleFollowing:
    """Per-channel correlation and spreads of centred class colours.

    ``pairs``: for every (map, reference) pair, (reference colours, output colours), each a
    mapping class id → mean colour (:func:`class_colours`). A class enters a pair's entries when
    it is in both. Classes with a single entry over all pairs are left out: centred by their own
    average they are zero by construction and would only shrink the spreads.

    When the outputs' centred colours do not vary in a channel (every output paints the class
    the same whatever the reference), that channel's correlation is 0, the value for outputs
    that ignore the reference, rather than the undefined 0/0. References that do not vary
    cannot measure anything and raise ``ValueError``."""
    by_class: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for reference, output in pairs:
        for c in reference.keys() & output.keys():
            refs, outs = by_class.setdefault(c, ([], []))
            refs.append(np.asarray(reference[c], dtype=np.float64))
            outs.append(np.asarray(output[c], dtype=np.float64))
    centred_refs, centred_outs = [], []
    for refs, outs in by_class.values():
        if len(refs) < 2:
            continue
        refs, outs = np.stack(refs), np.stack(outs)
        centred_refs.append(refs - refs.mean(axis=0))
        centred_outs.append(outs - outs.mean(axis=0))
    if not centred_refs:
        raise ValueError("no class is in a reference and its output in two pairs or more: nothing to correlate")
    x, y = np.concatenate(centred_refs), np.concatenate(centred_outs)   # entries × 3
    # Every class's entries sum to zero, so x and y have mean zero and Pearson's r is this ratio.
    sxx, syy, sxy = (x * x).sum(axis=0), (y * y).sum(axis=0), (x * y).sum(axis=0)
    if (sxx == 0).any():
        flat = [CHANNELS[i] for i in np.flatnonzero(sxx == 0)]
        raise ValueError(f"the references' class colours do not vary in channel {', '.join(flat)}: "
                         "give references of different appearances")
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(syy > 0, sxy / np.sqrt(sxx * syy), 0.0)
    return StyleFollowing(correlation=tuple(float(v) for v in r), output_spread=float(np.abs(y).mean()),
                          reference_spread=float(np.abs(x).mean()), entries=int(x.shape[0]))


def following_error(grid: Sequence[Sequence[tuple[Mapping[int, np.ndarray], Mapping[int, np.ndarray]]]],
                    rounds: int = 200, seed: int = 0) -> tuple[float, float, float]:
    """Standard error of :func:`style_following`'s correlations, by a two-way bootstrap.

    ``grid[j][i]``: the (reference colours, output colours) of reference ``j`` and map ``i``.
    References and maps are both resampled with replacement, ``rounds`` times, because each
    reference's look and each map's layout act on all of their pairs: the pairs are not
    independent, and the number of references, not of pairs, sets most of the uncertainty.
    Rounds in which nothing can be measured (every reference drawn the same) are left out."""
    rng = np.random.default_rng(seed)
    references, maps = len(grid), len(grid[0])
    draws = []
    for _ in range(rounds):
        rows, columns = rng.integers(0, references, references), rng.integers(0, maps, maps)
        try:
            draws.append(style_following(grid[j][i] for j in rows for i in columns).correlation)
        except ValueError:
            continue
    if len(draws) < 2:
        raise ValueError("too few references or maps to bootstrap the style following's error")
    return tuple(float(v) for v in np.std(draws, axis=0, ddof=1))


def seed_variety(samples: Sequence[np.ndarray]) -> float:
    """Mean absolute difference, in 8-bit levels, between samples of one map.

    ``samples``: per map, a K×H×W×3 array of its K ≥ 2 samples (different random styles). The
    difference is averaged over pixels and channels for every pair of samples, then over the
    pairs of each map and over the maps (each map weighs the same)."""
    per_map = []
    for stack in samples:
        stack = np.asarray(stack, dtype=np.float64)
        if stack.shape[0] < 2:
            raise ValueError(f"seed variety needs at least 2 samples of a map, got {stack.shape[0]}")
        per_map.append(np.mean([np.abs(a - b).mean() for a, b in combinations(stack, 2)]))
    if not per_map:
        raise ValueError("seed variety needs samples of at least one map")
    return float(np.mean(per_map))


@dataclass(frozen=True)
class StyleScores:
    """A model's (or the perfect transfer's) style benchmark: following, spreads, seed variety."""

    following: StyleFollowing
    seed_variety: float
    following_error: tuple[float, float, float] | None = None   # standard error per channel (following_error)

    def columns(self, yardstick: StyleScores | None = None) -> dict[str, float | None]:
        """The result columns (``results.jsonl`` keys). With ``yardstick`` (the perfect transfer
        on the same maps and references), each channel's following also as a fraction of its."""
        f = self.following
        columns = {f"style_{name}": r for name, r in zip(CHANNELS, f.correlation)}
        if self.following_error is not None:
            columns.update({f"style_{name}_stderr": e for name, e in zip(CHANNELS, self.following_error)})
        columns.update(style_spread=f.output_spread, style_reference_spread=f.reference_spread,
                       style_spread_ratio=f.spread_ratio, seed_variety=self.seed_variety)
        if yardstick is not None:
            columns.update({f"style_{name}_of_perfect": r / perfect if perfect else None for name, r, perfect
                            in zip(CHANNELS, f.correlation, yardstick.following.correlation)})
        return columns

