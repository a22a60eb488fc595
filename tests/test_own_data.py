"""Your own data: ``spadegan dataset inspect`` on small data sets in each layout (the options it
prints, the reasons where none fits), ``spadegan dataset convert`` from colour masks, and a
training run on the result without --label_nc whose model knows the class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spadegan.cli import main
from spadegan.config import DataConfig
from spadegan.data import build_dataset


def write_pair(label_dir: Path, image_dir: Path, name: str, ids: np.ndarray, image_suffix: str = ".jpg") -> None:
    label_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8)).save(label_dir / f"{name}.png")
    Image.fromarray(np.full((*ids.shape, 3), 128, np.uint8)).save(image_dir / f"{name}{image_suffix}")


def stripes(height: int, width: int, classes: list[int]) -> np.ndarray:
    ids = np.zeros((height, width), np.int64)
    for i, c in enumerate(classes):
        ids[:, i * width // len(classes):(i + 1) * width // len(classes)] = c
    return ids


def inspect(capsys, *args) -> tuple[int, str]:
    code = main(["dataset", "inspect", *map(str, args), "--no_progress"])
    return code, capsys.readouterr().out


def suggested(out: str) -> list[str]:
    line = out.split("train with:\n  spadegan train ", 1)[1].splitlines()[0]
    return line.split()


def test_a_custom_folder_gets_the_options_that_train_on_it(tmp_path, capsys):
    root = tmp_path / "mine"
    for i in range(3):
        ids = stripes(32, 64, [0, 4, 8])
        ids[:2, :2] = 255  # don't-care
        write_pair(root / "train_label", root / "train_img", f"{i:03d}", ids)
    code, out = inspect(capsys, root)
    assert code == 0, out
    assert "3 pairs (custom layout)" in out and "64×32 (3)" in out and "3 classes present" in out
    options = " ".join(suggested(out))
    for expected in ("--dataset_mode custom", "--label_nc 9", "--contain_dontcare_label", "--no_instance",
                     "--preprocess_mode fixed", "--load_size 64", "--crop_size 64", "--aspect_ratio 2",
                     f"--label_dir {root / 'train_label'}", f"--image_dir {root / 'train_img'}"):
        assert expected in options, (expected, options)
    # the suggested options load the data set, ids and all
    config = DataConfig(dataset_mode="custom", label_dir=str(root / "train_label"), image_dir=str(root / "train_img"),
                        label_nc=9, contain_dontcare_label=True, use_instance=False, preprocess_mode="fixed",
                        load_size=64, crop_size=64, aspect_ratio=2.0)
    assert len(build_dataset(config)) == 3


def test_colour_masks_and_unreadable_files_are_named(tmp_path, capsys):
    root = tmp_path / "colours"
    write_pair(root / "train_label", root / "train_img", "a", stripes(16, 16, [1, 2]))
    Image.fromarray((np.zeros((16, 16, 3)) + [200, 10, 10]).astype(np.uint8)).save(root / "train_label" / "b.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train_img" / "b.jpg")
    (root / "train_label" / "c.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train_img" / "c.jpg")
    code, out = inspect(capsys, root)
    assert code == 1
    assert f"{root / 'train_label' / 'c.png'}: cannot read it as an image" in out
    assert "1 label maps hold colours, not class ids" in out and "spadegan dataset convert" in out
    assert "no training setting fits" in out


def test_unpaired_files_and_sizes_that_disagree(tmp_path, capsys):
    root = tmp_path / "unpaired"
    write_pair(root / "train_label", root / "train_img", "a", stripes(16, 16, [1]))
    write_pair(root / "train_label", root / "train_img", "b", stripes(16, 16, [1]))
    (root / "train_img" / "b.jpg").rename(root / "train_img" / "z.jpg")
    code, out = inspect(capsys, root)
    assert code == 1 and f"{root / 'train_label' / 'b.png'} has no image" in out and "no training setting fits" in out
    root = tmp_path / "sizes"
    write_pair(root / "train_label", root / "train_img", "a", stripes(16, 16, [1]))
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(root / "train_img" / "a.jpg")
    code, out = inspect(capsys, root)
    assert code == 1 and "sizes disagree" in out


def test_official_layouts_use_their_class_counts(tmp_path, capsys):
    # ADE20K: files store class + 1, 0 is don't-care
    root = tmp_path / "ade"
    ids = stripes(16, 32, [0, 1, 150])
    write_pair(root / "annotations" / "training", root / "images" / "training", "ADE_train_00000001", ids)
    code, out = inspect(capsys, root)
    assert code == 0, out
    options = " ".join(suggested(out))
    assert "--dataset_mode ade20k --label_nc 150 --contain_dontcare_label" in options and "--dataroot" in options
    assert "model ids 0..149" in out
    # COCO-Stuff: an id beyond its 182 classes fits no coco setting, and the report says what to do
    root = tmp_path / "coco"
    write_pair(root / "train_label", root / "train_img", "x", stripes(16, 16, [3, 200]))
    code, out = inspect(capsys, root, "--dataset_mode", "coco")
    assert code == 1 and "class id 200 is outside the coco layout's 182 classes" in out
    assert "--dataset_mode custom" in out


def test_label_and_image_folders_given_apart(tmp_path, capsys):
    write_pair(tmp_path / "labels", tmp_path / "photos", "one", stripes(16, 16, [2, 5]))
    write_pair(tmp_path / "labels", tmp_path / "photos", "two", stripes(24, 24, [2]))
    Image.fromarray(np.full((24, 24, 3), 9, np.uint8)).save(tmp_path / "photos" / "two.jpg")
    code, out = inspect(capsys, "--label_dir", tmp_path / "labels", "--image_dir", tmp_path / "photos")
    assert code == 0, out
    options = " ".join(suggested(out))
    assert "--label_nc 6" in options and "--preprocess_mode resize_and_crop" in options
    assert "--contain_dontcare_label" not in options


# -- spadegan dataset convert ----------------------------------------------------------------------

SKY, GRASS, ROAD = (70, 130, 180), (0, 200, 0), (128, 64, 128)


def write_masks(root: Path, masks: dict[str, np.ndarray]) -> tuple[Path, Path]:
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    for name, rgb in masks.items():
        Image.fromarray(rgb.astype(np.uint8)).save(root / "masks" / f"{name}.png")
        Image.fromarray(np.full(rgb.shape, 90, np.uint8)).save(root / "photos" / f"{name}.jpg")
    return root / "masks", root / "photos"


def colour_mask(height: int, width: int, colours: list[tuple[int, int, int]]) -> np.ndarray:
    rgb = np.zeros((height, width, 3), np.int64)
    for i, c in enumerate(colours):
        rgb[i * height // len(colours):(i + 1) * height // len(colours)] = c
    return rgb


def convert(capsys, *args) -> tuple[int | str, str]:
    try:
        code = main(["dataset", "convert", *map(str, args), "--no_progress"])
    except SystemExit as exit:
        return str(exit), capsys.readouterr().out
    return code, capsys.readouterr().out


def test_colour_masks_become_a_data_set_that_inspects_and_loads(tmp_path, capsys):
    masks, photos = write_masks(tmp_path, {"a": colour_mask(16, 16, [SKY, GRASS]),
                                           "b": colour_mask(16, 16, [SKY, ROAD, GRASS])})
    for name, text in {"tool.txt": "# r g b name\n70 130 180 sky\n0 200 0 grass\n128 64 128 road\n",
                       "labelmap.txt": "sky:70,130,180::\ngrass:0,200,0::\nroad:128,64,128::\n",
                       "classes.json": '{"sky": "#4682b4", "grass": [0, 200, 0], "road": "128,64,128"}'}.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / f"out_{name}"
        code, printed = convert(capsys, "--masks", masks, "--images", photos, "--palette", tmp_path / name,
                                "--out", out)
        assert code == 0 and "wrote 2 pairs" in printed, printed
        ids = np.array(Image.open(out / "train_label" / "b.png"))
        assert ids.dtype == np.uint8 and sorted(np.unique(ids)) == [0, 1, 2]
        assert (ids[:5] == 0).all() and (ids[-5:] == 1).all()  # sky on top, grass at the bottom
        from spadegan.palettes import read_palette_file
        palette = read_palette_file(out / "palette.json")
        assert palette.names == ("sky", "grass", "road") and tuple(palette.colors[2]) == ROAD
    code, printed = inspect(capsys, tmp_path / "out_tool.txt")
    assert code == 0 and "--label_nc 3" in printed


def test_a_colour_not_in_the_palette_is_named_and_nothing_is_written(tmp_path, capsys):
    mask = colour_mask(16, 16, [SKY, GRASS])
    mask[3, 3] = (1, 2, 3)
    masks, photos = write_masks(tmp_path, {"a": mask})
    (tmp_path / "p.txt").write_text("70 130 180 sky\n0 200 0 grass\n")
    message, _ = convert(capsys, "--masks", masks, "--images", photos, "--palette", tmp_path / "p.txt",
                         "--out", tmp_path / "out")
    assert f"{masks / 'a.png'}: 1 colour(s) not in the palette" in message and "(1, 2, 3) (1 pixels)" in message
    assert "nothing was written" in message and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left behind


def test_anti_aliased_edges_are_reported_and_mapped_only_within_the_distance(tmp_path, capsys):
    mask = colour_mask(16, 16, [SKY, GRASS])
    mask[8] = (35, 165, 90)  # a blended row between sky and grass, as anti-aliasing draws it
    masks, photos = write_masks(tmp_path, {"a": mask})
    (tmp_path / "p.txt").write_text("70 130 180 sky\n0 200 0 grass\n")
    message, _ = convert(capsys, "--masks", masks, "--images", photos, "--palette", tmp_path / "p.txt",
                         "--out", tmp_path / "out")
    assert "lie on borders between classes, as anti-aliased edges do" in message and "--max_distance" in message
    message, _ = convert(capsys, "--masks", masks, "--images", photos, "--palette", tmp_path / "p.txt",
                         "--out", tmp_path / "out", "--max_distance", 20)
    assert "within --max_distance 20" in message  # the blend is ~106 from either colour: no guessing
    code, printed = convert(capsys, "--masks", masks, "--images", photos, "--palette", tmp_path / "p.txt",
                            "--out", tmp_path / "out", "--max_distance", 120)
    assert code == 0 and "16 pixels mapped to the nearest colour" in printed


def test_palette_files_that_cannot_be_read_are_errors(tmp_path):
    from spadegan.palettes import read_palette_file

    cases = {"dup.txt": ("1 2 3 a\n1 2 3 b\n", "'a' and 'b' have the same colour"),
             "bad.txt": ("1 2 sky\n", "line 1"),
             "range.json": ('[{"name": "x", "color": [0, 0, 300]}]', "entry 0: colour"),
             "ids.json": ('[{"id": 0, "name": "x", "color": [1, 1, 1]}, {"id": 2, "name": "y", "color": [2, 2, 2]}]',
                          "the ids must be 0..1")}
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        try:
            read_palette_file(tmp_path / name)
        except ValueError as error:
            assert expected in str(error) and name in str(error), (name, error)
        else:
            raise AssertionError(f"{name} was accepted")


def test_converted_masks_train_without_label_nc_and_the_model_knows_their_names(tmp_path, capsys):
    from spadegan.checkpoint import load_checkpoint, resolve_checkpoint
    from spadegan.inference import Synthesizer

    rng = np.random.default_rng(0)
    masks = {f"{i:02d}": colour_mask(64, 64, [SKY, ROAD, GRASS][: 2 + i % 2]) for i in range(4)}
    for rgb in masks.values():
        rgb[:4, :4] = (0, 0, 0)  # unlabeled corner
    masks_dir, photos = write_masks(tmp_path, masks)
    for path in photos.iterdir():
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    (tmp_path / "classes.json").write_text('[{"name": "sky", "color": [70, 130, 180]}, '
                                           '{"name": "road", "color": [128, 64, 128]}, '
                                           '{"name": "grass", "color": [0, 200, 0]}]')
    data = tmp_path / "data"
    code, _ = convert(capsys, "--masks", masks_dir, "--images", photos, "--palette", tmp_path / "classes.json",
                      "--out", data, "--dontcare_color", "0,0,0")
    assert code == 0
    assert main(["train", "--name", "mine", "--dataset_mode", "custom", "--label_dir", str(data / "train_label"),
                 "--image_dir", str(data / "train_img"), "--no_instance", "--preprocess_mode", "fixed",
                 "--load_size", "64", "--crop_size", "64", "--ngf", "4", "--spade_hidden", "8", "--ndf", "8",
                 "--n_layers_D", "2", "--no_vgg_loss", "--batchSize", "2", "--max_steps", "2", "--niter", "1",
                 "--no_tensorboard", "--no_progress", "--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"--label_nc 3 (from the 3 classes of {data / 'palette.json'})" in err
    assert "--contain_dontcare_label" in err
    checkpoint = load_checkpoint(resolve_checkpoint(tmp_path / "mine"), with_training_state=False)
    assert checkpoint.networks.config.semantics.label_nc == 3 and checkpoint.networks.config.semantics.contain_dontcare_label
    synthesizer = Synthesizer.from_checkpoint(tmp_path / "mine", device="cpu")
    assert synthesizer.palette.names == ("sky", "road", "grass") and synthesizer.palette.name == "data"
    assert tuple(synthesizer.palette.colors[1]) == ROAD
    # a colour map in the data set's own colours is read back as its ids
    ids = synthesizer.layout(Image.fromarray(masks["00"].astype(np.uint8))).labels[0, 0]
    assert int(ids[10, 10]) == 0 and int(ids[60, 10]) == 1 and int(ids[0, 0]) == 3  # 3: don't-care
    # an inference export keeps the palette
    assert main(["export", str(tmp_path / "mine"), "--inference", str(tmp_path / "inf")]) == 0
    assert Synthesizer.from_checkpoint(tmp_path / "inf", device="cpu").palette.names == ("sky", "road", "grass")
    # and the web demo's palette lists them
    from serve_helpers import TestClient
    from spadegan.serve import create_app

    with TestClient(create_app(synthesizer, warm_up=False)) as client:
        classes = client.get("/api/classes").json()
    shown = {entry["name"]: entry["color"] for group in classes["groups"] for entry in group["classes"]}
    assert shown["road"] == "#804080" and {"sky", "grass"} <= set(shown)


def test_a_cityscapes_root_is_detected_and_its_instance_maps_counted(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    for name in ("aachen_000000_000019", "aachen_000001_000019"):
        labels, images = root / "gtFine" / "train" / "aachen", root / "leftImg8bit" / "train" / "aachen"
        ids = stripes(16, 32, [7, 26])  # road, car
        write_pair(labels, images, f"{name}_gtFine_labelIds", ids, image_suffix=".png")
        (images / f"{name}_gtFine_labelIds.png").rename(images / f"{name}_leftImg8bit.png")
        Image.fromarray(ids.astype(np.uint8)).save(labels / f"{name}_gtFine_instanceIds.png")
    code, out = inspect(capsys, root)
    assert code == 0, out
    assert "2 pairs (cityscapes layout)" in out and "instance maps: 2 of 2 pairs" in out and "car" in out
    options = " ".join(suggested(out))
    assert "--dataset_mode cityscapes --label_nc 35" in options and "--no_instance" not in options
    assert "--aspect_ratio 2" in options and f"--dataroot {root}" in options
