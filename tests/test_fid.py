"""FID: the FID Inception-v3 layout, finding and loading its weights, and the distance itself.

The real weights are never needed: a state dict we make ourselves (random, He-initialized so
that the 94 layers keep activations of order 1) stands in for the weight file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spadegan.evaluation import inception as inc
from spadegan.evaluation.fid import (
    FeatureStatistics,
    FIDAccumulator,
    compute_fid,
    compute_statistics,
    feature_statistics,
    frechet_distance,
    image_batches,
    load_statistics,
    save_statistics,
    trace_sqrt_product,
)
from spadegan.evaluation.inception import (
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_FILENAMES,
    FIDInceptionV3,
    InceptionFeatures,
    InceptionWeightsError,
    InceptionWeightsMissingError,
    find_inception_weights,
    load_fid_inception,
)

from conftest import FLOAT64_REL, check_error

PYTORCH_FID_NAME, TORCH_FIDELITY_NAME = FID_WEIGHTS_FILENAMES

# Float64 matrix functions, relative to the trace. A symmetric eigendecomposition is backward
# stable: its errors are a few n·u ≈ 3e-14 for the n ≤ 256 here, so 1e-12 leaves that margin.
# scipy's Schur-based sqrtm loses up to ~sqrt(u) ≈ 1e-8 where Σ1Σ2 is singular (the square root
# is not differentiable there); 1e-6 leaves that margin.
EIGEN_REL = 1e-12
SCIPY_REL = 1e-6


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

def _random_network(seed: int = 0) -> FIDInceptionV3:
    torch.manual_seed(seed)
    network = FIDInceptionV3()
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):  # non-trivial moving averages, to see them load
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.9, 1.1)
    return network.eval()


@pytest.fixture(scope="module")
def network() -> FIDInceptionV3:
    return _random_network()


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory: pytest.TempPathFactory, network: FIDInceptionV3) -> Path:
    path = tmp_path_factory.mktemp("weights") / PYTORCH_FID_NAME
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No weight file anywhere: the variable unset, every cache folder under an empty tmp_path."""
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------

def test_state_dict_has_the_fid_weight_file_layout(network: FIDInceptionV3) -> None:
    state = network.state_dict()
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    assert not any(".conv.bias" in k for k in state)  # TensorFlow's convs have no bias
    # 94 conv + BatchNorm layers (as in the TF graph), 5 tensors each without the
    # num_batches_tracked counters, + fc.weight and fc.bias.
    assert sum(k.endswith(".conv.weight") for k in state) == 94
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 94 * 5 + 2
    assert all(m.eps == 0.001 for m in network.modules() if isinstance(m, nn.BatchNorm2d))
    # torchvision's inception_v3 (1000 classes, with AuxLogits) has 27,161,264 parameters.
    # Without AuxLogits (conv 768→128 1×1 + BN, conv 128→768 5×5 + BN, fc 768→1000) and with a
    # 1008-way fc instead of a 1000-way one:
    aux_logits = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
    expected = 27_161_264 - aux_logits - (2048 * 1000 + 1000) + (2048 * 1008 + 1008)
    assert expected == 23_850_960
    assert sum(p.numel() for p in network.parameters()) == expected


def _branch_pool_input(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = block.branch_pool.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        block(x)
    handle.remove()
    return seen[0]


def test_pool_branches_are_the_tensorflow_graphs(network: FIDInceptionV3) -> None:
    torch.manual_seed(1)
    for name, channels, size in (("Mixed_5b", 192, 9), ("Mixed_6b", 768, 7), ("Mixed_7b", 1280, 5)):
        x = torch.rand(1, channels, size, size)
        pooled = _branch_pool_input(getattr(network, name), x)
        # Average over the valid pixels only (TensorFlow's SAME avg pool)...
        torch.testing.assert_close(pooled, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), rtol=0, atol=0)
        # ...which differs from torchvision's default at the border.
        assert not torch.allclose(pooled, F.avg_pool2d(x, 3, 1, 1))
    x = torch.rand(1, 2048, 5, 5)
    pooled = _branch_pool_input(network.Mixed_7c, x)
    torch.testing.assert_close(pooled, F.max_pool2d(x, 3, 1, 1), rtol=0, atol=0)  # Mixed_7c: max pool


def test_resize_is_pytorch_fids_bilinear_without_antialias() -> None:
    small = _images(2, 64, seed=0)
    expected = F.interpolate(small, size=(299, 299), mode="bilinear", align_corners=False, antialias=False)
    assert torch.equal(inc.resize_to_inception(small), expected)
    assert torch.equal(inc.preprocess(small), 2 * expected - 1)
    large = _images(1, 400, seed=1)  # downsampling: here antialiasing would change the result
    resized = inc.resize_to_inception(large)
    assert torch.equal(resized, F.interpolate(large, size=(299, 299), mode="bilinear", align_corners=False))
    assert not torch.allclose(resized, F.interpolate(large, size=(299, 299), mode="bilinear",
                                                     align_corners=False, antialias=True))
    same = _images(1, 299, seed=2)
    torch.testing.assert_close(inc.resize_to_inception(same), same)


def test_inputs_outside_unit_range_are_refused(network: FIDInceptionV3) -> None:
    features = InceptionFeatures(network)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        features(_images(1, 16, seed=0) * 2 - 1)
    with pytest.raises(ValueError, match="N×3×H×W"):
        features(torch.rand(1, 1, 16, 16))
    as_uint8 = (torch.rand(1, 3, 4, 4) * 255).round().to(torch.uint8)
    torch.testing.assert_close(inc._as_unit_range(as_uint8, torch.float32, torch.device("cpu")),
                               as_uint8.float() / 255)


# --------------------------------------------------------------------------------------------
# Finding and loading the weights
# --------------------------------------------------------------------------------------------

def test_weights_found_through_the_environment_variable_load_and_run(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, weight_file: Path, network: FIDInceptionV3) -> None:
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(weight_file))
    assert find_inception_weights() == weight_file
    features = InceptionFeatures.from_weights()
    assert not features.training and not any(p.requires_grad for p in features.parameters())
    features.train()  # stays in eval mode: BatchNorm must keep the file's moving averages
    assert not features.network.training
    images = _images(2, 64, seed=3)
    out = features(images)
    assert out.shape == (2, 2048) and out.dtype == torch.float32 and not out.requires_grad
    assert torch.isfinite(out).all() and out.abs().mean() > 1e-3
    with torch.no_grad():
        torch.testing.assert_close(out, network.pool3(inc.preprocess(images)), rtol=0, atol=0)
    # The explicit path, and a folder holding the file, take precedence.
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(clean_env / "elsewhere.pth"))
    assert find_inception_weights(weight_file) == weight_file
    assert find_inception_weights(weight_file.parent) == weight_file


def test_weights_found_in_the_torch_hub_cache(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                              weight_file: Path, network: FIDInceptionV3) -> None:
    # torch-fidelity's file name, under $TORCH_HOME.
    checkpoints = clean_env / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / TORCH_FIDELITY_NAME).symlink_to(weight_file)
    monkeypatch.setenv("TORCH_HOME", str(clean_env / "torch_home"))
    assert find_inception_weights() == checkpoints / TORCH_FIDELITY_NAME
    loaded = load_fid_inception(find_inception_weights())
    torch.testing.assert_close(loaded.state_dict(), network.state_dict(), rtol=0, atol=0)
    # pytorch-fid's name is preferred when both are there.
    (checkpoints / PYTORCH_FID_NAME).symlink_to(weight_file)
    assert find_inception_weights() == checkpoints / PYTORCH_FID_NAME
    # Without TORCH_HOME: $XDG_CACHE_HOME/torch/hub/checkpoints.
    monkeypatch.delenv("TORCH_HOME")
    xdg_checkpoints = clean_env / "xdg" / "torch" / "hub" / "checkpoints"
    xdg_checkpoints.mkdir(parents=True)
    (xdg_checkpoints / PYTORCH_FID_NAME).symlink_to(weight_file)
    assert find_inception_weights() == xdg_checkpoints / PYTORCH_FID_NAME


def test_missing_weights_error_lists_every_place(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(clean_env / "torch_home"))
    with pytest.raises(InceptionWeightsMissingError) as caught:
        find_inception_weights()
    assert isinstance(caught.value, FileNotFoundError)
    message = str(caught.value)
    hub = clean_env / "torch_home" / "hub" / "checkpoints"
    for place in (FID_WEIGHTS_ENV, str(hub / PYTORCH_FID_NAME), str(hub / TORCH_FIDELITY_NAME)):
        assert place in message
    assert "Nothing is downloaded" in message
    # An explicit choice that does not exist is an error, not silently replaced by another file.
    with pytest.raises(InceptionWeightsMissingError, match="nowhere.pth"):
        find_inception_weights(clean_env / "nowhere.pth")
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(clean_env / "also_nowhere.pth"))
    with pytest.raises(InceptionWeightsMissingError, match="also_nowhere.pth"):
        find_inception_weights()


def test_wrong_weight_files_get_a_clear_error(tmp_path: Path, network: FIDInceptionV3) -> None:
    state = network.state_dict()
    renamed = dict(state)
    renamed["classifier.weight"] = renamed.pop("fc.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(renamed, bad)
    with pytest.raises(InceptionWeightsError) as caught:
        load_fid_inception(bad)
    message = str(caught.value)
    assert str(bad) in message and "'fc.weight'" in message and "'classifier.weight'" in message

    resized = dict(state, **{"fc.weight": torch.zeros(1000, 2048)})
    with pytest.raises(InceptionWeightsError, match=r"'fc.weight' is \(1000, 2048\), expected \(1008, 2048\)"):
        inc.check_inception_state_dict(resized, state, "some_file.pth")
    with pytest.raises(InceptionWeightsError, match="some_file.pth"):
        inc.check_inception_state_dict([1, 2], state, "some_file.pth")
    # torch-fidelity's file has no num_batches_tracked counters: accepted, and completed.
    no_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    completed = inc.check_inception_state_dict(no_counters, state, "fidelity.pth")
    assert completed.keys() == state.keys()


# --------------------------------------------------------------------------------------------
# The distance
# --------------------------------------------------------------------------------------------

def _factor(rng: np.random.Generator, dim: int, rank: int) -> np.ndarray:
    return rng.standard_normal((dim, rank)) / np.sqrt(rank)   # Σ = A Aᵀ has rank `rank`


def _scipy_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    # The computation of pytorch-fid / TTUR, without their eps fallback.
    import scipy.linalg
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.numeric
@pytest.mark.parametrize("dim, rank1, rank2", [(64, 64, 64), (64, 20, 64), (64, 20, 30),
                                               (64, 10, 50), (128, 40, 40)])
def test_frechet_distance_matches_scipy_sqrtm(dim: int, rank1: int, rank2: int) -> None:
    pytest.importorskip("scipy")
    rng = np.random.default_rng(dim + rank1 + rank2)
    a, b = _factor(rng, dim, rank1), _factor(rng, dim, rank2)
    s1, s2 = a @ a.T, b @ b.T
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    ours = frechet_distance(mu1, s1, mu2, s2)
    theirs = _scipy_frechet(mu1, s1, mu2, s2)
    check_error("vs scipy", abs(ours - theirs) / abs(theirs), SCIPY_REL)
    # Against the exact value, Tr (Σ1Σ2)^{1/2} = ‖Aᵀ B‖_* (nuclear norm of a small matrix):
    # scipy's Schur-based sqrtm is ~1e-8 off when Σ1Σ2 is singular; ours stays at rounding.
    exact = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    check_error("vs exact", abs(trace_sqrt_product(s1, s2) - exact) / exact, EIGEN_REL)
    check_error("vs exact, swapped", abs(trace_sqrt_product(torch.from_numpy(s2), torch.from_numpy(s1)) - exact) / exact,
                EIGEN_REL)


@pytest.mark.numeric
def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    for n, dim in ((500, 64), (150, 256)):   # full rank, and fewer samples than dimensions
        x = rng.standard_normal((n, dim)) * rng.uniform(0.1, 2.0, dim) + rng.uniform(0, 3, dim)
        mu, sigma = feature_statistics(x)
        check_error(f"{n}×{dim} with itself", abs(frechet_distance(mu, sigma, mu, sigma)) / np.trace(sigma), EIGEN_REL)
        distances = [frechet_distance(mu, sigma, *feature_statistics(x + shift)) for shift in (0.01, 0.1, 1.0)]
        # A shift moves μ only: d² = dim·shift² exactly.
        expected = np.array([dim * 0.01**2, dim * 0.1**2, dim * 1.0])
        # the covariance terms cancel to rounding of the trace, relative to it
        check_error(f"{n}×{dim} shifted", float(np.abs(np.array(distances) - expected).max()) / np.trace(sigma), EIGEN_REL)
        scaled = frechet_distance(mu, sigma, *feature_statistics(x * 1.5))
        assert scaled > 0.1
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(mu, sigma, mu[:10], sigma)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu * np.nan, sigma, mu, sigma)


@pytest.mark.numeric
def test_streamed_statistics_equal_the_statistics_of_all_features() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 16)) * 0.01 + 1000.0  # a large mean: raw sums would lose digits
    mu, sigma = feature_statistics(x)
    np.testing.assert_array_equal(sigma, np.cov(x, rowvar=False))
    accumulator = FIDAccumulator()
    for i, chunk in enumerate(np.array_split(x, [1, 6, 20, 21])):
        accumulator.update(torch.from_numpy(chunk) if i % 2 else chunk)   # tensors or arrays
    stats = accumulator.statistics()
    assert stats.count == 37 and stats.mu.dtype == np.float64
    check_error("mean", float(np.abs(stats.mu - mu).max() / np.abs(mu).max()), 1e-14)
    check_error("covariance", float(np.abs(stats.sigma - sigma).max() / np.abs(sigma).max()), FLOAT64_REL)
    with pytest.raises(ValueError, match="at least 2"):
        FIDAccumulator().statistics()


def test_image_batches_regroup_images_and_batches() -> None:
    stream = [torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), torch.zeros(3, 8, 8),
              torch.zeros(5, 3, 8, 8), torch.zeros(3, 4, 4), torch.zeros(3, 8, 8)]
    sizes = [tuple(b.shape) for b in image_batches(stream, batch_size=2)]
    assert sizes == [(2, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8),
                     (1, 3, 4, 4), (1, 3, 8, 8)]
    assert [b.shape[0] for b in image_batches(torch.zeros(5, 3, 2, 2), batch_size=4)] == [4, 1]
    with pytest.raises(TypeError, match="image tensors"):
        list(image_batches([np.zeros((3, 2, 2))], batch_size=2))


def test_statistics_files_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    stats = FeatureStatistics(mu=rng.standard_normal(8), sigma=np.eye(8) * 2.0, count=123)
    save_statistics(tmp_path / "sub" / "ref.npz", stats)
    loaded = load_statistics(tmp_path / "sub" / "ref.npz")
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.count == 123 and not list((tmp_path / "sub").glob(".*tmp"))
    np.savez(tmp_path / "pytorch_fid.npz", mu=stats.mu.astype(np.float32), sigma=stats.sigma)
    assert load_statistics(tmp_path / "pytorch_fid.npz").count is None
    np.savez(tmp_path / "other.npz", mean=stats.mu)
    with pytest.raises(ValueError, match=r"other.npz.*missing \['mu', 'sigma'\]"):
        load_statistics(tmp_path / "other.npz")


def test_compute_fid_end_to_end(tmp_path: Path, network: FIDInceptionV3) -> None:
    # One 2048-d distance and four 299×299 forwards: the growth of the FID with a shift is
    # checked on synthetic features above, where it is cheap.
    features = InceptionFeatures(network)
    real = _images(2, 32, seed=4)
    real_stats = compute_statistics(list(real), features, batch_size=2, progress=True)
    assert real_stats.count == 2 and real_stats.sigma.shape == (2048, 2048)
    assert np.abs(real_stats.sigma).max() > 1e-6
    save_statistics(tmp_path / "real.npz", real_stats)
    # The same images, as one batch tensor this time, against the saved statistics.
    same = compute_fid(tmp_path / "real.npz", real, features, batch_size=2, device="cpu", progress=False)
    assert abs(same) < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_features_and_statistics_on_cuda(network: FIDInceptionV3) -> None:
    images = _images(4, 64, seed=5)
    on_cpu = InceptionFeatures(network)(images)
    cuda_network = InceptionFeatures(_random_network()).to("cuda")
    on_cuda = cuda_network(images)   # images on the CPU are moved to the network's device
    assert on_cuda.device.type == "cuda"
    # TF32 convolutions may be on: compare loosely.
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=2e-2, atol=2e-2 * float(on_cpu.abs().max()))
    accumulator = FIDAccumulator()
    accumulator.update(on_cuda[:2])
    accumulator.update(on_cuda[2:])
    mu, _ = feature_statistics(on_cuda)
    np.testing.assert_allclose(accumulator.statistics().mu, mu, rtol=1e-12)
    stats = compute_statistics(images, cuda_network, batch_size=3, device="cuda", progress=False)
    np.testing.assert_allclose(stats.mu, mu, rtol=1e-2, atol=1e-3 * np.abs(mu).max())  # TF32 again


def test_library_code_does_not_need_scipy() -> None:
    code = ("import sys; sys.modules['scipy'] = None\n"   # any `import scipy` now fails
            "import numpy as np\n"
            "from spadegan.evaluation import fid, inception\n"
            "print(fid.frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(3.0)
