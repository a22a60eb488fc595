"""The paper's evaluation protocol (Sec. 4, Table 1), end to end.

Every method turns the held-out label maps of a data set into images; the images are scored by

- **segmentation**: a segmenter (:mod:`spadegan.evaluation.segmenters`) labels each synthesized
  image and its prediction is compared with the input label map: mIoU, pixel accuracy and mean
  class accuracy, as defined in :mod:`spadegan.evaluation.segmentation`;
- **FID** (Heusel et al. 2017) against the real images, with the FID Inception network
  (:mod:`spadegan.evaluation.fid`), when its weight file is present;
- **FD-seg**: the same Fréchet distance computed on the landscape segmenter's pooled bottleneck
  features, which exist wherever the bundled segmenter does. It ranks methods by how real their
  images look *to that network*; its values are not comparable with FID numbers anywhere else;
- **style** (optional, models with an image encoder): how far the images take a reference
  picture's colours, and how much random styles vary them
  (:mod:`spadegan.evaluation.style_benchmark`); the real images' row holds the perfect transfer's.

The real images themselves, scored the same way, give the "upper bound" row. Each result is
appended to a jsonl file (one record per method and data set); :func:`results_table` renders the
records as a Markdown table shaped like the paper's Table 1, and :func:`write_samples_page`
shows sample outputs next to their label maps and the real images.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .fid import FIDAccumulator, frechet_distance
from .segmentation import ConfusionMatrix

REAL = "real images (upper bound)"
Generate = Callable[[dict[str, Any]], torch.Tensor]   # a batch → N×3×H×W images in [-1, 1]


@dataclass
class Method:
    """One row of the table: a name and how it makes images for a batch of label maps."""

    name: str
    generate: Generate
    source: str | None = None          # the checkpoint it came from, for the record


def real_images(batch: dict[str, Any]) -> torch.Tensor:
    return batch["image"]


class BottleneckFeatures:
    """Pooled bottleneck features of a segmenter network, captured while it predicts: the input
    of its image-level context block (a global average of its deepest features)."""

    def __init__(self, segmenter: Any):
        context = getattr(getattr(segmenter, "network", None), "context", None)
        if context is None:
            raise ValueError(f"segmenter {getattr(segmenter, 'name', segmenter)!r} has no context block to "
                             "take features from (FD-seg needs the landscape segmenter)")
        self.captured: torch.Tensor | None = None
        context.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        self.captured = inputs[0].detach().flatten(1)

    def take(self) -> torch.Tensor:
        if self.captured is None:
            raise RuntimeError("the segmenter did not run its context block")
        features, self.captured = self.captured, None
        return features


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return (images.float().clamp(-1, 1) + 1) / 2


def evaluate_method(method: Method, loader: Iterable[dict[str, Any]], segmenter: Any, num_classes: int,
                    inception: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    bottleneck: BottleneckFeatures | None = None, keep: int = 0,
                    progress: bool = True) -> tuple[dict[str, Any], dict[str, FIDAccumulator], list[torch.Tensor]]:
    """Scores of one method over a loader; also its feature accumulators (for Fréchet distances
    against the real images) and its first ``keep`` images."""
    from tqdm import tqdm

    valid = [c for c in segmenter.class_ids if c < num_classes]
    confusion = ConfusionMatrix(num_classes, valid_classes=valid)
    features = {"inception": FIDAccumulator(), "segmenter": FIDAccumulator()}
    kept: list[torch.Tensor] = []
    for batch in tqdm(loader, desc=method.name[:30], unit="batch", disable=not progress, dynamic_ncols=True):
        with torch.no_grad():
            images = _to_unit(method.generate(batch))
            predicted = segmenter.predict(images)
            labels = batch["label"][:, 0] if batch["label"].dim() == 4 else batch["label"]
            confusion.update(predicted, labels.to(predicted.device))
            if bottleneck is not None:
                features["segmenter"].update(bottleneck.take())
            if inception is not None:
                features["inception"].update(inception(images))
        if len(kept) < keep:
            kept += [image.cpu() for image in images[: keep - len(kept)]]
    scores = confusion.compute()
    record = {"method": method.name, "source": method.source, "mIoU": scores.miou,
              "pixel_accuracy": scores.pixel_accuracy,
              "mean_class_accuracy": scores.mean_class_accuracy,
              "per_class_iou": {str(k): v for k, v in scores.per_class_iou.items()}}
    return record, features, kept


def _frechet(a: FIDAccumulator, b: FIDAccumulator) -> float | None:
    if a.count < 2 or b.count < 2:
        return None
    sa, sb = a.statistics(), b.statistics()
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)


def run_protocol(methods: Sequence[Method], dataset: torch.utils.data.Dataset, dataset_name: str,
                 segmenter: Any, num_classes: int, out: str | Path, results: str | Path | None = None,
                 inception: Callable[[torch.Tensor], torch.Tensor] | None = None, batch_size: int = 8,
                 keep: int = 8, progress: bool = True,
                 extra: Mapping[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Score the real images and every method on ``dataset``; append one record per row to
    ``results`` (default ``out/results.jsonl``) and write ``out/index.html`` with samples.
    ``extra``: more columns for a row, by method name (:data:`REAL` for the real images), such
    as the style benchmark's (:mod:`spadegan.evaluation.style_benchmark`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = Path(results) if results is not None else out / "results.jsonl"
    try:
        bottleneck = BottleneckFeatures(segmenter)
    except ValueError:
        bottleneck = None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    rows: list[tuple[Method, dict[str, Any], list[torch.Tensor]]] = []
    real_features: dict[str, FIDAccumulator] = {}
    for method in [Method(REAL, real_images)] + list(methods):
        started = time.perf_counter()
        record, features, kept = evaluate_method(method, loader, segmenter, num_classes, inception, bottleneck,
                                                 keep, progress)
        if method.name == REAL:
            real_features = features
            record.update(FID=None, FD_seg=None)
        else:
            record.update(FID=_frechet(features["inception"], real_features["inception"]) if inception else None,
                          FD_seg=_frechet(features["segmenter"], real_features["segmenter"]) if bottleneck else None)
        record.update(dataset=dataset_name, images=len(dataset), segmenter=getattr(segmenter, "name", None),
                      seconds=round(time.perf_counter() - started, 1), time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        record.update((extra or {}).get(method.name, {}))
        rows.append((method, record, kept))
    with open(results, "a") as handle:
        for _, record, _ in rows:
            handle.write(json.dumps(record) + "\n")
    write_samples_page(out, dataset, rows, keep)
    return [record for _, record, _ in rows]


def load_results(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# (record key, column title, scale, decimals)
METRICS = (("mIoU", "mIoU ↑", 100.0, 1), ("pixel_accuracy", "accu ↑", 100.0, 1), ("FID", "FID ↓", 1.0, 1),
           ("FD_seg", "FD-seg ↓", 1.0, 1), ("style_R", "style R ↑", 1.0, 2), ("style_G", "style G ↑", 1.0, 2),
           ("style_B", "style B ↑", 1.0, 2), ("style_spread_ratio", "style spread ↑", 1.0, 2),
           ("seed_variety", "seed variety", 1.0, 1))


def results_table(records: Sequence[dict[str, Any]]) -> str:
    """A Markdown table shaped like the paper's Table 1: one row per method, one column per data
    set × metric; the latest record of each (method, data set) counts. Metrics nobody measured
    are left out; a blank cell is a metric not measured for that row."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        latest[(record["method"], record["dataset"])] = record
    datasets = list(dict.fromkeys(record["dataset"] for record in records))
    methods = list(dict.fromkeys(record["method"] for record in records))
    methods = [m for m in methods if m != REAL] + ([REAL] if REAL in methods else [])
    columns = [(d, key, title, scale, decimals) for d in datasets for key, title, scale, decimals in METRICS
               if any(latest.get((m, d), {}).get(key) is not None for m in methods)]
    header = "| method | " + " | ".join(f"{d} {title}" for d, _, title, _, _ in columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for method in methods:
        cells = []
        for dataset, key, _, scale, decimals in columns:
            value = latest.get((method, dataset), {}).get(key)
            cells.append("" if value is None else f"{value * scale:.{decimals}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_samples_page(out: Path, dataset: torch.utils.data.Dataset,
                       rows: Sequence[tuple[Method, dict[str, Any], list[torch.Tensor]]], keep: int) -> None:
    """``out/index.html``: for the first ``keep`` samples, the label map, then each method's image."""
    from PIL import Image

    from ..imageio import save_png_atomic
    from ..palettes import COCO_STUFF

    images_dir = out / "images"
    header = "<th>label map</th>" + "".join(f"<th>{html.escape(m.name)}</th>" for m, _, _ in rows)
    body = []
    for index in range(min(keep, len(dataset))):
        label = dataset[index]["label"][0]
        label_name = f"label_{index:03d}.png"
        save_png_atomic(Image.fromarray(COCO_STUFF.colorize(label.numpy())), images_dir / label_name)
        cells = [f"<td><img src='images/{label_name}'></td>"]
        for column, (method, _, kept) in enumerate(rows):
            if index < len(kept):
                name = f"m{column}_{index:03d}.png"
                array = (kept[index].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                save_png_atomic(Image.fromarray(array), images_dir / name)
                cells.append(f"<td><img src='images/{name}'></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = results_table([record for _, record, _ in rows])
    page = ("<!doctype html><meta charset='utf-8'><title>spadegan evaluate</title>"
            "<style>body{font-family:sans-serif}img{width:192px}td,th{padding:3px;font-size:13px}</style>"
            f"<pre>{html.escape(table)}</pre><table><tr>{header}</tr>{''.join(body)}</table>\n")
    tmp = out / ".index.html.tmp"
    tmp.write_text(page)
    tmp.replace(out / "index.html")
