"""ONNX export of the generator, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spadegan.checkpoint import save_official
from spadegan.cli import main
from spadegan.config import EncoderConfig, GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.export import export_onnx, inference_copy
from spadegan.models import build_networks
from spadegan.semantics import build_semantics

from conftest import FLOAT32_REL, FLOAT64_REL, check_error, max_abs_diff, well_conditioned_

ort = pytest.importorskip("onnxruntime")


def _semantics(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (batch, 1, 16, 16), generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return build_semantics(labels, 5, True, labels, True)


@pytest.mark.numeric
@pytest.mark.parametrize("z_dim, modulation", [(None, None), (8, None), (8, "z_modulation"), (8, "class_modulation")])
def test_onnx_matches_pytorch(tmp_path, z_dim, modulation):
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, True), GeneratorConfig(ngf=4, crop_size=64, z_dim=z_dim, spade_hidden=16,
                                                                         **({modulation: True} if modulation else {})))
    generator = well_conditioned_(build_networks(config, init_type=None).generator)
    with torch.no_grad():  # a train-mode pass, so BatchNorm statistics and spectral vectors are not initial
        generator.train()(_semantics(2, 0), None if z_dim is None else torch.randn(2, z_dim))
    generator.eval()
    path = export_onnx(generator, tmp_path / "g.onnx", _semantics(1, 1), None if z_dim is None else torch.zeros(1, z_dim))
    session = ort.InferenceSession(str(path))
    for batch in (1, 3):  # dynamic batch
        semantics = _semantics(batch, 2 + batch)
        feeds = {"semantics": semantics.numpy()}
        z = None
        if z_dim is not None:
            z = torch.randn(batch, z_dim)
            feeds["z"] = z.numpy()
        onnx_out = session.run(None, feeds)[0]
        with torch.no_grad():
            torch_out = generator(semantics, z).numpy()  # the default (fast) path, spectral norm unfolded
        check_error(f"batch {batch}", float(np.abs(onnx_out - torch_out).max() / np.abs(torch_out).max()), FLOAT32_REL)


@pytest.mark.numeric
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_folding_spectral_norm_keeps_the_function(dtype):
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, True), GeneratorConfig(ngf=4, crop_size=64, spade_hidden=16))
    generator = well_conditioned_(build_networks(config, init_type=None).generator).to(dtype)
    with torch.no_grad():
        generator.train()(_semantics(2, 0).to(dtype))
    generator.eval()
    folded = inference_copy(generator)
    assert not any(hasattr(m, "weight_orig") for m in folded.modules())
    with torch.no_grad():
        expected = generator(_semantics(2, 0).to(dtype))
        error = max_abs_diff(folded(_semantics(2, 0).to(dtype)), expected) / float(expected.abs().max())
    check_error("folded vs unfolded", error, FLOAT64_REL if dtype == torch.float64 else FLOAT32_REL)


def test_cli_exports_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, True), GeneratorConfig(ngf=4, crop_size=64, z_dim=8, spade_hidden=16),
                         None, EncoderConfig(ndf=2, num_layers=5, latent_dim=8))
    save_official(tmp_path / "official", build_networks(config))
    assert main(["export", str(tmp_path / "official"), "--onnx", str(tmp_path / "g.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "g.onnx"))
    assert [i.name for i in session.get_inputs()] == ["semantics", "z"]
    with pytest.raises(SystemExit, match="--official FOLDER, --inference FOLDER and/or --onnx FILE"):
        main(["export", str(tmp_path / "official")])
