"""Admission of uploaded images: how much memory decoding may hold, and who waits.

Decoding is where an upload costs memory: a PNG of a few MiB becomes arrays of its full pixel
count (a colour label map several of them, see :data:`DECODE_BYTES_PER_PIXEL`). So every upload
passes the same steps, whatever endpoint it came to, before any of it is decoded:

1. its byte size against ``max_upload_bytes`` (the body was spooled to disk by the form parser,
   so far it cost no more than the parser's in-memory spool);
2. a turn at the :class:`DecodeGate`: at most ``at_once`` uploads are read and decoded at once,
   each in one of the gate's own threads; up to ``max_waiting`` wait for a turn, and beyond
   that the request is refused at once (503) instead of piling up;
3. in that turn, its pixel count read from the image header against ``max_pixels`` (413),
   and only then the decoding.

Since the decoding of one upload holds at most ``max_upload_bytes + max_pixels ×
DECODE_BYTES_PER_PIXEL``, decoding as a whole never holds more than ``at_once`` times that. The
gate's threads are few and fixed for the same reason: the C allocator keeps freed memory per
thread arena, so memory freed after a decode stays available to the next decode in that thread
instead of being held by each of dozens of pool threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from PIL import Image

from ..imageio import png_header_size

T = TypeVar("T")
MiB = 1024 * 1024

# The most memory decoding an image holds per pixel, on its costliest path (a colour label map):
# Pillow's RGB image (4 B: it stores RGB as RGBX), the numpy copy (3), the packed colour keys
# (4), np.unique's sort permutation, sorted copy, flags, cumulative sum and inverse (8 + 4 + 1 +
# 8 + 8) and the int64 id map (8): 48 B. A label map of ids holds less (at most 4 + 8 + a float64
# copy to resize, 8); a style image 4 + 4. 64 covers the largest with room for the temporaries
# numpy makes on the way.
DECODE_BYTES_PER_PIXEL = 64


class Refused(Exception):
    """An upload the server does not take: ``status`` (413, 422, 503) and a one-line reason."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Refusal:
    """A refusal as a value: returned, not raised, from the decoding threads, so that no
    traceback (and no frame holding the decoded arrays) outlives the decoding."""

    status: int
    detail: str


def upload_size(file: BinaryIO) -> int:
    file.seek(0, 2)
    size = file.tell()
    file.seek(0)
    return size


def open_image(file: BinaryIO, what: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """The image in ``file``, its bytes and then its pixel count (from the header) checked before
    it is decoded; :class:`Refused` with 413 over a limit, 422 for what is not an image."""
    size = upload_size(file)
    if size == 0:
        raise Refused(422, f"the {what} file is empty")
    if size > max_bytes:
        raise Refused(413, f"the {what} is larger than this server accepts ({max_bytes / MiB:.1f} MiB)")
    try:
        image = Image.open(file)  # reads the header only
        width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours: still over ours
        file.seek(0)
        size = png_header_size(file.read(24))
        if size is None:
            raise Refused(413, f"the {what} has more pixels than Pillow agrees to decode; this server takes "
                               f"at most {max_pixels:,} pixels") from None
        width, height = size
    except Exception:  # noqa: BLE001 - Pillow raises many types for what it cannot read
        raise Refused(422, f"the {what} is not an image this server can read (send a PNG)") from None
    if width * height > max_pixels:
        raise Refused(413, f"the {what} is {width}×{height} = {width * height:,} pixels; this server "
                           f"takes at most {max_pixels:,} pixels")
    try:
        image.load()
    except Exception as error:  # noqa: BLE001
        raise Refused(422, f"the {what} could not be decoded ({_first_line(error)})") from None
    return image


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def decode_upload(file: BinaryIO, what: str, max_bytes: int, max_pixels: int,
                  parse: Callable[[Image.Image], T]) -> T | Refusal:
    """``parse(image)`` of an uploaded image, or the :class:`Refusal` that stopped it; ``parse``
    raises :class:`Refused` for images it does not take."""
    try:
        return parse(open_image(file, what, max_bytes, max_pixels))
    except Refused as refused:
        return Refusal(refused.status, refused.detail)


class GateFull(Exception):
    """As many uploads as allowed already wait for their turn to be decoded."""


class DecodeGate:
    """At most ``at_once`` decodings at a time, in threads of their own; at most ``max_waiting``
    waiting for a turn (:class:`GateFull` beyond)."""

    def __init__(self, at_once: int, max_waiting: int):
        if at_once < 1 or max_waiting < 0:
            raise ValueError("a decode gate needs at_once >= 1 and max_waiting >= 0")
        self.at_once = at_once
        self.max_waiting = max_waiting
        self.waiting = 0
        self.running = 0
        self._turns: asyncio.Semaphore | None = None
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=at_once,
                                                              thread_name_prefix="spade-decode")

    def _semaphore(self) -> asyncio.Semaphore:
        if self._turns is None:  # made in the event loop that uses it
            self._turns = asyncio.Semaphore(self.at_once)
        return self._turns

    async def run(self, work: Callable[..., T], *args) -> T:
        """``work(*args)`` in a gate thread, once a turn is free."""
        turns = self._semaphore()
        if turns.locked() and self.waiting >= self.max_waiting:
            raise GateFull(f"the server is busy: {self.waiting} uploads are already waiting to be read; "
                           "try again in a moment")
        self.waiting += 1
        try:
            await turns.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        future = asyncio.get_running_loop().run_in_executor(self._threads, work, *args)
        try:
            return await asyncio.shield(future)
        finally:
            # the turn ends when the thread's work ends, even if the request was cancelled first
            if future.done():
                self._end_turn()
            else:
                future.add_done_callback(lambda _: self._end_turn())

    def _end_turn(self) -> None:
        self.running -= 1
        self._semaphore().release()

    def close(self) -> None:
        self._threads.shutdown(wait=True)
