"""The Inception-v3 network of the FID, up to its 2048-d pool3 features.

FID (Heusel et al., *GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium*, NeurIPS 2017) is defined on the pool3 features of one specific network: the
TensorFlow graph ``inception-2015-12-05`` (``classify_image_graph_def.pb``) that the authors'
code (bioinf-jku/TTUR) loads. Papers since report FID with that network, many through its
PyTorch port, pytorch-fid, whose weight file
``pt_inception-2015-12-05-6726825d.pth`` holds the TensorFlow weights in torchvision's layout.

This module writes that network from the architecture (torchvision's Inception-v3 layout and
parameter names), with what the TensorFlow graph does differently from torchvision's model:

- every conv is ``BasicConv2d``: conv without bias, BatchNorm with eps = 0.001, ReLU;
- the pool branches of the 35×35, 17×17 and first 8×8 blocks (``Mixed_5b..5d``,
  ``Mixed_6b..6e``, ``Mixed_7b``) average over the *valid* pixels of each 3×3 window
  (TensorFlow's ``avg_pool`` with SAME padding does not count the padding:
  ``count_include_pad=False``);
- the pool branch of the last block (``Mixed_7c``) is a 3×3 *max* pool, not an average pool;
- no auxiliary classifier; the classifier ``fc`` has 1008 outputs (the graph's ``softmax``).

The input protocol is pytorch-fid's: images in [0, 1], resized to 299×299 with
``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``, then scaled to
[-1, 1]. (torch-fidelity instead emulates TensorFlow 1's resize on uint8 pixels; the two give
slightly different FIDs. We follow pytorch-fid, the more widely used port.)

Nothing is ever downloaded. :func:`find_inception_weights` looks for the weight file in the
places a user can put it (an explicit path, ``$SPADE_FID_WEIGHTS``, the torch hub cache), under
pytorch-fid's name or under torch-fidelity's (``weights-inception-2015-12-05-6726825d.pth``:
the same TensorFlow weights converted into the same key layout, without ``num_batches_tracked``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import load_weights_only

FID_WEIGHTS_ENV = "SPADE_FID_WEIGHTS"
# pytorch-fid's file first (the reference), then torch-fidelity's: same weights, same keys.
FID_WEIGHTS_FILENAMES = (
    "pt_inception-2015-12-05-6726825d.pth",
    "weights-inception-2015-12-05-6726825d.pth",
)
INPUT_SIZE = 299       # the resolution the TensorFlow graph resizes every image to
FEATURE_DIM = 2048     # pool3: the global average of Mixed_7c
NUM_CLASSES = 1008     # the graph's softmax: 1000 ImageNet classes + 8 unused outputs


class InceptionWeightsMissingError(FileNotFoundError):
    """No FID Inception weight file was found; the message lists every place looked at."""


class InceptionWeightsError(ValueError):
    """A weight file was found but does not hold the FID Inception-v3 state dict."""


# --------------------------------------------------------------------------------------------
# Building blocks (torchvision's Inception-v3 layout and names)
# --------------------------------------------------------------------------------------------

class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm (eps 0.001, TensorFlow's value) → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_valid(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME average pool divides by the number of real pixels under the window,
    # torchvision's default (count_include_pad=True) by 9 everywhere: the border differs.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 block (Mixed_5b, 5c, 5d): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg pool→1×1."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_valid(x))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """35×35 → 17×17 reduction (Mixed_6a): 3×3/2 | 1×1→3×3→3×3/2 | max pool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], dim=1)


class InceptionC(nn.Module):
    """17×17 block (Mixed_6b..6e) with factorized 7×7 convs and a valid-pixel avg pool."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(_avg_pool_valid(x))
        return torch.cat([b1, b7, bd, bp], dim=1)


class InceptionD(nn.Module):
    """17×17 → 8×8 reduction (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], dim=1)


class InceptionE(nn.Module):
    """8×8 block (Mixed_7b, Mixed_7c) with split 1×3 / 3×1 branches.

    ``pool`` is the TensorFlow graph's pool branch: ``"avg"`` (valid pixels only) in Mixed_7b,
    ``"max"`` in Mixed_7c. The max pool there is what the 2015 graph does (the Inception-v3
    paper has an average pool); pytorch-fid and torch-fidelity reproduce it, and so do we.
    """

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], dim=1)
        if self.pool == "max":
            # Padding with -inf (PyTorch's max pool) equals TensorFlow's SAME max pool.
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_valid(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], dim=1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 (TensorFlow ``inception-2015-12-05``) in torchvision's layout.

    Its state dict has exactly the keys of ``pt_inception-2015-12-05-6726825d.pth``. The input of
    :meth:`pool3` and :meth:`forward` is already resized and in [-1, 1]; :class:`InceptionFeatures`
    does that from [0, 1] images.
    """

    def __init__(self) -> None:
        super().__init__()
        # Stem: 299 → 149 → 147 → 147 → (max pool) 73 → 73 → 71 → (max pool) 35.
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        # 35×35
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        # 17×17
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        # 8×8
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        # Not used for the FID, but part of the weight file (strict loading checks it too).
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×299×299 images in [-1, 1] → N×2048 pool3 features (the FID's features)."""
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        # pool3: the mean over the 8×8 positions (the graph's 8×8 VALID average pool).
        return torch.flatten(F.adaptive_avg_pool2d(x, output_size=1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×299×299 images in [-1, 1] → N×1008 logits."""
        return self.fc(self.pool3(x))


# --------------------------------------------------------------------------------------------
# Input protocol
# --------------------------------------------------------------------------------------------

def resize_to_inception(images: torch.Tensor) -> torch.Tensor:
    """Resize N×3×H×W images to 299×299 as pytorch-fid does (bilinear, half-pixel centres,
    no antialiasing: ``F.interpolate(..., align_corners=False, antialias=False)``)."""
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                         align_corners=False, antialias=False)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images → the network's input: resized to 299×299, then scaled to [-1, 1].

    The order (resize, then scale) is pytorch-fid's; it matters only at the level of float
    rounding.
    """
    return 2.0 * resize_to_inception(images) - 1.0


# --------------------------------------------------------------------------------------------
# Finding and loading the weights (never downloading them)
# --------------------------------------------------------------------------------------------

def hub_checkpoint_dirs() -> list[Path]:
    """The torch hub cache folders where ``torch.hub`` would have stored a downloaded file:
    ``$TORCH_HOME/hub/checkpoints``, else ``$XDG_CACHE_HOME/torch/hub/checkpoints``, else
    ``~/.cache/torch/hub/checkpoints``; plus ``torch.hub.get_dir()/checkpoints`` when the
    program moved the hub with ``torch.hub.set_dir``."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        base = Path(torch_home).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
        base = Path(cache).expanduser() / "torch"
    dirs = [base / "hub" / "checkpoints"]
    hub_dir = Path(torch.hub.get_dir()).expanduser() / "checkpoints"
    if hub_dir not in dirs:
        dirs.append(hub_dir)
    return dirs


def _files_in(path: Path) -> list[Path]:
    # A folder stands for the weight files inside it, under either name.
    if path.is_dir():
        return [path / name for name in FID_WEIGHTS_FILENAMES]
    return [path]


def _how_to_provide() -> str:
    return (f"Provide pytorch-fid's {FID_WEIGHTS_FILENAMES[0]} (or torch-fidelity's "
            f"{FID_WEIGHTS_FILENAMES[1]}): pass its path explicitly, "
            f"set {FID_WEIGHTS_ENV}=FILE, or copy it into the torch hub cache "
            f"({hub_checkpoint_dirs()[0]}). Nothing is downloaded.")


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The FID Inception weight file, found without downloading anything.

    Looks, in order, at ``path`` (a file, or a folder holding the file), the environment
    variable ``SPADE_FID_WEIGHTS`` (the same), and the torch hub cache folders of
    :func:`hub_checkpoint_dirs`, for ``pt_inception-2015-12-05-6726825d.pth`` and then
    ``weights-inception-2015-12-05-6726825d.pth``. An explicit choice (``path`` or the
    variable) that holds no such file is an error rather than silently replaced by another
    file. Raises :class:`InceptionWeightsMissingError` listing every place looked at.
    """
    explicit: tuple[str, str | os.PathLike] | None = None
    if path is not None and str(path) != "":
        explicit = ("the given path", path)
    elif os.environ.get(FID_WEIGHTS_ENV):
        explicit = (f"${FID_WEIGHTS_ENV}", os.environ[FID_WEIGHTS_ENV])

    looked: list[str] = []
    if explicit is not None:
        what, chosen = explicit
        for candidate in _files_in(Path(chosen).expanduser()):
            if candidate.is_file():
                return candidate
            looked.append(f"{candidate} ({what})")
    else:
        looked.append(f"${FID_WEIGHTS_ENV} (not set)")
        for folder in hub_checkpoint_dirs():
            for name in FID_WEIGHTS_FILENAMES:
                candidate = folder / name
                if candidate.is_file():
                    return candidate
                looked.append(f"{candidate} (torch hub cache)")
    raise InceptionWeightsMissingError(
        "The FID Inception-v3 weights were not found. Looked at:\n  - " + "\n  - ".join(looked)
        + "\n" + _how_to_provide())


def _first(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"{shown}{', ...' if len(keys) > limit else ''} ({len(keys)} in all)"


def check_inception_state_dict(state: object, expected: Mapping[str, torch.Tensor],
                               source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Validate a loaded weight file against the network's own state dict.

    Returns the state dict completed with the network's ``num_batches_tracked`` counters when
    the file has none (torch-fidelity's file, and files saved before PyTorch 0.4.1, lack
    them; they play no part in eval mode). Raises :class:`InceptionWeightsError` naming
    ``source`` and the first missing, unexpected or wrongly shaped keys.
    """
    if not isinstance(state, Mapping):
        raise InceptionWeightsError(f"{source}: expected a state dict (a mapping of names to tensors), "
                                    f"got {type(state).__name__}")
    optional = {k for k in expected if k.endswith(".num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [str(k) for k in state if k not in expected]
    problems: list[str] = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if not problems:
        bad = [f"{k!r} is {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}, "
               f"expected {tuple(expected[k].shape)}"
               for k, v in state.items()
               if not isinstance(v, torch.Tensor) or v.shape != expected[k].shape]
        if bad:
            problems.append("wrong shapes: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    if problems:
        raise InceptionWeightsError(
            f"{source}: not the FID Inception-v3 weights ({FID_WEIGHTS_FILENAMES[0]} layout): "
            + "; ".join(problems))
    completed = dict(state)
    for key in optional:
        completed.setdefault(key, expected[key].clone())
    return completed


def load_fid_inception(path: str | os.PathLike) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load ``path`` into it (strictly, on the CPU, in eval
    mode, parameters frozen)."""
    path = Path(path)
    state = load_weights_only(path, "Inception weights")
    network = FIDInceptionV3()
    state = check_inception_state_dict(state, network.state_dict(), path)
    network.load_state_dict(state, strict=True)
    network.requires_grad_(False)
    return network.eval()


# --------------------------------------------------------------------------------------------
# The feature extractor
# --------------------------------------------------------------------------------------------

class InceptionFeatures(nn.Module):
    """[0, 1] RGB images (N×3×H×W float, or uint8 in [0, 255]) → N×2048 pool3 features.

    Always in eval mode and without autograd. The images go to the network's device and dtype
    (float32 by default; ``.double()`` gives float64 features); any size is resized to 299×299.
    """

    def __init__(self, network: FIDInceptionV3) -> None:
        super().__init__()
        self.network = network
        self.network.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_weights(cls, path: str | os.PathLike | None = None,
                     device: torch.device | str | None = None) -> InceptionFeatures:
        """Find the weights (:func:`find_inception_weights`), load them, move to ``device``."""
        module = cls(load_fid_inception(find_inception_weights(path)))
        return module.to(device) if device is not None else module

    def train(self, mode: bool = True) -> InceptionFeatures:
        # BatchNorm must use the TensorFlow graph's moving averages, whatever the caller asks.
        super().train(False)
        return self

    @property
    def device(self) -> torch.device:
        return self.network.fc.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.fc.weight.dtype

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = _as_unit_range(images, dtype=self.dtype, device=self.device)
        return self.network.pool3(preprocess(images))


def _as_unit_range(images: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N×3×H×W RGB images, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        # What pytorch-fid's ToTensor does to 8-bit images.
        return images.to(device=device, dtype=dtype) / 255.0
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1] or uint8, got {images.dtype}")
    images = images.to(device=device, dtype=dtype)
    low, high = float(images.min()), float(images.max())
    # A generator's [-1, 1] output fed as is would give a wrong FID without any warning.
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"images must be in [0, 1] (found [{low:.3g}, {high:.3g}]); "
                         "map [-1, 1] images with (x + 1) / 2")
    return images
