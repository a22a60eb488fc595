"""Networks on tiny configs: norm specs, shapes, the uniform-map property (Fig. 3), VAE sampling."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spadegan.config import DiscriminatorConfig, EncoderConfig, GeneratorConfig, ModelConfig, SemanticsConfig
from spadegan.models import build_networks
from spadegan.nn.discriminator import MultiscaleDiscriminator
from spadegan.nn.encoder import ConvEncoder, reparameterize
from spadegan.nn.generator import Pix2PixHDGenerator, SPADEGenerator, latent_size
from spadegan.nn.norm import NormSpec, add_norm, convert_sync_batchnorm, parse_norm_spec
from spadegan.semantics import one_hot

from conftest import FLOAT64_REL, U_FLOAT64, check_error, max_abs_diff


@pytest.mark.parametrize("text, expected", [
    ("spectralspadesyncbatch3x3", NormSpec(True, True, "syncbatch", 3)),
    ("spadeinstance5x5", NormSpec(False, True, "instance", 5)),
    ("spadebatch3x3", NormSpec(False, True, "batch", 3)),
    ("spectralinstance", NormSpec(True, False, "instance")),
    ("instance", NormSpec(False, False, "instance")),
    ("sync_batch", NormSpec(False, False, "syncbatch")),
    ("spectral", NormSpec(True, False, "none")),
    ("none", NormSpec(False, False, "none")),
])
def test_parse_norm_spec(text, expected):
    spec = parse_norm_spec(text)
    assert spec == expected
    assert parse_norm_spec(str(spec)) == spec


@pytest.mark.parametrize("text", ["spadegroup3x3", "spectralspadeinstance3x5", "spadeinstance4x4", "layer", "spade"])
def test_bad_norm_specs_are_refused(text):
    with pytest.raises(ValueError, match=text):
        parse_norm_spec(text)


@pytest.mark.parametrize("text", ["instance", "batch", "none", "spectralinstance", "spectralsync_batch"])
def test_plain_norms_build_without_the_official_crash(text):
    """Non-spectral specs crash the official get_nonspade_norm_layer (its issue #58)."""
    layer = add_norm(nn.Conv2d(3, 4, 3), parse_norm_spec(text))
    assert layer(torch.randn(2, 3, 8, 8)).shape == (2, 4, 6, 6)
    keys = set(layer.state_dict())
    assert ("0.weight_orig" in keys or "weight_orig" in keys) == text.startswith("spectral")


def test_sync_batchnorm_is_plain_batchnorm_without_a_process_group():
    g = SPADEGenerator(5, ngf=2, crop_size=32, norm="spectralspadesyncbatch3x3")
    assert convert_sync_batchnorm(g) is g
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in g.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


def _seg(n=2, classes=5, h=32, w=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return one_hot(torch.randint(0, classes, (n, 1, h, w), generator=generator), classes, False)


@pytest.mark.parametrize("up, crop, aspect", [("normal", 64, 1.0), ("more", 128, 1.0), ("most", 256, 1.0), ("normal", 128, 2.0)])
def test_spade_generator_shapes(up, crop, aspect):
    h, w = latent_size(crop, aspect, up)
    g = SPADEGenerator(5, ngf=2, crop_size=crop, aspect_ratio=aspect, num_upsampling_layers=up,
                       norm="spadeinstance3x3", spade_hidden=8)
    seg = _seg(h=round(crop / aspect), w=crop)
    out = g(seg)
    assert out.shape == (2, 3, round(crop / aspect), crop)
    assert out.abs().max() <= 1
    assert hasattr(g, "up_4") == (up == "most")


def test_random_style_sampling_works_on_cpu_and_is_seeded():
    """use_vae without z fails on CPU in the official code (get_device() is -1)."""
    g = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=8, norm="spectralspadebatch3x3", spade_hidden=8).eval()
    seg = _seg()
    a = g(seg, generator=torch.Generator().manual_seed(3))
    b = g(seg, generator=torch.Generator().manual_seed(3))
    c = g(seg, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_spade_block_learned_shortcut_only_when_widths_differ():
    g = SPADEGenerator(5, ngf=2, crop_size=32, norm="spadeinstance3x3", spade_hidden=8)
    assert not g.head_0.learned_shortcut and not hasattr(g.head_0, "conv_s")
    assert g.up_0.learned_shortcut and g.up_0.conv_s.bias is None


@pytest.mark.numeric
def test_uniform_label_maps_fig3():
    """Fig. 3: on a label map of one class, pix2pixHD's first instance norm turns the input into
    zeros whatever the class, so its output is the same for every class; SPADE's depends on it.

    The first norm leaves a rounding residue (the mean of a constant map is off by a few ulps,
    times 1/sqrt(eps) ≈ 316), and each later instance norm amplifies such residues ~300× again,
    so end-to-end outputs differ by rounding noise alone. The test therefore checks the paper's
    argument in two exact steps, in float64: (1) the first normalized activation is zero up to
    that residue for every class, though the conv before it differs by class; (2) with it set to
    exact zero, the outputs for all classes are bit-identical: the label map has no other way in.
    """
    torch.manual_seed(0)
    classes = 6
    spade = build_networks(ModelConfig(SemanticsConfig(classes, False, False),
                                       GeneratorConfig(ngf=4, crop_size=64, norm_G="spectralspadeinstance3x3",
                                                       spade_hidden=16))).generator.eval()
    p2p = build_networks(ModelConfig(SemanticsConfig(classes, False, False),
                                     GeneratorConfig(netG="pix2pixhd", ngf=4, norm_G="instance",
                                                     resnet_n_downsample=2, resnet_n_blocks=2))).generator.eval()
    residues, conv_outputs = [], []

    def zero_after_first_norm(module, inputs, output):
        residues.append(float(output.abs().max()))
        return torch.zeros_like(output)

    first_conv, first_norm = p2p.model[1][0], p2p.model[1][1]
    first_conv.register_forward_hook(lambda m, i, o: conv_outputs.append(o[0, :, 0, 0].clone()))
    first_norm.register_forward_hook(zero_after_first_norm)
    with torch.no_grad():
        # The official init (xavier, gain 0.02) makes every output nearly 0; use a visible scale.
        for net in (spade, p2p):
            for p in net.parameters():
                nn.init.normal_(p, 0.0, 0.2)
            net.double()
        maps = [one_hot(torch.full((1, 1, 64, 64), c), classes, False).double() for c in range(classes)]
        p2p_out = torch.cat([p2p(m) for m in maps])
        spade_out = torch.cat([spade(m) for m in maps])
    # The worst case of the residue: a mean of N equal values c summed in any order is off by at
    # most N·u·|c|, the variance is its square, and the norm divides by sqrt(eps).
    pixels = maps[0][0, 0].numel()
    bound = pixels * U_FLOAT64 * max(float(c.abs().max()) for c in conv_outputs) / first_norm.eps ** 0.5
    check_error("first norm's residue", max(residues), bound)
    assert min(float((c - conv_outputs[0]).abs().max()) for c in conv_outputs[1:]) > 0.01
    assert p2p_out.abs().max() > 0.05  # a real image, not zeros
    for c in range(1, classes):
        assert torch.equal(p2p_out[c], p2p_out[0]), f"pix2pixHD output differs for class {c}"
    spade_spread = float((spade_out - spade_out[:1]).abs().amax(dim=(1, 2, 3))[1:].min())
    assert spade_spread > 0.1, spade_spread


def test_pix2pixhd_generator_shapes_and_keys():
    g = Pix2PixHDGenerator(7, ngf=4, n_downsample=2, n_blocks=1, norm="instance")
    assert g(torch.rand(1, 7, 32, 48)).shape == (1, 3, 32, 48)
    keys = set(g.state_dict())
    assert "model.1.0.weight" in keys and "model.1.0.bias" not in keys  # conv bias dropped before a norm


def test_discriminator_scales_and_features():
    d = MultiscaleDiscriminator(8, ndf=4, n_layers=3, num_D=3, norm="spectralinstance")
    out = d(torch.randn(2, 8, 64, 64))
    assert len(out) == 3 and all(len(scale) == 4 for scale in out)
    assert out[0][-1].shape[1] == 1
    assert out[1][0].shape[-1] < out[0][0].shape[-1]
    d.return_features = False
    assert all(len(scale) == 1 for scale in d(torch.randn(1, 8, 64, 64)))


@pytest.mark.numeric
@pytest.mark.parametrize("norm", ["spectralinstance", "spectralbatch"])
def test_discriminator_on_pairs_is_the_discriminator_on_the_concatenation(norm):
    """Semantic maps and images given apart (how training calls D) compute what the official
    concatenated input does: outputs and every gradient, in float64 to rounding; the semantics
    include an edge channel as with instance maps."""
    import copy

    torch.manual_seed(0)
    semantics = torch.cat([one_hot(torch.randint(0, 6, (2, 1, 64, 64)), 5, True),
                           (torch.rand(2, 1, 64, 64) > 0.9).float()], dim=1).double()
    images = torch.randn(6, 3, 64, 64, dtype=torch.float64)      # three images per map
    concatenated = MultiscaleDiscriminator(10, ndf=4, n_layers=4, num_D=3, norm=norm).double()
    paired = copy.deepcopy(concatenated)                      # the same spectral-norm state
    weights = None
    results = []
    for d, call in ((concatenated, lambda x: d(torch.cat([semantics.repeat(3, 1, 1, 1), x], dim=1))),
                    (paired, lambda x: d(semantics, x))):
        x = images.clone().requires_grad_()
        out = call(x)
        if weights is None:
            weights = [[torch.randn_like(t) for t in scale] for scale in out]
        sum((t * w).sum() for scale, ws in zip(out, weights) for t, w in zip(scale, ws)).backward()
        results.append(([t.detach() for scale in out for t in scale], x.grad,
                        {name: p.grad for name, p in d.named_parameters()}))
    (out_a, grad_a, params_a), (out_b, grad_b, params_b) = results
    assert len(out_a) == len(out_b) == 15
    for i, (a, b) in enumerate(zip(out_a + [grad_a], out_b + [grad_b])):
        check_error(f"output {i}" if i < 15 else "input gradient", max_abs_diff(a, b) / float(a.abs().max()), FLOAT64_REL)
    assert params_a.keys() == params_b.keys()
    scale = max(float(g.abs().max()) for g in params_a.values())
    check_error("parameter gradients", max(max_abs_diff(params_a[n], params_b[n]) for n in params_a) / scale, FLOAT64_REL)
    with pytest.raises(ValueError, match="5 images cannot be paired with 2 semantic maps"):
        paired(semantics, images[:5])


@pytest.mark.parametrize("layers, size", [(5, 64), (6, 256)])
def test_encoder_and_reparameterization(layers, size):
    e = ConvEncoder(ndf=2, num_layers=layers, latent_dim=8, norm="spectralinstance")
    mu, logvar = e(torch.rand(2, 3, size, size) * 2 - 1)
    assert mu.shape == logvar.shape == (2, 8)
    mu, logvar = torch.full((4000, 3), 2.0), torch.full((4000, 3), 2 * torch.log(torch.tensor(0.5)))
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert abs(float(z.mean()) - 2.0) < 0.03 and abs(float(z.std()) - 0.5) < 0.03


def test_gradients_reach_every_generator_parameter():
    g = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=4, norm="spectralspadebatch3x3", spade_hidden=8)
    g(_seg(), torch.randn(2, 4)).mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_build_networks_with_everything():
    config = ModelConfig(SemanticsConfig(4, True, True),
                         GeneratorConfig(ngf=2, crop_size=64, z_dim=8, spade_hidden=8),
                         DiscriminatorConfig(ndf=4, num_D=2, n_layers_D=2),
                         EncoderConfig(ndf=2, num_layers=5, latent_dim=8))
    nets = build_networks(config)
    assert ModelConfig.from_dict(config.to_dict()) == config
    seg = one_hot(torch.randint(0, 5, (1, 1, 64, 64)), 4, True)
    seg = torch.cat([seg, torch.zeros(1, 1, 64, 64)], 1)
    mu, logvar = nets.encoder(torch.rand(1, 3, 64, 64))
    image = nets.generator(seg, reparameterize(mu, logvar))
    assert image.shape == (1, 3, 64, 64)
    assert nets.discriminator(torch.cat([seg, image], 1))[0][-1].shape[1] == 1


@pytest.mark.numeric
def test_z_modulation_starts_as_the_identity_and_then_carries_the_code():
    """--z_modulation adds zero-initialised per-channel x·(1 + a(z)) + b(z) before every block
    and the last layer: at the start the generator is exactly the one without them (so a trained
    model can be continued with them); once trained, z reaches the picture through them, in the
    fast path and the reference path alike (float64: the two compute the same function)."""
    torch.manual_seed(0)
    plain = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=8, norm="spectralspadebatch3x3", spade_hidden=8)
    modulated = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=8, norm="spectralspadebatch3x3", spade_hidden=8,
                               z_modulation=True)
    assert len(modulated.z_modulation) == 8  # 7 blocks + the last layer
    missing, unexpected = modulated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("z_modulation.") for key in missing)
    plain.eval().double()
    modulated.eval().double()
    seg, z = _seg().double(), torch.randn(2, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(plain(seg, z), modulated(seg, z))
        for layer in modulated.z_modulation:
            torch.nn.init.normal_(layer.weight, std=0.1)
        fast = modulated(seg, z)
        modulated.fast_spade = False
        reference = modulated(seg, z)
    assert not torch.allclose(fast, plain(seg, z), atol=1e-3)
    check_error("z modulation: fast vs reference path, float64", max_abs_diff(fast, reference), FLOAT64_REL)


@pytest.mark.numeric
def test_class_modulation_gives_each_class_its_own_scale_and_shift():
    """--class_modulation: x·(1 + a(z, c)) + b(z, c) with c each pixel's class, as written out per
    pixel in float64; zero at the start (the generator without it, exactly); in the generator it
    reaches the picture in the fast and the reference path alike."""
    from spadegan.nn.class_modulation import ClassModulation

    torch.manual_seed(0)
    layer = ClassModulation(z_dim=8, label_channels=5, channels=3).double().requires_grad_(False)
    x, z = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    seg = _seg(h=8, w=8).double()  # half the features' size: resized nearest, as SPADE does
    assert torch.equal(layer(x, seg, z), x)
    torch.nn.init.normal_(layer.rows.weight, std=0.3)
    torch.nn.init.normal_(layer.rows.bias, std=0.3)
    rows = layer.rows(z).view(2, 5, 6)
    classes = seg.argmax(1).repeat_interleave(2, 1).repeat_interleave(2, 2)  # N×16×16
    expected = torch.empty_like(x)
    for n in range(2):
        for i in range(16):
            for j in range(16):
                scale, shift = rows[n, classes[n, i, j], :3], rows[n, classes[n, i, j], 3:]
                expected[n, :, i, j] = x[n, :, i, j] * (1 + scale) + shift
    check_error("class modulation, float64", max_abs_diff(layer(x, seg, z), expected), FLOAT64_REL)

    plain = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=8, norm="spectralspadebatch3x3", spade_hidden=8)
    modulated = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=8, norm="spectralspadebatch3x3", spade_hidden=8,
                               class_modulation=True)
    missing, unexpected = modulated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("class_modulation.") for key in missing)
    plain.eval().double()
    modulated.eval().double()
    seg = _seg().double()
    with torch.no_grad():
        assert torch.equal(plain(seg, z), modulated(seg, z))
        torch.nn.init.normal_(modulated.class_modulation.rows.weight, std=0.3)
        fast = modulated(seg, z)
        modulated.fast_spade = False
        reference = modulated(seg, z)
    assert not torch.allclose(fast, plain(seg, z), atol=1e-3)
    check_error("class modulation: fast vs reference path, float64", max_abs_diff(fast, reference), FLOAT64_REL)


def test_z_modulation_needs_a_code():
    with pytest.raises(ValueError, match="z_modulation needs a latent code"):
        SPADEGenerator(5, ngf=2, crop_size=32, norm="spadeinstance3x3", spade_hidden=8, z_modulation=True)
    with pytest.raises(ValueError, match="class_modulation needs a latent code"):
        SPADEGenerator(5, ngf=2, crop_size=32, norm="spadeinstance3x3", spade_hidden=8, class_modulation=True)


@pytest.mark.numeric
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_bilinear_upsampling_is_one_function_on_both_paths(train):
    """--upsample bilinear upsamples the features before each up block instead of inside it:
    the same parameters as nearest (a nearest model continues with it), another function of
    them, which the fast and the reference path compute alike (float64)."""
    torch.manual_seed(0)
    nearest = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=8, norm="spectralspadebatch3x3", spade_hidden=8)
    bilinear = SPADEGenerator(5, ngf=2, crop_size=32, z_dim=8, norm="spectralspadebatch3x3", spade_hidden=8,
                              upsample="bilinear")
    bilinear.load_state_dict(nearest.state_dict())
    seg, z = _seg().double(), torch.randn(2, 8, dtype=torch.float64)
    outputs = {}
    for name, generator in (("nearest", nearest), ("bilinear", bilinear)):
        generator.double().train(train)
        for fast in (True, False):
            # A copy each: a train-mode forward moves the spectral-norm vectors and BN statistics.
            run = copy.deepcopy(generator)
            run.fast_spade = fast
            with torch.no_grad():
                outputs[name, fast] = run(seg, z)
    check_error("bilinear: fast vs reference path, float64",
                max_abs_diff(outputs["bilinear", True], outputs["bilinear", False]), FLOAT64_REL)
    assert max_abs_diff(outputs["bilinear", False], outputs["nearest", False]) > 1e-3


def test_upsample_mode_is_checked_and_travels_in_opt_txt(tmp_path):
    from spadegan.config import model_config_from_options, options_from_model_config

    with pytest.raises(ValueError, match="upsample 'bicubic'"):
        SPADEGenerator(5, ngf=2, crop_size=32, norm="spadeinstance3x3", spade_hidden=8, upsample="bicubic")
    config = ModelConfig(SemanticsConfig(5, False, False), GeneratorConfig(ngf=2, crop_size=32, upsample="bilinear"))
    options = options_from_model_config(config)
    assert options["upsample"] == "bilinear"
    assert model_config_from_options(options).generator.upsample == "bilinear"
    official = options_from_model_config(ModelConfig(SemanticsConfig(5, False, False), GeneratorConfig(ngf=2)))
    assert "upsample" not in official  # official-compatible models keep an official-looking opt.txt
    assert build_networks(config).generator.upsample == "bilinear"
