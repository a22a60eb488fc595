"""CLADE (``--norm_mode clade``): the layer is norm(x)·γ[c] + β[c] with the official CLADE names and
channel layout, the generator trains and synthesizes with it, and its config survives a save."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spadegan.checkpoint import load_checkpoint, save_checkpoint
from spadegan.config import DiscriminatorConfig, GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.inference import Synthesizer
from spadegan.models import build_networks
from spadegan.nn.spade import CLADE, ClassAffine
from spadegan.semantics import build_semantics

from conftest import FLOAT64_REL, check_error, max_abs_diff, well_conditioned_

pytestmark = pytest.mark.numeric


@torch.no_grad()
def test_clade_is_a_per_class_scale_and_shift_of_the_normalized_input():
    """Eq. 1 with class-only γ, β (no "1 +": CLADE's scales start at U(0, 1)); with instance
    edges, the edge map through a 1×1 conv is one more channel. Float64: the lookup is the
    formula, to rounding of the one multiply-add per value."""
    torch.manual_seed(0)
    classes, channels = 6, 5
    for edges in (False, True):
        layer = CLADE(channels, classes, edges, param_free="instance").double()
        with torch.no_grad():
            layer.class_specified_affine.bias.normal_()
        x = torch.randn(2, channels, 16, 16, dtype=torch.float64)
        ids = torch.randint(0, classes, (2, 8, 8))
        segmap = torch.nn.functional.one_hot(ids, classes).permute(0, 3, 1, 2).double()
        edge_map = torch.randint(0, 2, (2, 1, 8, 8)).double()
        if edges:
            segmap = torch.cat([segmap, edge_map], 1)
        out = layer(x, segmap)
        assert out.shape == (2, channels + edges, 16, 16)
        up = ids.repeat_interleave(2, 1).repeat_interleave(2, 2)  # nearest 2×
        mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
        normalized = (x - mean) / torch.sqrt(var + 1e-5)
        affine = layer.class_specified_affine
        expected = normalized * affine.weight[up].permute(0, 3, 1, 2) + affine.bias[up].permute(0, 3, 1, 2)
        if edges:
            conv = layer.inst_conv
            edge_feature = conv.weight.view(()) * edge_map.repeat_interleave(2, 2).repeat_interleave(2, 3) + conv.bias
            expected = torch.cat([expected, edge_feature], 1)
        check_error(f"CLADE layer, edges {edges}", max_abs_diff(out, expected) / float(expected.abs().max()),
                    FLOAT64_REL)


@pytest.mark.parametrize("instance", [False, True])
def test_clade_generator_names_channels_and_training_step(instance):
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, instance),
                         GeneratorConfig(ngf=4, crop_size=64, norm_mode="clade"), DiscriminatorConfig(ndf=8, n_layers_D=2))
    networks = build_networks(config)
    g = networks.generator
    state = g.state_dict()
    # the official CLADE names, so its checkpoints load as SPADE's do
    assert state["head_0.norm_0.class_specified_affine.weight"].shape == (6, 64)  # 5 classes + don't-care
    assert ("up_3.norm_1.inst_conv.weight" in state) == instance
    assert not any("mlp_" in key for key in state)
    assert g.up_0.conv_0.weight_orig.shape[1] == 64 + instance  # the edge feature is one more input channel
    labels = torch.randint(0, 5, (2, 1, 64, 64))
    semantics = build_semantics(labels, 5, True, labels if instance else None, instance)
    out = g(semantics)
    out.mean().backward()
    grad = g.head_0.norm_0.class_specified_affine.weight.grad
    assert out.shape == (2, 3, 64, 64) and grad is not None and bool(grad.abs().sum() > 0)
    assert g.fast_spade  # the flag is on, and the generator takes CLADE's own path whatever it says


def test_clade_checkpoint_and_synthesizer(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(SemanticsConfig(5, True, False), GeneratorConfig(ngf=4, crop_size=64, norm_mode="clade"))
    networks = build_networks(config)
    generator = well_conditioned_(networks.generator).eval()  # activations of order one: float32 rounds at ~1e-7
    with torch.no_grad():
        for m in generator.modules():
            if isinstance(m, ClassAffine):  # per-class scales near 1 and shifts of order 0.1
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            if isinstance(m, nn.BatchNorm2d):  # statistics of the maps themselves, as after training
                m.reset_running_stats()
                m.momentum = None
        generator.train()(build_semantics(torch.randint(0, 5, (4, 1, 64, 64)), 5, True, None, False))
    generator.eval()
    folder = save_checkpoint(tmp_path / "clade", networks)
    loaded = load_checkpoint(folder)
    assert loaded.networks.config.generator.norm_mode == "clade"
    labels = torch.randint(0, 5, (2, 64, 64))
    semantics = build_semantics(labels[:, None], 5, True, None, False)
    with torch.no_grad():
        expected = generator.double()(semantics.double())
    assert float((expected.abs() > 0.99).float().mean()) < 0.5  # not a saturated picture
    # the user path (spectral norm folded, channels-last) is the same function: in float64 to rounding
    loaded.networks.generator.double()
    synthesizer = Synthesizer(loaded.networks, device="cpu", fold=True)
    with torch.no_grad():  # the synthesizer's own semantic map, into its prepared generator
        out = synthesizer.networks.generator(synthesizer.semantics(labels[:, None]).double())
    check_error("CLADE through the synthesizer, float64", max_abs_diff(out, expected) / float(expected.abs().max()),
                FLOAT64_REL)
    image = Synthesizer.from_checkpoint(folder, device="cpu")(labels[0].numpy())[0]  # and in float32, as users run it
    assert image.size == (64, 64)
