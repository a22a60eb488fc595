"""The official joint preprocessing of label map, instance map and photo, with PIL only.

This reproduces ``data/base_dataset.py`` of NVlabs/SPADE: :func:`sample_params` is the official
``get_params`` (a random crop position and a flip decision drawn once per sample) and
:func:`apply_transform` the official ``get_transform`` (resize, crop, flip) up to, not including,
``ToTensor``. The same parameters are applied to the label map, the instance map and the photo, so
they stay aligned; label and instance maps are resized with ``NEAREST`` so ids are never blended.

Two deliberate differences, both where the official code silently produces wrong data:

* ``scale_shortside``: the official ``__scale_shortside`` and ``get_params`` forget to scale the
  short side (they keep the unscaled ``ss``), distorting the image and sampling crop positions
  outside it. Here the short side becomes ``load_size``, as the mode's name says.
* a crop larger than the (resized) image: PIL's ``crop`` pads with black, i.e. label 0 — a real
  class — so the official code trains on invented pixels. Here it is a ``ValueError``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from spadegan.config import DataConfig

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
                    "scale_shortside", "scale_shortside_and_crop", "fixed", "none")

# Official 'none' mode: each side becomes a multiple of this (``__make_power_2(img, base=32)``).
_SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class TransformParams:
    """The random choices of one sample, shared by its label, instance map and photo."""

    crop_pos: tuple[int, int]  # (x, y) of the crop's top-left corner
    flip: bool                 # horizontal flip (applied only when training without no_flip)


def check_preprocess_mode(mode: str) -> None:
    """Refuse a mode the official code does not know (it would silently skip every step)."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess_mode {mode!r} is not one of: {', '.join(PREPROCESS_MODES)}")


def _scaled_shortside(w: int, h: int, target: int) -> tuple[int, int]:
    """Size with the short side at ``target`` and the long side scaled to keep the aspect ratio.

    Deviation from the official code, which returns the *unscaled* short side (see module doc)."""
    short, long = min(w, h), max(w, h)
    long = int(target * long / short)
    return (target, long) if w == short else (long, target)


def _resized_size(size: tuple[int, int], config: DataConfig) -> tuple[int, int]:
    """The size the crop is drawn from, as the official ``get_params`` computes it."""
    w, h = size
    mode = config.preprocess_mode
    if mode == "resize_and_crop":
        return config.load_size, config.load_size
    if mode == "scale_width_and_crop":
        # Official: integer division here, int(float) in __scale_width; equal for any real size.
        return config.load_size, config.load_size * h // w
    if mode == "scale_shortside_and_crop":
        return _scaled_shortside(w, h, config.load_size)
    return w, h  # the official get_params leaves the other modes at the original size


def sample_params(size: tuple[int, int], config: DataConfig, rng: random.Random) -> TransformParams:
    """Official ``get_params``: crop position uniform over the resized image, flip with p = 1/2.

    ``size`` is (width, height) of the original label map. The draws are made in the official
    order (x, y, flip) from ``rng``, so the result depends on ``rng`` alone."""
    check_preprocess_mode(config.preprocess_mode)
    new_w, new_h = _resized_size(size, config)
    x = rng.randint(0, max(0, new_w - config.crop_size))
    y = rng.randint(0, max(0, new_h - config.crop_size))
    flip = rng.random() > 0.5
    return TransformParams(crop_pos=(x, y), flip=flip)


def _resize(img: Image.Image, size: tuple[int, int], method: int) -> Image.Image:
    if size == img.size:
        return img
    if min(size) < 1:
        raise ValueError(f"preprocessing would resize the {img.size[0]}×{img.size[1]} image to "
                         f"{size[0]}×{size[1]}, which is empty")
    return img.resize(size, method)


def _scale(img: Image.Image, config: DataConfig, method: int) -> Image.Image:
    """The official resize step: 'resize' → square load_size; 'scale_width' → width load_size;
    'scale_shortside' → short side load_size (checked in this order, as ``'x' in mode``)."""
    mode, load = config.preprocess_mode, config.load_size
    ow, oh = img.size
    if "resize" in mode:
        return _resize(img, (load, load), method)
    if "scale_width" in mode:
        # Official __scale_width: no-op when the width already matches.
        return img if ow == load else _resize(img, (load, int(load * oh / ow)), method)
    if "scale_shortside" in mode:
        return img if min(ow, oh) == load else _resize(img, _scaled_shortside(ow, oh, load), method)
    return img


def _crop(img: Image.Image, pos: tuple[int, int], size: int, config: DataConfig) -> Image.Image:
    """Official ``__crop``, but refusing to crop outside the image (PIL would pad with 0)."""
    x, y = pos
    w, h = img.size
    if x < 0 or y < 0 or x + size > w or y + size > h:
        raise ValueError(
            f"a {size}×{size} crop at ({x}, {y}) does not fit the {w}×{h} image (after "
            f"{config.preprocess_mode!r} resizing with load_size {config.load_size}); the official "
            "code would pad it with black / label 0. Use a larger load_size or a smaller crop_size")
    return img.crop((x, y, x + size, y + size))


def _make_multiple(img: Image.Image, base: int, method: int) -> Image.Image:
    """Official ``__make_power_2``: each side rounded (Python ``round``) to a multiple of ``base``."""
    ow, oh = img.size
    return _resize(img, (int(round(ow / base) * base), int(round(oh / base) * base)), method)


def apply_transform(img: Image.Image, params: TransformParams, config: DataConfig,
                    method: int) -> Image.Image:
    """Official ``get_transform`` without ``ToTensor``/``Normalize``: resize, crop, size fix, flip.

    ``method`` is ``Image.BICUBIC`` for photos and ``Image.NEAREST`` for label / instance maps
    (integer modes L, P, I, I;16 keep their ids exactly under NEAREST)."""
    check_preprocess_mode(config.preprocess_mode)
    img = _scale(img, config, method)
    if "crop" in config.preprocess_mode:
        img = _crop(img, params.crop_pos, config.crop_size, config)
    if config.preprocess_mode == "none":
        img = _make_multiple(img, _SIZE_MULTIPLE, method)
    if config.preprocess_mode == "fixed":
        img = _resize(img, (config.crop_size, round(config.crop_size / config.aspect_ratio)), method)
    # Official: flips only when training and not --no_flip (test-time outputs are never flipped).
    if config.is_train and not config.no_flip and params.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img
