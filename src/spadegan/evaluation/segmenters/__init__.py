"""Segmentation networks for mIoU / accuracy of synthesized images, behind one small registry.

A segmenter (:class:`Segmenter`) has a ``name``, the dataset ids it can predict (``class_ids``)
and ``predict(images)``: N×3×H×W float RGB in [0, 1] → N×H×W int64 dataset class ids. Each one
converts the images to what its network expects (colour order, scale, mean/std) itself.

Registered:

===============  ===============================================================  =================
name             network                                                          weights
===============  ===============================================================  =================
``landscapes``   ours: a compact U-Net for the procedural landscapes' 15          shipped (package
                 COCO-Stuff classes (:mod:`.landscape`)                            data), or a folder
``drn-d-105``    DRN-D-105, Cityscapes (:mod:`.drn`), label ids                   fyu/drn file
``deeplabv2``    DeepLabV2 ResNet-101 + ASPP, COCO-Stuff 182 (:mod:`.deeplab`)     deeplab-pytorch file
``upernet-101``  ResNet-101 + UPerNet (PPM + FPN), ADE20K 150 (:mod:`.upernet`)   CSAIL folder
===============  ===============================================================  =================

The last three are the networks the SPADE paper scored with; nothing is downloaded: their files
are passed in (``weights=``). :func:`default_segmenter` names the one for a dataset mode.

>>> segmenter = get_segmenter("landscapes", device="cpu")          # doctest: +SKIP
>>> ids = segmenter.predict(images)                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from .base import NetworkSegmenter, Preprocessing, Segmenter, read_state_dict

SegmenterFactory = Callable[..., Segmenter]
"""``factory(weights, device, **options) -> Segmenter``; ``weights`` is a path or None."""

_REGISTRY: dict[str, SegmenterFactory] = {}

_DEFAULTS = {"landscapes": "landscapes", "cityscapes": "drn-d-105", "coco": "deeplabv2", "ade20k": "upernet-101"}


def register_segmenter(name: str, factory: SegmenterFactory, overwrite: bool = False) -> None:
    """Make ``factory(weights, device, **options)`` available as ``get_segmenter(name, ...)``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a segmenter name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a segmenter named {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def unregister_segmenter(name: str) -> None:
    """Remove a registered segmenter (tests register temporary ones)."""
    _REGISTRY.pop(name, None)


def list_segmenters() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def get_segmenter(name: str, weights: str | os.PathLike | None = None,
                  device: torch.device | str | None = None, **options: Any) -> Segmenter:
    """Build the segmenter registered as ``name`` with ``weights`` (None: its default, if any) on
    ``device`` (None: CUDA when available, else the CPU). ``options`` go to its factory."""
    if name not in _REGISTRY:
        raise KeyError(f"no segmenter named {name!r}; registered: {', '.join(list_segmenters()) or 'none'}")
    segmenter = _REGISTRY[name](weights, _resolve_device(device), **options)
    for attribute in ("name", "class_ids", "predict"):
        if not hasattr(segmenter, attribute):
            raise TypeError(f"segmenter factory {name!r} returned {type(segmenter).__name__}, which has no "
                            f"{attribute!r}")
    return segmenter


def default_segmenter(dataset_mode: str) -> str:
    """The registered segmenter the paper (or we, for landscapes) score a dataset mode with."""
    if dataset_mode not in _DEFAULTS:
        raise KeyError(f"no default segmenter for dataset mode {dataset_mode!r}; known: {', '.join(sorted(_DEFAULTS))}")
    return _DEFAULTS[dataset_mode]


# The class count of the data set whose ids each registered segmenter predicts: what a model
# trained on its label maps takes as --label_nc.
_DATASET_LABEL_NC = {"landscapes": 182, "deeplabv2": 182, "drn-d-105": 35, "upernet-101": 150}


def dataset_label_nc(segmenter: Segmenter) -> int:
    """``--label_nc`` for label maps of ``segmenter``'s ids: its data set's class count where it
    is a registered one, else one more than the largest id it predicts."""
    return _DATASET_LABEL_NC.get(segmenter.name, max(segmenter.class_ids) + 1)


def _landscapes(weights, device, **options):
    from .landscape import load_landscape_segmenter
    return load_landscape_segmenter(weights, device=device, **options)


def _drn(weights, device, **options):
    from .drn import drn_d_105_cityscapes
    return drn_d_105_cityscapes(weights, device=device, **options)


def _deeplab(weights, device, **options):
    from .deeplab import deeplabv2_cocostuff
    return deeplabv2_cocostuff(weights, device=device, **options)


def _upernet(weights, device, **options):
    from .upernet import upernet101_ade20k
    return upernet101_ade20k(weights, device=device, **options)


register_segmenter("landscapes", _landscapes)
register_segmenter("drn-d-105", _drn)
register_segmenter("deeplabv2", _deeplab)
register_segmenter("upernet-101", _upernet)

__all__ = ["NetworkSegmenter", "Preprocessing", "Segmenter", "SegmenterFactory", "default_segmenter",
           "dataset_label_nc", "get_segmenter", "list_segmenters", "read_state_dict", "register_segmenter", "unregister_segmenter"]
