"""A compiled CPU kernel for the fast SPADE path, with the pure-PyTorch path as the fallback.

``modulate`` looks up each pixel's ``[s | t]`` row and computes ``(x − μ)·s + t`` in one pass
(``csrc/modulate.cpp``), with the leaky ReLU that follows in a residual block when asked.
It is built with ``torch.utils.cpp_extension`` by the set-up
(``python -m spadegan.nn.kernels``) into ``$SPADE_KERNELS_DIR`` (default: ``build/kernels`` beside
the package's source tree, else the user cache). Inference runs it on float32 channels-last CPU
tensors (``modulate``, ``modulate_pair``); training on float32 channel-major ones, with its
backward pass (``modulate_planes``, ``modulate_planes_backward``). Everywhere else, and whenever
it is not built, the PyTorch ops compute the same thing (tests hold them equal).
``SPADE_KERNELS=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

_SOURCE = Path(__file__).parent / "csrc" / "modulate.cpp"
_module = None
_tried = False


def build_dir() -> Path:
    if "SPADE_KERNELS_DIR" in os.environ:
        return Path(os.environ["SPADE_KERNELS_DIR"])
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file():  # an editable install: keep the build in the repository
        return repo / "build" / "kernels"
    return Path.home() / ".cache" / "spadegan" / "kernels"


# The kernels run on OpenMP threads (at::parallel_for) where the compiler has OpenMP: compiled with
# -fopenmp but linked to no OpenMP library, so that their calls bind to the runtime torch has
# loaded (one thread pool, torch's thread count). Where that does not build (a compiler without
# OpenMP, a linker that wants every symbol resolved), the same source builds without it, on one
# thread. Each flavour has a folder of its own (cpp_extension keeps one build file per folder).
_FLAVOURS = (("spade_kernels", ["-O3", "-fopenmp"]), ("spade_kernels_serial", ["-O3"]))


@contextlib.contextmanager
def _exclusive(directory: Path):
    """Holds an OS lock on ``directory`` while cpp_extension checks or builds the kernel there.

    cpp_extension marks a build in progress with a ``lock`` file and has every other process wait
    for it to disappear, with no time limit and no message. A build that is killed (Ctrl-C during
    the set-up, a lost terminal) leaves that file behind, and every later command would wait
    forever. The OS lock taken here dies with its holder, so whoever holds it knows that no build
    is running in the folder: a ``lock`` file found then is a leftover, and is removed.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): cpp_extension's own file is the only guard
        yield
        return
    with open(directory / "build.flock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"spadegan: waiting for another process to build the compiled SPADE kernel in {directory}",
                  file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (directory / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(build: bool = False, verbose: bool = False):
    """The compiled module, or None. Builds it only when ``build`` (the set-up does); otherwise
    loads a build that is already there."""
    global _module, _tried
    if _module is not None or (_tried and not build):
        return _module
    _tried = True
    if os.environ.get("SPADE_KERNELS", "1") == "0":
        return None
    from torch.utils.cpp_extension import load as load_extension

    errors = []
    for name, flags in _FLAVOURS:
        directory = build_dir() / name
        if not build and not (directory / f"{name}.so").is_file():
            continue
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with _exclusive(directory):
                _module = load_extension(name=name, sources=[str(_SOURCE)], build_directory=str(directory),
                                         extra_cflags=flags, verbose=verbose)
            return _module
        except Exception as error:  # no compiler, no ninja, no OpenMP: the next flavour, else PyTorch's ops
            errors.append(f"{name}: {error}")
    if build:
        print(f"spadegan: the compiled SPADE kernel did not build ({'; '.join(errors)}); the PyTorch path is used",
              file=sys.stderr)
    return None


def usable(x: torch.Tensor, rows: torch.Tensor | None = None) -> bool:
    """Whether the compiled kernel applies: inference, CPU, float32, channels-last, built."""
    if torch.is_grad_enabled() and (x.requires_grad or (rows is not None and rows.requires_grad)):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or (rows is not None and rows.dtype != torch.float32):
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    return load() is not None


def planes_usable(x: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether the channel-major kernels apply (with or without autograd): CPU, float32, x
    contiguous NCHW, built."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or rows.dtype != torch.float32:
        return False
    return x.is_contiguous() and load() is not None


def modulate_planes(x: torch.Tensor, rows_t: torch.Tensor, pixel_row: torch.Tensor,
                    negative_slope: float | None = None) -> torch.Tensor:
    """``x·s + t`` per pixel (channel-major x, contiguous NCHW), from the transposed row table
    ``rows_t`` (2C × R: the scales of channel c in row c, its shifts in row C + c), then a leaky
    ReLU when a slope is given."""
    return load().modulate_planes(x, rows_t, pixel_row, negative_slope)


def modulate_planes_backward(grad: torch.Tensor, x: torch.Tensor, scale_t: torch.Tensor, pixel_row: torch.Tensor,
                             out: torch.Tensor | None, negative_slope: float | None, need_x: bool,
                             need_rows: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of :func:`modulate_planes` with respect to x and to ``rows_t`` (2C × R),
    None where not needed. ``scale_t``: the first C rows of ``rows_t``; ``out``: the output,
    whose sign the leaky ReLU's backward pass reads (None without a slope)."""
    grad_x, grad_rows_t = load().modulate_planes_backward(grad, x, scale_t, pixel_row, out, negative_slope,
                                                          need_x, need_rows)
    return (grad_x if need_x else None), (grad_rows_t if need_rows else None)


def modulate(x: torch.Tensor, rows: torch.Tensor, pixel_row: torch.Tensor, mean: torch.Tensor | None,
             negative_slope: float | None = None, extra_rows: torch.Tensor | None = None) -> torch.Tensor:
    """``(x − mean)·s + t`` per pixel from its row ``[s | t]``, then a leaky ReLU when a slope
    is given. Rows from ``len(rows)`` on are read from ``extra_rows`` (no concatenation)."""
    return load().modulate(x, rows.contiguous(), pixel_row, mean, negative_slope, extra_rows)


def modulate_pair(x: torch.Tensor, upsample: bool, pixel_row: torch.Tensor, first: tuple, second: tuple
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two modulations of one input (2× nearest-upsampled first when ``upsample``), each given
    as ``(rows, extra_rows, mean, negative_slope)``, in one pass over x."""
    return tuple(load().modulate_pair(x, upsample, pixel_row, *first, *second))


if __name__ == "__main__":
    module = load(build=True, verbose="-v" in sys.argv)
    where = f"ready in {build_dir() / module.__name__}" if module else "not available"
    print(f"spadegan: compiled SPADE kernel {where}")
