"""Losses against values recorded from the official NVlabs/SPADE implementation
(``shared/fixtures/official_spade/losses.pt``), plus error paths of the VGG loader."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from spadegan.losses import (GAN_MODES, VGGPerceptualLoss, feature_matching_loss, gan_loss, region_colour_loss,
                          thumbnail_l1_loss,
                          kl_divergence)
from spadegan.nn.vgg import (VGG_WEIGHTS_ENV, VGG19Features, VGGWeightsMissingError, load_vgg19,
                          resolve_vgg19_path)

from conftest import FLOAT32_REL, check_error, float32_rounding_bound, max_abs_diff, rounding_scale

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official_spade"
LOSSES_FILE = FIXTURES / "losses.pt"


@pytest.fixture(scope="module")
def official() -> dict:
    if not LOSSES_FILE.is_file():
        pytest.skip(f"official SPADE loss fixture not found at {LOSSES_FILE}")
    return torch.load(LOSSES_FILE, weights_only=True)


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, what: str) -> float:
    """max |actual - expected| <= FLOAT32_REL * max(|expected|): these losses are a few
    well-conditioned operations on O(1) numbers; returns the observed max diff."""
    scale = max(expected.double().abs().max().item(), 1e-12)
    return check_error(what, max_abs_diff(actual, expected) / scale, FLOAT32_REL) * scale


def recipe_state_dict() -> dict[str, torch.Tensor]:
    """The fixture's ``weights_recipe``, as a torchvision-style vgg19 state dict."""
    state: dict[str, torch.Tensor] = {}
    for i, (key, p) in enumerate(VGG19Features().state_dict().items()):
        scale = 0.05 if key.endswith("weight") else 0.01
        state[key] = scale * torch.sin(0.37 * torch.arange(p.numel(), dtype=torch.float32) + i).view(p.shape)
    # Entries a real torchvision file also has and the loader must ignore.
    state["classifier.0.weight"] = torch.zeros(4, 7)
    state["classifier.0.bias"] = torch.zeros(4)
    return state


@pytest.mark.numeric
@pytest.mark.parametrize("mode", GAN_MODES)
def test_gan_loss_matches_official(official: dict, mode: str) -> None:
    case = official[mode]
    pred = case["pred"]
    cases = {"D_real": (True, True), "D_fake": (False, True), "G": (True, False)}
    for name, (target_is_real, for_d) in cases.items():
        got = gan_loss(pred, target_is_real, for_discriminator=for_d, mode=mode)
        diff = assert_close_rel(got, case[name], f"{mode} {name}")
        print(f"{mode} {name}: max abs diff {diff:.3e}")


def test_generator_hinge_loss_must_target_real() -> None:
    with pytest.raises(ValueError, match="real"):
        gan_loss(torch.zeros(2, 1, 3, 3), target_is_real=False, for_discriminator=False, mode="hinge")


def test_unknown_gan_mode() -> None:
    with pytest.raises(ValueError, match="'wgan'.*hinge"):
        gan_loss(torch.zeros(1), True, mode="wgan")


@pytest.mark.numeric
def test_kl_divergence_matches_official(official: dict) -> None:
    case = official["kld"]
    diff = assert_close_rel(kl_divergence(case["mu"], case["logvar"]), case["value"], "KL")
    print(f"kld: max abs diff {diff:.3e}")


def test_feature_matching_by_hand() -> None:
    # Two scales; the last entry of each is the prediction and must be ignored.
    fake = [[torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]), torch.tensor([100.0])],
            [torch.tensor([3.0]), torch.tensor([-50.0])]]
    real = [[torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0])],
            [torch.tensor([1.0]), torch.tensor([0.0])]]
    # scale 0: L1 = mean(|1|,|2|) = 1.5 and mean(|-1|,|3|) = 2.0; scale 1: |2| = 2.0.
    # Each term * weight / num_D = 10 / 2 = 5: (1.5 + 2.0 + 2.0) * 5 = 27.5.
    got = feature_matching_loss(fake, real, weight=10.0)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(27.5)


def test_region_colour_term_sees_each_regions_statistics_not_where_pixels_are() -> None:
    """The region term compares each region's colour mean and standard deviation: moving pixels
    about inside their region costs nothing; a tint of one region costs its share times the
    tint's mean over channels; painting a region flat costs its share times its lost deviation."""
    torch.manual_seed(0)
    labels = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    labels[..., 6:, :] = 1                                       # region 1: the bottom quarter
    regions = torch.cat([labels == 0, labels == 1], dim=1).double()
    real = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    shuffled = real.clone()
    top = shuffled[..., :6, :].reshape(1, 3, 48)
    shuffled[..., :6, :] = top[..., torch.randperm(48)].reshape(1, 3, 6, 8)
    assert region_colour_loss(shuffled, real, regions).item() == pytest.approx(0.0, abs=1e-7)
    tinted = real.clone()
    tinted[..., 6:, :] += torch.tensor([0.3, 0.0, -0.6], dtype=torch.float64).view(1, 3, 1, 1)
    assert region_colour_loss(tinted, real, regions).item() == pytest.approx(0.25 * 0.3, rel=1e-6)
    flat = real.clone()
    flat[..., 6:, :] = real[..., 6:, :].mean(dim=(2, 3), keepdim=True)
    lost = real[..., 6:, :].reshape(3, 16).std(dim=1, unbiased=False).mean().item()
    # a flat region's deviation is sqrt(0 + 1e-8) = 1e-4, the ε that keeps its gradient finite
    assert region_colour_loss(flat, real, regions).item() == pytest.approx(0.25 * lost, abs=1e-3)
    absent = torch.cat([regions, torch.zeros(1, 1, 8, 8, dtype=torch.float64)], dim=1)
    assert region_colour_loss(tinted, real, absent).item() == pytest.approx(0.25 * 0.3, rel=1e-6)


def test_thumbnail_l1_sees_colours_not_texture() -> None:
    """Pooled by k, the L1 term is the L1 of the k×k block means: a tint counts in full, a
    checkerboard texture that averages out over each block does not; unpooled it is plain L1."""
    torch.manual_seed(0)
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2 - 1.0
    textured = real + 0.3 * checker
    tinted = real + torch.tensor([0.2, -0.1, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(thumbnail_l1_loss(textured, real, 4), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(thumbnail_l1_loss(textured, real, 1), torch.tensor(0.3))
    assert torch.allclose(thumbnail_l1_loss(tinted, real, 4), torch.tensor(0.1))
    blocks = lambda t: t.view(2, 3, 4, 4, 4, 4).mean((3, 5))  # noqa: E731
    fake = torch.rand(2, 3, 16, 16, requires_grad=True)
    assert torch.allclose(thumbnail_l1_loss(fake, real, 4), (blocks(fake) - blocks(real)).abs().mean())
    thumbnail_l1_loss(fake, real.requires_grad_(), 4).backward()
    assert fake.grad is not None and real.grad is None  # the real image is a target


def test_feature_matching_detaches_real() -> None:
    fake = [[torch.ones(3, requires_grad=True), torch.zeros(1)]]
    real = [[torch.zeros(3, requires_grad=True), torch.zeros(1)]]
    feature_matching_loss(fake, real).sum().backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None


@pytest.mark.numeric
def test_vgg_loss_matches_official(official: dict, tmp_path: Path) -> None:
    """Our VGG loss in float64 is the official function: the recorded float32 value is within
    float32 rounding of it. The loss is a small difference of much larger features, so its
    rounding is relative to the magnitudes the feature sums went through, not to the loss value;
    the float32 evaluation here is held to the same bound."""
    case = official["vgg"]
    weights_file = tmp_path / "vgg19-recipe.pth"
    torch.save(recipe_state_dict(), weights_file)
    loss_fn = VGGPerceptualLoss(load_vgg19(weights_file))
    exact_fn = copy.deepcopy(loss_fn).double()
    x, y = case["x"].double(), case["y"].double()
    with torch.no_grad():
        got, exact = loss_fn(case["x"], case["y"]), exact_fn(x, y)
    # Each feature's rounding carries to the loss with its weight; the weights sum to 1.47.
    bound = float32_rounding_bound(max(rounding_scale(exact_fn.vgg, x), rounding_scale(exact_fn.vgg, y))) * sum(loss_fn.weights)
    check_error("recording vs float64", max_abs_diff(case["value"], exact), bound)
    check_error("float32 vs float64", max_abs_diff(got, exact), bound)


def test_vgg_loss_gradients_reach_input_only(tmp_path: Path) -> None:
    weights_file = tmp_path / "vgg19.pth"
    torch.save(recipe_state_dict(), weights_file)
    vgg = load_vgg19(weights_file)
    assert not vgg.training
    assert all(not p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    y = torch.rand(1, 3, 32, 32)
    VGGPerceptualLoss(vgg)(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_vgg_layout_matches_torchvision() -> None:
    vgg = VGG19Features()
    convs = [i for i, m in enumerate(vgg.features) if isinstance(m, torch.nn.Conv2d)]
    pools = [i for i, m in enumerate(vgg.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert len(vgg.features) == 30
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28]
    assert pools == [4, 9, 18, 27]
    shapes = [o.shape[1:] for o in vgg(torch.zeros(1, 3, 32, 32))]
    assert shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]


def test_load_vgg19_accepts_unprefixed_keys(tmp_path: Path) -> None:
    state = {k.removeprefix("features."): v for k, v in recipe_state_dict().items()}
    state["32.weight"] = torch.zeros(1)  # beyond relu5_1 (torchvision's conv5_2): ignored
    weights_file = tmp_path / "plain.pth"
    torch.save(state, weights_file)
    vgg = load_vgg19(weights_file)
    assert torch.equal(vgg.features[28].bias, state["28.bias"])


def test_load_vgg19_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_vgg19(missing)


def test_load_vgg19_wrong_shape_names_key(tmp_path: Path) -> None:
    state = recipe_state_dict()
    state["features.5.weight"] = torch.zeros(128, 64, 5, 5)
    weights_file = tmp_path / "bad.pth"
    torch.save(state, weights_file)
    with pytest.raises(ValueError, match=r"features\.5\.weight") as info:
        load_vgg19(weights_file)
    assert "bad.pth" in str(info.value)


def test_load_vgg19_missing_key_names_key(tmp_path: Path) -> None:
    state = recipe_state_dict()
    del state["features.28.bias"]
    weights_file = tmp_path / "short.pth"
    torch.save(state, weights_file)
    with pytest.raises(ValueError, match=r"features\.28\.bias") as info:
        load_vgg19(weights_file)
    assert "short.pth" in str(info.value)


def test_resolve_vgg19_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(VGG_WEIGHTS_ENV, raising=False)
    with pytest.raises(VGGWeightsMissingError, match="--no_vgg_loss") as info:
        resolve_vgg19_path(None)
    assert "--vgg_path" in str(info.value) and VGG_WEIGHTS_ENV in str(info.value)
    assert resolve_vgg19_path(str(tmp_path / "a.pth")) == tmp_path / "a.pth"
    monkeypatch.setenv(VGG_WEIGHTS_ENV, str(tmp_path / "b.pth"))
    assert resolve_vgg19_path(None) == tmp_path / "b.pth"
