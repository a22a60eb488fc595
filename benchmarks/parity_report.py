"""Print how far our networks are from the tensors recorded from the official implementation.

Usage: python benchmarks/parity_report.py [FIXTURE_DIR]   (default: ../shared/fixtures/official_spade)

For every recorded tensor (generator eval/train outputs, BatchNorm and spectral-norm buffers after
the train-mode forward, discriminator features, encoder μ / log σ²) it prints the max absolute
difference and that difference relative to the tensor's largest magnitude, for the reference
SPADE path and for the fast exact path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from spadegan.checkpoint import load_official
from spadegan.semantics import build_semantics


def report(name: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    diff = float((actual.float() - expected.float()).abs().max())
    scale = float(expected.float().abs().max()) or 1.0
    print(f"  {name:<44} max|Δ| {diff:.3g}   relative {diff / scale:.3g}")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/fixtures/official_spade"
    torch.set_grad_enabled(False)
    for fixture in sorted(root.glob("*.pt")):
        folder = root / f"{fixture.stem}_checkpoint"
        if not folder.is_dir():
            continue
        fx = torch.load(fixture, weights_only=True)
        print(fixture.stem)
        networks = load_official(folder).networks.eval()
        s = networks.config.semantics
        seg = build_semantics(fx["label"], s.label_nc, s.contain_dontcare_label, fx["instance"], s.use_instance)
        z = fx["z"] if networks.config.generator.z_dim is not None else None
        for fast in (False, True):
            networks.generator.fast_spade = fast
            report(f"G eval ({'fast' if fast else 'reference'} path)", networks.generator(seg, z), fx["G_eval_out"])
        networks.generator.fast_spade = False
        for i, scale in enumerate(networks.discriminator(torch.cat([seg, fx["G_eval_out"]], 1))):
            worst = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(scale, fx["D_eval_out_on_fake"][i]))
            print(f"  {'D scale %d (worst feature, relative)' % i:<44} {worst:.3g}")
        if networks.encoder is not None:
            mu, logvar = networks.encoder(fx["image"])
            report("E mu", mu, fx["E_eval_out"][0])
            report("E logvar", logvar, fx["E_eval_out"][1])
        state = {k: v.clone() for k, v in networks.generator.state_dict().items()}
        networks.generator.train()
        networks.generator.fast_spade = True
        report("G train (fast path)", networks.generator(seg, z), fx["G_train_out"])
        networks.generator.load_state_dict(state)  # undo that forward's statistics updates
        networks.generator.fast_spade = False
        report("G train (reference path)", networks.generator(seg, z), fx["G_train_out"])
        state = networks.generator.state_dict()
        worst = max(float((state[k].float() - v.float()).abs().max()) for k, v in fx["G_buffers_after_train_forward"].items())
        print(f"  {'G buffers after train forward (worst)':<44} max|Δ| {worst:.3g}")


if __name__ == "__main__":
    main()
