"""What a data set holds, and the ``spadegan train`` options that fit it (``spadegan dataset inspect``).

Every label map is read once: the class ids it stores and their pixel counts, its size, whether
an instance map comes with it. From those follow ``--label_nc`` (the data set's class count where
the layout has one, else one more than the largest id), ``--contain_dontcare_label`` (when the
don't-care id appears), ``--no_instance``, ``--aspect_ratio`` and the preprocessing. Files the
training would refuse (unreadable, colour masks, sizes that disagree, unpaired names) are listed
with the reason instead of stopping at the first, and where no setting fits, the report says why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spadegan.config import DataConfig
from spadegan.data.datasets import DatasetError, dataset_defaults, find_samples
from spadegan.imageio import COLOUR_MODES, ID_MODES

# The class count of each official layout (official defaults); custom data sets have none.
LAYOUT_LABEL_NC = {mode: dataset_defaults(mode, True)["label_nc"] for mode in ("coco", "ade20k", "cityscapes")}
_SHOWN_PROBLEMS = 10


@dataclass
class DatasetReport:
    """The facts :func:`inspect_dataset` gathered."""

    dataset_mode: str
    pairs: int = 0
    sizes: Counter = field(default_factory=Counter)        # (width, height) of the label maps → count
    file_ids: Counter = field(default_factory=Counter)     # id as the files store it → pixel count
    with_instances: int = 0                                # pairs with an instance map
    colour_maps: list[Path] = field(default_factory=list)  # label maps holding colours, not ids
    problems: list[str] = field(default_factory=list)      # files the training would refuse, and why

    @property
    def pixels(self) -> int:
        return sum(self.file_ids.values())

    @property
    def dontcare_file_id(self) -> int:
        """The id that marks don't-care pixels in this layout's files (ade20k: 0, others: 255)."""
        return 0 if self.dataset_mode == "ade20k" else 255

    def class_ids(self) -> dict[int, int]:
        """Model class id → pixels (ade20k files store class + 1), don't-care left out."""
        shift = 1 if self.dataset_mode == "ade20k" else 0
        return {i - shift: n for i, n in sorted(self.file_ids.items()) if i != self.dontcare_file_id}

    @property
    def dontcare_pixels(self) -> int:
        return self.file_ids.get(self.dontcare_file_id, 0)


def inspect_dataset(config: DataConfig, progress: bool = True) -> DatasetReport:
    """Read every label map of ``config``'s data set (photos by their headers only)."""
    report = DatasetReport(config.dataset_mode)
    try:
        samples = find_samples(replace(config, no_pairing_check=False))
    except DatasetError as error:
        report.problems.append(str(error))
        return report
    report.pairs = len(samples)
    for sample in tqdm(samples, desc="inspect", unit="pair", disable=not progress or len(samples) < 16):
        try:
            label = Image.open(sample.label)
            label.load()
        except Exception as error:  # noqa: BLE001 - Pillow raises many types for unreadable files
            report.problems.append(f"{sample.label}: cannot read it as an image ({error})")
            continue
        sizes = {sample.label: label.size}
        for path in (sample.image, sample.instance):
            if path is None:
                continue
            try:
                with Image.open(path) as other:
                    sizes[path] = other.size
            except Exception as error:  # noqa: BLE001
                report.problems.append(f"{path}: cannot read it as an image ({error})")
        if len(set(sizes.values())) > 1:
            report.problems.append("sizes disagree: " + ", ".join(f"{p} is {w}×{h}" for p, (w, h) in sizes.items()))
        report.sizes[label.size] += 1
        report.with_instances += sample.instance is not None
        if label.mode in COLOUR_MODES:
            report.colour_maps.append(sample.label)
            continue
        if label.mode not in ID_MODES:
            report.problems.append(f"{sample.label}: an image of mode {label.mode}, not class ids")
            continue
        ids, counts = np.unique(np.asarray(label, dtype=np.int64), return_counts=True)
        report.file_ids.update(dict(zip(ids.tolist(), counts.tolist())))
    if report.colour_maps:
        report.problems.append(f"{len(report.colour_maps)} label maps hold colours, not class ids (the first: "
                               f"{report.colour_maps[0]}): turn them into id maps with `spadegan dataset convert`")
    return report


def why_nothing_fits(report: DatasetReport) -> str | None:
    """Why no ``spadegan train`` setting fits the data set as it is, or None."""
    if report.problems:
        return "the problems listed above must be fixed first"
    if report.pairs == 0:
        return "no label maps found"
    ids = report.class_ids()
    if not ids:
        return "every pixel is don't-care: there is no class to learn"
    if min(ids) < 0:
        return f"negative class id {min(ids)}"
    layout_nc = LAYOUT_LABEL_NC.get(report.dataset_mode)
    if layout_nc is not None and max(ids) >= layout_nc:
        return (f"class id {max(ids)} is outside the {report.dataset_mode} layout's {layout_nc} classes: "
                "use --dataset_mode custom for a data set with other classes")
    return None


def suggested_options(report: DatasetReport) -> list[str]:
    """The ``spadegan train`` options that fit the data set (assumes :func:`why_nothing_fits` is None)."""
    ids = report.class_ids()
    label_nc = LAYOUT_LABEL_NC.get(report.dataset_mode, max(ids) + 1)
    options = [f"--dataset_mode {report.dataset_mode}", f"--label_nc {label_nc}"]
    if report.dontcare_pixels:
        options.append("--contain_dontcare_label")
    if report.with_instances < report.pairs:
        options.append("--no_instance")
    (width, height), _ = report.sizes.most_common(1)[0]
    if len(report.sizes) == 1:
        # One size: train at it (the official fixed mode keeps the aspect ratio through --aspect_ratio).
        options += ["--preprocess_mode fixed", f"--load_size {width}", f"--crop_size {width}"]
        if width != height:
            options.append(f"--aspect_ratio {width / height:g}")
    elif report.dataset_mode in LAYOUT_LABEL_NC:
        pass  # photos of many sizes in an official layout: its own preprocessing defaults apply
    else:
        side = min(min(size) for size in report.sizes)
        crop = min(256, 2 ** int(np.log2(side)))
        options += ["--preprocess_mode resize_and_crop", f"--load_size {min(side, round(crop * 286 / 256))}",
                    f"--crop_size {crop}"]
    return options


def format_report(report: DatasetReport, names: dict[int, str] | None = None) -> str:
    """The report as text: counts, sizes, classes by pixel share, problems, and the options."""
    lines = [f"{report.pairs} pairs ({report.dataset_mode} layout)"]
    if report.sizes:
        shown = ", ".join(f"{w}×{h} ({n})" for (w, h), n in report.sizes.most_common(5))
        more = f" and {len(report.sizes) - 5} more" if len(report.sizes) > 5 else ""
        ratios = sorted({round(w / h, 3) for w, h in report.sizes})
        lines.append(f"sizes: {shown}{more}; aspect ratios (width/height) {ratios[0]:g}–{ratios[-1]:g}")
    lines.append(f"instance maps: {report.with_instances} of {report.pairs} pairs")
    total = report.pixels
    if total:
        ids = report.class_ids()
        lines.append(f"{len(ids)} classes present (model ids {min(ids, default=0)}..{max(ids, default=0)}), "
                     "by pixel share:")
        for i, n in sorted(ids.items(), key=lambda item: -item[1]):
            name = f" {names[i]}" if names and i in names else ""
            lines.append(f"  {i:>5}{name}: {100 * n / total:.2f}%")
        share = 100 * report.dontcare_pixels / total
        lines.append(f"don't-care (id {report.dontcare_file_id} in the files): {share:.2f}%")
    if report.problems:
        lines.append(f"{len(report.problems)} problems:")
        lines += [f"  {p}" for p in report.problems[:_SHOWN_PROBLEMS]]
        if len(report.problems) > _SHOWN_PROBLEMS:
            lines.append(f"  and {len(report.problems) - _SHOWN_PROBLEMS} more")
    reason = why_nothing_fits(report)
    if reason:
        lines.append(f"no training setting fits: {reason}")
    else:
        lines.append("train with:\n  spadegan train " + " ".join(suggested_options(report)) + " ...")
    return "\n".join(lines)
