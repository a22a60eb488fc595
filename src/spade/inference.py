"""Inference: :class:`Synthesizer` turns label maps into images.

The command line, the web demo and evaluation all go through it. It holds a generator (and the
image encoder where one exists) in eval mode and accepts label maps as files, arrays or tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import is_checkpoint_folder, load_checkpoint, load_official
from .imageio import read_id_map, read_image, to_pil
from .models import Networks
from .export import prepare_for_inference
from .nn.encoder import reparameterize
from .semantics import build_semantics

LabelInput = str | os.PathLike | np.ndarray | torch.Tensor | Image.Image


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _id_tensor(value: LabelInput, what: str) -> tuple[torch.Tensor, str | None]:
    """Any accepted label/instance input → (N×1×H×W int64, source name or None)."""
    if isinstance(value, (str, os.PathLike)):
        return read_id_map(value, what)[None, None], str(value)
    if isinstance(value, Image.Image):
        value = np.array(value)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value.astype(np.int64))
    t = value.long()
    if t.dim() == 2:
        t = t[None, None]
    elif t.dim() == 3:
        t = t[:, None]
    return t, None


def _resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resizing of an id map (N×1×H×W): picks ids, never blends them."""
    if tuple(ids.shape[2:]) == size:
        return ids
    return torch.nn.functional.interpolate(ids.float(), size=size, mode="nearest").long()


class Synthesizer:
    """``Synthesizer.from_checkpoint(path)(label_map, instance_map=None, style=None, seed=None)``."""

    def __init__(self, networks: Networks, device: str | torch.device | None = None,
                 fold: bool = False):
        """``fold``: fold spectral norm into plain weights (W/σ with the stored vectors, what eval
        mode computes at every call otherwise) and store conv weights channels-last, in place:
        for networks owned by this object."""
        self.device = torch.device(device) if device is not None else default_device()
        if fold:
            networks = Networks(networks.config, prepare_for_inference(networks.generator), None,
                                None if networks.encoder is None else prepare_for_inference(networks.encoder))
        self.networks = networks.to(self.device).eval()
        self.config = networks.config

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        epoch: str = "latest", use_ema: bool = True) -> "Synthesizer":
        """Load one of our checkpoint folders (the EMA generator when it has one and ``use_ema``),
        a training run folder (its newest checkpoint), or an official folder (``opt.txt`` +
        ``{epoch}_net_G.pth``)."""
        path = Path(path)
        runs_newest = path / "checkpoints" / "latest"
        if not is_checkpoint_folder(path) and runs_newest.is_file():
            path = path / "checkpoints" / runs_newest.read_text().strip()
        if is_checkpoint_folder(path):
            checkpoint = load_checkpoint(path, with_training_state=False)
            networks = checkpoint.networks
            if use_ema and checkpoint.ema_generator is not None:
                networks = Networks(networks.config, checkpoint.ema_generator, None, networks.encoder)
            return cls(networks, device, fold=True)
        if (path / "opt.txt").is_file():
            return cls(load_official(path, epoch=epoch).networks, device, fold=True)
        raise FileNotFoundError(f"{path}: not a checkpoint folder (expected config.json + generator.safetensors, "
                                f"a run folder with checkpoints/, or an official opt.txt + {epoch}_net_G.pth)")

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the generated images."""
        g = self.config.generator
        return round(g.crop_size / g.aspect_ratio), g.crop_size

    def semantics(self, label_map: LabelInput, instance_map: LabelInput | None = None,
                  resize: bool = False) -> torch.Tensor:
        """The semantic input for a label map; ``resize``: resize the maps (nearest, ids kept)
        to the model's size first, as the official test-time preprocessing does."""
        labels, source = _id_tensor(label_map, "label map")
        expected = self.output_size
        if resize:
            labels = _resize_ids(labels, expected)
        if tuple(labels.shape[2:]) != expected:
            raise ValueError(f"label map{f' {source}' if source else ''} is {labels.shape[3]}×{labels.shape[2]} "
                             f"(width×height); this model makes {expected[1]}×{expected[0]} images")
        s = self.config.semantics
        instances = None
        if instance_map is not None:
            instances, _ = _id_tensor(instance_map, "instance map")
            if resize:
                instances = _resize_ids(instances, expected)
        elif s.use_instance:
            instances = labels  # without instance maps, class boundaries stand in for instance edges
        return build_semantics(labels.to(self.device), s.label_nc, s.contain_dontcare_label,
                               None if instances is None else instances.to(self.device),
                               s.use_instance, source=source)

    @torch.no_grad()
    def synthesize(self, label_map: LabelInput, instance_map: LabelInput | None = None,
                   style: str | os.PathLike | torch.Tensor | None = None, seed: int | None = None,
                   z: torch.Tensor | None = None, resize: bool = False) -> torch.Tensor:
        """N×3×H×W images in [-1, 1]. ``style``: a reference image whose code sets the style (needs
        the encoder); ``seed``: a random style, reproducible; ``z``: an explicit latent."""
        semantics = self.semantics(label_map, instance_map, resize=resize)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        z_dim = self.config.generator.z_dim
        if style is not None:
            z = self.encode_style(style, semantics.shape[0], generator)
        if z is not None and z_dim is None:
            raise ValueError("this model has no image encoder (use_vae off): it takes no style or z")
        if z is not None:
            z = z.to(self.device, semantics.dtype)
        return self.networks.generator(semantics, z, generator=generator)

    def encode_style(self, style: str | os.PathLike | torch.Tensor, batch: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        encoder = self.networks.encoder
        z_dim = self.config.generator.z_dim
        if encoder is None:
            raise ValueError("this model has no image encoder: style images need a model trained with use_vae")
        image = read_image(style) if isinstance(style, (str, os.PathLike)) else style
        if image.dim() == 3:
            image = image[None]
        mu, logvar = encoder(image.to(self.device))
        if mu.shape[1] != z_dim:
            raise ValueError(f"the encoder makes {mu.shape[1]}-wide codes but the generator takes z_dim {z_dim}: "
                             "the official code always builds a 256-wide encoder, so its checkpoints with "
                             "z_dim != 256 cannot take a style image; use a seed instead")
        z = reparameterize(mu, logvar, generator)  # as the official test-time path does
        return z.expand(batch, -1) if z.shape[0] == 1 else z

    def __call__(self, label_map: LabelInput, instance_map: LabelInput | None = None,
                 style: str | os.PathLike | torch.Tensor | None = None, seed: int | None = None,
                 resize: bool = False) -> list[Image.Image]:
        """PIL images, one per label map in the batch."""
        images = self.synthesize(label_map, instance_map, style=style, seed=seed, resize=resize)
        return [to_pil(image) for image in images]
