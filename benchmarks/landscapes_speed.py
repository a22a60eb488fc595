"""Samples per second of the procedural landscapes: generation alone (one process), and the
``spadegan landscapes`` command (generation + three PNG files per sample, all its workers).

Usage: python benchmarks/landscapes_speed.py [--count N] [--size 256|WxH] [--workers K]

The command is timed from its own start to its end, so Python and import start-up are counted.
CPU seconds per sample (user + system, all processes) are printed too: on a shared machine the
wall-clock rate depends on the other load, the CPU cost does not (much); cores / CPU cost is the
rate the command reaches on idle cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spadegan.cli import parse_size
from spadegan.data.landscapes import generate_landscape


def generation_rate(count: int, size: tuple[int, int]) -> tuple[float, float]:
    """(samples/s, CPU seconds per sample) of generate_landscape in this process."""
    generate_landscape((0, 0), size)  # warm-up: imports, first allocations
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(count):
        generate_landscape((0, index), size)
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_rate(count: int, size_text: str, workers: int) -> tuple[float, float]:
    """(samples/s, CPU seconds per sample) of the spadegan landscapes command, start-up included."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "landscapes"
        command = [sys.executable, "-m", "spadegan.cli", "landscapes", "--out", str(out), "--count", str(count),
                   "--size", size_text, "--seed", "0", "--workers", str(workers)]
        start, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        assert len(list((out / "train_img").glob("*.png"))) == count
    return count / elapsed, (_children_cpu() - cpu) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--size", default="256")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    size = parse_size(args.size)
    print(f"{size[0]}x{size[1]}, {args.count} samples, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    rate, cpu = generation_rate(min(args.count, 200), size)
    print(f"generation, 1 process:           {rate:6.1f} samples/s, {cpu * 1000:5.1f} ms CPU/sample")
    rate, cpu = cli_rate(args.count, args.size, args.workers)
    print(f"spadegan landscapes, {args.workers} worker(s): {rate:6.1f} samples/s, {cpu * 1000:5.1f} ms CPU/sample "
          f"(idle cores: {min(args.workers, os.cpu_count() or 1) / cpu:.0f} samples/s)")


if __name__ == "__main__":
    main()
