"""Keep freed memory in the process, so that a forward pass does not pay for page faults.

A generator forward allocates and frees the same large buffers every time. glibc's malloc
serves buffers above its mmap threshold (128 KiB at first, rising with use to at most 32 MiB)
with fresh mappings and hands them back to the kernel on ``free``, and it returns the heap's
free top beyond its trim threshold. The next forward maps them again, and the kernel zero-fills
them page by page: minor page faults, paid as system time, on every call. With the mmap
threshold above any buffer a forward makes and the trim threshold out of reach, freed buffers
stay in the heap and the next forward reuses them.

The price is that the process keeps its peak: RSS does not go down between calls, and it
settles a little above the default allocator's peak after the first few calls (the few bytes an
aligned allocation splits off can keep a freed buffer from merging back until glibc's small-chunk
cache is full; ``docs/performance.md`` has the figures). A server budgets for its peak anyway (``docs/limits.md``); a user who wants memory handed back sets
``SPADE_KEEP_FREED_MEMORY=0``, or glibc's own ``MALLOC_*`` variables, which this leaves alone.

Training fragments a kept glibc heap: its buffers change size from step to step, and freed ones
no longer fit what is asked next. gperftools' tcmalloc keeps freed memory too, in size classes
that do not fragment that way, so the ``spadegan`` command starts with it where it is installed
(Debian and Ubuntu's ``libtcmalloc-minimal4``): ``start_with_preferred_allocator`` runs the
command again with the library preloaded, since an allocator cannot be swapped once a process
has allocated. ``SPADE_ALLOCATOR=system``, or an ``LD_PRELOAD`` of the user's own, keeps the
process as started. ``docs/performance.md`` has the figures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Buffers up to this size come from the heap. A forward's largest buffer is an activation map
# (batch × channels × H × W floats: 1 × 64 × 512 × 1024 is 128 MiB); anything larger than
# 1 GiB is rare enough that a fresh mapping's cost is small beside the work on it.
MMAP_THRESHOLD = 1 << 30
# mallopt takes a C int: the largest free heap top kept is 2 GiB - 1.
TRIM_THRESHOLD = (1 << 31) - 1

# gperftools' tcmalloc as Debian and Ubuntu install it (libtcmalloc-minimal4:
# libtcmalloc_minimal.so.4); the "minimal" build leaves out the heap profiler, which nothing here needs.
TCMALLOC = "tcmalloc_minimal"

_ALLOCATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (see the module's docstring). Returns
    whether the setting is in effect. Idempotent; does nothing off glibc, when
    ``SPADE_KEEP_FREED_MEMORY=0``, or when the user configured the allocator through glibc's own
    environment variables or tunables."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if tcmalloc_loaded():  # it keeps freed memory itself; glibc's malloc is not the one in use
        return False
    if os.environ.get("SPADE_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if any(name in os.environ for name in _ALLOCATOR_VARIABLES) or "glibc.malloc" in os.environ.get(
            "GLIBC_TUNABLES", ""):
        return False
    if not sys.platform.startswith("linux") or sys.maxsize < 1 << 32:
        return False
    libc = _glibc()
    if libc is None:
        return False
    _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the kernel once (glibc's ``malloc_trim``): after loading
    and preparing a model, whose temporary copies of the weights would otherwise stay resident
    beside the forwards' buffers. A no-op where freed memory is not kept."""
    if _applied:
        _glibc().malloc_trim(0)
    elif tcmalloc_loaded():
        ctypes.CDLL(None).MallocExtension_ReleaseFreeMemory()


def allocator_in_use() -> str:
    """What serves this process's memory, in words (``spadegan --version`` reports it)."""
    if tcmalloc_loaded():
        return "tcmalloc"
    if _applied:
        return "glibc, freed memory kept"
    return "glibc" if _glibc() is not None else "the system's"


def tcmalloc_library() -> str | None:
    """The tcmalloc library the dynamic loader would find, or None (not installed, not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library(TCMALLOC)


def tcmalloc_loaded() -> bool:
    """Whether this process's malloc is tcmalloc (preloaded: it is mapped from the start)."""
    try:
        return "libtcmalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def preferred_allocator_library() -> str | None:
    """The library the ``spadegan`` command starts with: tcmalloc where it is installed, unless
    ``SPADE_ALLOCATOR=system`` or an ``LD_PRELOAD`` of the user's own says otherwise; None for the
    process as started."""
    choice = os.environ.get("SPADE_ALLOCATOR", "tcmalloc")
    if choice not in ("tcmalloc", "system"):
        raise SystemExit(f"SPADE_ALLOCATOR={choice}: expected tcmalloc (the default) or system")
    if choice == "system" or os.environ.get("LD_PRELOAD"):
        return None
    return tcmalloc_library()


def start_with_preferred_allocator() -> None:
    """Run this process again, from the start, with ``preferred_allocator_library()`` preloaded.
    For a command's entry point, before anything has run: ``os.execve`` replaces the process
    (same PID, same arguments and open files) and does not return; where there is nothing to
    preload, or it is loaded already, this returns and the process goes on as started."""
    library = preferred_allocator_library()
    if library is None or tcmalloc_loaded():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "LD_PRELOAD": library})


def _glibc():
    """The C library when it is glibc (musl has a ``mallopt`` that does nothing), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc if version() else None
