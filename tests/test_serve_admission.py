"""How the web demo admits uploads (:mod:`spadegan.serve.admission`): pixel limits read from the
header (Pillow's bomb limit included), a bounded number of decodings at once, memory that stays
bounded under floods of uploads it refuses, and a label-map decoder that answers every input,
however malformed, with a result or a one-line refusal."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
import httpx

from spadegan.palettes import COCO_STUFF
from spadegan.serve import Limits, create_app
from spadegan.serve.admission import DECODE_BYTES_PER_PIXEL, Refusal, decode_upload
from spadegan.serve.app import DemoState

from conftest import save_tiny_model
from serve_helpers import SIZE, TestClient, detail, live_server, png, scene, synthesize

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def synthesizer(tmp_path_factory):
    from spadegan.inference import Synthesizer

    return Synthesizer.from_checkpoint(save_tiny_model(tmp_path_factory.mktemp("admission") / "tiny"), device="cpu")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 3,
                    payload: bytes = b"", palette: bytes | None = None) -> bytes:
    """A PNG whose header declares width×height but whose data is ``payload``: what a decoder
    allocates for is the header's size, whatever follows."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = png_chunk(b"IHDR", ihdr)
    if palette is not None or colour_type == 3:
        chunks += png_chunk(b"PLTE", palette if palette is not None else bytes(3))
    return b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IDAT", zlib.compress(payload)) + png_chunk(b"IEND", b"")


def decode(client, data: bytes) -> httpx.Response:
    return client.post("/api/labels/decode", files={"label": ("l.png", data, "image/png")})


# -- pixel limits ---------------------------------------------------------------------------------

def test_images_over_the_pixel_limit_are_413_before_decoding(synthesizer):
    limits = Limits(max_upload_bytes=64 * 1024, max_pixels=128 * 128)
    with TestClient(create_app(synthesizer, limits=limits, warm_up=False)) as client:
        # over Pillow's own bomb limit (it refuses to even open these): still 413, not "not an image"
        bomb = png_header_only(20000, 20000)
        assert len(bomb) < 1024
        response = decode(client, bomb)
        assert response.status_code == 413 and "20000×20000 = 400,000,000 pixels" in detail(response)
        assert "at most 16,384 pixels" in detail(response)
        response = synthesize(client, png(scene(0)), seed=0, style=bomb)
        assert response.status_code == 413 and "style image" in detail(response)
        # under Pillow's limit, over the server's: the header's size is named
        response = decode(client, png_header_only(300, 200))
        assert response.status_code == 413 and "300×200 = 60,000 pixels" in detail(response)
        # a header that promises more than its data holds: refused as undecodable, in one line
        response = decode(client, png_header_only(100, 100, colour_type=0, payload=b"\0" * 10))
        assert response.status_code == 422 and "\n" not in detail(response)
        assert decode(client, png(scene(0))).status_code == 200


def test_limits_are_announced(synthesizer):
    limits = Limits(max_pixels=1000, max_decoding=3)
    with TestClient(create_app(synthesizer, limits=limits, warm_up=False)) as client:
        announced = client.get("/api/model").json()["limits"]
    assert announced["max_pixels"] == 1000 and announced["max_decoding"] == 3
    assert limits.max_decode_bytes == limits.max_upload_bytes + 1000 * DECODE_BYTES_PER_PIXEL


# -- decodings at once ----------------------------------------------------------------------------

def test_at_most_max_decoding_uploads_are_decoded_at_once(synthesizer):
    app = create_app(synthesizer, limits=Limits(max_decoding=2, max_waiting=3), warm_up=False)
    state: DemoState = app.state.demo
    release, lock = threading.Event(), threading.Lock()
    inside = {"now": 0, "most": 0}
    original = state.labels_from_image

    def slow(image, resize):
        with lock:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        release.wait(timeout=30)
        with lock:
            inside["now"] -= 1
        return original(image, resize)

    state.labels_from_image = slow
    statuses: list[int] = []
    with live_server(app) as url:
        def call():
            with httpx.Client(base_url=url, timeout=60) as c:
                statuses.append(decode(c, png(scene(1))).status_code)

        threads = [threading.Thread(target=call) for _ in range(5)]  # 2 decode, 3 wait
        for t in threads:
            t.start()
        gate = app.state.gate
        while not (gate.running == 2 and gate.waiting == 3):
            threading.Event().wait(0.01)
        with httpx.Client(base_url=url, timeout=10) as c:
            refused = decode(c, png(scene(1)))  # a sixth finds the waiting room full
            assert refused.status_code == 503 and "busy" in detail(refused)
            release.set()
            for t in threads:
                t.join(timeout=60)
            assert decode(c, png(scene(1))).status_code == 200  # and the server recovers
    assert statuses == [200] * 5 and inside["most"] == 2


# -- memory under a flood of refused uploads ------------------------------------------------------

SERVER = """
import socket, sys, uvicorn
from spadegan.inference import Synthesizer
from spadegan.serve import Limits, create_app
model, upload, pixels, at_once, waiting = sys.argv[1], *map(int, sys.argv[2:6])
limits = Limits(max_upload_bytes=upload, max_pixels=pixels, max_decoding=at_once, max_waiting=waiting)
app = create_app(Synthesizer.from_checkpoint(model, device="cpu"), limits=limits, warm_up=False)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


@contextmanager
def server_process(model: Path, limits: Limits):
    """The demo in a process of its own (so that its memory is its own): (URL, psutil.Process)."""
    psutil = pytest.importorskip("psutil")
    import spadegan

    env = {**os.environ, "PYTHONPATH": str(Path(spadegan.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    args = [str(model), limits.max_upload_bytes, limits.max_pixels, limits.max_decoding, limits.max_waiting]
    process = subprocess.Popen([sys.executable, "-c", SERVER, *map(str, args)], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        url = f"http://127.0.0.1:{int(process.stdout.readline())}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/api/status", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


class PeakRSS:
    """The largest RSS of a process seen while the block runs (sampled every 5 ms)."""

    def __init__(self, process):
        self.process, self.peak = process, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_a_flood_of_refused_uploads_leaves_memory_bounded(tmp_path):
    """Rounds of parallel uploads that are each refused (after decoding, by the header, or by
    their size): the server's memory, during the flood and after it, stays within what the
    admission limits allow over its idle memory.

    The bound, from the limits rather than from a run: decoding holds at most ``max_decoding ×
    max_decode_bytes`` at any moment, and the allocator keeps no more than that afterwards (the
    gate's threads reuse their own arenas, so it does not grow with the rounds). Besides
    decoding, each request in flight holds the form parser's in-memory spool (1 MiB per file,
    then disk) and its socket buffers: ``PARALLEL × 2 MiB``; 32 MiB more covers the threads the
    flood wakes (the pool that writes spooled uploads, each with a stack and an arena of small
    objects). Decoding all uploads at once, as a server without the gate did, holds PARALLEL ×
    the cost of one decoding: several times this bound."""
    limits = Limits(max_upload_bytes=4 * MiB, max_pixels=1024 * 1024, max_decoding=2, max_waiting=64)
    rounds, parallel = 3, 16
    noise = png(np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8))  # decoded, then 422
    over_pixels = png_header_only(20000, 20000)                                             # 413 from the header
    over_bytes = noise + bytes(limits.max_upload_bytes)                                     # 413 from its size
    uploads = [noise] * (parallel - 4) + [over_pixels] * 2 + [over_bytes] * 2
    bound = limits.max_decoding * limits.max_decode_bytes + parallel * 2 * MiB + 32 * MiB
    statuses: list[int] = []
    with server_process(save_tiny_model(tmp_path / "tiny"), limits) as (url, server):
        with httpx.Client(base_url=url, timeout=60) as c:
            assert decode(c, png(scene(0))).status_code == 200  # every code path loaded
        idle = server.memory_info().rss

        def call(data: bytes):
            with httpx.Client(base_url=url, timeout=120) as c:
                statuses.append(decode(c, data).status_code)

        with PeakRSS(server) as peak:
            for _ in range(rounds):
                threads = [threading.Thread(target=call, args=(data,)) for data in uploads]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=120)
        after = server.memory_info().rss
    assert sorted(set(statuses)) == [413, 422] and len(statuses) == rounds * parallel
    for when, rss in (("at its peak", peak.peak), ("afterwards", after)):
        assert rss - idle <= bound, (f"{when} the server held {(rss - idle) / MiB:.0f} MiB over its idle memory, "
                                     f"more than the {bound / MiB:.0f} MiB its limits allow")


# -- the label-map decoder on anything ------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

DECODER_LIMITS = Limits(max_upload_bytes=256 * 1024, max_pixels=96 * 96)


@pytest.fixture(scope="module")
def demo_state(synthesizer) -> DemoState:
    return DemoState(synthesizer, DECODER_LIMITS, [], None, "tiny")


def decode_label_bytes(state: DemoState, data: bytes, resize: bool):
    return decode_upload(io.BytesIO(data), "label map", DECODER_LIMITS.max_upload_bytes,
                         DECODER_LIMITS.max_pixels, lambda image: state.labels_from_image(image, resize))


def assert_answered(result) -> None:
    """A layout of the model's size, or a one-line refusal of a documented kind."""
    if isinstance(result, Refusal):
        assert result.status in (413, 422), result
        assert result.detail and "\n" not in result.detail and "Traceback" not in result.detail
    else:
        layout, (height, width) = result
        assert layout.size == (SIZE, SIZE) and height * width <= DECODER_LIMITS.max_pixels


png_headers = st.builds(
    png_header_only,
    width=st.integers(0, 2 ** 31 - 1) | st.integers(1, 128),
    height=st.integers(0, 2 ** 31 - 1) | st.integers(1, 128),
    bit_depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
    colour_type=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    payload=st.binary(max_size=4096),
    palette=st.none() | st.binary(max_size=800))


@st.composite
def palette_images(draw) -> bytes:
    """Palette-mode PNGs: random indices (ids) under a random palette, often the model's."""
    height, width = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    ids = np.frombuffer(draw(st.binary(min_size=height * width, max_size=height * width)), np.uint8)
    image = Image.fromarray(ids.reshape(height, width), mode="L").convert("P")
    colours = draw(st.sampled_from(["coco", "random"]))
    image.putpalette(COCO_STUFF.colors.ravel().tolist() if colours == "coco"
                     else list(draw(st.binary(min_size=3, max_size=768))))
    if draw(st.booleans()):
        image.info["transparency"] = draw(st.integers(0, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@st.composite
def images_of_any_mode(draw) -> bytes:
    """Well-formed PNGs of every mode Pillow writes, with random content, some in the palette's
    colours; at the model's size or not."""
    mode = draw(st.sampled_from(["L", "LA", "RGB", "RGBA", "I;16", "1"]))
    size = draw(st.sampled_from([(SIZE, SIZE), (SIZE, SIZE // 2), (3, 5)]))
    if mode in ("RGB", "RGBA") and draw(st.booleans()):
        ids = draw(st.lists(st.integers(0, 181), min_size=1, max_size=4))
        grid = np.resize(np.array(ids, np.uint8), size)
        array = COCO_STUFF.colorize(grid)
        if mode == "RGBA":
            array = np.dstack([array, np.full(size, draw(st.sampled_from([255, 0])), np.uint8)])
        image = Image.fromarray(array, mode=mode)
    else:
        image = Image.new(mode, (size[1], size[0]))
        raw = draw(st.binary(min_size=len(image.tobytes()), max_size=len(image.tobytes())))
        image.frombytes(raw)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.binary(max_size=2048) | png_headers | palette_images() | images_of_any_mode(), resize=st.booleans())
def test_the_label_map_decoder_answers_every_input(demo_state, data, resize):
    assert_answered(decode_label_bytes(demo_state, data, resize))


def test_the_decoder_takes_the_maps_it_should(demo_state):
    """The property above is not met by refusing everything: well-formed maps are taken."""
    ids = scene(2)
    layout, _ = decode_label_bytes(demo_state, png(ids), False)
    assert torch.equal(layout.labels[0, 0].long(), torch.from_numpy(ids.astype(np.int64)))
    layout, _ = decode_label_bytes(demo_state, png(COCO_STUFF.colorize(ids)), False)
    assert torch.equal(layout.labels[0, 0].long(), torch.from_numpy(ids.astype(np.int64)))
