"""Fréchet Inception Distance, computed as the papers compute it.

FID (Heusel et al., *GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium*, NeurIPS 2017) fits a Gaussian to the 2048-d pool3 Inception features of
each image set and reports the Fréchet (2-Wasserstein) distance between the two Gaussians:

    d² = |μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}).

As in pytorch-fid (the PyTorch port many papers report with): the features are
those of :mod:`spadegan.evaluation.inception`; μ and Σ are in float64, Σ the unbiased (N − 1)
covariance, and the distance is computed in float64.

Where we differ from pytorch-fid, on purpose: the trace of the matrix square root is computed
from symmetric eigendecompositions (see :func:`trace_sqrt_product`), not with
``scipy.linalg.sqrtm``. The two agree where ``sqrtm`` is well-defined; ours is also defined,
and continuous, when the covariances are singular (fewer images than 2048), where pytorch-fid
falls back to adding 1e-6 to the diagonals. scipy is not needed.

Features are accumulated batch by batch (:class:`FIDAccumulator`), so an image set never has to
fit in memory, and a data set's statistics can be saved once as ``.npz`` (μ, Σ, count) and
reused (:func:`save_statistics`, :func:`load_statistics`; pytorch-fid's and TTUR's ``.npz``
files, with ``mu`` and ``sigma``, load too).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_write

ArrayLike = np.ndarray | torch.Tensor
FeatureNetwork = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FeatureStatistics:
    """The Gaussian fitted to an image set's features."""

    mu: np.ndarray      # (D,) float64 mean
    sigma: np.ndarray   # (D, D) float64 covariance, normalized by N − 1
    count: int | None   # number of images N; None when a statistics file does not record it


# --------------------------------------------------------------------------------------------
# Statistics and the distance
# --------------------------------------------------------------------------------------------

def _as_float64(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """N×D features → (μ, Σ) in float64; Σ normalized by N − 1, as ``np.cov`` and pytorch-fid."""
    x = _as_float64(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"expected N×D features with N ≥ 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _eigenvalue_floor(eigenvalues: np.ndarray) -> float:
    # Eigenvalues this close to 0 are rounding noise of a symmetric eigensolver (backward error
    # ~ eps·‖A‖ per eigenvalue); their square roots (~1e-8·√‖A‖ each, over thousands of them)
    # would add noise to the trace, so they count as 0, i.e. as the singular directions
    # they are.
    largest = float(np.max(np.abs(eigenvalues), initial=0.0))
    return largest * eigenvalues.shape[0] * np.finfo(np.float64).eps


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (noise eigenvalues → 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    eigenvalues = np.where(eigenvalues > _eigenvalue_floor(eigenvalues), eigenvalues, 0.0)
    return (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    """Tr (Σ1 Σ2)^{1/2} for positive semi-definite Σ1, Σ2, in float64, without scipy.

    Σ1 Σ2 = Σ1^{1/2} (Σ1^{1/2} Σ2) has the same eigenvalues as the symmetric PSD matrix
    M = Σ1^{1/2} Σ2 Σ1^{1/2} (AB and BA share their eigenvalues), so the trace of the principal
    square root is Σ √λ over M's eigenvalues λ ≥ 0. This also equals the nuclear norm
    ‖Σ1^{1/2} Σ2^{1/2}‖_*, which stays defined and continuous when Σ1 or Σ2 is singular (fewer
    samples than dimensions): it is the ε → 0 limit of the regularized Σ + εI value, whereas a
    general matrix square root of a singular Σ1 Σ2 may not exist. Eigenvalues within rounding
    noise of 0 (negative ones included) count as 0.
    """
    s1, s2 = _as_float64(sigma1), _as_float64(sigma2)
    root1 = _psd_sqrt((s1 + s1.T) / 2)
    m = root1 @ s2 @ root1
    eigenvalues = np.linalg.eigvalsh((m + m.T) / 2)
    eigenvalues = eigenvalues[eigenvalues > _eigenvalue_floor(eigenvalues)]
    return float(np.sqrt(eigenvalues).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """The squared Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), in float64 (Heusel et al.
    2017): |μ1 − μ2|² + Tr Σ1 + Tr Σ2 − 2 Tr (Σ1 Σ2)^{1/2}.

    The value is not clamped: for two equal sets it is 0 up to rounding (~1e-12), possibly
    slightly negative.
    """
    m1, m2 = _as_float64(mu1), _as_float64(mu2)
    s1, s2 = _as_float64(sigma1), _as_float64(sigma2)
    dim = m1.shape[0]
    if m1.shape != (dim,) or m2.shape != (dim,) or s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise ValueError(f"shape mismatch: mu1 {m1.shape}, sigma1 {s1.shape}, "
                         f"mu2 {m2.shape}, sigma2 {s2.shape}")
    for name, array in (("mu1", m1), ("sigma1", s1), ("mu2", m2), ("sigma2", s2)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds NaN or infinite values")
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))


def fid_from_statistics(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """:func:`frechet_distance` of two :class:`FeatureStatistics`."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


# --------------------------------------------------------------------------------------------
# Streaming accumulation
# --------------------------------------------------------------------------------------------

class FIDAccumulator:
    """Running mean and covariance of features, batch by batch, in float64.

    Batches are merged with the pairwise update of Chan, Golub & LeVeque (1979): per batch its
    own mean and centred scatter, then ``M2 += M2_b + δδᵀ·n·n_b/(n + n_b)``. Unlike raw sums of
    x xᵀ, this does not lose digits when the features' mean is large against their spread, and
    the result equals :func:`feature_statistics` on all features at once to ~1e-15 relative.
    The sums live on the device of the first batch (a GPU keeps them there).
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: torch.Tensor | None = None    # (D,) float64
        self._scatter: torch.Tensor | None = None  # (D, D) float64: Σ (x − mean)(x − mean)ᵀ

    @torch.no_grad()
    def update(self, features: ArrayLike) -> None:
        """Add N×D features (a tensor on any device, or an array)."""
        x = torch.as_tensor(features)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"expected N×D features with N ≥ 1, got shape {tuple(x.shape)}")
        device = self._mean.device if self._mean is not None else x.device
        x = x.detach().to(device=device, dtype=torch.float64)
        n_b = x.shape[0]
        mean_b = x.mean(dim=0)
        centred = x - mean_b
        scatter_b = centred.T @ centred
        if self._mean is None or self._scatter is None:
            self.count, self._mean, self._scatter = n_b, mean_b, scatter_b
            return
        if x.shape[1] != self._mean.shape[0]:
            raise ValueError(f"features have {x.shape[1]} dimensions, earlier ones {self._mean.shape[0]}")
        n = self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._scatter = self._scatter + scatter_b + torch.outer(delta, delta) * (self.count * n_b / n)
        self.count = n

    def statistics(self) -> FeatureStatistics:
        """μ and the N − 1 covariance of everything added so far (N ≥ 2)."""
        if self._mean is None or self._scatter is None or self.count < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.count}")
        sigma = (self._scatter / (self.count - 1)).cpu().numpy()
        return FeatureStatistics(mu=self._mean.cpu().numpy(), sigma=(sigma + sigma.T) / 2,
                                 count=self.count)


def image_batches(images: Iterable[torch.Tensor] | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Regroup a stream of images into N×3×H×W batches of at most ``batch_size``.

    ``images`` yields N×3×H×W batches (any N, split as needed) or single 3×H×W images (stacked;
    a change of size starts a new batch); a single 4-D tensor is one batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if isinstance(images, torch.Tensor):
        images = [images] if images.ndim == 4 else list(images)
    pending: list[torch.Tensor] = []
    for item in images:
        if not isinstance(item, torch.Tensor) or item.ndim not in (3, 4):
            raise TypeError("expected image tensors (3×H×W) or batches (N×3×H×W), got "
                            f"{type(item).__name__}{tuple(item.shape) if isinstance(item, torch.Tensor) else ''}")
        if item.ndim == 3:
            if pending and pending[0].shape != item.shape:
                yield torch.stack(pending)
                pending = []
            pending.append(item)
            if len(pending) == batch_size:
                yield torch.stack(pending)
                pending = []
            continue
        if pending:
            yield torch.stack(pending)
            pending = []
        yield from item.split(batch_size)
    if pending:
        yield torch.stack(pending)


def _count_images(images: object) -> int | None:
    # For the progress bar's ETA: a tensor, or a DataLoader over a sized data set.
    if isinstance(images, torch.Tensor):
        return images.shape[0]
    dataset = getattr(images, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None


def compute_statistics(images: Iterable[torch.Tensor] | torch.Tensor, network: FeatureNetwork,
                       batch_size: int = 50, device: torch.device | str | None = None,
                       progress: bool = True, total: int | None = None,
                       desc: str = "FID features") -> FeatureStatistics:
    """Stream ``images`` ([0, 1] RGB, see :func:`image_batches`) through ``network`` (e.g.
    :class:`~spadegan.evaluation.inception.InceptionFeatures`) and return their statistics.

    Only one batch and the float64 sums are held in memory. ``device`` moves the network (if it
    is a module) and each batch there. ``progress`` shows a tqdm bar with rate and, when the
    number of images is known (``total``, a tensor, or a DataLoader), the ETA.
    """
    if device is not None and isinstance(network, nn.Module):
        network.to(device)
    accumulator = FIDAccumulator()
    with tqdm(total=total if total is not None else _count_images(images), desc=desc, unit="img",
              disable=not progress, dynamic_ncols=True) as bar:
        for batch in image_batches(images, batch_size):
            if device is not None:
                batch = batch.to(device, non_blocking=True)
            with torch.no_grad():
                accumulator.update(network(batch))
            bar.update(batch.shape[0])
    return accumulator.statistics()


StatisticsSource = Iterable[torch.Tensor] | torch.Tensor | FeatureStatistics | str | os.PathLike


def compute_fid(real_images: StatisticsSource, fake_images: StatisticsSource, network: FeatureNetwork,
                batch_size: int = 50, device: torch.device | str | None = None,
                progress: bool = True) -> float:
    """FID between two image sets, each given as images (see :func:`image_batches`), as
    precomputed :class:`FeatureStatistics`, or as the path of a saved ``.npz``.

    Papers compute the real statistics once per data set (e.g. the 500 Cityscapes validation
    images) and the fake ones from the images synthesized from the same label maps.
    With fewer images than feature dimensions (2048) Σ is singular; the distance is still
    defined (see :func:`trace_sqrt_product`) but biased upwards, so compare only FIDs computed
    on equally many images.
    """
    real = _statistics_of(real_images, network, batch_size, device, progress, "FID real")
    fake = _statistics_of(fake_images, network, batch_size, device, progress, "FID fake")
    return fid_from_statistics(real, fake)


def _statistics_of(source: StatisticsSource, network: FeatureNetwork, batch_size: int,
                   device: torch.device | str | None, progress: bool, desc: str) -> FeatureStatistics:
    if isinstance(source, FeatureStatistics):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_statistics(source)
    return compute_statistics(source, network, batch_size=batch_size, device=device,
                              progress=progress, desc=desc)


# --------------------------------------------------------------------------------------------
# Reference statistics on disk
# --------------------------------------------------------------------------------------------

def save_statistics(path: str | os.PathLike, statistics: FeatureStatistics) -> None:
    """Write ``mu``, ``sigma`` (float64) and ``count`` to ``path`` as ``.npz``, atomically (a
    temporary file beside it, then a rename), so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mu": np.asarray(statistics.mu, dtype=np.float64),
              "sigma": np.asarray(statistics.sigma, dtype=np.float64)}
    if statistics.count is not None:
        arrays["count"] = np.asarray(statistics.count, dtype=np.int64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, np.savez would append ".npz"
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_statistics(path: str | os.PathLike) -> FeatureStatistics:
    """Read statistics written by :func:`save_statistics` (or pytorch-fid's / TTUR's ``.npz``
    with ``mu`` and ``sigma``; their ``count`` is then None)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ValueError(f"{path}: not FID statistics, missing {missing} (has {data.files})")
        mu = data["mu"].astype(np.float64)
        sigma = data["sigma"].astype(np.float64)
        count = int(data["count"]) if "count" in data.files else None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: mu has shape {mu.shape} and sigma {sigma.shape}; expected (D,) and (D, D)")
    return FeatureStatistics(mu=mu, sigma=sigma, count=count)
