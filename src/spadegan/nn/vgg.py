"""The frozen VGG19 feature extractor behind the perceptual (VGG) loss.

The official SPADE code (``models/networks/architecture.py``, class ``VGG19``) slices
torchvision's ImageNet ``vgg19().features`` after each of the ReLUs relu1_1, relu2_1, relu3_1,
relu4_1 and relu5_1 and returns those five activations. This module rebuilds exactly that
layout (layer indices 0..29) without importing torchvision, so that torchvision's weight file
``vgg19-dcbb9e9d.pth`` loads into it unchanged. Nothing is ever downloaded: the user passes the
file (``--vgg_path FILE`` or the ``SPADE_VGG19_WEIGHTS`` environment variable).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..safe_load import load_weights_only

VGG_WEIGHTS_ENV = "SPADE_VGG19_WEIGHTS"
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"

# torchvision's VGG19 configuration "E"; only the layers up to index 29 are kept.
_VGG19_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                               512, 512, 512, 512, "M", 512]
_NUM_LAYERS = 30  # features[0:30]: everything up to and including relu5_1
# Slice boundaries of the official VGG19: features[0:2], [2:7], [7:12], [12:21], [21:30].
_SLICE_ENDS = (2, 7, 12, 21, 30)


def _build_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            # inplace=True as in torchvision. Safe for autograd here: every ReLU follows a conv
            # whose output nobody else holds, and every slice starts with a conv, so no returned
            # activation (nor the input) is ever overwritten.
            layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = int(v)
    layers = layers[:_NUM_LAYERS]
    assert len(layers) == _NUM_LAYERS and isinstance(layers[-1], nn.ReLU)
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    """``vgg19().features[0:30]`` returning [h_relu1, ..., h_relu5]; parameters frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _build_features()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # No ImageNet mean/std normalization on purpose: the official SPADE VGGLoss feeds the
        # generator's [-1, 1] images straight into VGG19, and we reproduce its loss values.
        outputs: list[torch.Tensor] = []
        h = x
        start = 0
        for end in _SLICE_ENDS:
            for layer in self.features[start:end]:
                h = layer(h)
            outputs.append(h)
            start = end
        return outputs


def load_vgg19(path: str | os.PathLike, device: torch.device | str | None = None) -> VGG19Features:
    """Load torchvision's vgg19 weights (e.g. ``vgg19-dcbb9e9d.pth``) into a frozen, eval-mode
    :class:`VGG19Features`.

    The file must hold a plain state dict. The conv weights/biases of ``features[0..29]`` are
    looked up as ``features.<i>.weight`` or, failing that, ``<i>.weight``; every other entry
    (``classifier.*``, ``features.30+``) is ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights file not found (or not a file): {path}")
    state = load_weights_only(path, "VGG19 weights")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), "
                         f"got {type(state).__name__}")

    model = VGG19Features()
    expected = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key in expected:  # features.<i>.weight / .bias of each conv in 0..29
        short = key[len("features."):]
        value = state.get(key, state.get(short))
        if value is None:
            raise ValueError(f"{path}: missing key {key!r} (or {short!r}) in the VGG19 state dict")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is not a tensor ({type(value).__name__})")
        if value.shape != expected[key].shape:
            raise ValueError(f"{path}: key {key!r} has shape {tuple(value.shape)}, "
                             f"expected {tuple(expected[key].shape)} (is this torchvision's vgg19?)")
        loaded[key] = value
    model.load_state_dict(loaded, strict=True)
    model.eval()
    if device is not None:
        model.to(device)
    return model


class VGGWeightsMissingError(RuntimeError):
    """The VGG loss is on but no VGG19 weights file was given."""


def resolve_vgg19_path(path: str | os.PathLike | None) -> Path:
    """The VGG19 weights file: ``path`` if given, else ``$SPADE_VGG19_WEIGHTS``.

    Raises :class:`VGGWeightsMissingError` with instructions when neither is set; the file
    itself is checked by :func:`load_vgg19`.
    """
    chosen = path if path else os.environ.get(VGG_WEIGHTS_ENV)
    if not chosen:
        raise VGGWeightsMissingError(
            f"The VGG perceptual loss needs torchvision's vgg19 weights ({VGG19_FILENAME}). "
            f"Pass them with --vgg_path FILE or set {VGG_WEIGHTS_ENV}=FILE, "
            "or turn the loss off with --no_vgg_loss. Nothing is downloaded.")
    return Path(chosen)
