"""Files that appear whole or not at all: the one place the project writes a file atomically.

A file is written under a temporary name in its own folder (``.NAME.XXXX.tmp``: hidden, and
ending in ``.tmp`` so that data-set readers never list it), then renamed over its final name, on
the same file system, so a reader, or a run killed at any moment, sees the old file or the new
one. ``durable=True`` also fsyncs the file and its folder, so the new file survives a power cut
(checkpoints, statistics); outputs that can be made again skip it (PNGs, generated data).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], durable: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.
    On any error the temporary file is removed and ``path`` is as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
