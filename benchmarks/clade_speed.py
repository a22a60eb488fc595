"""Generator speed of SPADE (reference and fast path) against CLADE (``--norm_mode clade``).

Same generator otherwise (ngf 64, 256×256, COCO-Stuff's 182 classes + don't-care, batch 1, eval,
float32), random weights with batch-norm statistics from the map itself, on the COCO-Stuff sample
maps beside the repository (or region maps when they are missing). Each path is timed in turns,
the median of ``--repeats`` forwards per map; the ratios are printed from the one run.

    python benchmarks/clade_speed.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spadegan.config import GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.models import build_networks
from spadegan.semantics import build_semantics

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_stuff_samples" / "val_label"


def label_maps(size: int = 256) -> list[tuple[str, torch.Tensor]]:
    if SAMPLES.is_dir():
        maps = []
        for path in sorted(SAMPLES.glob("*.png")):
            ids = Image.open(path).resize((size, size), Image.NEAREST)
            maps.append((path.stem, torch.from_numpy(np.array(ids, dtype=np.int64))[None, None]))
        return maps
    rng = np.random.default_rng(0)
    return [(f"regions {i}", torch.from_numpy(rng.integers(0, 182, (8, 8))).repeat_interleave(32, 0)
             .repeat_interleave(32, 1)[None, None]) for i in range(3)]


def generator(norm_mode: str, semantics: torch.Tensor) -> torch.nn.Module:
    return prepared_generator(GeneratorConfig(ngf=64, crop_size=256, norm_mode=norm_mode), semantics)


def prepared_generator(config: GeneratorConfig, semantics: torch.Tensor) -> torch.nn.Module:
    """A generator with random weights and batch-norm statistics from ``semantics``, in eval mode."""
    torch.manual_seed(0)
    g = build_networks(ModelConfig(SemanticsConfig(182, True, False), config)).generator
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        g.train()(semantics)  # statistics of this map: activations of order one
    return g.eval()


def timed(g: torch.nn.Module, semantics: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        g(semantics)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            g(semantics)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'map':<16} {'SPADE ref':>10} {'SPADE fast':>11} {'CLADE':>8}   CLADE vs ref / vs fast")
    ratios = []
    for name, labels in label_maps():
        labels = torch.where(labels == 255, 182, labels)  # don't-care
        semantics = build_semantics(labels, 182, True, None, False)
        spade, clade = generator("spade", semantics), generator("clade", semantics)
        spade.fast_spade = False
        reference = timed(spade, semantics, args.repeats)
        spade.fast_spade = True
        fast = timed(spade, semantics, args.repeats)
        lookup = timed(clade, semantics, args.repeats)
        ratios.append((reference / lookup, fast / lookup))
        print(f"{name:<16} {reference:>9.3f}s {fast:>10.3f}s {lookup:>7.3f}s   {reference / lookup:.2f}× / {fast / lookup:.2f}×")
    print(f"min over maps: CLADE {min(r for r, _ in ratios):.2f}× the SPADE reference, "
          f"{min(f for _, f in ratios):.2f}× the fast path")


if __name__ == "__main__":
    main()
