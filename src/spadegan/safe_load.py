"""Reading weight files without running code from them, and the JSON files that describe them.

Every ``.pth``/``.pt`` file spadegan reads goes through :func:`load_weights_only`:
``torch.load(weights_only=True)``, which rebuilds tensors and plain containers only and refuses
any other Python object a pickle names. Its refusals come as one line naming the file; PyTorch's
own message, which suggests loading again with ``weights_only=False`` (running whatever code the
file names), is not passed on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

_UNPICKLER_REASON = "WeightsUnpickler error:"


def refusal_reason(error: BaseException) -> str:
    """The reason of a failed weights-only load, in one line and without PyTorch's advice."""
    text = str(error)
    if _UNPICKLER_REASON in text:
        reason = text.split(_UNPICKLER_REASON, 1)[1].strip()
        reason = reason.split(". ", 1)[0].splitlines()[0].rstrip(".")
        return (f"it holds Python objects other than tensors ({reason}); spadegan reads weights only and "
                "never runs code from a weights file")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def load_weights_only(path: str | os.PathLike, what: str = "PyTorch weights") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``ValueError`` naming the file and the
    reason in one line when the file is not what it should be."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling fails in many types
        raise ValueError(f"{path}: cannot read it as {what} ({refusal_reason(error)})") from None


def read_versioned_json(path: str | os.PathLike, expected_format: str, newest_version: int) -> dict:
    """The JSON object in ``path``, which names its ``format`` and ``version``: ``ValueError``
    naming the file where it is not JSON, is another format, or is newer than this code reads."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict) or content.get("format") != expected_format:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"{path}: format {found!r}, expected {expected_format!r}")
    if int(content.get("version", 0)) > newest_version:
        raise ValueError(f"{path}: version {content['version']} is newer than this spadegan reads "
                         f"({newest_version}); upgrade spadegan")
    return content
