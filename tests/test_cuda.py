"""The same results on CUDA: fast vs reference SPADE, CUDA vs CPU on the official fixtures,
and training runs (fp32, bf16, fp16 with loss scaling, channels-last, EMA, resume), bf16 inference.

Skipped where no GPU is present; run the suite on a GPU machine to exercise them. TF32 is turned
off for the comparisons: with it, cuDNN convolutions round their inputs to 10-bit mantissas,
which is a different computation, not a wrong one.
"""

from __future__ import annotations

import pytest
import torch

from spadegan.inference import Synthesizer
from spadegan.semantics import build_semantics
from spadegan.training.loop import train

from conftest import (FLOAT32_REL, FLOAT64_REL, OFFICIAL, assert_same_outputs_and_gradients,
                      bf16_is_close_on_the_bundled_model, check_error, checkpoint_weights, float64_user_path_error,
                      forward_and_backward, random_label_maps, tiny_run, tiny_spade_generator)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("norm, train_mode", [("spectralspadesyncbatch3x3", False),
                                              ("spectralspadesyncbatch3x3", True), ("spadeinstance3x3", True)])
def test_fast_equals_reference_on_cuda(norm, train_mode, dtype):
    """As ``test_fast_spade.test_fast_equals_reference``: outputs and gradients in float64, the
    image alone in float32 (float32 gradients are ill-conditioned in either path)."""
    labels, instances = random_label_maps("blocks", 7, 64)
    labels[:, :, :6, :6] = 255
    semantics = build_semantics(labels, 7, True, instances, True).to("cuda", dtype)
    g = tiny_spade_generator(semantics.shape[1], norm).to("cuda", dtype)
    if not train_mode:
        with torch.no_grad():
            g.train()(semantics)
    state = {k: v.clone() for k, v in g.state_dict().items()}
    reference = forward_and_backward(g, semantics, fast=False, train=train_mode)
    g.load_state_dict(state)
    fast = forward_and_backward(g, semantics, fast=True, train=train_mode)
    if dtype == torch.float64:
        assert_same_outputs_and_gradients(reference, fast, FLOAT64_REL)
    else:
        assert_same_outputs_and_gradients(reference, fast, FLOAT32_REL, gradients=False)


@pytest.mark.parametrize("name", ["cityscapes_like", "ade20k_vae_more"])
def test_official_checkpoints_on_cuda_compute_the_official_function(name):
    """The user path (fast SPADE, folded spectral norm, channels-last) on the GPU, with the
    networks in float64: the official function to rounding level. In float32 the image moves by
    ~1e-4 with any change of arithmetic order on these fixtures (see ``exact_official_output``),
    so float32 is checked on the small networks above instead."""
    check_error(f"{name} user path on CUDA (float64)", float64_user_path_error(name, "cuda"), FLOAT64_REL)


def test_random_style_is_drawn_on_the_gpu():
    synthesizer = Synthesizer.from_checkpoint(OFFICIAL / "ade20k_vae_more_checkpoint", device="cuda")
    label = OFFICIAL / "ade20k_vae_more_checkpoint" / "input_label_0.png"
    a, b = synthesizer.synthesize(label, seed=3), synthesizer.synthesize(label, seed=3)
    assert a.is_cuda and torch.equal(a, b)
    assert not torch.equal(a, synthesizer.synthesize(label, seed=4))


@pytest.mark.parametrize("amp, channels_last", [("none", False), ("bf16", True), ("fp16", False)])
def test_training_runs_and_resumes_on_cuda(tmp_path, amp, channels_last):
    stopped = train(tiny_run(tmp_path / "run", max_steps=3, ema=True, amp=amp, channels_last=channels_last,
                             deterministic=False), device=torch.device("cuda"), progress=False)
    assert stopped.step == 3
    resumed = train(tiny_run(tmp_path / "run", max_steps=5, ema=True, amp=amp, channels_last=channels_last,
                             deterministic=False), resume=True, device=torch.device("cuda"), progress=False)
    assert resumed.step == 5
    saved = checkpoint_weights(resumed.checkpoint)
    assert saved and all(torch.isfinite(t).all() for t in saved.values())



def test_bf16_precision_on_cuda():
    """``precision="bf16"`` on the GPU (cuDNN's bfloat16 convolutions, everything else float32)."""
    bf16_is_close_on_the_bundled_model("cuda")
