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
