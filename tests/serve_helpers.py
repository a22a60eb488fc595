"""Helpers of the web demo's tests: label maps and PNGs, requests, a server on a real socket."""

from __future__ import annotations

import io
import socket
import threading
import time
import warnings
from contextlib import contextmanager

import httpx
import numpy as np
from PIL import Image

with warnings.catch_warnings():  # newer starlette asks for httpx2 in its test client; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: F401 - the serve tests take it from here

from conftest import TINY_SIZE as SIZE
from spadegan.data.landscapes import generate_layout

def scene(variant: int = 0) -> np.ndarray:
    """A 64×64 landscape in COCO-Stuff ids, with a don't-care corner."""
    ids = generate_layout(variant, SIZE).label.astype(np.uint8)
    ids[:2, :2] = 255
    return ids


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def synthesize(client, label: bytes, **form) -> httpx.Response:
    files = {"label": ("label.png", label, "image/png")}
    if "style" in form:
        files["style"] = ("style.png", form.pop("style"), "image/png")
    return client.post("/api/synthesize", files=files, data={k: str(v) for k, v in form.items()})


@contextmanager
def live_server(app):
    """The app on a real socket (uvicorn in a thread), for concurrent clients; yields the URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def detail(response: httpx.Response) -> str:
    return response.json()["detail"]
