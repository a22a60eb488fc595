"""The example scripts behind the figures of docs/results.md, run on tiny models:
``paper_figures.py`` writes Figs. 3, 1 and 9 in miniature, and its uniform-map figure shows what
the paper's Fig. 3 shows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spadegan.checkpoint import Checkpoint, save_inference_checkpoint
from spadegan.cli import main as spade_main
from spadegan.config import GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.inference import Synthesizer
from spadegan.models import build_networks
from conftest import check_error, save_tiny_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_pix2pixhd(folder: Path) -> Path:
    config = ModelConfig(SemanticsConfig(182, True, False),
                         GeneratorConfig(netG="pix2pixhd", ngf=4, crop_size=64, norm_G="instance",
                                         resnet_n_blocks=1, resnet_n_downsample=2))
    networks = build_networks(config, init_type="xavier", init_gain=1.0)
    checkpoint = Checkpoint(folder=folder, meta={}, networks=networks, ema_generator=None, training_state=None)
    return save_inference_checkpoint(folder, checkpoint)


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> tuple[Path, Path]:
    """Figures in full colour and in 256 colours, from tiny models and a tiny landscapes set."""
    root = tmp_path_factory.mktemp("figures")
    assert spade_main(["landscapes", "--out", str(root / "data"), "--count", "10", "--size", "64", "--seed", "5"]) == 0
    spade, pix2pixhd = save_tiny_model(root / "spade"), save_tiny_pix2pixhd(root / "pix2pixhd")
    paper_figures = load_example("paper_figures")
    common = ["--spade", str(spade), "--pix2pixhd", str(pix2pixhd), "--labels", str(root / "data" / "train_label"),
              "--images", str(root / "data" / "train_img"), "--rows", "2", "--styles", "3", "--samples", "4"]
    paper_figures.main(common + ["--out", str(root / "full")])
    paper_figures.main(common + ["--out", str(root / "compact"), "--colors", "256"])
    return root / "full", root / "compact"


def cells(image: Image.Image, row: int, count: int, cell: int = 160, pad: int = 4, header: int = 18) -> list[np.ndarray]:
    """The cell images of one grid row, as float arrays."""
    top = header + pad + row * (cell + pad)
    return [np.asarray(image.crop((pad + c * (cell + pad), top, pad + c * (cell + pad) + cell, top + cell)),
                       dtype=np.float64) for c in range(count)]


def test_paper_figures_writes_three_figures_and_a_page(figures):
    full, compact = figures
    for folder in figures:
        figures = ["comparison.png", "multimodal.png", "styles.png", "uniform.png"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(figures + ["figures.html"])
        page = (folder / "figures.html").read_text()
        assert all(f"src='{name}'" in page for name in figures)
    # grids: 8 classes × (map, SPADE, pix2pixHD); (1 + 3 styles) × (header + 2 rows); 2 + 4 samples;
    # 5 held-out maps × (map, photo, pix2pixHD, SPADE), without a caption line
    sizes = {"uniform.png": (8, 3, 18), "styles.png": (4, 3, 18), "multimodal.png": (6, 1, 18),
             "comparison.png": (5, 4, 0)}
    for name, (columns, rows, header) in sizes.items():
        image = Image.open(full / name)
        assert image.mode == "RGB" and image.size == (columns * 164 + 4, header + rows * 164 + 4), name
        small = Image.open(compact / name)
        assert small.mode == "P" and small.size == image.size, name
        # the 256-colour copy is the same picture: quantizing moves a pixel by a few levels, and
        # most on noise-like pictures such as these tiny models'; 8 on average is another picture
        error = np.abs(np.asarray(small.convert("RGB"), np.float64) - np.asarray(image, np.float64)).mean()
        assert error < 8, (name, error)


def test_uniform_maps_separate_spade_from_pix2pixhd(figures):
    """Fig. 3: SPADE's pictures of one-class maps differ by class (pix2pixHD's do not, see the
    next test)."""
    uniform = Image.open(figures[0] / "uniform.png").convert("RGB")
    spade_cells = cells(uniform, 1, 8)
    assert min(float(np.abs(a - b).mean()) for i, a in enumerate(spade_cells) for b in spade_cells[i + 1:]) > 2


@pytest.mark.numeric
def test_pix2pixhd_first_norm_erases_one_class_maps(tmp_path):
    """pix2pixHD's first instance norm turns every one-class map into zeros (what its later layers
    paint from there is rounding noise amplified by the next instance norms, not the class)."""
    synthesizer = Synthesizer.from_checkpoint(save_tiny_pix2pixhd(tmp_path / "pix2pixhd"), device="cpu")
    first_norm = next(m for m in synthesizer.networks.generator.modules() if isinstance(m, torch.nn.InstanceNorm2d))
    outputs = []
    first_norm.register_forward_hook(lambda module, inputs, output: outputs.append(output.abs().max().item()))
    for class_id in (149, 154, 156):                          # sky-other, sea, snow
        synthesizer(torch.full((64, 64), class_id, dtype=torch.long))
    layout = torch.full((64, 64), 149, dtype=torch.long)
    layout[32:] = 154
    synthesizer(layout)
    # one-class maps: zeros up to the float32 rounding of a constant map's mean (a few u of it),
    # amplified by 1/sqrt(eps) ≈ 316: orders of magnitude below 1e-3
    check_error("first norm on one-class maps", max(outputs[:3]), 1e-3)
    assert outputs[3] > 0.5, outputs               # a two-class map keeps its layout
