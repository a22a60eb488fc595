"""The discriminator's share of a training step: the official concatenated input against the
paired input training uses (semantic maps and images apart), measured in one run.

Usage: python benchmarks/discriminator_speed.py [--repeats N] [--device cpu|cuda]

Per config, one generator-step pass of D (forward on fake and real, backward to D's weights and
to the fake images, as the G step needs) both ways, alternated ``--repeats`` times after a
warm-up; printed are the median times, their ratio and the largest output difference.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from spadegan.nn.discriminator import MultiscaleDiscriminator
from spadegan.semantics import one_hot

CONFIGS = {
    # name: (classes incl. don't-care, size, batch, ndf)
    "COCO-Stuff 256x256, batch 1, ndf 64 (official defaults)": (183, 256, 1, 64),
    "landscapes 256x256, batch 2, ndf 32 (the bundled model's run)": (183, 256, 2, 32),
    "Cityscapes 512x256, batch 1, ndf 64": (36, (256, 512), 1, 64),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| config | concatenated | paired | speed-up | max output difference |")
    print("| --- | --- | --- | --- | --- |")
    for name, (classes, size, batch, ndf) in CONFIGS.items():
        height, width = (size, size) if isinstance(size, int) else size
        torch.manual_seed(0)
        labels = torch.randint(0, classes, (batch, 1, height, width), device=device)
        semantics = one_hot(labels, classes - 1, True)
        fake = torch.randn(batch, 3, height, width, device=device)
        real = torch.randn(batch, 3, height, width, device=device)
        d_concat = MultiscaleDiscriminator(classes + 3, ndf=ndf).to(device)
        d_paired = copy.deepcopy(d_concat)

        def concatenated_input(fake_images: torch.Tensor) -> torch.Tensor:
            """The official input: each image beside its map, the fakes then the reals."""
            return torch.cat([torch.cat([semantics, fake_images], 1), torch.cat([semantics, real], 1)], 0)

        def concatenated() -> list:
            x = fake.clone().requires_grad_()
            out = d_concat(concatenated_input(x))
            sum(scale[-1].mean() for scale in out).backward()
            return out

        def paired() -> list:
            x = fake.clone().requires_grad_()
            out = d_paired(semantics, torch.cat([x, real], 0))
            sum(scale[-1].mean() for scale in out).backward()
            return out

        with torch.no_grad():
            a = d_concat.eval()(concatenated_input(fake))
            b = d_paired.eval()(semantics, torch.cat([fake, real], 0))
        difference = max(float((u - v).abs().max()) for sa, sb in zip(a, b) for u, v in zip(sa, sb))
        d_concat.train(), d_paired.train()
        times: dict[str, list[float]] = {"concatenated": [], "paired": []}
        for repeat in range(args.repeats + 1):
            for label, step in (("concatenated", concatenated), ("paired", paired)):
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                if repeat:  # the first round is the warm-up
                    times[label].append(time.perf_counter() - start)
        slow, fast = statistics.median(times["concatenated"]), statistics.median(times["paired"])
        print(f"| {name} | {slow:.3f} s | {fast:.3f} s | **{slow / fast:.2f}×** | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
