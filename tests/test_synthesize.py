"""``spadegan synthesize`` and ``Synthesizer`` as end users meet them: the bundled default model,
colour-coded label maps, style images, several samples per layout, batches, the gallery, and
errors that name the file before anything is written.

Tiny models (64×64, ngf 4) saved as the bundled model is: our checkpoint folder in float16.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FLOAT32_REL, bf16_is_close_on_the_bundled_model, check_error, landscape, max_abs_diff, save_tiny_model
from PIL import Image

from spadegan import bundled
from spadegan.cli import main
from spadegan.config import GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.imageio import read_image, read_label_map, to_pil
from spadegan.inference import Synthesizer, palette_for_model
from spadegan.models import build_networks
from spadegan.palettes import CITYSCAPES, COCO_STUFF, palette_for

SIZE = 64


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "landscapes")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    """No image encoder (deterministic), no don't-care class."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "plain", encoder=False, dontcare=False)


def write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def run(*argv) -> int:
    return main(["synthesize", *map(str, argv), "--gpu_ids", "-1"])


def test_id_maps_and_colour_maps_give_the_same_images(model, tmp_path):
    ids = landscape()
    write(tmp_path / "ids" / "scene.png", ids)                                   # 8-bit grayscale
    write(tmp_path / "wide" / "scene.png", ids.astype(np.uint16))                 # 16-bit
    palette_png = Image.fromarray(ids, mode="L").convert("P")                     # palette indices = ids
    palette_png.putpalette(COCO_STUFF.colors.ravel().tolist())
    (tmp_path / "indexed").mkdir()
    palette_png.save(tmp_path / "indexed" / "scene.png")
    write(tmp_path / "colours" / "scene.png", COCO_STUFF.colorize(ids))           # RGB in the palette
    outputs = []
    for form in ("ids", "wide", "indexed", "colours"):
        assert run(tmp_path / form, "--checkpoint", model, "--out", tmp_path / f"out_{form}", "--seed", 3) == 0
        outputs.append(pixels(tmp_path / f"out_{form}" / "scene.png"))
    assert all(np.array_equal(outputs[0], other) for other in outputs[1:])
    # the mapping is exact, don't-care (black) included
    palette = palette_for_model(Synthesizer.from_checkpoint(model, device="cpu").config)
    assert palette is COCO_STUFF
    assert torch.equal(read_label_map(tmp_path / "colours" / "scene.png", palette), torch.from_numpy(ids).long())
    # the label preview in the gallery is the map in palette colours
    assert np.array_equal(pixels(tmp_path / "out_ids" / "labels" / "scene.png"), COCO_STUFF.colorize(ids))


def test_palette_follows_the_class_count():
    assert palette_for_model(SemanticsConfig(182)) is COCO_STUFF
    assert palette_for_model(ModelConfig(SemanticsConfig(35))) is CITYSCAPES
    assert palette_for_model(SemanticsConfig(150)).name == "ade20k"
    assert palette_for_model(SemanticsConfig(7)) is palette_for("custom", 7)


def test_unknown_colours_are_named_and_nothing_is_written(model, tmp_path):
    write(tmp_path / "in" / "a_good.png", COCO_STUFF.colorize(landscape()))
    colours = COCO_STUFF.colorize(landscape())
    colours[10:13, 10:20] = (1, 2, 3)      # 30 pixels
    colours[40, 40] = (250, 0, 7)          # 1 pixel
    bad = write(tmp_path / "in" / "b_bad.png", colours)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as error:
        run(tmp_path / "in", "--checkpoint", model, "--out", out)
    message = str(error.value)
    assert str(bad) in message and "2 colour(s) that are not in the coco palette" in message
    assert "(1, 2, 3) (30 pixels)" in message and "(250, 0, 7) (1 pixels)" in message
    assert "Expected only the colours of the coco palette's 182 classes" in message
    assert not out.exists()  # the good map came first, and was not written either
    with pytest.raises(ValueError, match=re.escape(f"{bad} holds 2 colour(s)")):
        Synthesizer.from_checkpoint(model, device="cpu")(bad)


def test_unknown_ids_and_unreadable_files_are_errors(model, plain_model, tmp_path):
    ids = landscape()
    ids[:3, 5:10] = 200
    bad = write(tmp_path / "in" / "ids.png", ids)
    with pytest.raises(SystemExit, match=re.escape(f"label id 200 (15 pixels) in {bad} is outside the model's classes")):
        run(bad, "--checkpoint", model, "--out", tmp_path / "out")
    synthesizer = Synthesizer.from_checkpoint(model, device="cpu")
    with pytest.raises(ValueError, match="label id 200 .* expected \\[0, 182\\) or the don't-care id"):
        synthesizer(bad)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(SystemExit, match=re.escape(f"{broken}: cannot read it as an image")):
        run(broken, "--checkpoint", model, "--out", tmp_path / "out")
    with pytest.raises(ValueError, match="cannot read it as an image"):
        synthesizer(broken)
    # black is don't-care in the COCO-Stuff colours: an error for a model without that class
    black = write(tmp_path / "black.png", COCO_STUFF.colorize(landscape()))
    with pytest.raises(SystemExit, match=re.escape(f"{black}: 4 black (0, 0, 0) pixels: black is don't-care")):
        run(black, "--checkpoint", plain_model, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.numeric
def test_samples_are_different_and_reproducible(model, tmp_path):
    label = write(tmp_path / "scene.png", landscape())
    for out in ("a", "b"):
        assert run(label, "--checkpoint", model, "--out", tmp_path / out, "--samples", 3, "--seed", 5) == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert names == ["scene_s0.png", "scene_s1.png", "scene_s2.png"]
    images = [pixels(tmp_path / "a" / name) for name in names]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
    assert all(np.array_equal(image, pixels(tmp_path / "b" / name)) for image, name in zip(images, names))
    # sample k is seed 5 + k, in Python too, bit for bit at the CLI's batch size (1)
    synthesizer = Synthesizer.from_checkpoint(model, device="cpu")
    for k, seed in enumerate((5, 6, 7)):
        assert np.array_equal(np.array(synthesizer(label, seed=[seed])[0]), images[k])
    assert np.array_equal(np.array(synthesizer(label, seed=6)[0]), images[1])
    # one layout with several seeds in one batch: the same samples to float rounding (CPU
    # convolutions sum in an order that depends on the batch size, ~5e-6 here, so a value on a
    # rounding boundary of the 8-bit PNG may land one level apart)
    batched = synthesizer.synthesize(label, seed=[5, 6, 7])
    singles = torch.cat([synthesizer.synthesize(label, seed=[seed]) for seed in (5, 6, 7)])
    check_error("batch vs one by one", max_abs_diff(batched, singles) / float(singles.abs().max()), FLOAT32_REL)
    levels = [int(np.abs(np.array(image, np.int16) - single).max())
              for image, single in zip(synthesizer(label, seed=[5, 6, 7]), images)]
    assert max(levels) <= 1, levels


def test_style_image_sets_the_style(model, tmp_path):
    label = write(tmp_path / "scene.png", landscape())
    rng = np.random.default_rng(0)
    style = write(tmp_path / "style.jpg", (rng.random((80, 96, 3)) * 255).astype(np.uint8))
    assert run(label, "--checkpoint", model, "--out", tmp_path / "plain", "--seed", 2) == 0
    assert run(label, "--checkpoint", model, "--out", tmp_path / "styled", "--seed", 2, "--style", style) == 0
    styled = pixels(tmp_path / "styled" / "scene.png")
    assert not np.array_equal(styled, pixels(tmp_path / "plain" / "scene.png"))
    # the output is the generator on the encoder's code for that image (sampled with the seed)
    synthesizer = Synthesizer.from_checkpoint(model, device="cpu")
    z = synthesizer.encode_style(read_image(style), 1, torch.Generator().manual_seed(2))
    assert np.array_equal(np.array(to_pil(synthesizer.synthesize(label, z=z)[0])), styled)
    assert np.array_equal(np.array(synthesizer(label, style=style, seed=2)[0]), styled)
    # the gallery shows the style image
    page = (tmp_path / "styled" / "index.html").read_text()
    assert "style/style.png" in page and (tmp_path / "styled" / "style" / "style.png").is_file()


def test_models_without_encoder_refuse_style_and_samples(plain_model, tmp_path):
    ids = landscape()
    ids[ids == 255] = 0
    label = write(tmp_path / "scene.png", ids)
    style = write(tmp_path / "style.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SystemExit, match="this model has no image encoder"):
        run(label, "--checkpoint", plain_model, "--out", tmp_path / "out", "--style", style)
    with pytest.raises(SystemExit, match="--samples: this model takes no random style"):
        run(label, "--checkpoint", plain_model, "--out", tmp_path / "out", "--samples", 2)
    assert not (tmp_path / "out").exists()
    assert run(label, "--checkpoint", plain_model, "--out", tmp_path / "out") == 0
    assert "<th>synthesized</th>" in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.numeric
def test_batches_give_the_images_of_one_by_one(model, tmp_path):
    for i in range(3):
        write(tmp_path / "in" / f"scene{i}.png", COCO_STUFF.colorize(landscape(i)) if i % 2 else landscape(i))
    for batch in (1, 4):  # 6 images: a full batch of 4, then 2
        assert run(tmp_path / "in", "--checkpoint", model, "--out", tmp_path / f"b{batch}", "--seed", 9,
                   "--samples", 2, "--batch_size", batch) == 0
    names = sorted(p.name for p in (tmp_path / "b1").glob("*.png"))
    assert len(names) == 6
    for name in names:
        one, batched = pixels(tmp_path / "b1" / name).astype(int), pixels(tmp_path / "b4" / name).astype(int)
        # The same numbers up to float summation order (~1e-6 of a level's width): a value moves to
        # the next level only where it lies that close to a rounding boundary.
        assert np.abs(one - batched).max() <= 1, name
        check_error(f"{name}: share of values one level apart", float((one != batched).mean()), 0.01)
    # in Python: a batch with one seed per map is the maps one by one
    synthesizer = Synthesizer.from_checkpoint(model, device="cpu")
    maps = torch.from_numpy(np.stack([landscape(i) for i in range(3)]))
    one_by_one = torch.cat([synthesizer.synthesize(maps[i], seed=[i]) for i in range(3)])
    batched = synthesizer.synthesize(maps, seed=[0, 1, 2])
    check_error("batch vs one by one", max_abs_diff(batched, one_by_one) / float(one_by_one.abs().max()), FLOAT32_REL)


def test_gallery_links_every_output(model, tmp_path):
    for i in range(3):
        write(tmp_path / "in" / f"scene {i}.png", landscape(i))
    out = tmp_path / "out"
    assert run(tmp_path / "in", "--checkpoint", model, "--out", out, "--seed", 1, "--samples", 2) == 0
    page = (out / "index.html").read_text()
    from urllib.parse import unquote

    sources = [unquote(s) for s in re.findall(r"<img src='([^']+)'", page)]
    assert len(sources) == 3 * 3  # label map + 2 samples per input
    assert all(not Path(s).is_absolute() and (out / s).is_file() for s in sources)
    outputs = {p.name for p in out.glob("*.png")}
    assert outputs == {f"scene {i}_s{k}.png" for i in range(3) for k in range(2)}
    assert outputs <= set(sources)
    assert "<th>seed 1</th><th>seed 2</th>" in page
    assert not list(out.rglob("*.tmp"))


def test_size_resizes_to_what_the_network_makes(model, tmp_path):
    small = landscape(size=32)
    label = write(tmp_path / "small.png", small)
    with pytest.raises(SystemExit, match=re.escape(f"label map {label} is 32×32 (width×height); this model makes "
                                                   "64×64 images (width×height) only")):
        run(label, "--checkpoint", model, "--out", tmp_path / "out")
    with pytest.raises(SystemExit, match=r"--size 128x128 \(width×height\): this model makes 64×64 images "
                                         r"\(width×height\) only: its generator starts from a fixed 2×2 tensor"):
        run(label, "--checkpoint", model, "--out", tmp_path / "out", "--size", 128)
    assert run(label, "--checkpoint", model, "--out", tmp_path / "a", "--size", "64x64", "--seed", 0) == 0
    assert run(label, "--checkpoint", model, "--out", tmp_path / "a2", "--size", 64, 64, "--seed", 0) == 0  # the former form
    big = write(tmp_path / "big" / "small.png", small.repeat(2, 0).repeat(2, 1))  # the nearest upscaling
    assert run(big, "--checkpoint", model, "--out", tmp_path / "b", "--seed", 0) == 0
    assert np.array_equal(pixels(tmp_path / "a" / "small.png"), pixels(tmp_path / "b" / "small.png"))
    synthesizer = Synthesizer.from_checkpoint(model, device="cpu")
    with pytest.raises(ValueError, match="size 96×96"):
        synthesizer(label, size=(96, 96))
    assert synthesizer(label, resize=True, seed=0)[0].size == (SIZE, SIZE)


def test_pix2pixhd_takes_multiples_of_its_downsampling():
    config = ModelConfig(SemanticsConfig(5, False, True),
                         GeneratorConfig(netG="pix2pixhd", ngf=4, crop_size=64, norm_G="instance",
                                         resnet_n_blocks=1, resnet_n_downsample=3))
    synthesizer = Synthesizer(build_networks(config), device="cpu")
    assert synthesizer.size_problem(48, 80) is None
    assert synthesizer(torch.randint(0, 5, (48, 80)))[0].size == (80, 48)
    for height, width in ((12, 16), (8, 8)):
        assert "multiples of 8, at least 16" in synthesizer.size_problem(height, width)
    with pytest.raises(ValueError, match="label map is 16×12 .* multiples of 8"):
        synthesizer(torch.randint(0, 5, (12, 16)))


def test_default_checkpoint_is_the_bundled_model(model, tmp_path, monkeypatch):
    label = write(tmp_path / "scene.png", landscape())
    assert run(label, "--checkpoint", model, "--out", tmp_path / "named", "--seed", 4) == 0
    monkeypatch.setenv(bundled.ENV_VAR, str(model))
    assert bundled.bundled_model_path() == model
    assert run(label, "--out", tmp_path / "default", "--seed", 4) == 0
    expected = pixels(tmp_path / "named" / "scene.png")
    assert np.array_equal(pixels(tmp_path / "default" / "scene.png"), expected)
    assert np.array_equal(np.array(Synthesizer.from_checkpoint(device="cpu")(label, seed=4)[0]), expected)
    # the function is the one place that says where the model is
    monkeypatch.delenv(bundled.ENV_VAR)
    monkeypatch.setattr(bundled, "bundled_model_path", lambda: model)
    assert np.array_equal(np.array(Synthesizer.from_checkpoint(device="cpu")(label, seed=4)[0]), expected)


def test_missing_bundled_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(bundled.ENV_VAR, raising=False)
    assert bundled.bundled_model_path().parts[-3:] == ("spadegan", "weights", "landscapes")
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(bundled.ENV_VAR, str(missing))
    label = write(tmp_path / "scene.png", landscape())
    with pytest.raises(SystemExit, match=re.escape(f"the bundled model is not installed at {missing}") + ".*pass --checkpoint"):
        run(label, "--out", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="the bundled model is not installed"):
        Synthesizer.from_checkpoint()
    assert not (tmp_path / "out").exists()


def test_the_bundled_model_paints_what_the_segmenter_recognizes(monkeypatch):
    """The shipped model itself: within the 40 MB budget, and on fresh layouts (a seed no data
    set used) its pictures are segmented back into their layouts far above what guessing the
    most common class gets."""
    from spadegan.data.landscapes import generate_landscape
    from spadegan.evaluation.segmentation import segmentation_scores
    from spadegan.evaluation.segmenters import get_segmenter

    monkeypatch.delenv(bundled.ENV_VAR, raising=False)
    folder = bundled.bundled_model_path()
    if not (folder / "generator.safetensors").is_file():
        pytest.skip(f"no bundled model in {folder}")
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 40 * 2**20
    synthesizer = Synthesizer.from_checkpoint(device="cpu")
    samples = [generate_landscape((5150, i), (256, 256)) for i in range(4)]
    labels = torch.stack([torch.from_numpy(s.label.astype(np.int64)) for s in samples])
    images = [synthesizer(s.label.astype(np.int64), seed=i)[0] for i, s in enumerate(samples)]
    as_batch = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images]).float() / 255
    scores = segmentation_scores(get_segmenter("landscapes", device="cpu").predict(as_batch), labels, 182)
    # Every pixel called the most common class of these maps: the baseline to beat.
    majority = labels.flatten().bincount().argmax()
    baseline = segmentation_scores(torch.full_like(labels, int(majority)), labels, 182)
    # A model that paints its maps is read back far above the majority baseline (docs/results.md
    # gives its scores on 300 maps); one that ignores them scores near the baseline.
    assert scores.miou > 5 * baseline.miou and scores.pixel_accuracy > baseline.pixel_accuracy + 0.05


def test_the_bundled_model_uses_its_style_code(monkeypatch):
    """The shipped encoder's codes change the picture (a collapsed posterior would not: every
    reference photo would give the same image). Four photos of other layouts as references, one
    fresh layout: the pictures' channel means must differ."""
    from spadegan.data.landscapes import generate_landscape

    monkeypatch.delenv(bundled.ENV_VAR, raising=False)
    folder = bundled.bundled_model_path()
    if not (folder / "generator.safetensors").is_file():
        pytest.skip(f"no bundled model in {folder}")
    synthesizer = Synthesizer.from_checkpoint(device="cpu")
    label = generate_landscape((5150, 0), (256, 256)).label.astype(np.int64)
    photos = [torch.from_numpy(generate_landscape((5151, i), (256, 256)).image).permute(2, 0, 1).float() / 127.5 - 1
              for i in range(4)]
    means = torch.cat([synthesizer.synthesize(label, style=photo, seed=0).mean(dim=(2, 3)) for photo in photos])
    spread = float((means[:, None] - means[None]).abs().max()) * 127.5        # in 8-bit levels
    # A collapsed posterior gives every reference the same picture (a fraction of a level apart);
    # 10 levels of a channel mean is a change of colour anyone sees.
    assert spread > 10, spread


@pytest.mark.numeric
def test_bf16_precision_is_close_on_the_bundled_model():
    bf16_is_close_on_the_bundled_model("cpu")


def test_bf16_precision_from_the_command_line(model, tmp_path):
    label = write(tmp_path / "scene.png", landscape())
    for precision in ("fp32", "bf16"):
        assert run(label, "--checkpoint", model, "--out", tmp_path / precision, "--seed", 4,
                   "--precision", precision) == 0
    low = Synthesizer.from_checkpoint(model, device="cpu", precision="bf16")
    written = pixels(tmp_path / "bf16" / "scene.png")
    assert np.array_equal(written, np.array(low(label, seed=4)[0]))
    assert not np.array_equal(written, pixels(tmp_path / "fp32" / "scene.png"))
    with pytest.raises(ValueError, match="precision 'fp8'"):
        Synthesizer.from_checkpoint(model, device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="needs fold=True"):
        Synthesizer(low.networks, device="cpu", precision="bf16")


# -- the output folder: checked before the model runs, published complete or not at all -----------

@pytest.fixture
def model_must_not_load(monkeypatch):
    """Fail the test if the checkpoint is loaded: the output folder is checked before."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(Synthesizer, "from_checkpoint", refuse)


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_folder_that_cannot_take_the_files_is_refused_first(model, tmp_path, model_must_not_load):
    label = write(tmp_path / "in" / "scene.png", landscape())
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    with pytest.raises(SystemExit, match=re.escape(f"--out {a_file}: exists and is not a folder")) as error:
        run(label, "--checkpoint", model, "--out", a_file)
    assert "\n" not in str(error.value) and a_file.read_text() == "keep me"
    with pytest.raises(SystemExit, match=re.escape(f"{a_file} is a file, not a folder")):
        run(label, "--checkpoint", model, "--out", a_file / "out")
    # a file where the label previews' folder goes
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels").write_text("not a folder")
    with pytest.raises(SystemExit, match=re.escape(f"{out / 'labels'} is a file; the output puts a folder there")):
        run(label, "--checkpoint", model, "--out", out)
    # a folder where an image goes
    (out / "labels").unlink()
    (out / "scene.png").mkdir()
    with pytest.raises(SystemExit, match=re.escape(f"{out / 'scene.png'} is a folder")):
        run(label, "--checkpoint", model, "--out", out)
    # the output would replace its own input
    with pytest.raises(SystemExit, match="would replace the input"):
        run(label, "--checkpoint", model, "--out", tmp_path / "in")
    assert listing(out) == {} and sorted(p.name for p in out.iterdir()) == ["scene.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "in", "out"]  # no staging folder left


def test_a_read_only_output_folder_is_refused_first(model, tmp_path, model_must_not_load, monkeypatch):
    label = write(tmp_path / "in" / "scene.png", landscape())
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    if os.access(out, os.W_OK):  # root writes anyway: make the folder refuse as it refuses others
        mkdir = Path.mkdir

        def refuse_inside(path, *args, **kwargs):
            if path.parent == out:
                raise PermissionError(13, "Permission denied", str(path))
            return mkdir(path, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse_inside)
    try:
        with pytest.raises(SystemExit, match=re.escape(f"--out {out}: cannot write there (Permission denied)")):
            run(label, "--checkpoint", model, "--out", out)
    finally:
        out.chmod(0o755)
    assert list(out.iterdir()) == []


def test_a_failure_midway_publishes_nothing(model, tmp_path, monkeypatch):
    for i in range(3):
        write(tmp_path / "in" / f"scene{i}.png", landscape(i))
    earlier = tmp_path / "earlier"
    assert run(tmp_path / "in", "--checkpoint", model, "--out", earlier, "--seed", 1) == 0
    before = listing(earlier)
    calls = {"n": 0}
    original = Synthesizer.__call__

    def fail_on_the_second_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("the model failed on the second batch")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Synthesizer, "__call__", fail_on_the_second_batch)
    for out in (earlier, tmp_path / "new"):  # an existing output folder and a new one
        calls["n"] = 0
        with pytest.raises(SystemExit, match="the model failed on the second batch"):
            run(tmp_path / "in", "--checkpoint", model, "--out", out, "--seed", 2)
    assert listing(earlier) == before  # the first image of this run did not reach it
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.rglob(".*staging*")]


def test_outputs_are_written_alike(model, tmp_path):
    """index.html gets the permissions the PNGs get (the user's umask), through the same writer."""
    label = write(tmp_path / "in" / "scene.png", landscape())
    out = tmp_path / "nested" / "out"
    assert run(label, "--checkpoint", model, "--out", out, "--seed", 1) == 0
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    umask = os.umask(0)
    os.umask(umask)
    assert modes == {"scene.png": 0o666 & ~umask, "labels": 0o777 & ~umask, "labels/scene.png": 0o666 & ~umask,
                     "index.html": 0o666 & ~umask}
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


# -- seeds: one range for the command line and the API ---------------------------------------------

@pytest.mark.parametrize("seed, samples", [(2 ** 64 - 1, 2), (2 ** 64, 1), (-1, 1), (2 ** 63 - 1, 2)])
def test_seeds_out_of_range_are_refused_first(model, tmp_path, model_must_not_load, seed, samples):
    label = write(tmp_path / "in" / "scene.png", landscape())
    with pytest.raises(SystemExit, match=re.escape(f"spadegan synthesize: --seed {seed}: ")) as error:
        run(label, "--checkpoint", model, "--out", tmp_path / "out", "--seed", seed, "--samples", samples)
    assert "\n" not in str(error.value) and "2**63 - 1" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_largest_seeds_work(model, tmp_path):
    label = write(tmp_path / "in" / "scene.png", landscape())
    assert run(label, "--checkpoint", model, "--out", tmp_path / "out", "--seed", 2 ** 63 - 2, "--samples", 2) == 0
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"scene_s0.png", "scene_s1.png"}
    with pytest.raises(ValueError, match=re.escape(f"seed {2 ** 63}: expected a whole number from 0")):
        Synthesizer.from_checkpoint(model, device="cpu")(label, seed=[2 ** 63])


# -- pixel limits -----------------------------------------------------------------------------------

def header_only_png(path: Path, width: int, height: int) -> Path:
    """A small file whose PNG header declares width×height grayscale pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_inputs_over_the_pixel_limit_are_refused_from_their_headers(model, tmp_path, model_must_not_load):
    big = header_only_png(tmp_path / "in" / "big.png", 5000, 4000)
    with pytest.raises(SystemExit, match=re.escape(f"{big}: 5000×4000 = 20,000,000 pixels, over the limit of "
                                                   f"16,777,216 (--max_pixels); pass --max_pixels 20000000")):
        run(big, "--checkpoint", model, "--out", tmp_path / "out", "--resize")
    bomb = header_only_png(tmp_path / "in" / "bomb.png", 20000, 20000)  # over Pillow's own limit
    with pytest.raises(SystemExit, match=re.escape(f"{bomb}: 20000×20000 = 400,000,000 pixels")):
        run(bomb, "--checkpoint", model, "--out", tmp_path / "out", "--max_pixels", 10 ** 8)
    style = header_only_png(tmp_path / "style.png", 300, 300)
    label = write(tmp_path / "ok" / "scene.png", landscape())
    with pytest.raises(SystemExit, match=re.escape(f"{style}: 300×300 = 90,000 pixels")):
        run(label, "--checkpoint", model, "--out", tmp_path / "out", "--style", style, "--max_pixels", 64 * 64)
    assert not (tmp_path / "out").exists()


def test_a_larger_pixel_limit_is_an_explicit_choice(model, tmp_path):
    big = write(tmp_path / "in" / "big.png", np.kron(landscape(), np.ones((2, 2), np.uint8)))  # 128×128
    with pytest.raises(SystemExit, match="over the limit of 4,096"):
        run(big, "--checkpoint", model, "--out", tmp_path / "out", "--resize", "--max_pixels", 64 * 64)
    assert run(big, "--checkpoint", model, "--out", tmp_path / "out", "--resize", "--max_pixels", 128 * 128) == 0
