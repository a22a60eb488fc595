"""The model that ships inside the package: what ``spadegan synthesize`` and
``Synthesizer.from_checkpoint()`` use when no checkpoint is named.

It is a SPADE model with an image encoder trained on the procedural landscapes
(``spadegan landscapes``; COCO-Stuff ids, 256×256), stored as one of our checkpoint folders in
float16 (``config.json`` + ``generator.safetensors`` + ``encoder.safetensors``) under
``spadegan/weights/landscapes/``. ``SPADE_BUNDLED_MODEL`` names another folder in its place.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

ENV_VAR = "SPADE_BUNDLED_MODEL"
BUNDLED_NAME = "landscapes"


class BundledModelMissingError(FileNotFoundError):
    """The bundled model's folder is absent or incomplete."""


def bundled_model_path() -> Path:
    """Where the bundled model is (or would be): ``$SPADE_BUNDLED_MODEL`` when set, else the
    package's ``weights/landscapes`` folder."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    return Path(str(resources.files("spadegan").joinpath("weights", BUNDLED_NAME)))


def require_bundled_model() -> Path:
    """The bundled model's folder, or :class:`BundledModelMissingError` saying what to do."""
    from .checkpoint import is_checkpoint_folder

    path = bundled_model_path()
    if not is_checkpoint_folder(path):
        where = f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) else ""
        raise BundledModelMissingError(
            f"the bundled model is not installed at {path}{where} (expected config.json + "
            "generator.safetensors there); pass --checkpoint FOLDER (in Python: "
            "Synthesizer.from_checkpoint(FOLDER)) with one of our checkpoint folders, a run folder "
            "or an official checkpoint folder")
    return path
