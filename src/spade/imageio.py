"""Reading label maps, instance maps and images from files, and writing images atomically.

Label and instance maps are integer maps (8-bit grayscale or palette PNGs, 16/32-bit PNGs); a
colour (RGB) label map is refused with an error naming the file, since class ids cannot be read
from colours without knowing the palette. Images are RGB, mapped to [-1, 1] as the networks expect.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write

_INTEGER_MODES = {"L", "P", "I", "I;16", "I;16B", "I;16L"}


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        image = Image.open(path)
        image.load()
    except Exception as error:
        raise ValueError(f"{path}: cannot read it as an image ({error})") from error
    return image


def pixel_count_problem(path: str | os.PathLike, limit: int, option: str = "--max_pixels") -> str | None:
    """Why the image at ``path`` is too large to decode (its size read from its header), or None.
    Unreadable files are left to the reader, which names them."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        with open(path, "rb") as file:
            size = png_header_size(file.read(24))
        if size is None:
            return (f"{path}: more pixels than Pillow agrees to decode ({2 * Image.MAX_IMAGE_PIXELS:,}), over "
                    f"the limit of {limit:,} ({option})")
        width, height = size
    except Exception:  # noqa: BLE001 - not an image: the reader says so, with the reason
        return None
    if width * height <= limit:
        return None
    return (f"{path}: {width}×{height} = {width * height:,} pixels, over the limit of {limit:,} ({option}); "
            f"pass {option} {width * height} to read it anyway")


def png_header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first 24 bytes of a PNG (its IHDR chunk), for files Pillow
    refuses to open at all; None for anything else."""
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def allow_pixels(limit: int) -> None:
    """Let Pillow open images up to ``limit`` pixels (its own bomb check refuses twice its
    default, 89 million pixels, before our limit is consulted)."""
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit


def read_id_map(path: str | os.PathLike, what: str = "label map") -> torch.Tensor:
    """An H×W int64 tensor of the ids stored in an integer image (label or instance map)."""
    path = Path(path)
    image = _open(path)
    if image.mode not in _INTEGER_MODES:
        raise ValueError(f"{path}: a {what} must hold one integer id per pixel (grayscale, palette-index "
                         f"or 16/32-bit PNG), got an image of mode {image.mode!r}")
    return torch.from_numpy(np.array(image, dtype=np.int64))


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """A 3×H×W float tensor in [-1, 1] from an image file."""
    image = _open(Path(path)).convert("RGB")
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """3×H×W in [-1, 1] → an 8-bit RGB PIL image (rounded, as the official ``tensor2im`` does not:
    it truncates; rounding is the unbiased choice for display)."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def save_png_atomic(image: Image.Image, path: str | os.PathLike) -> None:
    """Write a PNG via a temporary file and a rename: it appears complete or not at all."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), durable=False)
