"""Seconds per training iteration and peak memory, fast SPADE path against the reference path.

Usage: python benchmarks/train_speed.py [--steps N] [--repeats N] [--configs coco cityscapes landscapes tiny]
       [--gpu_ids -1|0]

Four configs, each trained by ``spadegan train`` for 1 + N iterations in a process of its own: with
the fast SPADE path as the ``spadegan`` command runs it (started again with tcmalloc where it is
installed, else glibc's malloc with freed memory kept: ``spadegan.memory``), and with
``--reference_spade`` and glibc's default allocator, as the official code runs. To show what the
allocator alone gives, the fast path also runs on glibc's malloc with freed memory kept
(``SPADE_ALLOCATOR=system``) and on glibc's default (and ``SPADE_KEEP_FREED_MEMORY=0``).
- COCO-Stuff 256×256 with the encoder: the official defaults for ``--dataset_mode coco`` (ngf 64,
  ndf 64, VGG loss), batch 1, on the COCO-Stuff samples beside the repository;
- Cityscapes-like 256×128: 35 labels + instance edges, ngf 64, ndf 64, VGG loss, batch 1, on
  procedural street scenes (``generator_speed.procedural_street``) with noise photos;
- the landscapes recipe of the bundled model (ngf 16, ndf 32, encoder, no VGG loss, batch 2) on
  procedural landscapes;
- a tiny COCO-Stuff model at 64×64, where the label network is too small for the fast path to
  pay for its bookkeeping.
The VGG19 has random weights, written to a temporary file: the same arithmetic as the real one.
The first iteration (warm-up) is left out of the mean; the paths of a config run one after the
other, so compare ratios from one run. ``--repeats N`` runs every config's paths N times in turn,
prints each round, and then the minimum and median ratios and how far the fast path's peak fell
from the reference path's in the same round (this machine's timings move by ±10% from run to run).
Beside the wall-clock ratio, the fast path's ratio of process CPU time (all threads), which time
stolen by other tenants of a shared machine does not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
BENCHMARKS = Path(__file__).resolve().parent

CONFIGS = {
    "coco": ("COCO-Stuff 256x256 with the encoder, ngf/ndf 64, VGG, batch 1",
             ["--dataset_mode", "coco", "--dataroot", str(SHARED / "data" / "coco_stuff_samples"), "--use_vae"]),
    "cityscapes": ("Cityscapes-like 256x128, ngf/ndf 64, VGG, batch 1",
                   ["--dataset_mode", "custom", "--label_nc", "35", "--preprocess_mode", "fixed",
                    "--load_size", "256", "--crop_size", "256", "--aspect_ratio", "2.0"]),
    "landscapes": ("landscapes recipe (ngf 16, ndf 32, encoder, no VGG), batch 2",
                   ["--dataset_mode", "custom", "--label_nc", "182", "--contain_dontcare_label", "--no_instance",
                    "--netG", "spade", "--use_vae", "--ngf", "16", "--spade_hidden", "64", "--z_dim", "256",
                    "--norm_G", "spectralspadesyncbatch3x3", "--crop_size", "256", "--load_size", "286",
                    "--ndf", "32", "--batchSize", "2", "--no_vgg_loss"]),
    "tiny": ("tiny COCO-Stuff 64x64 (ngf 4, spade_hidden 16, ndf 8), VGG, batch 1",
             ["--dataset_mode", "coco", "--dataroot", str(SHARED / "data" / "coco_stuff_samples"),
              "--preprocess_mode", "fixed", "--load_size", "64", "--crop_size", "64", "--ngf", "4",
              "--spade_hidden", "16", "--ndf", "8", "--n_layers_D", "3"]),
}
SYSTEM = {"SPADE_ALLOCATOR": "system"}
DEFAULT = {**SYSTEM, "SPADE_KEEP_FREED_MEMORY": "0"}
PATHS = {"reference": (["--reference_spade"], DEFAULT), "fast": ([], {}), "fast, glibc kept": ([], SYSTEM),
         "fast, glibc default": ([], DEFAULT)}


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(flags: list[str]) -> None:
    """Child process: train, then print seconds per iteration and peak memory as JSON."""
    from spadegan.memory import keep_freed_memory, start_with_preferred_allocator, tcmalloc_loaded

    start_with_preferred_allocator()  # as the spadegan command starts: this process may run again
    import torch

    from spadegan.cli import main

    main(["train", *flags])
    allocator = "tcmalloc" if tcmalloc_loaded() else "glibc, kept" if keep_freed_memory() else "glibc"
    run_dir = Path(flags[flags.index("--checkpoints_dir") + 1]) / "bench"
    records = [json.loads(line) for line in (run_dir / "logs" / "losses.jsonl").read_text().splitlines()]
    times = [r["seconds_per_iteration"] for r in records[1:]]
    cpu_times = [r["cpu_seconds_per_iteration"] for r in records[1:]]
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else peak_rss_mib()
    print(json.dumps({"seconds_per_iteration": statistics.mean(times), "min": min(times),
                      "cpu_seconds_per_iteration": statistics.mean(cpu_times),
                      "peak_memory_mib": peak, "allocator": allocator, "device": "cuda" if torch.cuda.is_available() else "cpu"}))


def street_dataset(folder: Path, count: int = 4) -> list[str]:
    """Street label maps, instance maps and noise photos at 256×128, in the custom layout."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(BENCHMARKS))
    from generator_speed import procedural_street

    for kind in ("label", "inst", "img"):
        (folder / kind).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        labels, instances = procedural_street(10 + i, cars=3 + 3 * i, people=4 * i, h=128, w=256)
        Image.fromarray(labels[0, 0].numpy().astype(np.uint8)).save(folder / "label" / f"{i}.png")
        Image.fromarray(instances[0, 0].numpy().astype(np.uint16)).save(folder / "inst" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
    return ["--label_dir", str(folder / "label"), "--instance_dir", str(folder / "inst"),
            "--image_dir", str(folder / "img")]


def landscapes_dataset(folder: Path, count: int = 4) -> list[str]:
    subprocess.run([sys.executable, "-m", "spadegan.cli", "landscapes", "--out", str(folder), "--count", str(count),
                    "--size", "256", "--seed", "1", "--workers", "1"], check=True, capture_output=True)
    return ["--label_dir", str(folder / "train_label"), "--image_dir", str(folder / "train_img")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every path per config")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--gpu_ids", default="-1")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_one(args.child)
        return
    import torch

    from spadegan.nn.vgg import VGG19Features

    with tempfile.TemporaryDirectory() as tmp:
        vgg_path = Path(tmp) / "vgg19_random.pth"
        torch.save(VGG19Features().state_dict(), vgg_path)
        data = {"coco": [], "tiny": [], "cityscapes": street_dataset(Path(tmp) / "streets") if "cityscapes" in args.configs else [],
                "landscapes": landscapes_dataset(Path(tmp) / "land") if "landscapes" in args.configs else []}
        print(f"{'':<64} {'reference':>9} {'fast path':>15} {'fast, glibc kept':>16} {'fast, glibc':>15}  peak MiB")
        print(f"{'config':<64} {'s':>9} {'s':>8} {'ratio':>6} {'s':>9} {'ratio':>6} {'s':>8} {'ratio':>6}  "
              "(in the order of the columns)")
        inherited = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SPADE_ALLOCATOR")}
        for key in args.configs:
            name, flags = CONFIGS[key]
            rounds = []
            for round_index in range(args.repeats):
                results = {}
                for path, (extra, env) in PATHS.items():
                    folder = Path(tmp) / f"{key}_{path}_{round_index}"
                    run_flags = [*flags, *data[key], "--name", "bench", "--checkpoints_dir", str(folder),
                                 "--max_steps", str(args.steps + 1), "--print_freq", "1", "--display_freq", "100000",
                                 "--save_latest_freq", "100000", "--vgg_path", str(vgg_path), "--no_progress",
                                 "--no_tensorboard", "--gpu_ids", args.gpu_ids, "--nThreads", "0", *extra]
                    out = subprocess.run([sys.executable, __file__, "--child", *run_flags], capture_output=True,
                                         text=True, env={**inherited, **env})
                    if out.returncode != 0:
                        raise SystemExit(out.stderr[-2000:])
                    results[path] = json.loads(out.stdout.strip().splitlines()[-1])
                rounds.append(results)
                ref = results["reference"]["seconds_per_iteration"]
                columns = "".join(f" {results[p]['seconds_per_iteration']:>8.3f} "
                                  f"{ref / results[p]['seconds_per_iteration']:>6.2f}" for p in list(PATHS)[1:])
                peaks = " / ".join(f"{results[p]['peak_memory_mib']:.0f}" for p in PATHS)
                cpu = results["reference"]["cpu_seconds_per_iteration"] / results["fast"]["cpu_seconds_per_iteration"]
                print(f"{name:<64} {ref:>9.3f}{columns}  {peaks}  fast path CPU time {cpu:.2f}x", flush=True)
            if args.repeats > 1:
                print(summary(rounds))
        print(f"({results['fast']['device']}; mean of {args.steps} iterations after one warm-up; the fast path ran "
              f"on {results['fast']['allocator']})")


def summary(rounds: list[dict[str, dict]]) -> str:
    """The spread over rounds: minimum and median speed-up of the fast path, and its peak
    against the reference path's of the same round."""
    ratios = [r["reference"]["seconds_per_iteration"] / r["fast"]["seconds_per_iteration"] for r in rounds]
    cpu = [r["reference"]["cpu_seconds_per_iteration"] / r["fast"]["cpu_seconds_per_iteration"] for r in rounds]
    excess = [r["fast"]["peak_memory_mib"] - r["reference"]["peak_memory_mib"] for r in rounds]
    above = sum(e > 0 for e in excess)
    return (f"{'':<4}{len(rounds)} rounds: fast path {min(ratios):.2f}x at the minimum, {statistics.median(ratios):.2f}x "
            f"median (CPU time: {min(cpu):.2f}x, {statistics.median(cpu):.2f}x); peak minus the reference path's {min(excess):+.0f} to {max(excess):+.0f} MiB "
            f"(above it in {above} of {len(rounds)})")


if __name__ == "__main__":
    main()
