"""What every segmenter shares: the interface, input preprocessing, and weight-file loading.

A segmenter turns images into label maps of *dataset class ids*: ``predict(images)`` takes an
N×3×H×W float tensor in [0, 1] (RGB) and returns an N×H×W int64 tensor of ids from
``class_ids``. :class:`NetworkSegmenter` implements it for a network whose output channel ``i``
stands for dataset id ``class_ids[i]``: it converts the images to the input the network was
trained on (:class:`Preprocessing`), asks the subclass for full-resolution scores and maps the
arg-max channel to its id.

Weight files of other code bases are read with ``torch.load(weights_only=True)`` and matched key
by key: :func:`read_state_dict` unwraps the usual containers (``{'state_dict': ...}``) and
:func:`load_state` strips ``module.`` prefixes (``DataParallel``) and names the file and the first
missing / unexpected / mis-shaped keys when the layouts disagree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ...safe_load import load_weights_only


@runtime_checkable
class Segmenter(Protocol):
    """The interface :mod:`spadegan.evaluation.segmentation` and the pseudo-labeller rely on."""

    name: str
    class_ids: tuple[int, ...]     # the dataset ids it can predict

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """N×3×H×W float RGB in [0, 1] → N×H×W int64 dataset class ids."""
        ...


@dataclass(frozen=True)
class Preprocessing:
    """How a network expects its input: ``(x[channel_order] * scale - mean) / std``.

    ``mean`` and ``std`` are given in the network's channel order (BGR means for Caffe models)."""

    channel_order: str = "RGB"                      # 'RGB' or 'BGR'
    scale: float = 1.0                              # 1.0: [0, 1] input; 255.0: [0, 255]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.channel_order == "BGR":
            images = images.flip(1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * self.scale - mean) / std


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate the ``predict`` input: N×3×H×W floats in [0, 1] (a little slack for rounding)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"segmenters take N×3×H×W RGB images, got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"segmenters take float images in [0, 1], got dtype {images.dtype}")
    if images.numel() and (float(images.min()) < -1e-3 or float(images.max()) > 1 + 1e-3):
        raise ValueError(f"segmenters take images in [0, 1], got values in [{float(images.min()):.3g}, "
                         f"{float(images.max()):.3g}] (images in [-1, 1] need (x + 1) / 2)")
    return images.clamp(0, 1)


class NetworkSegmenter:
    """A segmenter around a network whose output channel ``i`` is dataset id ``class_ids[i]``.

    Subclasses implement :meth:`scores`: N×C×H×W scores (logits or probabilities; only their
    arg-max is used) at the images' own resolution, from preprocessed images."""

    def __init__(self, name: str,                          # registry name
                 network: nn.Module,                       # the network, put in eval mode here
                 class_ids: Sequence[int],                 # output channel i → dataset id class_ids[i]
                 preprocessing: Preprocessing,             # what the network expects as input
                 device: torch.device | str = "cpu"):      # where the network runs
        self.name = name
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.class_ids = tuple(int(c) for c in class_ids)
        self.preprocessing = preprocessing
        self._lookup = torch.tensor(self.class_ids, dtype=torch.long, device=self.device)

    def scores(self, inputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """N×3×H×W float RGB in [0, 1] → N×H×W int64 dataset ids (on the segmenter's device)."""
        images = check_images(images).to(self.device, torch.float32)
        height, width = images.shape[-2:]
        scores = self.scores(self.preprocessing(images), (height, width))
        if scores.shape[1] != len(self.class_ids) or scores.shape[-2:] != (height, width):
            raise RuntimeError(f"{self.name}: network gave scores of shape {tuple(scores.shape)}, expected "
                               f"N×{len(self.class_ids)}×{height}×{width}")
        return self._lookup[scores.argmax(dim=1)]

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.network.parameters())
        return (f"{type(self).__name__}(name={self.name!r}, classes={len(self.class_ids)}, "
                f"parameters={params:,}, device={self.device})")


# ---------------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------------

_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a PyTorch weight file, read with ``weights_only=True`` on the CPU.

    Accepts a plain state dict or one inside a training checkpoint (``{'state_dict': ...}``,
    ``{'model': ...}``); other entries (epoch, optimizer...) are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    data = load_weights_only(path, "PyTorch weights")
    if isinstance(data, dict):
        for key in _CONTAINER_KEYS:
            if isinstance(data.get(key), dict) and any(isinstance(v, torch.Tensor) for v in data[key].values()):
                data = data[key]
                break
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a state dict (a dict of tensors), got {type(data).__name__}")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path}: holds no tensors (keys: {', '.join(list(map(str, data))[:5])})")
    return tensors


def strip_prefix(state: dict[str, torch.Tensor], prefixes: Sequence[str] = ("module.",)) -> dict[str, torch.Tensor]:
    """Remove leading ``prefixes`` (repeatedly: ``module.module.x`` → ``x``) from every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _first(keys: list[str], count: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:count])
    return shown + (f" (and {len(keys) - count} more)" if len(keys) > count else "")


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    """Load ``state`` into ``module`` exactly, or raise naming ``source`` and the first bad keys.

    ``num_batches_tracked`` buffers may be missing (files saved by PyTorch < 0.4.1 lack them)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_first(unexpected)}")
        raise ValueError(f"{source}: not {what} weights in the expected layout: {'; '.join(parts)}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(f"{source}: key {key!r} has shape {tuple(tensor.shape)}, {what} expects "
                             f"{tuple(expected[key].shape)}")
    module.load_state_dict(state, strict=False)  # strict about everything above; tolerant of num_batches_tracked


def count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children ``prefix{i}.`` (or ``prefix{i}`` followed by a dot) the keys have."""
    indices = set()
    for key in state:
        if key.startswith(prefix):
            head = key[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                indices.add(int(head))
    return max(indices) + 1 if indices else 0


def require(state: dict[str, torch.Tensor], key: str, source: str, what: str) -> torch.Tensor:
    """``state[key]`` or an error naming the file and the key the layout needs."""
    if key not in state:
        sample = _first(sorted(state), 3)
        raise ValueError(f"{source}: not {what} weights in the expected layout: missing key {key!r} "
                         f"(the file has keys like {sample})")
    return state[key]


def output_class_ids(weights, classes: int, class_ids: Sequence[int] | None,
                     default: Sequence[int], default_name: str) -> tuple[int, ...]:
    """The dataset id of each of a network's ``classes`` outputs: ``class_ids`` when given, else
    ``default`` (described as ``default_name``); ``ValueError`` naming ``weights`` where the
    counts differ."""
    if class_ids is None:
        if classes != len(default):
            raise ValueError(f"{weights}: has {classes} output classes, not the {default_name}; "
                             "pass class_ids to say which dataset id each output is")
        class_ids = default
    if len(class_ids) != classes:
        raise ValueError(f"{weights}: {classes} output classes but {len(class_ids)} class_ids given")
    return tuple(int(c) for c in class_ids)
