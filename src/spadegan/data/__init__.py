"""Datasets of (label map, photo[, instance map]) pairs in the official SPADE layouts, with the
official joint preprocessing (:mod:`spadegan.data.transforms`) and file checks that name the files
(:mod:`spadegan.data.datasets`)."""

from spadegan.data.datasets import (
    DATASET_MODES,
    DatasetError,
    PairedDataset,
    Sample,
    build_dataset,
    check_samples,
    dataset_defaults,
    find_samples,
    to_class_ids,
)
from spadegan.data.transforms import (
    PREPROCESS_MODES,
    TransformParams,
    apply_transform,
    check_preprocess_mode,
    sample_params,
)

__all__ = [
    "DATASET_MODES", "DatasetError", "PairedDataset", "Sample", "build_dataset", "check_samples",
    "dataset_defaults", "find_samples", "to_class_ids",
    "PREPROCESS_MODES", "TransformParams", "apply_transform", "check_preprocess_mode", "sample_params",
]
