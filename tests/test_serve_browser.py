"""The web demo end to end in headless Chromium: paint strokes with the mouse, fill a region,
synthesize, and check that the label map the server received is what was painted, pixel for
pixel; undo / redo; a server error shown in plain words; one vote in the preference study.

Needs Playwright's Python package and a Chromium executable (Debian's ``chromium``, or
``SPADE_CHROMIUM``); Playwright's own browser downloads are never used. Skips, saying why, when
no Chromium is found.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")

from conftest import save_tiny_model
from serve_helpers import SIZE, live_server

from spadegan.inference import Synthesizer
from spadegan.palettes import COCO_STUFF
from spadegan.serve import create_app

CHROMIUM = os.environ.get("SPADE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium executable found (install Debian's chromium: apt-get install chromium, or set "
                "SPADE_CHROMIUM)", allow_module_level=True)

ID = {name: COCO_STUFF.names.index(name) for name in ("sky-other", "sea", "mountain", "grass")}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(app, URL) of the demo on a tiny 64×64 model."""
    path = save_tiny_model(tmp_path_factory.mktemp("browser_models") / "tiny")
    app = create_app(Synthesizer.from_checkpoint(path, device="cpu"), name="tiny")
    with live_server(app) as url:
        yield app, url


@pytest.fixture
def page(browser, demo):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(demo[1])
    page.wait_for_selector("body[data-ready]", timeout=15000)
    yield page
    page.close()
    assert not errors, f"errors in the page's script: {errors}"


class Canvas:
    """Mouse positions on the demo's canvas given in label-map coordinates (pixel i spans [i, i+1))."""

    def __init__(self, page):
        self.page = page
        box = page.locator("#overlay").bounding_box()
        self.box = box
        self.scale_x, self.scale_y = box["width"] / SIZE, box["height"] / SIZE

    def screen(self, x: float, y: float) -> tuple[float, float]:
        return self.box["x"] + x * self.scale_x, self.box["y"] + y * self.scale_y

    def stroke(self, a: tuple[float, float], b: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*self.screen(*a))
        mouse.down()
        mouse.move(*self.screen(*b), steps=12)
        mouse.up()

    def labels(self) -> np.ndarray:
        ids = self.page.evaluate("Array.from(window.spadeDemo.state.labels)")
        return np.array(ids, dtype=np.int64).reshape(SIZE, SIZE)

    def pixels(self) -> np.ndarray:
        """The canvas's own pixels (RGB), as drawn from the ids."""
        rgba = self.page.evaluate("""() => { const c = document.getElementById('canvas');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
        return np.array(rgba, dtype=np.uint8).reshape(SIZE, SIZE, 4)[..., :3]


def choose(page, name: str, tool: str = "b", size: int | None = None) -> None:
    page.locator(f'.class[data-name="{name}"]').first.click()
    page.keyboard.press(tool)
    if size is not None:
        page.evaluate("size => { const s = document.getElementById('size'); s.value = size; "
                      "s.dispatchEvent(new Event('input')); }", size)


def capsule(a, b, radius: float) -> np.ndarray:
    """Distance from each pixel centre to the segment a-b, minus ``radius``."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    a, b = np.array(a, float), np.array(b, float)
    d = b - a
    t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
    return np.hypot(xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1])) - radius


def flood_fill(ids: np.ndarray, x: int, y: int, value: int) -> np.ndarray:
    """The 4-connected region of (x, y)'s class set to ``value``."""
    out = ids.copy()
    target = out[y, x]
    stack = [(x, y)]
    while stack:
        cx, cy = stack.pop()
        if 0 <= cx < SIZE and 0 <= cy < SIZE and out[cy, cx] == target:
            out[cy, cx] = value
            stack += [(cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)]
    return out


def test_paint_fill_synthesize_and_the_server_gets_the_painted_map(page, demo):
    app = demo[0]
    canvas = Canvas(page)
    # a band of sea across the map (size 6: radius 3 around row 40.5)...
    choose(page, "sea", size=6)
    sea = ((0.3, 40.5), (63.7, 40.5))
    canvas.stroke(*sea)
    # ...and a mountain stroke above it (size 4)
    choose(page, "mountain", size=4)
    mountain = ((6.3, 6.2), (30.1, 24.4))
    canvas.stroke(*mountain)
    painted = canvas.labels()
    assert set(np.unique(painted)) == {ID["sky-other"], ID["sea"], ID["mountain"]}  # no class invented
    in_sea, in_mountain = capsule(*sea, 3.0), capsule(*mountain, 2.0)
    assert (painted[in_mountain < -0.05] == ID["mountain"]).all()
    assert (painted[in_sea < -0.05] == ID["sea"]).all()
    untouched = (in_sea > 0.05) & (in_mountain > 0.05)
    assert (painted[untouched] == ID["sky-other"]).all()
    assert (painted[40] == ID["sea"]).all()  # the band splits the sky in two

    # the fill bucket: the sky under the band becomes grass, exactly its 4-connected region
    choose(page, "grass", tool="f")
    page.mouse.click(*canvas.screen(50.5, 56.5))
    filled = canvas.labels()
    assert np.array_equal(filled, flood_fill(painted, 50, 56, ID["grass"]))
    assert (filled[60] == ID["grass"]).all() and (filled[2] != ID["grass"]).all()
    # the canvas shows exactly the ids' palette colours
    assert np.array_equal(canvas.pixels(), COCO_STUFF.colorize(filled))

    # undo / redo with the keyboard
    page.keyboard.press("Control+z")
    assert np.array_equal(canvas.labels(), painted)
    page.keyboard.press("Control+Shift+z")
    assert np.array_equal(canvas.labels(), filled)

    # synthesize: the image appears, and the server received the painted map, pixel for pixel
    page.fill("#seed", "5")
    page.click("#go")
    page.wait_for_selector("#result[data-requests]", timeout=20000)
    page.wait_for_function("!window.spadeDemo.state.busy && !window.spadeDemo.state.queued")
    assert page.evaluate("document.getElementById('result').naturalWidth") == SIZE
    assert np.array_equal(app.state.demo.last_labels, filled)
    shown = page.evaluate("""async () => { const r = await fetch(document.getElementById('result').src);
        return Array.from(new Uint8Array(await r.arrayBuffer())); }""")
    image = np.array(Image.open(io.BytesIO(bytes(shown))).convert("RGB"))
    synthesizer = app.state.demo.synthesizer
    assert np.array_equal(image, np.array(synthesizer(filled, seed=[5])[0]))
    assert "seed 5" in page.inner_text("#result-info")


def requests_done(page) -> int:
    page.wait_for_function("!window.spadeDemo.state.busy && !window.spadeDemo.state.queued", timeout=20000)
    return int(page.evaluate("document.getElementById('result').dataset.requests || '0'"))


def test_live_mode_random_scenes_and_style_pictures(page, demo, tmp_path):
    app = demo[0]
    canvas = Canvas(page)
    page.keyboard.press("l")  # live: the picture follows the painting
    assert page.is_checked("#live")
    first = requests_done(page)
    choose(page, "sea", size=8)
    canvas.stroke((5.5, 50.5), (60.5, 50.5))
    page.wait_for_function(f"Number(document.getElementById('result').dataset.requests || 0) > {first}")
    requests_done(page)
    assert np.array_equal(app.state.demo.last_labels, canvas.labels())
    page.keyboard.press("l")
    # a random landscape layout (N), undoable
    before = canvas.labels()
    page.keyboard.press("n")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('random landscape layout')")
    assert not np.array_equal(canvas.labels(), before)
    page.keyboard.press("Control+z")
    assert np.array_equal(canvas.labels(), before)
    # a style picture of one's own
    picture = tmp_path / "holiday.png"
    Image.fromarray((np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)).save(picture)
    count = requests_done(page)
    page.set_input_files("#style-file", str(picture))
    page.wait_for_function(f"Number(document.getElementById('result').dataset.requests || 0) > {count}")
    requests_done(page)
    assert page.inner_text("#result-info").startswith("style of holiday.png")
    # a preset
    page.locator('.style-choice[data-preset="winter"]').click()
    page.wait_for_function("document.getElementById('result-info').textContent.includes('winter')", timeout=20000)


def test_errors_are_reported_in_plain_words(page, tmp_path):
    colours = COCO_STUFF.colorize(np.full((SIZE, SIZE), ID["sea"]))
    colours[:4, :4] = (1, 2, 3)
    bad = tmp_path / "bad.png"
    Image.fromarray(colours).save(bad)
    page.set_input_files("#label-file", str(bad))
    page.wait_for_selector("#status.error", timeout=10000)
    message = page.inner_text("#status")
    assert message.startswith("The server cannot use this input") and "(1, 2, 3) (16 pixels)" in message
    # a good colour map opens (resized to the model's size)
    good = tmp_path / "good.png"
    Image.fromarray(np.kron(colours[4:, 4:][:32, :32], np.ones((4, 4, 1), np.uint8))).save(good)
    page.set_input_files("#label-file", str(good))
    page.wait_for_function("document.getElementById('status').textContent.startsWith('opened good.png')")
    assert "resized from 128×128 to 64×64" in page.inner_text("#status")


def test_the_page_fits_a_laptop_screen(page):
    """At 1366×768 both panes and the palette are on screen, nothing scrolls sideways."""
    for selector in ("#canvas", "#result + #placeholder", "#go", "#classes", "#seed", "#save-result"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["y"] >= 0, selector
        assert box["x"] + box["width"] <= 1366 and box["y"] + box["height"] <= 768, selector
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    # the palette is searchable
    page.keyboard.press("/")
    page.keyboard.type("sno")
    visible = page.locator(".class:visible").all_inner_texts()
    assert [v.strip() for v in visible] == ["snow", "snowboard"]  # the landscape group comes first
    page.keyboard.press("Enter")
    assert page.inner_text("#current-name") == "snow"


@pytest.fixture
def study(tmp_path):
    """A study of two 'methods' over three label maps, served on a local port."""
    from spadegan.serve.study import StudyStore, create_study_app

    for folder in ("a", "b", "labels"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        ids = np.full((SIZE, SIZE), ID["sea"], np.uint8)
        Image.fromarray(ids).save(tmp_path / "labels" / f"scene{i}.png")
        Image.fromarray(np.full((SIZE, SIZE, 3), 200, np.uint8)).save(tmp_path / "a" / f"scene{i}.png")
        Image.fromarray(np.full((SIZE, SIZE, 3), 30, np.uint8)).save(tmp_path / "b" / f"scene{i}.jpg")
    store = StudyStore(tmp_path / "votes.sqlite")
    app = create_study_app(tmp_path / "a", tmp_path / "b", tmp_path / "labels", store, name_a="ours", name_b="theirs")
    with live_server(app) as url:
        yield store, url


def test_one_vote_in_the_study(browser, study):
    store, url = study
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url)
    page.wait_for_selector("body[data-trial]", timeout=10000)
    trial = page.evaluate("document.body.dataset.trial")
    # the page cannot tell which side is which method; the store knows: vote for A
    side = store.trial(trial).a_side
    shown = page.evaluate(f"""async () => {{ const r = await fetch(document.getElementById('{side}-img').src);
        return Array.from(new Uint8Array(await r.arrayBuffer())); }}""")
    assert np.array(Image.open(io.BytesIO(bytes(shown))))[0, 0, 0] == 200  # method A's picture
    page.click(f"#{side}")
    page.wait_for_function(f"document.body.dataset.trial !== '{trial}'", timeout=10000)
    assert page.inner_text("#count").startswith("1 ")
    page.close()
    report = store.report()
    assert report.votes == 1 and report.votes_a == 1


def test_reroll_one_region(page, demo):
    """The re-roll tool: click a region and the picture comes back with that region painted anew
    (a seed of its own) and every pixel outside it as it was: the server takes the region only
    from the new picture (``Synthesizer.reroll``), since the generator's receptive field covers
    the whole picture."""
    app = demo[0]
    canvas = Canvas(page)
    choose(page, "sea", size=6)
    canvas.stroke((0.3, 40.5), (63.7, 40.5))
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+Shift+z")
    ids = canvas.labels()
    page.fill("#seed", "5")
    page.click("#go")
    page.wait_for_selector("#result[data-requests]", timeout=20000)
    before_requests = requests_done(page)

    def shown() -> np.ndarray:
        data = page.evaluate("""async () => { const r = await fetch(document.getElementById('result').src);
            return Array.from(new Uint8Array(await r.arrayBuffer())); }""")
        return np.array(Image.open(io.BytesIO(bytes(data))).convert("RGB"), dtype=np.int16)

    before = shown()
    assert page.locator("#reroll-tool").is_visible()
    page.keyboard.press("u")
    page.mouse.click(*canvas.screen(20.5, 40.5))
    page.wait_for_function(f"Number(document.getElementById('result').dataset.requests) > {before_requests}",
                           timeout=20000)
    requests_done(page)
    after = shown()
    region = flood_fill(ids, 20, 40, -1) == -1
    change = np.abs(after - before).max(axis=-1)
    assert change[~region].max() == 0 and change[region].max() > 0
    info = page.inner_text("#result-info")
    assert "sea re-rolled" in info and "seed 5" in info
    reroll_seed = int(info.split("re-rolled (seed ")[1].split(")")[0])
    synthesizer = app.state.demo.synthesizer
    expected = synthesizer(ids, seed=[5], reroll_mask=torch.from_numpy(region), reroll_seed=[reroll_seed])[0]
    assert np.array_equal(after, np.array(expected, dtype=np.int16))
