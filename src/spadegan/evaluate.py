"""``spadegan evaluate`` as a function: checkpoints and a folder of label maps and photos in, the
paper's protocol (FID, and mIoU / accuracy of a segmenter on the synthesized pictures, optionally
the style benchmark's columns) out, appended to a results file, with the samples and a page.

Every checkpoint, the segmenter and the data set are loaded and checked before any picture is
made; bad input is a ``ValueError`` or ``FileNotFoundError`` with a one-line message.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class EvaluationRequest:
    """What to score, on what, with what, and where the results go."""

    checkpoints: list[str]                # checkpoint folders or files, one row each
    out: str                              # the samples and index.html
    names: list[str] = field(default_factory=list)  # the rows' names (default: the folders' names)
    dataroot: str | None = None           # a folder holding {val,test,train}_label and _img
    label_dir: str | None = None          # or the two folders themselves
    image_dir: str | None = None
    dataset_name: str = "landscapes"      # the data set's column in the table
    max_images: int = sys.maxsize         # score the first N only
    segmenter: str = "landscapes"         # a registered segmenter name
    segmenter_weights: str | None = None  # its weights (the bundled ones where there are)
    results: str | None = None            # the results file (default: out/results.jsonl)
    fid_weights: str | None = None        # None: FID with the weights found, or left out with a note
    no_fid: bool = False
    style: str = "random"                 # models with an encoder: "random" (seeded) or each real "photo"'s
    seed: int = 0                         # picture i gets style seed seed + i
    batch_size: int = 8
    keep: int = 8                         # samples shown in index.html
    style_metrics: bool = False           # add the style benchmark's columns
    style_maps: int | None = None         # the style benchmark's sizes and seeds (None: its defaults)
    style_references: int | None = None
    style_map_seed: int | None = None     # None: the seed of a landscapes dataroot, else the benchmark's
    style_reference_seed: int | None = None
    style_variety_maps: int | None = None
    style_samples: int | None = None
    progress: bool = True
    device: torch.device | None = None


@dataclass
class EvaluationReport:
    records: list[dict]                   # the rows appended
    results: Path                         # the results file they were appended to
    style_lines: list[str]                # the style benchmark's own lines (empty without it)


def evaluation_folders(request: EvaluationRequest) -> tuple[Path, Path]:
    """--label_dir/--image_dir, or a --dataroot holding {val,test,train}_label and _img folders."""
    if request.label_dir and request.image_dir:
        return Path(request.label_dir), Path(request.image_dir)
    if not request.dataroot:
        raise ValueError("give --dataroot DIR, or --label_dir and --image_dir")
    root = Path(request.dataroot)
    for phase in ("val", "test", "train"):
        if (root / f"{phase}_label").is_dir() and (root / f"{phase}_img").is_dir():
            return root / f"{phase}_label", root / f"{phase}_img"
    raise ValueError(f"{root} holds no val_label/val_img (or test_, train_) folders")


def evaluate_checkpoints(request: EvaluationRequest) -> EvaluationReport:
    """Score every checkpoint of the request by the protocol; a row per checkpoint appended to the
    results file. ``ValueError`` / ``FileNotFoundError`` for bad input, before any picture is made."""
    from .config import DataConfig
    from .data import build_dataset
    from .evaluation.protocol import Method, run_protocol
    from .evaluation.segmenters import get_segmenter
    from .inference import Synthesizer, protocol_generator, style_model

    if len(request.names) > len(request.checkpoints):
        raise ValueError(f"{len(request.names)} names for {len(request.checkpoints)} checkpoints")
    label_dir, image_dir = evaluation_folders(request)
    try:
        segmenter = get_segmenter(request.segmenter, weights=request.segmenter_weights, device=request.device)
    except KeyError as error:  # an unknown name: its message without KeyError's quotes
        raise ValueError(error.args[0]) from None

    methods, synthesizers, label_nc = [], [], None
    for index, path in enumerate(request.checkpoints):
        synthesizer = Synthesizer.from_checkpoint(path, device=request.device)
        semantics = synthesizer.config.semantics
        if label_nc not in (None, semantics.label_nc):
            raise ValueError(f"{path} takes {semantics.label_nc} classes, the others {label_nc}")
        label_nc = semantics.label_nc
        name = request.names[index] if index < len(request.names) else Path(path).name
        methods.append(Method(name, protocol_generator(synthesizer, request.style, request.seed), str(path)))
        synthesizers.append(synthesizer)
    label_nc = label_nc or 182
    data = DataConfig(dataset_mode="custom", label_dir=str(label_dir), image_dir=str(image_dir), phase="test",
                      preprocess_mode="none", is_train=False, no_flip=True, label_nc=label_nc,
                      contain_dontcare_label=True, use_instance=False, max_dataset_size=request.max_images)
    dataset = build_dataset(data)
    inception = None if request.no_fid else _inception(request)

    style_columns, style_lines = {}, []
    if request.style_metrics:
        from .evaluation.style_benchmark import StyleBenchmark, map_seed_of, style_benchmark_columns

        height, width = synthesizers[0].output_size if synthesizers else tuple(dataset[0]["label"].shape[-2:])
        try:
            map_seed = request.style_map_seed if request.style_map_seed is not None else map_seed_of(request.dataroot)
            sizes = dict(maps=request.style_maps, references=request.style_references,
                         reference_seed=request.style_reference_seed, variety_maps=request.style_variety_maps,
                         samples=request.style_samples)
            benchmark = StyleBenchmark(size=(width, height), map_seed=map_seed, seed=request.seed,
                                       **{key: value for key, value in sizes.items() if value is not None})
        except ValueError as error:
            raise ValueError(f"--style_metrics: {error}") from None
        models = [(method.name, style_model(synthesizer)) for method, synthesizer in zip(methods, synthesizers)]
        style_columns, style_lines = style_benchmark_columns(benchmark, models, request.batch_size,
                                                             progress=request.progress)
    records = run_protocol(methods, dataset, request.dataset_name, segmenter, label_nc, request.out, request.results,
                           inception=inception, batch_size=request.batch_size, keep=request.keep,
                           progress=request.progress, extra=style_columns)
    results = Path(request.results) if request.results else Path(request.out) / "results.jsonl"
    return EvaluationReport(records, results, style_lines)


def _inception(request: EvaluationRequest):
    """The Inception network for FID: from ``--fid_weights``, or the weights found; None (FID left
    out, with a note) when none are found and none were asked for."""
    from .evaluation.inception import InceptionFeatures, InceptionWeightsMissingError

    try:
        return InceptionFeatures.from_weights(request.fid_weights, device=request.device)
    except InceptionWeightsMissingError as error:
        if request.fid_weights:
            raise ValueError(str(error)) from None
        print(f"FID left out: {error}", file=sys.stderr)
        return None
