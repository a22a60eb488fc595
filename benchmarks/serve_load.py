"""Load test of the web demo's server: many concurrent clients for a bounded time.

    python benchmarks/serve_load.py --checkpoint FOLDER --clients 16 --seconds 20
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --pid PID --clients 16 --seconds 20

Without ``--url`` it starts ``spadegan serve`` in a subprocess on a free port (and stops it after),
as the ``spadegan`` command starts (``SPADE_ALLOCATOR=system`` in the environment: on glibc).
Each client posts label maps (procedural landscapes for COCO-Stuff models, random blocks of the
model's classes otherwise) with random seeds, one request after another. A probe asks for
``/api/status`` twice a second meanwhile: its latency shows whether the server keeps answering
while the model is busy.

Reported: successful requests per second, latency percentiles (p50 / p90 / p99 of successful
requests), errors (anything but 200 and 503: must be 0; the exit status is 1 otherwise), 503
answers (the queue was full: the server shedding load, counted apart), the probe's latency, the
server's batches, and its peak resident memory (sampled every 50 ms, the server process and its
children).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # As the spadegan command starts (on tcmalloc where it is installed; SPADE_ALLOCATOR=system: glibc).
    command = [sys.executable, "-m", "spadegan", "serve", "--port", str(port), "--gpu_ids", args.gpu_ids,
               "--max_batch", str(args.max_batch), "--max_waiting", str(args.max_waiting)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}):\n{process.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/model", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise SystemExit(f"the server did not answer within {args.start_timeout} s")


def label_maps(model: dict, count: int) -> list[bytes]:
    """PNGs of class ids at the model's size."""
    height, width = model["size"]["height"], model["size"]["width"]
    rng = np.random.default_rng(0)
    ids = [c["id"] for g in model["groups"] for c in g["classes"]]
    maps = []
    for i in range(count):
        if model.get("random_layouts"):
            from spadegan.data.landscapes import generate_layout

            array = generate_layout(i, (width, height)).label
        else:
            blocks = rng.choice(ids, size=(max(1, height // 16), max(1, width // 16)))
            array = np.kron(blocks, np.ones((16, 16), np.int64))[:height, :width]
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(array, np.uint8 if max(ids) < 256 else np.uint16)).save(buffer, format="PNG")
        maps.append(buffer.getvalue())
    return maps


class MemorySampler(threading.Thread):
    """Peak RSS of a process and its children."""

    def __init__(self, pid: int | None, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.stop_event = pid, interval, 0, threading.Event()

    def run(self) -> None:
        if self.pid is None:
            return
        import psutil

        try:
            process = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop_event.is_set():
            try:
                rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
            except psutil.Error:
                break
            self.peak = max(self.peak, rss)
            time.sleep(self.interval)


async def load(url: str, maps: list[bytes], clients: int, seconds: float, takes_style: bool) -> dict:
    latencies: list[float] = []
    busy = 0
    errors: list[str] = []
    probe: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal busy
        rng = random.Random(index)
        while time.perf_counter() < deadline:
            data = {"seed": str(rng.randrange(2 ** 31))} if takes_style else {}
            files = {"label": ("label.png", maps[rng.randrange(len(maps))], "image/png")}
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/api/synthesize", files=files, data=data)
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
                continue
            elapsed = time.perf_counter() - started
            if response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n":
                latencies.append(elapsed)
            elif response.status_code == 503:
                busy += 1
                await asyncio.sleep(0.05)  # a client backs off a little, as the page would
            else:
                errors.append(f"{response.status_code}: {response.text[:200]}")

    async def prober(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                (await http.get(f"{url}/api/status")).raise_for_status()
                probe.append(time.perf_counter() - started)
            except httpx.HTTPError as error:
                errors.append(f"status probe: {error}")
            await asyncio.sleep(0.5)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)), prober(http))
    wall = time.perf_counter() - started
    return {"latencies": latencies, "busy": busy, "errors": errors, "probe": probe, "wall": wall}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model for the server (default: the bundled model)")
    parser.add_argument("--url", default=None, help="an already running server instead of starting one")
    parser.add_argument("--pid", type=int, default=None, help="with --url: the server's process id, for its memory")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--maps", type=int, default=8, help="distinct label maps the clients send")
    parser.add_argument("--max-batch", type=int, default=4, help="the server's --max-batch")
    parser.add_argument("--max-waiting", type=int, default=32, help="the server's --max-waiting")
    parser.add_argument("--gpu_ids", default="-1")
    parser.add_argument("--start-timeout", type=float, default=180)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    process = None
    if args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        process, url = start_server(args)
        pid = process.pid
    sampler = MemorySampler(pid)
    sampler.start()
    try:
        model = httpx.get(f"{url}/api/model", timeout=30).json()
        maps = label_maps(model, args.maps)
        idle_rss = sampler.peak
        result = asyncio.run(load(url, maps, args.clients, args.seconds, model["takes_style"]))
        stats = httpx.get(f"{url}/api/status", timeout=30).json()
    finally:
        sampler.stop_event.set()
        sampler.join(timeout=5)
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    ok = result["latencies"]
    figures = {
        "model": f"{model['name']} ({model['generator']}, {model['size']['width']}×{model['size']['height']})",
        "clients": args.clients, "seconds": round(result["wall"], 2), "cpu_count": os.cpu_count(),
        "requests_ok": len(ok), "rps": len(ok) / result["wall"],
        "latency_p50_s": percentile(ok, 50), "latency_p90_s": percentile(ok, 90), "latency_p99_s": percentile(ok, 99),
        "errors": len(result["errors"]), "busy_503": result["busy"],
        "probe_p50_s": percentile(result["probe"], 50), "probe_max_s": max(result["probe"], default=float("nan")),
        "batches": stats["batches"], "mean_batch": stats["requests"] / max(stats["batches"], 1),
        "largest_batch": stats["largest_batch"],
        "peak_rss_mib": sampler.peak / 2 ** 20 if pid else None, "idle_rss_mib": idle_rss / 2 ** 20 if pid else None,
    }
    print(f"{figures['model']}: {args.clients} clients for {figures['seconds']:.1f} s ({os.cpu_count()} CPUs)")
    print(f"  {len(ok)} images, {figures['rps']:.2f} requests/s; latency p50 {figures['latency_p50_s']:.2f} s, "
          f"p90 {figures['latency_p90_s']:.2f} s, p99 {figures['latency_p99_s']:.2f} s")
    print(f"  errors {figures['errors']}, 503 (queue full) {figures['busy_503']}; status probe p50 "
          f"{1000 * figures['probe_p50_s']:.0f} ms, max {1000 * figures['probe_max_s']:.0f} ms")
    print(f"  {figures['batches']} batches, mean {figures['mean_batch']:.2f}, largest {figures['largest_batch']}")
    if pid:
        print(f"  server memory: peak RSS {figures['peak_rss_mib']:.0f} MiB (at start {figures['idle_rss_mib']:.0f} MiB)")
    for error in result["errors"][:5]:
        print(f"  error: {error}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
