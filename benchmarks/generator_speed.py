"""Reference SPADE path vs the fast exact path: generator inference and one training iteration.

Usage: python benchmarks/generator_speed.py [--repeats N] [--threads T] [--profile K] [--bf16]

In one run on this machine (batch 1, fp32, random weights at the official widths, ngf 64), for
Cityscapes (35 labels + instance edges, 512×256, 'more'; a drawn street scene), COCO-Stuff
(182 + don't-care + instance edges, 256×256, encoder z input; a real COCO-Stuff label map) and
ADE20K (150 + don't-care, 256×256; a label map with realistic region sizes), it prints the time
of each path (the fast one prepared at load time as ``Synthesizer`` does: spectral norm folded,
conv weights channels-last), their
ratio and the largest difference of their images; then one training iteration (G step + D step,
hinge + feature matching, TTUR Adam) at 256×256 with each path. ``--profile K`` also prints,
per config, the K operators where the fast path spends most of its time (self CPU time). It
also prints each path's system time and minor page faults per forward: large fresh buffers are
mapped and faulted in page by page on every forward, which costs the reference path, with its
full-resolution one-hot resizes and label-network activations, far more than the fast one.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spade.config import DiscriminatorConfig, GeneratorConfig, LossConfig, ModelConfig, SemanticsConfig
from spade.export import prepare_for_inference
from spade.models import build_networks
from spade.nn.generator import SPADEGenerator
from spade.nn.prepacked import set_compute_dtype
from spade.semantics import build_semantics
from spade.training.steps import StepNetworks, discriminator_losses, generator_losses

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_stuff_samples"


def street_scene(h: int = 256, w: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """A drawn Cityscapes-like street: sky, buildings, trees, sidewalk, road, cars, poles."""
    labels = torch.full((h, w), 23)                  # sky
    labels[h // 3:, :] = 11                          # building
    for x in range(0, w, 64):
        labels[h // 3: h // 2 - 10, x + 10: x + 40] = 21   # vegetation
    labels[h // 2:, :] = 7                           # road
    labels[h // 2: h // 2 + 20, :] = 8               # sidewalk
    instances = labels.clone()
    for i, x in enumerate(range(20, w - 60, 90)):
        labels[h // 2 + 30: h // 2 + 70, x: x + 60] = 26    # car
        instances[h // 2 + 30: h // 2 + 70, x: x + 60] = 26000 + i
        labels[h // 3 - 40: h // 2, x + 70: x + 74] = 17    # pole
        instances[h // 3 - 40: h // 2, x + 70: x + 74] = 17
    return labels[None, None], instances[None, None]


def coco_map(size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    name = "000000000785.png"
    def read(folder):
        ids = torch.from_numpy(np.array(Image.open(COCO / folder / name), dtype=np.int64))[None, None]
        return F.interpolate(ids.float(), size=(size, size), mode="nearest").long()
    return read("val_label"), read("val_inst")


def regions_map(classes: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """Voronoi regions around 40 random seeds: ADE20K-like region sizes and shapes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(40, 2, generator=g) * size
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    d = (ys[..., None] - centres[:, 0]) ** 2 + (xs[..., None] - centres[:, 1]) ** 2
    region_class = torch.randint(0, classes, (40,), generator=g)
    return region_class[d.argmin(-1)][None, None]


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


def time_generator(generator, semantics, z, repeats: int, bf16: bool = False) -> dict:
    """Reference: the generator as the official code runs it. Fast: the fast SPADE path, with
    spectral norm folded and conv weights packed at load time, as ``Synthesizer`` does. With
    ``bf16``, also the fast path with its convolutions in bfloat16 (``--precision bf16``, opt-in,
    not exact). The paths alternate, so that a slower spell of this shared machine hits all of
    them; the best time of each is kept."""
    folded = prepare_for_inference(copy.deepcopy(generator))
    nets = {"reference": generator, "fast": folded}
    if bf16:
        nets["bf16"] = set_compute_dtype(prepare_for_inference(copy.deepcopy(generator)), torch.bfloat16)
    times: dict[str, list[float]] = {name: [] for name in nets}
    system: dict[str, list[float]] = {name: [] for name in nets}
    cpu: dict[str, list[float]] = {name: [] for name in nets}
    faults: dict[str, list[int]] = {name: [] for name in nets}
    outs = {}
    with torch.no_grad():
        for name, net in nets.items():
            net.fast_spade = name != "reference"
            outs[name] = net(semantics, z)  # warm-up (and the fast path's weight tables)
        for _ in range(repeats):
            for name, net in nets.items():
                before = resource.getrusage(resource.RUSAGE_SELF)
                start = time.perf_counter()
                outs[name] = net(semantics, z)
                times[name].append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_SELF)
                system[name].append(after.ru_stime - before.ru_stime)
                cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                faults[name].append(after.ru_minflt - before.ru_minflt)
    # Page faults: fresh large buffers come from mmap and are faulted in page by page, in kernel
    # time (the "system" seconds), on every forward.
    return {name: (min(times[name]), outs[name], min(system[name]), min(faults[name]), min(cpu[name])) for name in nets}


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
    labels, instances = coco_map(256)
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
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--bf16", action="store_true",
                        help="also time the fast path with bfloat16 convolutions (--precision bf16)")
    parser.add_argument("--profile", type=int, default=0, metavar="K",
                        help="print the K most expensive operators of the fast path per config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    street, street_instances = street_scene()
    coco_labels, coco_instances = coco_map()
    configs = [
        ("Cityscapes 512x256 'more', street scene",
         build_semantics(street, 35, False, street_instances, True),
         dict(crop_size=512, aspect_ratio=2.0, num_upsampling_layers="more"), False),
        ("COCO-Stuff 256x256, z input, COCO map",
         build_semantics(coco_labels, 182, True, coco_instances, True), dict(crop_size=256, z_dim=256), True),
        ("ADE20K 256x256, region map",
         build_semantics(regions_map(150), 150, True), dict(crop_size=256), False),
    ]
    print(f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"{torch.get_num_threads()} threads, batch 1, fp32, eval, ngf 64; best of {args.repeats}, alternating")
    print("wall: best wall-clock time; cpu: best CPU time of the process (user + system), which a virtual")
    print("machine's stolen time does not inflate")
    print(f"{'config':<42} {'reference s':>11} {'fast s':>8} {'ratio':>6} {'cpu ratio':>9} {'max |Δ| image':>14}"
          f"  {'system s (ref / fast)':>21}  {'page faults (ref / fast)':>24}")
    for name, semantics, kwargs, with_z in configs:
        generator = SPADEGenerator(semantics.shape[1], ngf=64, **kwargs)
        z = torch.randn(1, 256) if with_z else None
        randomize(generator, semantics, z)
        r = time_generator(generator, semantics, z, args.repeats, bf16=args.bf16)
        ref, fast = r["reference"], r["fast"]
        diff = float((fast[1] - ref[1]).abs().max())
        print(f"{name:<42} {ref[0]:>11.3f} {fast[0]:>8.3f} {ref[0] / fast[0]:>6.2f}"
              f" {ref[4] / fast[4]:>9.2f} {diff:>14.2e}"
              f"  {ref[2]:>10.2f} / {fast[2]:<8.2f}  {ref[3]:>11d} / {fast[3]:<10d}")
        if args.bf16:
            low = r["bf16"]
            # In 8-bit pixel levels: images are written as PNGs, (x + 1) · 127.5.
            levels = (low[1] - ref[1]).abs() * 127.5
            print(f"  {'fast path, bf16 convolutions (not exact)':<40} {low[0]:>8.3f} s {ref[0] / low[0]:>6.2f}×"
                  f" (cpu {ref[4] / low[4]:.2f}×; {fast[0] / low[0]:.2f}× the fp32 fast path); image vs reference:"
                  f" max {float(levels.max()):.2f}/255, mean {float(levels.mean()):.3f}/255")
        if args.profile:
            profile_fast(generator, semantics, z, args.profile)
    if not args.no_training:
        timed = time_training(args.repeats)
        (reference, reference_cpu), (fast, fast_cpu) = timed[False], timed[True]
        print(f"{'training iteration, COCO 256x256 (G + D)':<42} {reference:>11.3f} {fast:>8.3f} {reference / fast:>6.2f}"
              f" {reference_cpu / fast_cpu:>9.2f}")


if __name__ == "__main__":
    main()
