"""Reference SPADE path vs the fast exact path over sets of label maps, each path as users run it.

Usage: python benchmarks/generator_speed.py [--repeats N] [--threads T] [--same-allocator]
       [--bf16] [--profile K] [--no-training] [--configs cityscapes coco ade20k]

Three configurations at the official widths (ngf 64; batch 1, fp32, eval, random weights with a
fan-in scale and real BatchNorm statistics), each over a set of maps:
- Cityscapes 512×256 ``more`` (35 labels + instance edges): the drawn street scene and three
  procedural streets, sparse to dense (cars, people, poles, signs);
- COCO-Stuff 256×256 with an encoder z (182 + don't-care + instance edges): all 8 COCO-Stuff
  validation samples beside the repository;
- ADE20K 256×256 (150 + don't-care): region maps of 20, 40 and 80 regions.

Each path runs in its own process, built from the same weights: the reference path as the
official code runs it (PyTorch's default allocator), the fast path as the ``spadegan`` command runs
it (spectral norm folded, weights packed, freed memory kept: started with tcmalloc where it is
installed, ``spadegan.memory``) and, where that is tcmalloc, as ``Synthesizer`` runs in a Python
process too (glibc's malloc with freed memory kept).
The processes take turns, one forward at a time, so that a slower spell of this shared machine
hits every path; the best of ``--repeats`` is kept per map. Per map: the time of each path
(wall, and CPU time of its process, which a virtual machine's stolen time does not inflate),
their ratio, the relative difference of the images, system time and minor page faults per
forward; per configuration: the minimum and the median ratio over its maps and each process's
peak RSS. ``--same-allocator`` also times the reference path with freed memory kept, to show what
the allocator setting alone is worth. Then one training iteration (G + D) at 256×256 with each
path, in this process.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spadegan.config import DiscriminatorConfig, GeneratorConfig, LossConfig, ModelConfig, SemanticsConfig
from spadegan.export import prepare_for_inference
from spadegan.models import build_networks
from spadegan.nn.generator import SPADEGenerator
from spadegan.inference import keep_one_weight_copy
from spadegan.memory import preferred_allocator_library
from spadegan.nn.prepacked import set_compute_dtype
from spadegan.semantics import build_semantics
from spadegan.training.steps import StepNetworks, discriminator_losses, generator_losses

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_stuff_samples"

# Cityscapes ids
SKY, BUILDING, VEGETATION, ROAD, SIDEWALK, CAR, POLE, PERSON, SIGN = 23, 11, 21, 7, 8, 26, 17, 24, 20


def street_scene(h: int = 256, w: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """A drawn Cityscapes-like street: sky, buildings, trees, sidewalk, road, cars, poles."""
    labels = torch.full((h, w), SKY)
    labels[h // 3:, :] = BUILDING
    for x in range(0, w, 64):
        labels[h // 3: h // 2 - 10, x + 10: x + 40] = VEGETATION
    labels[h // 2:, :] = ROAD
    labels[h // 2: h // 2 + 20, :] = SIDEWALK
    instances = labels.clone()
    for i, x in enumerate(range(20, w - 60, 90)):
        labels[h // 2 + 30: h // 2 + 70, x: x + 60] = CAR
        instances[h // 2 + 30: h // 2 + 70, x: x + 60] = CAR * 1000 + i
        labels[h // 3 - 40: h // 2, x + 70: x + 74] = POLE
        instances[h // 3 - 40: h // 2, x + 70: x + 74] = POLE
    return labels[None, None], instances[None, None]


def procedural_street(seed: int, cars: int, people: int, h: int = 256, w: int = 512
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A street with a ragged skyline, trees, and ``cars`` cars and ``people`` people at random
    places and sizes (instances numbered as Cityscapes numbers them), poles and signs."""
    g = torch.Generator().manual_seed(seed)

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=g))

    labels = torch.full((h, w), SKY)
    x = 0
    while x < w:  # buildings of random widths and heights
        width = randint(20, 90)
        labels[randint(h // 8, h // 3):, x:x + width] = BUILDING
        x += width
    for _ in range(randint(2, 8)):  # tree crowns
        cx, cy, r = randint(0, w), randint(h // 4, h // 2), randint(8, 30)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        labels[(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = VEGETATION
    horizon = randint(h // 2 - 10, h // 2 + 20)
    labels[horizon:, :] = ROAD
    labels[horizon:horizon + randint(8, 24), :] = SIDEWALK
    instances = labels.clone()
    for i in range(cars):
        y, cw = randint(horizon + 10, h - 20), randint(30, 90)
        cx = randint(0, w - cw)
        ch = cw // 2
        labels[y - ch:y, cx:cx + cw] = CAR
        instances[y - ch:y, cx:cx + cw] = CAR * 1000 + i
    for i in range(people):
        y, ph = randint(horizon, h), randint(14, 40)
        px = randint(0, w - 8)
        labels[max(0, y - ph):y, px:px + ph // 4 + 2] = PERSON
        instances[max(0, y - ph):y, px:px + ph // 4 + 2] = PERSON * 1000 + i
    for _ in range(max(2, cars // 2)):  # poles with a sign
        px = randint(0, w - 4)
        labels[horizon - 60:horizon + 4, px:px + 3] = POLE
        labels[horizon - 70:horizon - 56, px - 4:px + 7] = SIGN
        instances[horizon - 60:horizon + 4, px:px + 3] = POLE
        instances[horizon - 70:horizon - 56, px - 4:px + 7] = SIGN
    return labels[None, None], instances[None, None]


def coco_maps(size: int = 256) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Every COCO-Stuff validation sample beside the repository, resized (nearest) to size²."""
    def read(folder: str, name: str) -> torch.Tensor:
        ids = torch.from_numpy(np.array(Image.open(COCO / folder / name), dtype=np.int64))[None, None]
        return F.interpolate(ids.float(), size=(size, size), mode="nearest").long()
    names = sorted(p.name for p in (COCO / "val_label").glob("*.png"))
    return [(name.removesuffix(".png"), read("val_label", name), read("val_inst", name)) for name in names]


def regions_map(classes: int, size: int = 256, seed: int = 0, regions: int = 40) -> torch.Tensor:
    """Voronoi regions around random seeds: ADE20K-like region sizes and shapes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(regions, 2, generator=g) * size
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    d = (ys[..., None] - centres[:, 0]) ** 2 + (xs[..., None] - centres[:, 1]) ** 2
    region_class = torch.randint(0, classes, (regions,), generator=g)
    return region_class[d.argmin(-1)][None, None]


@dataclass
class Config:
    name: str
    label_nc: int
    dontcare: bool
    generator: dict
    with_z: bool
    maps: list[tuple[str, torch.Tensor]]  # (name, semantics)


def map_sets(selected: list[str]) -> list[Config]:
    configs = []
    if "cityscapes" in selected:
        streets = [("drawn street", *street_scene()), ("sparse street", *procedural_street(1, cars=2, people=0)),
                   ("busy street", *procedural_street(2, cars=7, people=6)),
                   ("dense street", *procedural_street(3, cars=16, people=20))]
        configs.append(Config("Cityscapes 512x256 'more'", 35, False,
                              dict(crop_size=512, aspect_ratio=2.0, num_upsampling_layers="more"), False,
                              [(n, build_semantics(lab, 35, False, inst, True)) for n, lab, inst in streets]))
    if "coco" in selected:
        configs.append(Config("COCO-Stuff 256x256, z input", 182, True, dict(crop_size=256, z_dim=256), True,
                              [(n, build_semantics(lab, 182, True, inst, True)) for n, lab, inst in coco_maps()]))
    if "ade20k" in selected:
        configs.append(Config("ADE20K 256x256", 150, True, dict(crop_size=256), False,
                              [(f"{r} regions", build_semantics(regions_map(150, seed=r, regions=r), 150, True))
                               for r in (20, 40, 80)]))
    return configs


def randomize(generator: SPADEGenerator, semantics: torch.Tensor, z) -> None:
    """Random weights with a fan-in scale, then train-mode passes for real BatchNorm statistics."""
    with torch.no_grad():
        for name, p in generator.named_parameters():
            p.normal_(0, 0.05 if name.endswith("bias") else 1.0 / max(1, p[0].numel()) ** 0.5)
        generator.train()
        generator.fast_spade = False
        for _ in range(2):
            generator(semantics, z)
    generator.eval()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


PATHS = {  # name: (fast SPADE path, freed memory kept, bf16 convolutions, started with tcmalloc where installed)
    "reference": (False, False, False, False),
    "reference, memory kept": (False, True, False, False),
    "fast": (True, True, False, True),
    "fast, glibc kept": (True, True, False, False),
    "fast, bf16 convs": (True, True, True, True),
}


def path_worker(path: str, generator_kwargs: dict, weights: str, threads: int, connection) -> None:
    """One path in its own process: build the generator from ``weights``, prepare it as that path
    runs, then answer ("map", semantics, z) with a warm-up forward's image and ("time",) with one
    timed forward's (wall, cpu, system seconds, minor page faults); ("peak",) gives the peak RSS."""
    fast, keep, bf16, _ = PATHS[path]
    if keep:
        from spadegan.memory import keep_freed_memory
        keep_freed_memory()
    torch.set_num_threads(threads)
    generator = SPADEGenerator(**generator_kwargs)
    generator.load_state_dict(torch.load(weights, weights_only=True))
    generator.eval()
    if fast:  # as Synthesizer prepares it
        prepare_for_inference(generator)
        if bf16:
            set_compute_dtype(generator, torch.bfloat16)
        else:
            keep_one_weight_copy(generator)
    generator.fast_spade = fast
    if keep:
        from spadegan.memory import release_freed_memory
        release_freed_memory()  # as Synthesizer does after loading
    semantics = z = None
    with torch.no_grad():
        while True:
            message = connection.recv()
            if message[0] == "map":
                _, semantics, z = message
                connection.send(generator(semantics, z))  # warm-up (and the fast path's weight tables)
            elif message[0] == "time":
                before = resource.getrusage(resource.RUSAGE_SELF)
                start = time.perf_counter()
                generator(semantics, z)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_SELF)
                connection.send((wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                                 after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt))
            elif message[0] == "peak":
                connection.send(peak_rss())
            else:
                return


def peak_rss() -> int:
    """This process's peak resident memory in bytes. Linux's ``VmHWM``, which starts afresh at
    exec (``ru_maxrss`` carries over the peak of the process that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: kilobytes there too


@dataclass
class MapTiming:
    wall: float
    cpu: float
    system: float
    faults: int
    image: torch.Tensor


def time_paths(config: Config, generator: SPADEGenerator, paths: list[str], repeats: int, threads: int,
               ) -> tuple[list[dict[str, MapTiming]], dict[str, int]]:
    """Each path in its own process (spawned: no state shared with this one), all from
    ``generator``'s weights; per map, the paths take turns, best of ``repeats`` each."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "generator.pt")
        torch.save(generator.state_dict(), weights)
        kwargs = dict(label_channels=config.maps[0][1].shape[1], ngf=64, **config.generator)
        workers = {}
        for path in paths:
            ours, theirs = context.Pipe()
            process = context.Process(target=path_worker, args=(path, kwargs, weights, threads, theirs))
            # A spawned worker cannot start itself again; it is started as the spadegan command
            # would have started it.
            preload = preferred_allocator_library() if PATHS[path][3] else None
            with mock.patch.dict(os.environ):  # restored after the start
                os.environ.pop("LD_PRELOAD", None)
                if preload:
                    os.environ["LD_PRELOAD"] = preload
                process.start()
            workers[path] = (process, ours)
        results = []
        z = torch.randn(1, 256, generator=torch.Generator().manual_seed(1)) if config.with_z else None
        for _, semantics in config.maps:
            images = {}
            for path, (_, pipe) in workers.items():
                pipe.send(("map", semantics, z))
            for path, (_, pipe) in workers.items():
                images[path] = pipe.recv()
            runs: dict[str, list[tuple]] = {path: [] for path in paths}
            for _ in range(repeats):
                for path, (_, pipe) in workers.items():
                    pipe.send(("time",))
                    runs[path].append(pipe.recv())
            results.append({path: MapTiming(min(r[0] for r in runs[path]), min(r[1] for r in runs[path]),
                                            min(r[2] for r in runs[path]), min(r[3] for r in runs[path]),
                                            images[path]) for path in paths})
        peaks = {}
        for path, (process, pipe) in workers.items():
            pipe.send(("peak",))
            peaks[path] = pipe.recv()
            pipe.send(("stop",))
            process.join()
    return results, peaks


def profile_fast(generator, semantics, z, rows: int) -> None:
    """Where the fast path's time goes: the top operators by self CPU time in one forward."""
    folded = prepare_for_inference(copy.deepcopy(generator))
    folded.fast_spade = True
    with torch.no_grad():
        folded(semantics, z)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            folded(semantics, z)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"  fast path profile ({total / 1e3:.0f} ms of operator time):")
    for e in events[:rows]:
        print(f"    {e.key:<44} {e.self_cpu_time_total / 1e3:>8.1f} ms {100 * e.self_cpu_time_total / total:>5.1f}%"
              f"  x{e.count}")


def training_step(fast: bool):
    """One training iteration's closure (G step + D step) with the reference or the fast path."""
    torch.manual_seed(0)
    networks = build_networks(ModelConfig(SemanticsConfig(182, True, True), GeneratorConfig(ngf=64, crop_size=256),
                                          DiscriminatorConfig(ndf=64)))
    networks.generator.fast_spade = fast
    _, labels, instances = next(m for m in coco_maps() if m[0] == "000000000785")
    semantics = build_semantics(labels, 182, True, instances, True)
    real = torch.rand(1, 3, 256, 256) * 2 - 1
    nets = StepNetworks(networks.generator.train(), networks.discriminator.train())
    loss = LossConfig(no_vgg_loss=True)
    opt_g = torch.optim.Adam(networks.generator.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(networks.discriminator.parameters(), lr=4e-4, betas=(0.0, 0.9))

    def step() -> None:
        g_losses, _ = generator_losses(nets, semantics, real, loss)
        opt_g.zero_grad()
        sum(g_losses.values()).backward()
        opt_g.step()
        d_losses = discriminator_losses(nets, semantics, real, loss)
        opt_d.zero_grad()
        sum(d_losses.values()).backward()
        opt_d.step()
    return step


def time_training(repeats: int) -> dict[bool, float]:
    steps = {fast: training_step(fast) for fast in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for step in steps.values():
        step()  # warm-up
    for _ in range(repeats):
        for fast, step in steps.items():
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            step()
            times[fast].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu[fast].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {fast: (min(times[fast]), min(cpu[fast])) for fast in times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=["cityscapes", "coco", "ade20k"],
                        choices=["cityscapes", "coco", "ade20k"])
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--same-allocator", action="store_true",
                        help="also time the reference path with freed memory kept, as the fast path runs")
    parser.add_argument("--bf16", action="store_true",
                        help="also time the fast path with bfloat16 convolutions (--precision bf16; not exact)")
    parser.add_argument("--profile", type=int, default=0, metavar="K",
                        help="print the K most expensive operators of the fast path on each config's first map")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tcmalloc = preferred_allocator_library() is not None
    paths = (["reference", "fast"] + ["fast, glibc kept"] * tcmalloc + ["reference, memory kept"] * args.same_allocator
             + ["fast, bf16 convs"] * args.bf16)

    print(f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"{args.threads} threads, batch 1, fp32, eval, ngf 64; each path in its own process, taking turns; "
          f"best of {args.repeats} per map")
    print("wall: wall-clock seconds; cpu: CPU seconds of the path's process (user + system), which a virtual")
    print("machine's stolen time does not inflate; rel. diff: max |fast - reference| / max |reference| of the images")
    print("fast: started with tcmalloc, as the spadegan command starts; fast, glibc kept: glibc's malloc with freed"
          " memory kept, as Synthesizer runs in a Python process" if tcmalloc else
          "fast: glibc's malloc with freed memory kept (tcmalloc, which the spadegan command prefers, is not installed)")
    for config in map_sets(args.configs):
        generator = SPADEGenerator(config.maps[0][1].shape[1], ngf=64, **config.generator)
        z = torch.randn(1, 256) if config.with_z else None
        randomize(generator, config.maps[0][1], z)
        results, peaks = time_paths(config, generator, paths, args.repeats, args.threads)
        print(f"\n{config.name}")
        print(f"  {'map':<16} {'reference s':>11} {'fast s':>8} {'ratio':>6} {'cpu ratio':>9} {'rel. diff':>9}"
              f"  {'system s (ref / fast)':>21}  {'page faults (ref / fast)':>24}")
        ratios, cpu_ratios = [], []
        for (name, _), r in zip(config.maps, results):
            ref, fast = r["reference"], r["fast"]
            diff = float((fast.image - ref.image).abs().max() / ref.image.abs().max())
            ratios.append(ref.wall / fast.wall)
            cpu_ratios.append(ref.cpu / fast.cpu)
            print(f"  {name:<16} {ref.wall:>11.3f} {fast.wall:>8.3f} {ratios[-1]:>6.2f} {cpu_ratios[-1]:>9.2f}"
                  f" {diff:>9.1e}  {ref.system:>10.2f} / {fast.system:<8.2f}  {ref.faults:>11d} / {fast.faults:<10d}")
            for extra in paths[2:]:
                other = r[extra]
                levels = (other.image - ref.image).abs() * 127.5  # 8-bit levels of the written PNGs
                print(f"    {extra:<28} {other.wall:>8.3f} s, {ref.wall / other.wall:.2f}x the reference"
                      f" (cpu {ref.cpu / other.cpu:.2f}x); {other.faults} page faults;"
                      f" image vs reference max {float(levels.max()):.2f}/255")
        print(f"  ratio over {len(ratios)} maps: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x"
              f" (cpu: min {min(cpu_ratios):.2f}x, median {statistics.median(cpu_ratios):.2f}x)")
        if args.same_allocator:
            kept = [r["reference, memory kept"].wall / r["fast"].wall for r in results]
            print(f"  against the reference path with freed memory kept too: min {min(kept):.2f}x,"
                  f" median {statistics.median(kept):.2f}x")
        print("  peak RSS: " + ", ".join(f"{path} {peaks[path] / 2**20:.0f} MiB" for path in paths))
        if args.profile:
            profile_fast(generator, config.maps[0][1], z, args.profile)
    if not args.no_training:
        timed = time_training(args.repeats)
        (reference, reference_cpu), (fast, fast_cpu) = timed[False], timed[True]
        print(f"\ntraining iteration, COCO 256x256 (G + D): reference {reference:.3f} s, fast {fast:.3f} s,"
              f" {reference / fast:.2f}x (cpu {reference_cpu / fast_cpu:.2f}x)")


if __name__ == "__main__":
    main()
