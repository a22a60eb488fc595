"""Datasets of (label map, photo[, instance map]) pairs in the official SPADE layouts, with the
official joint preprocessing (:mod:`spade.data.transforms`) and file checks that name the files
(:mod:`spade.data.datasets`)."""

from spade.data.datasets import (
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
from spade.data.transforms import (
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
