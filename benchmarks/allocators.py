"""Which allocator setting removes the page-fault tax of a forward, and what each costs in memory.

Usage: python benchmarks/allocators.py [--forwards N] [--threads T]

The fast path (as ``Synthesizer`` prepares it) on the Cityscapes 512×256 ``more`` generator
(ngf 64), over a mixed sequence of inputs a server sees (one street, a batch of two, another
street), in one process per allocator: glibc's default, glibc with freed memory kept
(``spadegan.memory``, what ``Synthesizer`` does in a Python process), and jemalloc and tcmalloc
through ``LD_PRELOAD`` where they are installed (Debian: ``libjemalloc2``,
``libtcmalloc-minimal4``; the ``spadegan`` command starts with tcmalloc where it is installed). Prints, per allocator, the median forward time, the page faults per
forward after the first three, and the peak and final RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

LIBRARIES = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}

CHILD = r"""
import json, resource, sys, time
import torch
sys.path.insert(0, {benchmarks!r})
keep = {keep!r}
if keep:
    from spadegan.memory import keep_freed_memory, release_freed_memory
    keep_freed_memory()
from generator_speed import procedural_street, randomize, street_scene
from spadegan.export import prepare_for_inference
from spadegan.nn.generator import SPADEGenerator
from spadegan.semantics import build_semantics
torch.set_num_threads({threads})
torch.manual_seed(0)
maps = [build_semantics(labels, 35, False, instances, True)
        for labels, instances in (street_scene(), procedural_street(3, 16, 20))]
generator = SPADEGenerator(maps[0].shape[1], ngf=64, crop_size=512, aspect_ratio=2.0, num_upsampling_layers="more")
randomize(generator, maps[0], None)
prepare_for_inference(generator)
generator.fast_spade = True
if keep:
    release_freed_memory()
inputs = [maps[0], torch.cat(maps), maps[1]]
times, faults = [], []
with torch.no_grad():
    for i in range({forwards}):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        generator(inputs[i % 3], None)
        times.append((time.perf_counter() - start) / inputs[i % 3].shape[0])
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before.ru_minflt)
rss = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
print(json.dumps(dict(times=times, faults=faults, peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      final=rss)))
"""


def find_library(name: str) -> str | None:
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        if (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forwards", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD",
                                                                                                "GLIBC_TUNABLES")}
    runs = {"glibc default": (False, None), "glibc, freed memory kept (spade)": (True, None)}
    for name, library in LIBRARIES.items():
        path = find_library(library)
        if path is None:
            print(f"{name}: {library} not installed, skipped")
        else:
            runs[f"{name} (LD_PRELOAD)"] = (False, path)
    code = lambda keep: CHILD.format(benchmarks=str(Path(__file__).parent), keep=keep, threads=args.threads,  # noqa: E731
                                     forwards=args.forwards)
    print(f"fast path, Cityscapes 512x256 'more', ngf 64, {args.threads} threads; {args.forwards} forwards cycling "
          "street / batch of two / dense street; time per image")
    print(f"{'allocator':<34} {'median s':>8} {'faults/forward':>15} {'peak RSS MiB':>12} {'final RSS MiB':>13}")
    for name, (keep, preload) in runs.items():
        env = dict(clean, **({"LD_PRELOAD": preload} if preload else {}))
        out = subprocess.run([sys.executable, "-c", code(keep)], env=env, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        steady = r["faults"][3:] or r["faults"]
        print(f"{name:<34} {statistics.median(r['times']):>8.3f} {statistics.median(steady):>15.0f}"
              f" {r['peak'] / 2**20:>12.0f} {r['final'] / 2**20:>13.0f}")


if __name__ == "__main__":
    main()
