"""The web demo's API (``spadegan serve``) on a tiny model: classes and colours, synthesis from id
and colour maps with seeds, presets and style images, the checks on bad and oversized inputs, the
queue (batches, 503 when full), and the command line.

The tiny model (64×64, ngf 4, an image encoder, COCO-Stuff ids + don't-care) is saved as the
bundled model is: one of our checkpoint folders in float16.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
import httpx

with warnings.catch_warnings():  # newer starlette asks for httpx2 in its test client; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from spadegan.data.landscapes import CLASS_IDS, generate_layout
from spadegan.inference import Synthesizer
from spadegan.palettes import COCO_STUFF
from spadegan.serve import Limits, create_app
from spadegan.serve.catalog import decode_ids
from spadegan.serve.queue import Job
from conftest import save_tiny_model
from serve_helpers import decode_png, detail, live_server, png, scene, synthesize

SIZE = 64
SKY = COCO_STUFF.names.index("sky-other")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("serve_models") / "tiny")


@pytest.fixture(scope="module")
def synthesizer(model_path) -> Synthesizer:
    return Synthesizer.from_checkpoint(model_path, device="cpu")


@pytest.fixture(scope="module")
def client(synthesizer):
    app = create_app(synthesizer, limits=Limits(max_upload_bytes=64 * 1024, max_pixels=128 * 128), name="tiny")
    with TestClient(app) as test_client:
        yield test_client


def expected(synthesizer, ids: np.ndarray, seed: int, style: torch.Tensor | None = None) -> np.ndarray:
    """What ``Synthesizer`` (and ``spadegan synthesize --seed``) makes of this map."""
    return np.array(synthesizer(torch.from_numpy(ids.astype(np.int64)), style=style, seed=[seed])[0])


# -- descriptions ---------------------------------------------------------------------------------

def test_model_lists_classes_colours_presets_and_limits(client):
    info = client.get("/api/model").json()
    assert info["size"] == {"height": SIZE, "width": SIZE} and info["label_nc"] == 182
    assert info["takes_style"] and info["style_image"] and info["background"] == SKY
    groups = {g["name"]: g["classes"] for g in info["groups"]}
    assert list(groups) == ["Landscape", "Stuff", "Things", "Other"]
    assert [c["id"] for c in groups["Landscape"]] == list(CLASS_IDS)
    sky = groups["Landscape"][0]
    assert sky == {"id": SKY, "name": "sky-other", "color": "#5fdbff"}  # the GauGAN colour (95, 219, 255)
    assert groups["Other"] == [{"id": 255, "name": "don't care (unlabeled)", "color": "#000000"}]
    listed = [c["id"] for g in info["groups"] for c in g["classes"]]
    assert len(listed) == len(set(listed)) == 182 - 11 + 1  # COCO's 11 unannotated ids are left out
    for entry in (c for g in info["groups"] for c in g["classes"] if c["id"] != 255):
        assert entry["color"] == "#{:02x}{:02x}{:02x}".format(*COCO_STUFF.colors[entry["id"]])
    assert client.get("/api/classes").json()["groups"] == info["groups"]
    assert info["limits"]["max_upload_bytes"] == 64 * 1024
    names = [p["name"] for p in info["presets"]]
    assert {"summer day", "sunset", "winter"} <= set(names)
    preset = client.get(info["presets"][0]["url"])
    assert preset.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preset.content)).size == (SIZE, SIZE)
    assert client.get("/api/presets/nothing").status_code == 404
    schema = client.get("/openapi.json").json()
    assert {"/api/synthesize", "/api/model", "/api/classes", "/api/labels/decode"} <= set(schema["paths"])


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "<canvas" in text and "/api/synthesize" in text
    # no CDN, no external request: no absolute URL in any src, href, import or fetch
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"""(url\(|@import|fetch\()\s*["']?(https?:)?//""", text)


def test_random_layouts_are_landscapes(client):
    layout = decode_ids(client.get("/api/layouts/random", params={"seed": 5}).json())
    assert layout.shape == (SIZE, SIZE)
    assert np.array_equal(layout, generate_layout(5, SIZE).label)
    assert client.get("/api/layouts/random", params={"seed": -1}).status_code == 422


# -- synthesis ------------------------------------------------------------------------------------

def test_id_and_colour_maps_give_the_synthesizers_image(client, synthesizer):
    ids = scene(1)
    response = synthesize(client, png(ids), seed=7)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["x-seed"] == "7"
    image = decode_png(response.content)
    assert image.shape == (SIZE, SIZE, 3)
    assert np.array_equal(image, expected(synthesizer, ids, 7))
    assert np.array_equal(client.app.state.demo.last_labels, ids)  # what the server received
    colours = synthesize(client, png(COCO_STUFF.colorize(ids)), seed=7)
    assert np.array_equal(decode_png(colours.content), image)
    wide = synthesize(client, png(ids.astype(np.uint16)), seed=7)  # a 16-bit id PNG
    assert np.array_equal(decode_png(wide.content), image)
    other = synthesize(client, png(ids), seed=8)
    assert not np.array_equal(decode_png(other.content), image)


def test_without_a_seed_the_server_draws_one_and_says_which(client, synthesizer):
    ids = scene(2)
    response = synthesize(client, png(ids))
    seed = int(response.headers["x-seed"])
    assert np.array_equal(decode_png(response.content), expected(synthesizer, ids, seed))


def test_presets_and_style_images_set_the_style(client, synthesizer):
    ids = scene(3)
    demo = client.app.state.demo
    name = "sunset"
    response = synthesize(client, png(ids), seed=4, preset=name)
    assert response.status_code == 200, response.text
    styled = decode_png(response.content)
    assert np.array_equal(styled, expected(synthesizer, ids, 4, style=demo._preset_tensor[name]))
    assert not np.array_equal(styled, expected(synthesizer, ids, 4))
    # an uploaded picture: resized to the model's size, then encoded
    picture = (np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)
    uploaded = synthesize(client, png(ids), seed=4, style=png(picture))
    assert uploaded.status_code == 200, uploaded.text
    reference = np.asarray(Image.fromarray(picture).resize((SIZE, SIZE), Image.BICUBIC), np.float32) / 127.5 - 1
    style = torch.from_numpy(reference).permute(2, 0, 1)
    assert np.array_equal(decode_png(uploaded.content), expected(synthesizer, ids, 4, style=style))


def test_resize_and_decode(client):
    big = np.kron(scene(4), np.ones((2, 2), np.uint8))  # 128×128, each pixel doubled
    assert synthesize(client, png(big), seed=1).status_code == 422
    assert synthesize(client, png(big), seed=1, resize="true").status_code == 200
    decoded = client.post("/api/labels/decode", files={"label": ("l.png", png(COCO_STUFF.colorize(big)))})
    assert decoded.status_code == 200, decoded.text
    body = decoded.json()
    assert body["resized_from"] == {"height": 128, "width": 128}
    assert np.array_equal(decode_ids(body), scene(4))  # nearest resizing picks ids, never blends
    same = client.post("/api/labels/decode", files={"label": ("l.png", png(scene(4)))}).json()
    assert same["resized_from"] is None and np.array_equal(decode_ids(same), scene(4))


# -- bad inputs -----------------------------------------------------------------------------------


def test_bad_inputs_are_4xx_in_plain_words(client):
    ids = scene(0)
    unknown = ids.copy()
    unknown[10:12, 10:15] = 200
    response = synthesize(client, png(unknown), seed=0)
    assert response.status_code == 422
    assert "label id 200 (10 pixels)" in detail(response) and "outside the model's classes" in detail(response)
    colours = COCO_STUFF.colorize(ids)
    colours[5, 5] = (1, 2, 3)
    response = synthesize(client, png(colours), seed=0)
    assert response.status_code == 422 and "(1, 2, 3) (1 pixels)" in detail(response)
    small = ids[:32, :32].copy()
    response = synthesize(client, png(small), seed=0)
    assert response.status_code == 422 and "this model makes 64×64 images" in detail(response)
    assert "resize" in detail(response)
    response = synthesize(client, b"not an image", seed=0)
    assert response.status_code == 422 and "not an image" in detail(response)
    response = synthesize(client, b"", seed=0)
    assert response.status_code == 422 and "empty" in detail(response)
    response = client.post("/api/synthesize", data={"seed": "1"})
    assert response.status_code == 422 and "label" in detail(response)
    for seed in (-3, 2 ** 63, 2 ** 64):  # the range spadegan synthesize --seed takes
        response = synthesize(client, png(ids), seed=seed)
        assert response.status_code == 422 and "seed" in detail(response)
    assert synthesize(client, png(ids), seed=2 ** 63 - 1).status_code == 200
    response = synthesize(client, png(ids), seed=0, preset="nowhere")
    assert response.status_code == 422 and "unknown preset 'nowhere'" in detail(response)
    response = synthesize(client, png(ids), seed=0, preset="sunset", style=png(colours))
    assert response.status_code == 422 and "not both" in detail(response)
    response = synthesize(client, png(ids), seed=0, style=b"\x89PNG broken")
    assert response.status_code == 422 and "style image" in detail(response)
    rgba = np.dstack([COCO_STUFF.colorize(ids), np.full((SIZE, SIZE), 128, np.uint8)])
    response = synthesize(client, png(rgba), seed=0)
    assert response.status_code == 422 and "transparent" in detail(response)


def test_oversized_uploads_are_413(client):
    # bytes: an incompressible label map upload over the 64 KiB per-file limit
    noise = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    big_file = png(noise)
    assert len(big_file) > 64 * 1024
    response = synthesize(client, big_file, seed=0)
    assert response.status_code == 413 and "larger than this server accepts" in detail(response)
    # the whole body, refused by its Content-Length before it is read (the limit: three uploads
    # of 64 KiB, label map, style and re-roll mask, and 64 KiB of form)
    huge = b"x" * (4 * 64 * 1024 + 1)
    response = client.post("/api/synthesize", content=huge, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 413
    # a chunked body (no Content-Length) is cut off once it passes the limit
    head = (b'--x\r\nContent-Disposition: form-data; name="label"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    response = client.post("/api/synthesize", content=(part for part in [head] + [b"x" * 8192] * 40),
                           headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413
    # pixels, read from the header before decoding: a small file of a large image
    wide = png(np.zeros((8, 4096), np.uint8))
    assert len(wide) < 4096
    response = synthesize(client, wide, seed=0, resize="true")
    assert response.status_code == 413 and "4096×8 = 32,768 pixels" in detail(response)
    response = synthesize(client, png(scene(0)), seed=0, style=wide)
    assert response.status_code == 413 and "style image" in detail(response)
    # the server still answers
    assert synthesize(client, png(scene(0)), seed=0).status_code == 200


def test_models_without_encoder_take_no_style(tmp_path):
    path = save_tiny_model(tmp_path / "plain", encoder=False, dontcare=False)
    synthesizer = Synthesizer.from_checkpoint(path, device="cpu")
    with TestClient(create_app(synthesizer)) as client:
        info = client.get("/api/model").json()
        assert not info["takes_style"] and info["presets"] == []
        assert [g["name"] for g in info["groups"]] == ["Landscape", "Stuff", "Things"]  # no don't-care
        ids = scene(0)
        ids[ids == 255] = SKY
        response = synthesize(client, png(ids), preset="sunset")
        assert response.status_code == 422 and "no image encoder" in detail(response)
        black = synthesize(client, png(COCO_STUFF.colorize(scene(0))))
        assert black.status_code == 422 and "black is don't-care" in detail(black)
        response = synthesize(client, png(ids))
        assert response.status_code == 200 and "x-seed" not in response.headers
        assert np.array_equal(decode_png(response.content), np.array(synthesizer(torch.from_numpy(ids))[0]))


# -- the queue ------------------------------------------------------------------------------------


def blocked_queue(app):
    """Make the model thread wait on an event before each batch: (event, batch sizes seen)."""
    queue = app.state.queue
    gate, sizes, original = threading.Event(), [], queue._run

    def run(jobs):
        sizes.append(len(jobs))
        gate.wait(timeout=30)
        return original(jobs)

    queue._run = run
    return gate, sizes


def test_requests_wait_in_one_queue_and_run_in_batches(synthesizer):
    app = create_app(synthesizer, limits=Limits(max_batch=4, max_waiting=8), warm_up=False)
    gate, sizes = blocked_queue(app)
    maps = [scene(i) for i in range(5)]
    with live_server(app) as url:
        results: dict[int, httpx.Response] = {}

        def call(i):
            with httpx.Client(base_url=url, timeout=60) as c:
                results[i] = synthesize(c, png(maps[i]), seed=10 + i)

        first = threading.Thread(target=call, args=(0,))
        first.start()
        while not sizes:  # the first request holds the model thread
            time.sleep(0.01)
        others = [threading.Thread(target=call, args=(i,)) for i in range(1, 5)]
        for t in others:
            t.start()
        while app.state.queue.waiting < 4:
            time.sleep(0.01)
        # the event loop still answers while the model is busy
        with httpx.Client(base_url=url, timeout=5) as c:
            assert c.get("/api/status").json()["waiting"] == 4
        gate.set()
        for t in [first, *others]:
            t.join(timeout=60)
    assert sizes == [1, 4]  # the four that waited ran as one batch
    for i in range(5):
        assert results[i].status_code == 200, results[i].text
        single = expected(synthesizer, maps[i], 10 + i)
        assert np.abs(decode_png(results[i].content).astype(int) - single).max() <= 1  # float rounding only


def test_a_full_queue_answers_503_and_the_server_recovers(synthesizer):
    app = create_app(synthesizer, limits=Limits(max_batch=1, max_waiting=2), warm_up=False)
    gate, _ = blocked_queue(app)
    with live_server(app) as url:
        statuses: list[int] = []

        def call():
            with httpx.Client(base_url=url, timeout=60) as c:
                statuses.append(synthesize(c, png(scene(0)), seed=1).status_code)

        threads = [threading.Thread(target=call) for _ in range(3)]  # one runs, two wait
        for t in threads:
            t.start()
            time.sleep(0.05)
        while app.state.queue.waiting < 2:
            time.sleep(0.01)
        with httpx.Client(base_url=url, timeout=10) as c:
            refused = synthesize(c, png(scene(0)), seed=1)
            assert refused.status_code == 503 and "the server is busy" in detail(refused)
            gate.set()
            for t in threads:
                t.join(timeout=60)
            assert statuses == [200, 200, 200]
            assert synthesize(c, png(scene(0)), seed=1).status_code == 200
            assert c.get("/api/status").json()["rejected"] == 1


def test_a_bad_request_fails_alone(synthesizer):
    from spadegan.serve.queue import SynthesisQueue

    async def scenario():
        queue = SynthesisQueue(synthesizer, max_batch=4, max_waiting=4)
        queue.start()
        layout = synthesizer.layout(torch.from_numpy(scene(0).astype(np.int64)))
        good = asyncio.ensure_future(queue.submit(Job(layout, 3)))
        bad = asyncio.ensure_future(queue.submit(Job(layout, 3, style=torch.zeros(2, 5, 5))))  # not RGB
        done = await asyncio.gather(good, bad, return_exceptions=True)
        await queue.stop()
        return done

    image, error = asyncio.run(scenario())
    # a bad job fails alone: its batch is rerun one job at a time
    assert isinstance(error, Exception)
    assert np.array_equal(np.array(image), expected(synthesizer, scene(0), 3))


# -- the command line -----------------------------------------------------------------------------

def test_cli_serve_needs_a_model(monkeypatch, tmp_path, model_path):
    from spadegan import cli

    monkeypatch.setenv("SPADE_BUNDLED_MODEL", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="the bundled model is not installed .* pass --checkpoint"):
        cli.main(["serve", "--gpu_ids", "-1"])
    started = {}
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: started.update(app=app, host=host, port=port))
    assert cli.main(["serve", "--checkpoint", str(model_path), "--port", "8123", "--gpu_ids", "-1",
                     "--max-upload-mb", "1", "--max-batch", "2"]) == 0
    assert started["host"] == "127.0.0.1" and started["port"] == 8123
    with TestClient(started["app"], base_url="http://localhost:8123") as client:
        info = client.get("/api/model").json()
        assert info["name"] == "tiny" and info["limits"]["max_upload_bytes"] == 1024 * 1024
        assert info["limits"]["max_batch"] == 2
        assert_host_check(client, "evil.example")
    assert started["app"].state.demo.synthesizer.precision == "fp32"
    assert cli.main(["serve", "--checkpoint", str(model_path), "--gpu_ids", "-1", "--precision", "bf16"]) == 0
    assert started["app"].state.demo.synthesizer.precision == "bf16"
    # the bundled model (here: the tiny one named by SPADE_BUNDLED_MODEL) is the default
    monkeypatch.setenv("SPADE_BUNDLED_MODEL", str(model_path))
    assert cli.main(["serve", "--gpu_ids", "-1"]) == 0


def assert_host_check(client, refused_name: str) -> None:
    """The server answers this machine's names and IP addresses, and refuses other names in JSON."""
    for host in ("localhost:8123", "127.0.0.1:8123", "[::1]:8123", "192.168.1.7"):
        assert client.get("/", headers={"host": host}).status_code == 200, host
    refused = client.get("/", headers={"host": f"{refused_name}:8123"})
    assert refused.status_code == 400 and "--allowed_hosts" in refused.json()["detail"]
    assert client.post("/api/vote", headers={"host": refused_name}, json={}).status_code == 400


def test_cli_servers_check_the_host_header(monkeypatch, tmp_path, model_path):
    from spadegan import cli
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: started.update(app=app))
    assert cli.main(["serve", "--checkpoint", str(model_path), "--gpu_ids", "-1", "--allowed_hosts", "demo.lan"]) == 0
    with TestClient(started["app"], base_url="http://localhost") as client:
        assert_host_check(client, "evil.example")
        assert client.get("/", headers={"host": "demo.lan:8000"}).status_code == 200
    dir_a, dir_b, labels = make_study(tmp_path)
    assert cli.main(["study", "--a", str(dir_a), "--b", str(dir_b), "--labels", str(labels), "--db",
                     str(tmp_path / "votes.sqlite"), "--host", "study.lan"]) == 0
    with TestClient(started["app"], base_url="http://localhost") as client:
        assert_host_check(client, "evil.example")
        assert client.get("/", headers={"host": "study.lan:8001"}).status_code == 200


@pytest.mark.parametrize("which", ["demo", "study"])
def test_pages_answer_head_and_have_an_icon(client, tmp_path, which):
    if which == "study":
        from spadegan.serve.study import StudyStore, create_study_app

        app = create_study_app(*make_study(tmp_path), StudyStore(tmp_path / "votes.sqlite"))
        client = TestClient(app)
    assert client.head("/").status_code == 200
    page = client.get("/").text
    assert '<link rel="icon" href="/favicon.svg"' in page
    assert "\uff0b" not in page  # a plain '+': the full-width one is missing from many fonts
    for path in ("/favicon.ico", "/favicon.svg"):
        icon = client.get(path)
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.text.startswith("<svg")


# -- the preference study -------------------------------------------------------------------------

def make_study(folder: Path, n: int = 4) -> tuple[Path, Path, Path]:
    dirs = [folder / name for name in ("a", "b", "labels")]
    for d in dirs:
        d.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(scene(i)).save(dirs[2] / f"map{i}.png")
        Image.fromarray(np.full((8, 8, 3), 220, np.uint8)).save(dirs[0] / f"map{i}.png")
        Image.fromarray(np.full((8, 8, 3), 20, np.uint8)).save(dirs[1] / f"map{i}.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(dirs[0] / "only_in_a.png")  # not in B: left out
    return tuple(dirs)


def test_wilson_interval():
    from spadegan.serve.study import wilson_interval

    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-4) and high == pytest.approx(0.8922, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    low, high = wilson_interval(500, 1000)
    assert 0.5 - low == pytest.approx(high - 0.5) and high - low == pytest.approx(0.0619, abs=1e-4)


def test_concurrent_votes_are_all_kept(tmp_path):
    from spadegan.serve.study import StudyStore, VoteError

    store = StudyStore(tmp_path / "votes.sqlite")
    trials = [store.new_trial(f"map{i % 5}", f"voter{i // 5}") for i in range(240)]  # one per voter and map
    errors: list[BaseException] = []

    def cast(batch):
        try:
            for t in batch:
                store.vote(t.id, "left" if int(t.id.encode().hex(), 16) % 3 else "right", t.voter)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=cast, args=(trials[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = store.report()
    assert report.votes == 240 and report.voters == 48 and report.items == 5
    expected_a = sum(("left" if int(t.id.encode().hex(), 16) % 3 else "right") == t.a_side for t in trials)
    assert report.votes_a == expected_a
    # sides were drawn at random, and recorded
    assert 60 < sum(t.a_side == "left" for t in trials) < 180
    # one vote per trial, by the voter it was shown to
    with pytest.raises(VoteError, match="already") as error:
        store.vote(trials[0].id, "left", trials[0].voter)
    assert error.value.status == 409
    with pytest.raises(VoteError) as error:
        store.vote(store.new_trial("map0", "x").id, "left", "y")
    assert error.value.status == 403
    with pytest.raises(VoteError) as error:
        store.vote("nope", "left", "x")
    assert error.value.status == 404


def test_one_vote_per_voter_and_label_map(tmp_path):
    """Trials fetched in several tabs before voting: the first vote on a map counts, the others
    are refused, also when they arrive at once."""
    from spadegan.serve.study import StudyStore, VoteError

    store = StudyStore(tmp_path / "votes.sqlite")
    tabs = [store.new_trial("map0", "v") for _ in range(6)]
    outcomes: list[int] = []

    def cast(trial):
        try:
            store.vote(trial.id, "left", "v")
            outcomes.append(200)
        except VoteError as error:
            outcomes.append(error.status)

    threads = [threading.Thread(target=cast, args=(t,)) for t in tabs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200] + [409] * 5
    assert store.report().votes == 1
    store.vote(store.new_trial("map0", "w").id, "left", "w")  # another voter still votes on it
    store.vote(store.new_trial("map1", "v").id, "left", "v")  # and this one on another map
    assert store.report().votes == 3


def test_study_app_over_http(tmp_path):
    from spadegan.serve.study import StudyStore, create_study_app

    dir_a, dir_b, labels = make_study(tmp_path)
    store = StudyStore(tmp_path / "votes.sqlite")
    app = create_study_app(dir_a, dir_b, labels, store, name_a="spade", name_b="pix2pixhd")
    assert sorted(app.state.items) == ["map0", "map1", "map2", "map3"]
    with live_server(app) as url:
        def voter(results: list):
            with httpx.Client(base_url=url, timeout=30) as c:
                while True:
                    t = c.get("/api/trial").json()
                    if t["done"]:
                        results.append(t)
                        return
                    left = np.array(Image.open(io.BytesIO(c.get(t["left"]).content)).convert("RGB"))
                    a_side = store.trial(t["trial"]).a_side
                    assert (left[0, 0, 0] > 128) == (a_side == "left")  # A's picture is where the trial says
                    label = np.array(Image.open(io.BytesIO(c.get(t["label"]).content)))
                    name = store.trial(t["trial"]).item
                    assert np.array_equal(label, COCO_STUFF.colorize(scene(int(name[-1]))))  # ids shown in colour
                    r = c.post("/api/vote", json={"trial": t["trial"], "choice": a_side})  # always prefers A
                    assert r.status_code == 200, r.text
                    results.append(name)
                    again = c.post("/api/vote", json={"trial": t["trial"], "choice": "left"})
                    assert again.status_code == 409 and "already" in again.json()["detail"]

        per_voter = [[] for _ in range(6)]
        threads = [threading.Thread(target=voter, args=(r,)) for r in per_voter]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for results in per_voter:  # each voter judged each label map once, then was done
            assert sorted(results[:-1]) == ["map0", "map1", "map2", "map3"] and results[-1]["done"]
        with httpx.Client(base_url=url) as c:
            report = c.get("/api/report").json()
            assert report["votes"] == 24 and report["votes_a"] == 24 and report["preference_a"] == 1.0
            assert report["interval_a_95"][0] == pytest.approx(0.8620, abs=1e-4) and report["voters"] == 6
            assert "spade preferred over pix2pixhd in 100.0% of 24 votes" in c.get("/report").text
            bad = c.post("/api/vote", json={"trial": "x", "choice": "middle"})
            assert bad.status_code == 422
        with httpx.Client(base_url=url) as c:  # a new voter with two tabs open on one map
            first, second = c.get("/api/trial").json(), c.get("/api/trial").json()
            while store.trial(second["trial"]).item != store.trial(first["trial"]).item:
                second = c.get("/api/trial").json()
            assert c.post("/api/vote", json={"trial": first["trial"], "choice": "left"}).status_code == 200
            again = c.post("/api/vote", json={"trial": second["trial"], "choice": "left"})
            assert again.status_code == 409 and "voted on this label map already" in again.json()["detail"]
            assert c.get("/api/report").json()["votes"] == 25


@pytest.mark.parametrize("folder", ["labels", "a", "b"])
def test_study_checks_every_file_at_start_up(tmp_path, monkeypatch, folder):
    from spadegan import cli

    dir_a, dir_b, labels = make_study(tmp_path)
    bad = {"labels": labels, "a": dir_a, "b": dir_b}[folder] / "map1.png"
    for old in bad.parent.glob("map1.*"):
        old.unlink()
    bad.write_text("not a picture")
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: pytest.fail("the study started"))
    with pytest.raises(SystemExit) as error:
        cli.main(["study", "--a", str(dir_a), "--b", str(dir_b), "--labels", str(labels),
                  "--db", str(tmp_path / "votes.sqlite")])
    message = str(error.value)
    assert message.startswith(f"spadegan study: {bad}: cannot read this ") and "\n" not in message


def test_cli_study_report(tmp_path, capsys):
    from spadegan import cli
    from spadegan.serve.study import StudyStore

    store = StudyStore(tmp_path / "votes.sqlite")
    store.set_meta(name_a="ours", name_b="theirs")
    for i in range(10):
        t = store.new_trial(f"map{i}", "v")
        store.vote(t.id, t.a_side if i < 7 else ("left" if t.a_side == "right" else "right"), "v")
    assert cli.main(["study", "--report", "--db", str(tmp_path / "votes.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "ours preferred over theirs in 70.0% of 10 votes (95% Wilson interval 39.7%–89.2%" in out
    with pytest.raises(SystemExit, match="--a, --b and --labels"):
        cli.main(["study", "--db", str(tmp_path / "votes.sqlite")])
    with pytest.raises(SystemExit, match="no such file"):
        cli.main(["study", "--report", "--db", str(tmp_path / "none.sqlite")])


def test_load_script_runs_clean(model_path, tmp_path):
    """benchmarks/serve_load.py against a server it starts: a short run with no errors."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("serve_load", Path(__file__).parents[1] / "benchmarks" / "serve_load.py")
    serve_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_load)
    out = tmp_path / "load.json"
    assert serve_load.main(["--checkpoint", str(model_path), "--clients", "3", "--seconds", "1.5",
                            "--maps", "2", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["errors"] == 0 and figures["requests_ok"] > 0 and figures["peak_rss_mib"] > 0
