"""Export a generator to ONNX, for runtimes without PyTorch.

The exported graph is the reference SPADE path (static shapes, standard ops) with spectral norm
folded into the conv weights (W / σ with the stored power-iteration vectors, exactly what eval
mode computes), in eval mode, with a dynamic batch size. Inputs: ``semantics`` (N×C×H×W one-hot
+ edges) and, for models with an image encoder, ``z`` (N×z_dim); output: ``image`` in [-1, 1].
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write
from .nn.prepacked import prepack_convolutions, unpack_convolutions


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace spectral norm by plain weights W/σ (σ from the stored vectors, no power iteration:
    what eval mode computes at every call), in place; returns the module, in eval mode."""
    module.eval()
    for layer in module.modules():
        if hasattr(layer, "weight_orig"):
            torch.nn.utils.remove_spectral_norm(layer)
    return module.requires_grad_(False)


def prepare_for_inference(module: nn.Module) -> nn.Module:
    """Fold spectral norm, store the conv weights channels-last and pack them for oneDNN once
    (``PrepackedConv2d``), in place: the fast SPADE path runs its convs on channels-last
    activations, and a packed weight spares oneDNN a weight reorder at every call."""
    fold_spectral_norm(module)
    return prepack_convolutions(module.to(memory_format=torch.channels_last))


def inference_copy(generator: nn.Module) -> nn.Module:
    """An eval-mode copy with spectral norm folded into plain weights, on the reference path."""
    folded = unpack_convolutions(copy.deepcopy(generator)).to(memory_format=torch.contiguous_format)  # plain ops, plain strides
    if hasattr(folded, "fast_spade"):
        folded.fast_spade = False  # data-dependent index ops do not belong in a static graph
    return fold_spectral_norm(folded)


def export_onnx(generator: nn.Module, path: str | os.PathLike, example_semantics: torch.Tensor,
                example_z: torch.Tensor | None = None) -> Path:
    """Write ``generator`` as an ONNX file (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = inference_copy(generator).cpu()
    batch = torch.export.Dim("batch")
    inputs: tuple = (example_semantics.cpu(),)
    names, shapes = ["semantics"], {"seg": {0: batch}}
    if example_z is not None:
        inputs += (example_z.cpu(),)
        names.append("z")
        shapes["z"] = {0: batch}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
            torch.onnx.export(model, inputs, str(tmp), input_names=names, output_names=["image"],
                              dynamo=True, dynamic_shapes=shapes, external_data=False, verbose=False)

    atomic_write(path, write, durable=False)
    return path
