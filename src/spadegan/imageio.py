"""Images in and out: the one place files are opened, label maps turned into class ids, pictures
mapped to and from [-1, 1], and PNGs written.

Label and instance maps hold one integer id per pixel (8-bit grayscale or palette-index PNGs,
16/32-bit PNGs); a label map may instead hold a palette's colours (RGB), mapped back to ids exactly
(:func:`ids_from_image`). Pictures are RGB, mapped to [-1, 1] as the networks expect them, and
back to 8-bit levels by rounding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write
from .palettes import Palette

ID_MODES = frozenset({"L", "P", "I", "I;16", "I;16B", "I;16L"})  # a palette ("P") image stores indices = ids
COLOUR_MODES = frozenset({"RGB", "RGBA"})


def open_image(path: str | os.PathLike) -> Image.Image:
    """The decoded image at ``path``; ``FileNotFoundError`` or ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        image = Image.open(path)
        image.load()
    except Exception as error:  # Pillow raises many types for unreadable files
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
    image = open_image(path)
    if image.mode not in ID_MODES:
        raise ValueError(f"{path}: a {what} must hold one integer id per pixel (grayscale, palette-index "
                         f"or 16/32-bit PNG), got an image of mode {image.mode!r}")
    return torch.from_numpy(np.array(image, dtype=np.int64))


def ids_from_image(image: Image.Image, palette: Palette, source: str | None = None,
                   has_dontcare: bool = True) -> np.ndarray:
    """H×W int64 class ids from a label-map image: integer modes hold the ids themselves (a
    palette-mode PNG its indices), RGB (or opaque RGBA) images the palette's colours. For a model
    without a don't-care class (``has_dontcare=False``), black pixels of a colour map, which the
    palette reads as don't-care, are an error."""
    where = f"{source}: " if source else ""
    if image.mode in ID_MODES:
        return np.array(image, dtype=np.int64)
    if image.mode not in COLOUR_MODES:
        raise ValueError(f"{where}a label map must hold class ids (grayscale, palette-index or 16/32-bit "
                         f"PNG) or the {palette.name} palette's colours (RGB PNG); got an image of mode "
                         f"{image.mode!r}")
    rgb = np.asarray(image)
    if image.mode == "RGBA":
        transparent = int((rgb[..., 3] != 255).sum())
        if transparent:
            raise ValueError(f"{where}a colour label map must be opaque; {transparent} pixels are transparent")
        rgb = rgb[..., :3]
    try:
        ids = palette.ids_from_colors(rgb, source=source)
    except ValueError as error:
        dontcare = "; black is don't-care" if palette.dontcare_id is not None else ""
        raise ValueError(f"{error}. Expected only the colours of the {palette.name} palette's "
                         f"{len(palette)} classes (spadegan.palettes{dontcare}): draw label maps without "
                         "anti-aliasing and save them as PNG, or store class ids in a grayscale "
                         "PNG") from None
    black = 0 if palette.dontcare_id is None else int((ids == palette.dontcare_id).sum())
    if black and not has_dontcare:
        raise ValueError(f"{where}{black} black (0, 0, 0) pixels: black is don't-care in the {palette.name} "
                         "palette, and this model has no don't-care class; give those pixels a class colour")
    return ids


def read_label_map(path: str | os.PathLike, palette: Palette, has_dontcare: bool = True) -> torch.Tensor:
    """H×W int64 class ids from a label-map file, class ids or ``palette`` colours (see
    :func:`ids_from_image`). Errors name the file."""
    return torch.from_numpy(ids_from_image(open_image(path), palette, str(path), has_dontcare))


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB picture (PIL image, or H×W×3 uint8 array) → 3×H×W float32 in [-1, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """A 3×H×W float tensor in [-1, 1] from an image file."""
    return image_to_tensor(open_image(path))


def to_levels(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (3×H×W or N×3×H×W) → 8-bit levels, channels last (H×W×3 or N×H×W×3):
    rounded, as the official ``tensor2im`` does not (it truncates); rounding is the unbiased
    choice."""
    levels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return levels.movedim(-3, -1).numpy()


def to_pil(image: torch.Tensor) -> Image.Image:
    """3×H×W in [-1, 1] → an 8-bit RGB PIL image (:func:`to_levels`)."""
    return Image.fromarray(to_levels(image), mode="RGB")


def save_png_atomic(image: Image.Image, path: str | os.PathLike) -> None:
    """Write a PNG via a temporary file and a rename: it appears complete or not at all."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), durable=False)


def mask_from_image(image: Image.Image) -> np.ndarray:
    """An H×W bool mask drawn in an image: its opaque pixels where it has transparency, else its
    non-zero ones (any channel)."""
    if image.mode in ("RGBA", "LA", "PA"):
        return np.asarray(image.getchannel("A")) != 0
    pixels = np.asarray(image)
    return pixels.any(axis=-1) if pixels.ndim == 3 else pixels != 0
