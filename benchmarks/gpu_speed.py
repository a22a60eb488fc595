"""Reference SPADE path vs the fast exact path on a GPU: which one the generator should take there.

Usage: python benchmarks/gpu_speed.py [--device cuda] [--repeats N] [--batches 1 16]
       [--configs cityscapes coco] [--ngf 64]

The fast path's γ and β come from lookups, per-class tables and products at region boundaries,
with data-dependent shapes (the boundary pixels, the distinct patterns): on a CPU that is several
times less arithmetic than the label networks' dense convolutions; on a GPU, where dense
convolutions are cheap and every data-dependent shape waits for the device, it may not pay.
This times the two on the benchmark's map sets (``generator_speed.map_sets``: the Cityscapes
512×256 ``more`` streets, the COCO-Stuff 256×256 validation maps with z), official widths, random
weights with a fan-in scale and real BatchNorm statistics, for every batch size and precision:

- inference: the generator prepared as ``Synthesizer`` prepares it (spectral norm folded; with
  ``bf16``, its convolutions in bfloat16, as ``--precision bf16``), eval, no gradient;
- training: the generator's forward and backward in train mode (fp32, and under bf16 autocast as
  ``--amp bf16``), the G step's share of an iteration.

The two paths differ only in ``generator.fast_spade``; they take turns, one call at a time, and
the median of ``--repeats`` is kept (after two warm-up calls each). Batch B takes the set's maps
in turn. It prints seconds per call, the ratio (reference ÷ fast: above 1, the fast path wins),
the images' largest relative difference (fp32) and each path's peak device memory; a call that
runs out of memory is reported as such. One call on a GPU machine runs it all.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from generator_speed import map_sets, randomize
from spadegan.export import prepare_for_inference
from spadegan.nn.generator import SPADEGenerator
from spadegan.nn.prepacked import set_compute_dtype

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB" if device.type == "cuda" else "-"


def time_turns(calls: dict[bool, Callable[[], torch.Tensor]], repeats: int, device: torch.device
               ) -> dict[bool, tuple[float, torch.Tensor | None, str]]:
    """Median seconds of each path's call, its last output and its peak device memory (or the error)."""
    times: dict[bool, list[float]] = {fast: [] for fast in calls}
    outputs: dict[bool, torch.Tensor | None] = {}
    peaks: dict[bool, str] = {}
    failed: dict[bool, str] = {}
    for fast, call in calls.items():  # two warm-up calls each, and the peak of one
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(2):
                outputs[fast] = call()
            synchronize(device)
            peaks[fast] = peak_memory(device)
        except torch.OutOfMemoryError:
            failed[fast] = "out of memory"
            outputs[fast] = None
            torch.cuda.empty_cache()
    for _ in range(repeats):
        for fast, call in calls.items():
            if fast in failed:
                continue
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[fast].append(time.perf_counter() - start)
    return {fast: (statistics.median(times[fast]) if fast not in failed else float("nan"), outputs[fast],
                   failed.get(fast, peaks.get(fast, "-"))) for fast in calls}


def report(label: str, results: dict[bool, tuple[float, torch.Tensor | None, str]], exact: bool) -> None:
    (ref_s, ref_out, ref_peak), (fast_s, fast_out, fast_peak) = results[False], results[True]
    ratio = ref_s / fast_s if fast_s == fast_s and ref_s == ref_s else float("nan")
    diff = "-"
    if exact and ref_out is not None and fast_out is not None:
        diff = f"{float((fast_out - ref_out).abs().max() / ref_out.abs().max()):.1e}"
    print(f"  {label:<34} {ref_s:>9.4f} {fast_s:>9.4f} {ratio:>6.2f}  {diff:>9}  {ref_peak:>14} / {fast_peak}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--configs", nargs="+", default=["cityscapes", "coco"], choices=["cityscapes", "coco"])
    parser.add_argument("--ngf", type=int, default=64, help="generator width (64: official; smaller for a quick check)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; ngf {args.ngf}; median of {args.repeats} calls after 2 warm-up calls")
    print("ratio: reference s / fast s (above 1: the fast path is faster); rel. diff: max |fast - reference| /"
          " max |reference| (fp32); peak: the device memory each path's calls reached")
    torch.manual_seed(0)
    for config in map_sets(args.configs):
        generator = SPADEGenerator(config.maps[0][1].shape[1], ngf=args.ngf, **config.generator)
        z_one = torch.randn(1, 256) if config.with_z else None
        randomize(generator, config.maps[0][1], z_one)
        print(f"\n{config.name} ({len(config.maps)} maps)")
        print(f"  {'':<34} {'reference':>9} {'fast':>9} {'ratio':>6}  {'rel. diff':>9}  {'peak: reference / fast':>14}")
        for batch in args.batches:
            semantics = torch.cat([config.maps[i % len(config.maps)][1] for i in range(batch)]).to(device)
            z = torch.randn(batch, 256, device=device) if config.with_z else None
            for precision, dtype in PRECISIONS.items():
                prepared = prepare_for_inference(copy.deepcopy(generator))
                set_compute_dtype(prepared, dtype)
                prepared = prepared.to(device).eval()

                def infer(fast: bool, g=prepared) -> torch.Tensor:
                    g.fast_spade = fast
                    with torch.no_grad():
                        return g(semantics, z)
                results = time_turns({fast: (lambda f=fast: infer(f)) for fast in (False, True)}, args.repeats, device)
                report(f"inference, batch {batch}, {precision}", results, precision == "fp32")
                del prepared, results

                trained = copy.deepcopy(generator).to(device).train()

                def train_step(fast: bool, g=trained, amp=precision == "bf16") -> torch.Tensor:
                    g.fast_spade = fast
                    g.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        out = g(semantics, z)
                    out.float().square().mean().backward()
                    return out.detach().float()
                results = time_turns({fast: (lambda f=fast: train_step(f)) for fast in (False, True)}, args.repeats,
                                     device)
                report(f"training fwd+bwd, batch {batch}, {precision}", results, False)
                del trained, results


if __name__ == "__main__":
    main()
