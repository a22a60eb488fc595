"""The request queue of the web demo: one thread owns the model, requests wait in a bounded
asyncio queue and run in batches.

Requests are put on an :class:`asyncio.Queue` of bounded size (a full queue is refused at once
with :class:`QueueFull`, which the app answers with 503). One consumer task takes the oldest
request and whatever else is waiting, up to ``max_batch``, groups them by map size and hands each
group to a single worker thread that holds the :class:`~spadegan.inference.Synthesizer`: the model
runs one batch at a time, and the event loop stays free to answer other requests meanwhile.

Each image of a batch is what a request alone would give: its style code z comes from its own
seed (or from its style image sampled with that seed), as ``spadegan synthesize --seed S`` draws
it, so batching changes no result beyond float rounding.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..imageio import to_pil
from ..inference import Layout, Synthesizer


class QueueFull(RuntimeError):
    """The queue holds its maximum of waiting requests."""


@dataclass
class Job:
    """One synthesis request: a validated layout (1×1×H×W ids) and its style."""

    layout: Layout
    seed: int | None                           # the random style's seed (or the style image's sampling)
    style: torch.Tensor | None = None          # 3×H×W in [-1, 1]: a reference image's style
    reroll_mask: torch.Tensor | None = None    # H×W bool: the region to paint anew ...
    reroll_seed: int | None = None             # ... with this seed's code (Synthesizer.reroll)
    future: asyncio.Future | None = field(default=None, repr=False)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class QueueStats:
    """Counters for the status endpoint and the load benchmark."""

    requests: int = 0       # jobs completed (successfully or not)
    batches: int = 0        # generator calls
    rejected: int = 0       # refused because the queue was full
    largest_batch: int = 0
    busy_seconds: float = 0.0


class SynthesisQueue:
    """``await queue.submit(job)`` → the PIL image; start with :meth:`start` inside the running
    event loop, end with :meth:`stop`."""

    def __init__(self, synthesizer: Synthesizer, max_batch: int = 4, max_waiting: int = 32):
        if max_batch < 1 or max_waiting < 1:
            raise ValueError("max_batch and max_waiting must be at least 1")
        self.synthesizer = synthesizer
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.stats = QueueStats()
        self._queue: asyncio.Queue[Job] | None = None
        self._consumer: asyncio.Task | None = None
        # the one thread that touches the model
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spade-model")
        self._lock = threading.Lock()  # guards direct calls (run_now) against the worker

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_waiting)
        self._consumer = asyncio.get_running_loop().create_task(self._consume(), name="spade-queue")

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except asyncio.CancelledError:
                pass
            self._consumer = None
        if self._queue is not None:  # whoever still waits gets an answer
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if job.future is not None and not job.future.done():
                    job.future.set_exception(RuntimeError("the server is shutting down"))
        self._worker.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    # -- requests --------------------------------------------------------------------------------

    async def submit(self, job: Job) -> Image.Image:
        """Queue ``job`` and wait for its image; :class:`QueueFull` at once when the queue is full."""
        if self._queue is None:
            raise RuntimeError("the synthesis queue is not running")
        job.future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise QueueFull(f"the server is busy: {self.max_waiting} requests are already waiting; "
                            "try again in a moment") from None
        return await job.future

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            while len(jobs) < self.max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            jobs = [job for job in jobs if not job.future.done()]  # a client that left is skipped
            # one generator call per map size (a SPADE model takes one size; pix2pixHD several)
            groups: dict[tuple[int, int], list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.layout.size, []).append(job)
            for group in groups.values():
                await self._answer(loop, group)

    async def _answer(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        """Run one batch and answer its requests; when it fails, run its jobs one by one, so that
        one bad request fails alone."""
        try:
            images = await loop.run_in_executor(self._worker, self._run, jobs)
        except Exception as error:  # noqa: BLE001 - the request gets the error
            if len(jobs) > 1:
                for job in jobs:
                    await self._answer(loop, [job])
                return
            if not jobs[0].future.done():
                jobs[0].future.set_exception(error)
            return
        for job, image in zip(jobs, images):
            if not job.future.done():
                job.future.set_result(image)

    # -- the model thread ------------------------------------------------------------------------

    def _run(self, jobs: list[Job]) -> list[Image.Image]:
        start = time.perf_counter()
        with self._lock:
            images = synthesize_batch(self.synthesizer, jobs)
        self.stats.busy_seconds += time.perf_counter() - start
        self.stats.batches += 1
        self.stats.requests += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        return images

    def run_now(self, jobs: list[Job]) -> list[Image.Image]:
        """Synthesize in the calling thread, bypassing the queue (start-up checks, tests)."""
        with self._lock:
            return synthesize_batch(self.synthesizer, jobs)


def style_code(synthesizer: Synthesizer, job: Job) -> torch.Tensor | None:
    """The 1×z_dim style code of one request, drawn as ``Synthesizer.synthesize(seed=[S])`` does:
    from the encoder's distribution for its style image, or from N(0, I), with its seed."""
    z_dim = synthesizer.config.generator.z_dim
    if z_dim is None:
        return None
    seed = 0 if job.seed is None else job.seed
    if job.style is not None:
        return synthesizer.encode_style(job.style, 1, seeds=[seed])
    generator = torch.Generator(device=synthesizer.device).manual_seed(int(seed))
    return torch.randn(1, z_dim, device=synthesizer.device, generator=generator)


@torch.no_grad()
def synthesize_batch(synthesizer: Synthesizer, jobs: list[Job]) -> list[Image.Image]:
    """One generator call for jobs whose maps have one size; one PIL image per job."""
    layout = Layout.cat([job.layout for job in jobs])
    codes = [style_code(synthesizer, job) for job in jobs]
    z = None if codes[0] is None else torch.cat(codes)
    masks = [job.reroll_mask for job in jobs]
    if all(mask is None for mask in masks):
        images = synthesizer.synthesize(layout, z=z)
    else:
        # A job without a region re-rolls an empty one: the same picture as alone.
        size = layout.labels.shape[-2:]
        mask = torch.stack([torch.zeros(size, dtype=torch.bool) if m is None else m.bool() for m in masks])[:, None]
        seeds = [0 if job.reroll_seed is None else job.reroll_seed for job in jobs]
        images = synthesizer.synthesize(layout, z=z, reroll_mask=mask, reroll_seed=seeds)
    return [to_pil(image) for image in images]


def labels_of(job: Job) -> np.ndarray:
    """The H×W ids of a job's label map (what the server received)."""
    return job.layout.labels[0, 0].cpu().numpy()
