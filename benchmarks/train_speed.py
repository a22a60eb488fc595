"""Seconds per training iteration and peak memory, for the default 256×256 COCO-Stuff SPADE
config at batch 1 and for a tiny config, on the COCO-Stuff samples.

Usage: python benchmarks/train_speed.py [--steps N] [--dataroot DIR] [--gpu_ids -1|0]

Each config runs in its own process (so peak memory is its own): ``spade train`` with the
official defaults for ``--dataset_mode coco`` (ngf 64, ndf 64, VGG loss with a VGG19 of random
weights written to a temporary file: the same arithmetic as the real one), ``--max_steps N``.
The first iteration (warm-up) is left out of the mean.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "coco default 256x256, batch 1": [],
    "tiny 64x64 (ngf 4, spade_hidden 16, ndf 8)": ["--preprocess_mode", "fixed", "--load_size", "64",
                                                   "--crop_size", "64", "--ngf", "4", "--spade_hidden", "16",
                                                   "--ndf", "8", "--n_layers_D", "3"],
}
# Each config with the fast SPADE path (the default) and with the reference path.
CONFIGS = {f"{name}{suffix}": flags + extra for name, flags in CONFIGS.items()
           for suffix, extra in (("", []), (", reference SPADE", ["--reference_spade"]))}


def run_one(flags: list[str]) -> None:
    """Child process: train, then print seconds per iteration and peak memory as JSON."""
    import torch

    from spade.cli import main

    main(["train", *flags])
    run_dir = Path(flags[flags.index("--checkpoints_dir") + 1]) / "bench"
    records = [json.loads(line) for line in (run_dir / "logs" / "losses.jsonl").read_text().splitlines()]
    times = [r["seconds_per_iteration"] for r in records[1:]]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"seconds_per_iteration": statistics.mean(times), "min": min(times),
                      "peak_memory_mib": peak, "device": "cuda" if torch.cuda.is_available() else "cpu"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dataroot", default=str(Path(__file__).resolve().parents[2] / "shared/data/coco_stuff_samples"))
    parser.add_argument("--gpu_ids", default="-1")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_one(args.child)
        return
    import torch

    from spade.nn.vgg import VGG19Features

    with tempfile.TemporaryDirectory() as tmp:
        vgg_path = Path(tmp) / "vgg19_random.pth"
        torch.save(VGG19Features().state_dict(), vgg_path)
        print(f"{'config':<64} {'s/iteration':>12} {'peak MiB':>10}")
        for number, (name, extra) in enumerate(CONFIGS.items()):
            flags = ["--dataset_mode", "coco", "--dataroot", args.dataroot, "--name", "bench",
                     "--checkpoints_dir", str(Path(tmp) / f"run{number}"),
                     "--max_steps", str(args.steps + 1),
                     "--print_freq", "1", "--display_freq", "100000", "--save_latest_freq", "100000",
                     "--vgg_path", str(vgg_path), "--no_progress", "--no_tensorboard", "--gpu_ids", args.gpu_ids,
                     *extra]
            out = subprocess.run([sys.executable, __file__, "--child", *flags], capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:<64} {result['seconds_per_iteration']:>12.3f} {result['peak_memory_mib']:>10.0f}"
                  f"   ({result['device']}, mean of {args.steps} after one warm-up; fastest {result['min']:.3f})")


if __name__ == "__main__":
    main()
