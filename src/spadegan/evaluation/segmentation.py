"""Segmentation scores of (synthesized) images: a streaming confusion matrix, mIoU and accuracies.

The SPADE paper (Sec. 4, "Performance metrics") runs a semantic segmentation network on the
synthesized images and compares its predicted label maps with the input label maps. This module
holds the arithmetic; the networks are in :mod:`spadegan.evaluation.segmenters`.

Counting
--------
Over K classes (dataset ids ``0 .. K-1``), every *counted* pixel adds one to ``M[target, predicted]``.
A pixel is not counted when its target id is

- ``ignore_index`` (255, "unlabeled" in the official data sets), or
- outside ``0 .. K-1`` (e.g. the don't-care id ``label_nc`` that :mod:`spadegan.data.datasets` gives
  unlabeled pixels), or
- not in ``valid_classes`` when that is given: ids the segmenter cannot predict (a landscape
  segmenter knows 15 of the 182 COCO-Stuff classes; scoring it on the other 167 would only
  measure what it was never asked to do).

A predicted id outside ``0 .. K-1`` (or outside ``valid_classes``) counts in an extra column:
the pixel is wrong for its target class but is no false positive of any class.

With ``target_c = Σ_p M[c, p]`` (counted pixels whose target is c), ``pred_c = Σ_t M[t, c]``
(counted pixels predicted as c) and ``TP_c = M[c, c]``:

- **pixel accuracy** (overall pixel accuracy) = ``Σ_c TP_c / Σ_c target_c``: the fraction of
  counted pixels predicted right. This is the "accuracy" of the SPADE paper's tables for
  COCO-Stuff and ADE20K (the segmentation code bases it used report it so).
- **mean class accuracy** = mean over classes with ``target_c > 0`` of ``TP_c / target_c``.
  Both accuracies circulate under the name "accuracy"; on imbalanced data they differ by many
  points (users of the official code found ~12 points between them), so both are reported,
  each under its own name.
- **IoU_c** = ``TP_c / (target_c + pred_c - TP_c)`` = TP / (TP + FP + FN), defined for classes
  with ``target_c + pred_c > 0``.
- **mIoU** = mean of IoU_c over the classes that appear in the target *or* in the prediction;
  classes absent from both are excluded (they would be 0/0). This is the ``nanmean`` of the
  per-class IoU used by DRN's ``segment.py`` and the other segmentation code bases of the paper.
  A class predicted but absent from the target has IoU 0 and lowers the mean.

Streaming: :meth:`ConfusionMatrix.update` adds a batch with one int64 ``bincount`` on the
tensors' device (CPU or GPU); :meth:`ConfusionMatrix.compute` reads the matrix once. Counts add
up, so any split of the pixels into batches gives the same matrix as one call with all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

IGNORE_INDEX = 255  # "unlabeled" in the official label files (COCO-Stuff 255, ADE20K 0 → 255)


@dataclass(frozen=True)
class SegmentationScores:
    """What :meth:`ConfusionMatrix.compute` returns (fractions in [0, 1]; see the module doc).

    ``per_class_iou`` and ``per_class_accuracy`` map a class id to its score, for the classes
    the means are taken over (IoU: in target or prediction; accuracy: in target)."""

    pixel_accuracy: float
    mean_class_accuracy: float
    miou: float
    per_class_iou: dict[int, float]
    per_class_accuracy: dict[int, float]
    pixels: int                                   # counted pixels
    target_pixels: dict[int, int] = field(default_factory=dict)   # target_c of the classes present

    def to_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready scores; with ``names`` (indexed by class id) per-class keys are names."""
        def key(c: int) -> str:
            return names[c] if names is not None and c < len(names) else str(c)
        return {"pixel_accuracy": self.pixel_accuracy, "mean_class_accuracy": self.mean_class_accuracy,
                "miou": self.miou, "pixels": self.pixels,
                "per_class_iou": {key(c): v for c, v in self.per_class_iou.items()},
                "per_class_accuracy": {key(c): v for c, v in self.per_class_accuracy.items()},
                "target_pixels": {key(c): v for c, v in self.target_pixels.items()}}


class ConfusionMatrix:
    """A K × (K + 1) int64 confusion matrix, rows = target class, columns = predicted class
    (the last column: predictions outside the classes), accumulated over batches.

    >>> cm = ConfusionMatrix(num_classes=3)
    >>> cm.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]]))
    >>> round(cm.compute().pixel_accuracy, 4)
    0.6667
    """

    def __init__(self, num_classes: int,
                 ignore_index: int = IGNORE_INDEX,              # target id never counted
                 valid_classes: Iterable[int] | None = None,    # if given: the only target ids counted
                 device: torch.device | str | None = None):     # where the matrix lives (default: first batch's)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.valid_classes = None if valid_classes is None else sorted({int(c) for c in valid_classes})
        if self.valid_classes is not None:
            bad = [c for c in self.valid_classes if not 0 <= c < self.num_classes]
            if bad:
                raise ValueError(f"valid_classes {bad[:5]} are outside 0..{self.num_classes - 1}")
        self._device = None if device is None else torch.device(device)
        self._matrix: torch.Tensor | None = None
        self._valid_lut: torch.Tensor | None = None

    # -- accumulation ------------------------------------------------------------------------

    def _lut(self, device: torch.device) -> torch.Tensor:
        """valid[id] for ids 0..K-1, plus a False entry K for everything out of range."""
        if self._valid_lut is None or self._valid_lut.device != device:
            lut = torch.zeros(self.num_classes + 1, dtype=torch.bool, device=device)
            if self.valid_classes is None:
                lut[: self.num_classes] = True
            else:
                lut[torch.tensor(self.valid_classes, dtype=torch.long, device=device)] = True
            self._valid_lut = lut
        return self._valid_lut

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch: integer tensors of the same shape (any shape, e.g. N×H×W)."""
        if predicted.shape != target.shape:
            raise ValueError(f"predicted and target label maps must have the same shape, got "
                             f"{tuple(predicted.shape)} and {tuple(target.shape)}")
        if predicted.is_floating_point() or target.is_floating_point():
            raise TypeError("label maps must be integer tensors of class ids (did you pass logits?)")
        device = self._device or target.device
        k = self.num_classes
        target = target.to(device=device, dtype=torch.long).reshape(-1)
        predicted = predicted.to(device=device, dtype=torch.long).reshape(-1)
        lut = self._lut(device)
        # Ids out of range go to entry K of the table (invalid) before indexing it.
        target_in = torch.where((target >= 0) & (target < k), target, torch.full_like(target, k))
        counted = lut[target_in] & (target != self.ignore_index)
        pred_in = torch.where((predicted >= 0) & (predicted < k), predicted, torch.full_like(predicted, k))
        pred_col = torch.where(lut[pred_in], pred_in, torch.full_like(pred_in, k))  # extra column K
        flat = target_in[counted] * (k + 1) + pred_col[counted]
        counts = torch.bincount(flat, minlength=k * (k + 1)).reshape(k, k + 1)
        if self._matrix is None:
            self._matrix = torch.zeros(k, k + 1, dtype=torch.long, device=device)
        self._matrix += counts

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another accumulator's counts (e.g. from another process or data shard)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes} classes")
        if other._matrix is not None:
            if self._matrix is None:
                self._matrix = other._matrix.clone()
            else:
                self._matrix += other._matrix.to(self._matrix.device)

    def reset(self) -> None:
        self._matrix = None

    @property
    def matrix(self) -> torch.Tensor:
        """The K × (K + 1) counts on the CPU (zeros before any update)."""
        if self._matrix is None:
            return torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.long)
        return self._matrix.cpu()

    # -- scores ------------------------------------------------------------------------------

    def compute(self) -> SegmentationScores:
        """The scores of everything counted so far (definitions in the module doc)."""
        m = self.matrix.to(torch.float64)
        k = self.num_classes
        tp = m[:, :k].diagonal()              # TP_c
        target = m.sum(dim=1)                 # target_c, including predictions out of the classes
        predicted = m[:, :k].sum(dim=0)       # pred_c
        union = target + predicted - tp
        total = float(target.sum())
        in_target = [c for c in range(k) if target[c] > 0]
        in_union = [c for c in range(k) if union[c] > 0]
        per_class_iou = {c: float(tp[c] / union[c]) for c in in_union}
        per_class_acc = {c: float(tp[c] / target[c]) for c in in_target}
        return SegmentationScores(
            pixel_accuracy=float(tp.sum()) / total if total > 0 else float("nan"),
            mean_class_accuracy=(sum(per_class_acc.values()) / len(per_class_acc)
                                 if per_class_acc else float("nan")),
            miou=sum(per_class_iou.values()) / len(per_class_iou) if per_class_iou else float("nan"),
            per_class_iou=per_class_iou,
            per_class_accuracy=per_class_acc,
            pixels=int(total),
            target_pixels={c: int(target[c]) for c in in_target},
        )


def segmentation_scores(predicted: torch.Tensor, target: torch.Tensor, num_classes: int,
                        ignore_index: int = IGNORE_INDEX,
                        valid_classes: Iterable[int] | None = None) -> SegmentationScores:
    """One-shot scores of a predicted and a target label map (or batches of them)."""
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, valid_classes=valid_classes)
    matrix.update(predicted, target)
    return matrix.compute()


class _Predicts(Protocol):
    class_ids: tuple[int, ...]

    def predict(self, images: torch.Tensor) -> torch.Tensor: ...


def evaluate_segmenter(segmenter: _Predicts, batches: Iterable[dict], num_classes: int,
                       generate: Callable[[dict], torch.Tensor] | None = None,
                       ignore_index: int = IGNORE_INDEX, restrict_to_segmenter: bool = True,
                       progress: bool = False) -> SegmentationScores:
    """Segment images and score the predictions against the batches' label maps.

    ``batches`` yield dicts with ``'label'`` (N×1×H×W or N×H×W int ids) and, unless ``generate``
    is given, ``'image'`` (N×3×H×W in [-1, 1], as :mod:`spadegan.data` gives them). ``generate(batch)``
    returns images in [-1, 1] for the batch (e.g. a synthesizer run on its label maps): the
    paper's protocol. With ``restrict_to_segmenter`` only target ids the segmenter can predict
    are counted (see the module doc)."""
    from tqdm import tqdm

    valid = segmenter.class_ids if restrict_to_segmenter else None
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index,
                             valid_classes=[c for c in valid if c < num_classes] if valid is not None else None)
    for batch in tqdm(batches, desc="segment", unit="batch", disable=not progress):
        images = generate(batch) if generate is not None else batch["image"]
        labels = batch["label"]
        if labels.dim() == 4:
            labels = labels[:, 0]
        with torch.no_grad():
            predicted = segmenter.predict((images.float().clamp(-1, 1) + 1) / 2)
        matrix.update(predicted, labels.to(predicted.device))
    return matrix.compute()
