"""Shared test helpers: where the official fixtures are, and tiny model configs."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch

# The shared fixtures and samples: $SPADE_SHARED, else ../shared beside the repository (CI's
# layout), else shared/ inside it.
_REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPADE_SHARED") or next(
    (p for p in (_REPO.parent / "shared", _REPO / "shared") if p.is_dir()), _REPO.parent / "shared"))
OFFICIAL = SHARED / "fixtures" / "official_spade"
COCO_SAMPLES = SHARED / "data" / "coco_stuff_samples"
FIXTURE_NAMES = ["cityscapes_like", "ade20k_vae_more"]

torch.set_num_threads(min(2, torch.get_num_threads()))


def require_official() -> Path:
    if not OFFICIAL.is_dir():
        pytest.skip(f"official fixtures not found at {OFFICIAL}")
    return OFFICIAL


@lru_cache(maxsize=None)
def _load_fixture(name: str) -> dict:
    return torch.load(OFFICIAL / f"{name}.pt", weights_only=True)


def official_fixture(name: str) -> dict:
    require_official()
    return _load_fixture(name)


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, what: str, rel: float = 1e-4) -> float:
    """Max abs difference ≤ rel × the expected tensor's largest magnitude; returns the ratio."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = float(expected.float().abs().max()) or 1.0
    diff = float((actual.float() - expected.float()).abs().max())
    assert diff <= rel * scale, f"{what}: max abs diff {diff:.3g} > {rel} × {scale:.3g}"
    return diff / scale


@lru_cache(maxsize=None)
def exact_official_output(name: str) -> torch.Tensor:
    """The official generator's eval output on the fixture's inputs, computed in float64 through
    the reference path (which in float32 reproduces the recorded output bit for bit).

    Float32 paths that order their arithmetic differently (channels-last convolutions, another
    device, the fast SPADE path) are compared with this, not with the recorded float32 output:
    on these random-weight fixtures, float32 rounding alone moves the image by ~1e-4 (the
    recording itself is 6e-5 from this result on ``cityscapes_like``), so two float32 evaluations
    can differ by up to twice that without either being wrong."""
    from spade.checkpoint import load_official
    from spade.semantics import build_semantics

    fx = official_fixture(name)
    networks = load_official(OFFICIAL / f"{name}_checkpoint").networks
    s = networks.config.semantics
    semantics = build_semantics(fx["label"], s.label_nc, s.contain_dontcare_label, fx["instance"], s.use_instance)
    generator = networks.generator.eval().double()
    generator.fast_spade = False
    z = fx["z"].double() if networks.config.generator.z_dim is not None else None
    with torch.no_grad():
        return generator(semantics.double(), z)


def synthesize_fixture_pngs(synthesizer, fx: dict, folder: Path, index: int,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Image ``index`` of a fixture from the PNG inputs in its checkpoint folder, on the CPU:
    through ``synthesize`` as a user calls it in float32; the same steps by hand otherwise."""
    config = synthesizer.config
    label = folder / f"input_label_{index}.png"
    instance = folder / f"input_instance_{index}.png" if config.semantics.use_instance else None
    z = fx["z"][index: index + 1] if config.generator.z_dim is not None else None
    if dtype == torch.float32:
        return synthesizer.synthesize(label, instance, z=z).cpu()
    semantics = synthesizer.semantics(label, instance).to(dtype)
    with torch.no_grad():
        return synthesizer.networks.generator(semantics, None if z is None else z.to(synthesizer.device, dtype)).cpu()


def float64_user_path_error(name: str, device: str) -> float:
    """Max |Δ| between the official network's exact output and the user path (fast SPADE,
    spectral norm folded, channels-last) run on ``device`` with the networks in float64 before
    folding."""
    from spade.checkpoint import load_official
    from spade.inference import Synthesizer

    fx = official_fixture(name)
    folder = OFFICIAL / f"{name}_checkpoint"
    networks = load_official(folder).networks
    networks.generator.double()
    synthesizer = Synthesizer(networks, device=device, fold=True)
    outputs = [synthesize_fixture_pngs(synthesizer, fx, folder, b, torch.float64) for b in range(fx["label"].shape[0])]
    return float((torch.cat(outputs) - exact_official_output(name)).abs().max())
