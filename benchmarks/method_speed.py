"""Generator speed of the four methods at the landscapes recipe's sizes (``scripts/train_landscape_models.sh``):
SPADE with the image encoder's z (ngf 16, label networks 64 wide), pix2pixHD (ngf 18), CLADE (ngf
16) and OASIS with 3-D noise (ngf 16), as users run them (each on its default path: the fast
SPADE path, the OASIS code path), batch 1, eval, float32, on procedural landscape maps.
Random weights with batch-norm statistics from the map itself; each generator is timed in
turns, the median of ``--repeats`` forwards per map; ratios to SPADE come from the one run.

    python benchmarks/method_speed.py [--maps 3] [--size 256] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from clade_speed import prepared_generator, timed

from spadegan.config import GeneratorConfig
from spadegan.data.landscapes import generate_layout
from spadegan.semantics import build_semantics

def recipes(size: int) -> dict[str, GeneratorConfig]:
    return {
        "SPADE": GeneratorConfig(netG="spade", ngf=16, spade_hidden=64, z_dim=256, crop_size=size),
        "pix2pixHD": GeneratorConfig(netG="pix2pixhd", ngf=18, norm_G="instance", crop_size=size),
        "CLADE": GeneratorConfig(netG="spade", ngf=16, z_dim=256, norm_mode="clade", crop_size=size),
        "OASIS": GeneratorConfig(netG="oasis", ngf=16, z_dim=64, crop_size=size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=3, help="procedural landscape maps (seeds 0, 1, ...)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = list(recipes(args.size))
    print(f"{'map':<8}" + "".join(f"{name:>11}" for name in names) + "   (seconds per picture)")
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for seed in range(args.maps):
        ids = torch.from_numpy(np.asarray(generate_layout(seed, args.size).label, dtype=np.int64))
        ids = torch.where(ids == 255, 182, ids)[None, None]
        semantics = build_semantics(ids, 182, True, None, False)
        seconds = {name: timed(prepared_generator(config, semantics), semantics, args.repeats)
                   for name, config in recipes(args.size).items()}
        for name in names:
            ratios[name].append(seconds["SPADE"] / seconds[name])
        print(f"{seed:<8}" + "".join(f"{seconds[name]:>10.3f}s" for name in names))
    print("speed relative to SPADE, min / median over maps: "
          + ", ".join(f"{name} {min(r):.2f}× / {statistics.median(r):.2f}×" for name, r in ratios.items()))


if __name__ == "__main__":
    main()
