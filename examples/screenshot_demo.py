"""The README's screenshot of the web demo: paint a coastal scene with the mouse in headless
Chromium, synthesize it, and save the page at a laptop's 1366×768.

    python examples/screenshot_demo.py [--checkpoint FOLDER] [--out docs/web_demo.png]
        [--preset sunset] [--seed 3] [--chromium /usr/bin/chromium]
        [--reroll FX FY --pair docs/figures/reroll.png]

``--reroll FX FY`` then clicks the re-roll tool at that point of the canvas (fractions of its
width and height) and saves the page after it; ``--pair`` also writes the picture before and
after the re-roll side by side.

Any checkpoint works (default: the bundled model). Needs Playwright's Python package and a
Chromium (Debian's ``chromium``; Playwright never downloads a browser here).
"""

from __future__ import annotations

import argparse
import io
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

from PIL import Image


def start_server(app) -> tuple[str, callable]:
    """The app on a free local port (uvicorn in a thread): (URL, stop)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


class Painter:
    """Mouse strokes on the demo's canvas, in fractions of its width and height."""

    def __init__(self, page):
        self.page = page
        box = page.locator("#overlay").bounding_box()
        self.x, self.y, self.w, self.h = box["x"], box["y"], box["width"], box["height"]

    def at(self, fx: float, fy: float) -> tuple[float, float]:
        return self.x + fx * self.w, self.y + fy * self.h

    def use(self, class_name: str, tool: str = "b", size: int | None = None) -> None:
        self.page.locator(f'.class[data-name="{class_name}"]').first.click()
        self.page.keyboard.press(tool)
        if size is not None:
            self.page.evaluate("size => { const s = document.getElementById('size'); s.value = size; "
                               "s.dispatchEvent(new Event('input')); }", size)

    def stroke(self, points: list[tuple[float, float]], steps: int = 8) -> None:
        mouse = self.page.mouse
        mouse.move(*self.at(*points[0]))
        mouse.down()
        for point in points[1:]:
            mouse.move(*self.at(*point), steps=steps)
        mouse.up()

    def click(self, fx: float, fy: float) -> None:
        self.page.mouse.click(*self.at(fx, fy))


def paint_coast(p: Painter) -> None:
    """Sky (the background), mountains over a sea, a beach, clouds, a tree and a rock."""
    p.use("sea", size=4)
    p.stroke([(0.004, 0.56), (0.996, 0.56)], steps=20)
    p.use("sea", tool="f")
    p.click(0.5, 0.7)
    p.use("mountain", size=5)
    p.stroke([(0.004, 0.50), (0.14, 0.33), (0.26, 0.43), (0.45, 0.22), (0.62, 0.44), (0.78, 0.34),
              (0.996, 0.50)])
    p.use("mountain", tool="f")
    p.click(0.45, 0.45)
    p.use("sand", size=6)
    p.stroke([(0.004, 0.80), (0.3, 0.76), (0.6, 0.79), (0.996, 0.74)], steps=16)
    p.use("sand", tool="f")
    p.click(0.5, 0.95)
    p.use("clouds", size=14)
    p.stroke([(0.08, 0.12), (0.2, 0.10), (0.3, 0.12)])
    p.stroke([(0.58, 0.16), (0.72, 0.13), (0.86, 0.15)])
    p.use("tree", size=7)
    p.stroke([(0.85, 0.70), (0.852, 0.87)])                # the trunk
    p.use("tree", size=40)
    p.stroke([(0.83, 0.62), (0.87, 0.66)])                 # the crown
    p.use("rock", size=16)
    p.stroke([(0.18, 0.86), (0.24, 0.87)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled model)")
    parser.add_argument("--out", default="docs/web_demo.png")
    parser.add_argument("--preset", default="sunset", help="style preset to pick (if the model has it)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: chromium on PATH)")
    parser.add_argument("--max-kb", type=int, default=300, help="quantize the PNG's colours to stay under this size")
    parser.add_argument("--reroll", nargs=2, type=float, metavar=("FX", "FY"),
                        help="then re-roll the region at this point of the canvas (fractions of its size)")
    parser.add_argument("--pair", help="with --reroll: write the picture before and after side by side here")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from spadegan.inference import Synthesizer
    from spadegan.serve import create_app

    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no Chromium found: install Debian's chromium (apt-get install chromium) or pass --chromium")
    synthesizer = Synthesizer.from_checkpoint(args.checkpoint)
    app = create_app(synthesizer, name=Path(args.checkpoint).name if args.checkpoint else "landscapes (bundled)")
    url, stop = start_server(app)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(url)
            page.wait_for_selector("body[data-ready]")
            paint_coast(Painter(page))
            page.fill("#seed", str(args.seed))
            presets = page.locator(f'.style-choice[data-preset="{args.preset}"]')
            if presets.count():
                presets.first.click()
            else:
                page.keyboard.press("Enter")
            page.wait_for_selector("#result[data-requests]")
            page.wait_for_function("!window.spadeDemo.state.busy && !window.spadeDemo.state.queued")
            pictures = [_shown_picture(page)]
            if args.reroll:
                requests = page.evaluate("Number(document.getElementById('result').dataset.requests)")
                page.click("#reroll-tool")
                Painter(page).click(*args.reroll)
                page.wait_for_function(f"Number(document.getElementById('result').dataset.requests) > {requests}")
                page.wait_for_function("!window.spadeDemo.state.busy && !window.spadeDemo.state.queued")
                pictures.append(_shown_picture(page))
                page.mouse.move(*Painter(page).at(*args.reroll))
            else:
                page.mouse.move(*Painter(page).at(0.47, 0.3))  # show the brush cursor on the canvas
            page.wait_for_timeout(200)
            shot = page.screenshot()
            browser.close()
    finally:
        stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    data = _png(image)
    if len(data) > args.max_kb * 1024:  # a UI screenshot keeps well in 256 colours
        data = _png(image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    out.write_bytes(data)
    print(f"{out}: {image.width}×{image.height}, {len(data) / 1024:.0f} KB")
    if args.pair and len(pictures) == 2:
        before, after = pictures
        pair = Image.new("RGB", (before.width * 2 + 8, before.height), "white")
        pair.paste(before, (0, 0))
        pair.paste(after, (before.width + 8, 0))
        Path(args.pair).parent.mkdir(parents=True, exist_ok=True)
        Path(args.pair).write_bytes(_png(pair))
        print(f"{args.pair}: before | after the re-roll")
    return 0


def _shown_picture(page) -> Image.Image:
    """The picture the page shows (its PNG, as the server sent it)."""
    data = page.evaluate("""async () => { const r = await fetch(document.getElementById('result').src);
        return Array.from(new Uint8Array(await r.arrayBuffer())); }""")
    return Image.open(io.BytesIO(bytes(data))).convert("RGB")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main())
