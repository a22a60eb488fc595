"""Inference: :class:`Synthesizer` turns label maps into images.

The command line, the web demo and evaluation all go through it. It holds a generator (and the
image encoder where one exists) in eval mode and accepts label maps as files, arrays or tensors.
A label-map file holds class ids (grayscale, palette-index or 16-bit PNG) or the colours of the
model's palette (an RGB PNG, mapped back to ids exactly: :func:`spadegan.imageio.read_label_map`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import bundled
from .checkpoint import is_checkpoint_folder, load_checkpoint, load_official, resolve_checkpoint
from .config import ModelConfig, SemanticsConfig
from .export import prepare_for_inference
from .imageio import ids_from_image, open_image, read_id_map, read_image, to_pil
from .memory import keep_freed_memory, release_freed_memory
from .models import Networks
from .nn.encoder import reparameterize
from .nn.fast_spade import share_gamma_beta_storage
from .nn.generator import Pix2PixHDGenerator, SPADEGenerator
from .nn.prepacked import release_plain_weights, set_compute_dtype
from .nn.spade import SPADE
from .palettes import Palette, palette_for, palette_from_entries
from .seeds import check_seed
from .semantics import build_semantics, validate_labels

LabelInput = str | os.PathLike | np.ndarray | torch.Tensor | Image.Image
StyleInput = str | os.PathLike | torch.Tensor | Image.Image
Seeds = int | Sequence[int]

_DATASET_BY_CLASS_COUNT = {182: "coco", 150: "ade20k", 35: "cityscapes"}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # inference precision → the convolutions' dtype


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def palette_for_model(config: ModelConfig | SemanticsConfig) -> Palette:
    """The colours of a model's classes, by its class count: 182 → COCO-Stuff (the GauGAN
    colours), 150 → ADE20K, 35 → Cityscapes, any other count → the generic palette
    (the official ``labelcolormap``)."""
    label_nc = getattr(config, "semantics", config).label_nc
    return palette_for(_DATASET_BY_CLASS_COUNT.get(label_nc, "custom"), label_nc)


def _batch_ids(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[:, None]
    return t


def _resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resizing of an id map (N×1×H×W): picks ids, never blends them."""
    if tuple(ids.shape[2:]) == tuple(size):
        return ids
    return torch.nn.functional.interpolate(ids.double(), size=tuple(size), mode="nearest").long()


def _compact(ids: torch.Tensor | None) -> torch.Tensor | None:
    """The smallest integer dtype that holds the ids (many layouts wait in memory at once)."""
    if ids is None or ids.numel() == 0:
        return ids
    low, high = int(ids.min()), int(ids.max())
    if 0 <= low and high <= 255:
        return ids.to(torch.uint8)
    if -2 ** 31 <= low and high < 2 ** 31:
        return ids.to(torch.int32)
    return ids


@dataclass
class Layout:
    """Label maps (and instance maps) read, sized and checked for one model: what the generator
    takes, short of the one-hot encoding. ``Synthesizer.layout`` makes them; every synthesis
    method also accepts one in place of a label map."""

    labels: torch.Tensor               # N×1×H×W class ids, validated against the model
    instances: torch.Tensor | None     # N×1×H×W instance ids, or None
    sources: tuple[str | None, ...]    # the file of each map (None for arrays), for messages

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return tuple(self.labels.shape[2:])

    def compact(self) -> Layout:
        return Layout(_compact(self.labels), _compact(self.instances), self.sources)

    @staticmethod
    def cat(layouts: Sequence[Layout]) -> Layout:
        """One batch of layouts of one size; a layout without instance map gets its label map as
        instance map (class boundaries stand in for instance edges) when others have one."""
        if len({layout.size for layout in layouts}) != 1:
            raise ValueError(f"layouts of different sizes cannot form one batch: "
                             f"{sorted({layout.size for layout in layouts})}")
        labels = torch.cat([layout.labels.long() for layout in layouts])
        instances = None
        if any(layout.instances is not None for layout in layouts):
            instances = torch.cat([(layout.labels if layout.instances is None else layout.instances).long()
                                   for layout in layouts])
        return Layout(labels, instances, tuple(s for layout in layouts for s in layout.sources))


def keep_one_weight_copy(network: torch.nn.Module) -> torch.nn.Module:
    """For a network that only runs float32 inference on the CPU, prepared by
    ``prepare_for_inference``: its convolutions keep their packed weights only, not a plain copy
    beside them; the SPADE label networks, whose weights the fast path reads as tables, keep
    theirs plain, and the γ and β weights are views of the table they are multiplied as. In
    place; returns the network."""
    release_plain_weights(network, keep=(SPADE,))
    for layer in network.modules():
        if isinstance(layer, SPADE):
            share_gamma_beta_storage(layer)
    return network


class Synthesizer:
    """``Synthesizer.from_checkpoint(path)(label_map, instance_map=None, style=None, seed=None)``."""

    def __init__(self, networks: Networks, device: str | torch.device | None = None,
                 fold: bool = False, precision: str = "fp32", palette: Palette | None = None):
        """``fold``: fold spectral norm into plain weights (W/σ with the stored vectors, what eval
        mode computes at every call otherwise), store conv weights channels-last and pack them
        for oneDNN, in place: for networks owned by this object. ``precision``: ``"fp32"`` (the
        exact computation) or ``"bf16"``: the convolutions run in bfloat16 (everything else in
        float32), several times faster on CPUs with AMX and on GPUs with tensor cores, not exact
        (images move by about 1/255); needs ``fold``. ``palette``: the classes' names and colours
        (default: the data set's by class count, :func:`palette_for_model`)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if precision != "fp32" and not fold:
            raise ValueError(f"precision {precision!r} changes the networks' convolutions: it needs fold=True")
        # Each call allocates the same large buffers: keep them in the process between calls.
        keep_freed_memory()
        self.device = torch.device(device) if device is not None else default_device()
        if fold:
            networks = Networks(networks.config, prepare_for_inference(networks.generator), None,
                                None if networks.encoder is None else prepare_for_inference(networks.encoder))
            for network in (networks.generator, networks.encoder):
                if network is not None:
                    set_compute_dtype(network, PRECISIONS[precision])
        self.precision = precision
        self.networks = networks.to(self.device).eval()
        if fold and precision == "fp32" and self.device.type == "cpu":
            for network in (self.networks.generator, self.networks.encoder):
                if network is not None:
                    keep_one_weight_copy(network)
        self.config = networks.config
        self.palette = palette if palette is not None else palette_for_model(self.config)
        release_freed_memory()  # the copies that loading and folding left behind

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        epoch: str = "latest", use_ema: bool = True, precision: str = "fp32") -> Synthesizer:
        """Load one of our checkpoint folders (the EMA generator when it has one and ``use_ema``),
        a training run folder (its newest checkpoint), or an official folder (``opt.txt`` +
        ``{epoch}_net_G.pth``). Without ``path``: the model bundled with the package
        (:mod:`spadegan.bundled`). ``precision``: see the constructor."""
        path = resolve_checkpoint(bundled.require_bundled_model() if path is None else path, epoch)
        if is_checkpoint_folder(path):
            checkpoint = load_checkpoint(path, with_training_state=False)
            networks = checkpoint.networks
            if use_ema and checkpoint.ema_generator is not None:
                networks = Networks(networks.config, checkpoint.ema_generator, None, networks.encoder)
            return cls(networks, device, fold=True, precision=precision, palette=checkpoint_palette(checkpoint))
        return cls(load_official(path, epoch=epoch).networks, device, fold=True, precision=precision)

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the images the model was made for."""
        g = self.config.generator
        return round(g.crop_size / g.aspect_ratio), g.crop_size

    @property
    def _has_dontcare(self) -> bool:
        return self.config.semantics.contain_dontcare_label

    @property
    def takes_style(self) -> bool:
        """Whether the generator starts from a style code z (random or from a style image)."""
        return self.config.generator.z_dim is not None

    def size_problem(self, height: int, width: int) -> str | None:
        """Why the network cannot make images of this size, or None when it can.

        The SPADE generator starts from a tensor of a fixed size (``fc`` maps z, or the label map
        is downsampled, to sh×sw set by crop_size and the aspect ratio) and doubles it a fixed
        number of times: it makes its own size only. pix2pixHD is fully convolutional: any
        multiple of 2^(its downsamplings) works."""
        generator = self.networks.generator
        if isinstance(generator, Pix2PixHDGenerator):
            step = 2 ** self.config.generator.resnet_n_downsample
            if height % step or width % step or height < 2 * step or width < 2 * step:
                # its innermost maps must stay at least 2×2 (instance norm, reflection padding)
                return (f"the pix2pixHD generator halves the size {self.config.generator.resnet_n_downsample} "
                        f"times and doubles it back, so height and width must be multiples of {step}, "
                        f"at least {2 * step}")
            return None
        expected = self.output_size
        if (height, width) == expected:
            return None
        if isinstance(generator, SPADEGenerator):
            doublings = (expected[1] // generator.start_width).bit_length() - 1
            return (f"this model makes {expected[1]}×{expected[0]} images (width×height) only: its generator "
                    f"starts from a fixed {generator.start_width}×{generator.start_height} tensor (set by "
                    f"crop_size {self.config.generator.crop_size} and aspect ratio "
                    f"{self.config.generator.aspect_ratio:g}) and doubles it {doublings} times")
        return f"this model makes {expected[1]}×{expected[0]} images (width×height)"

    # -- inputs ----------------------------------------------------------------------------------

    def _read_labels(self, value: LabelInput) -> tuple[torch.Tensor, str | None]:
        """Any accepted label input → (N×1×H×W int64 ids, source file or None)."""
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            ids = ids_from_image(open_image(path), self.palette, str(path), self._has_dontcare)
            return torch.from_numpy(ids)[None, None], str(path)
        if isinstance(value, Image.Image):
            return torch.from_numpy(ids_from_image(value, self.palette, has_dontcare=self._has_dontcare))[None, None], None
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value.astype(np.int64))
        return _batch_ids(value.long()), None

    def layout(self, label_map: LabelInput | Layout, instance_map: LabelInput | None = None, *,
               size: tuple[int, int] | None = None, resize: bool = False) -> Layout:
        """Read, size and check a label map (and instance map) for this model; ``ValueError``
        naming the file for anything the model cannot take (unknown colours or ids, a size it
        cannot make).

        ``size`` (height, width): resize the maps (nearest, ids kept) to it; ``resize``: to the
        model's own size, as the official test-time preprocessing does. Otherwise the maps must
        have a size the network makes."""
        if isinstance(label_map, Layout):
            return label_map
        labels, source = self._read_labels(label_map)
        name = f"label map {source}" if source else "label map"
        if size is None and resize:
            size = self.output_size
        if size is not None:
            size = (int(size[0]), int(size[1]))
            problem = self.size_problem(*size)
            if problem:
                raise ValueError(f"size {size[1]}×{size[0]} (width×height) for {name}: {problem}")
            labels = _resize_ids(labels, size)
        else:
            problem = self.size_problem(*labels.shape[2:])
            if problem:
                raise ValueError(f"{name} is {labels.shape[3]}×{labels.shape[2]} (width×height); {problem}; "
                                 "resize it to that size (resize=True, or --resize / --size)")
        s = self.config.semantics
        validate_labels(labels, s.label_nc, s.contain_dontcare_label, source)
        instances = None
        if instance_map is not None:
            if isinstance(instance_map, (str, os.PathLike)):
                instances, instance_source = read_id_map(instance_map, "instance map")[None, None], str(instance_map)
            else:
                if isinstance(instance_map, Image.Image):
                    instance_map = np.array(instance_map)
                if isinstance(instance_map, np.ndarray):
                    instance_map = torch.from_numpy(instance_map.astype(np.int64))
                instances, instance_source = _batch_ids(instance_map.long()), None
            if size is not None:
                instances = _resize_ids(instances, size)
            if instances.shape[0] != labels.shape[0] or instances.shape[2:] != labels.shape[2:]:
                raise ValueError(f"instance map{f' {instance_source}' if instance_source else ''} is "
                                 f"{instances.shape[3]}×{instances.shape[2]} (width×height), its {name} "
                                 f"{labels.shape[3]}×{labels.shape[2]}")
        return Layout(labels, instances, (source,) * labels.shape[0])

    def semantics(self, label_map: LabelInput | Layout, instance_map: LabelInput | None = None,
                  resize: bool = False, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The generator's semantic input (one-hot, don't-care, instance edges) for a label map;
        ``resize`` / ``size`` as in :meth:`layout`."""
        layout = self.layout(label_map, instance_map, size=size, resize=resize)
        s = self.config.semantics
        labels = layout.labels.long().to(self.device)
        instances = None if layout.instances is None else layout.instances.long().to(self.device)
        if instances is None and s.use_instance:
            instances = labels  # without instance maps, class boundaries stand in for instance edges
        sources = {source for source in layout.sources if source}
        return build_semantics(labels, s.label_nc, s.contain_dontcare_label, instances, s.use_instance,
                               source=", ".join(sorted(sources)) or None)

    # -- synthesis -------------------------------------------------------------------------------

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(check_seed(seed))

    @torch.no_grad()
    def synthesize(self, label_map: LabelInput | Layout, instance_map: LabelInput | None = None,
                   style: StyleInput | None = None, seed: Seeds | None = None,
                   z: torch.Tensor | None = None, resize: bool = False,
                   size: tuple[int, int] | None = None, reroll_mask: torch.Tensor | None = None,
                   reroll_seed: Seeds | None = None) -> torch.Tensor:
        """N×3×H×W images in [-1, 1]. ``style``: a reference image whose code sets the style (needs
        the encoder; paper Fig. 1); ``seed``: a random style, reproducible: one int for the batch,
        or one seed per image, which makes each image independent of its batch (a single label map
        with K seeds gives K samples of it, Fig. 9); ``z``: an explicit latent. ``reroll_mask``
        (H×W or N×1×H×W, true in the region) with ``reroll_seed``: the same pictures with that
        region re-rolled (:meth:`reroll`)."""
        semantics = self.semantics(label_map, instance_map, resize=resize, size=size)
        z_dim = self.config.generator.z_dim
        seeds = None if seed is None or isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        generator = None if seed is None or seeds is not None else self._generator(seed)
        if seeds is not None:
            if semantics.shape[0] == 1 and len(seeds) > 1:
                semantics = semantics.repeat(len(seeds), 1, 1, 1)
            if len(seeds) != semantics.shape[0]:
                raise ValueError(f"{len(seeds)} seeds for {semantics.shape[0]} label maps: give one per "
                                 "label map (or several for a single label map)")
        if style is not None:
            z = self.encode_style(style, semantics.shape[0], generator, seeds=seeds)
        elif z is None and seeds is not None and z_dim is not None:
            z = torch.cat([torch.randn(1, z_dim, device=self.device, dtype=semantics.dtype,
                                       generator=self._generator(s)) for s in seeds])
        if z is not None and z_dim is None:
            raise ValueError("this model has no image encoder (use_vae off): it takes no style or z")
        if z is not None:
            z = z.to(self.device, semantics.dtype)
        if reroll_mask is not None:
            if z is None and generator is not None and z_dim is not None:
                # The code the generator would draw itself for this seed, made explicit.
                z = torch.randn(semantics.shape[0], z_dim, device=self.device, generator=generator)
                z = z.to(semantics.dtype)
            return self.reroll(semantics, z, reroll_mask, reroll_seed)
        return self.networks.generator(semantics, z, generator=generator)

    @property
    def noise_per_pixel(self) -> bool:
        """The generator takes a code per pixel (OASIS's 3-D noise), not one per picture."""
        return self.config.generator.netG == "oasis" and self.config.generator.z_dim is not None

    @torch.no_grad()
    def reroll(self, semantics: torch.Tensor, z: torch.Tensor | None, mask: torch.Tensor,
               seed: Seeds | None) -> torch.Tensor:
        """The pictures of ``semantics`` with code ``z`` (N×z_dim), with the region ``mask``
        re-rolled: drawn with a new code from ``seed`` (one per picture, or one for all).

        With OASIS's 3-D noise the generator gets the new code inside the region and the old one
        outside, so the region is painted anew in its surroundings; a model with one code per
        picture (SPADE with the image encoder) is run with the new code everywhere. Either way
        only the region is taken from the new picture: no generator here keeps a change local by
        itself (from a start at 1/32 of the picture its 3×3 convolutions reach across the whole
        of it), so the pixels outside the region are the old picture's, exactly."""
        z_dim = self.config.generator.z_dim
        if z_dim is None:
            raise ValueError("this model takes no noise or style code (no image encoder, no 3-D noise): "
                             "there is nothing to re-roll")
        if z is None:
            raise ValueError("re-rolling a region needs the picture's own seed or style")
        if seed is None:
            raise ValueError("re-rolling a region needs a seed for its new look")
        n, _, height, width = semantics.shape
        mask = torch.as_tensor(mask, device=self.device).bool()
        mask = mask.reshape(1, 1, *mask.shape[-2:]) if mask.dim() == 2 else mask
        if tuple(mask.shape[-2:]) != (height, width) or mask.shape[0] not in (1, n):
            raise ValueError(f"re-roll mask of {mask.shape[-1]}x{mask.shape[-2]} pixels for {n} label map(s) of "
                             f"{width}x{height}: expected a mask of the label map's size")
        seeds = [int(seed)] * n if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} re-roll seeds for {n} pictures")
        fresh = torch.cat([torch.randn(1, z_dim, device=self.device, generator=self._generator(s)) for s in seeds])
        fresh = fresh.to(semantics.dtype)
        before = self.networks.generator(semantics, z)
        if self.noise_per_pixel:
            fresh = torch.where(mask, fresh[:, :, None, None], z[:, :, None, None])  # N×z_dim×H×W
        after = self.networks.generator(semantics, fresh)
        return torch.where(mask, after, before)

    @torch.no_grad()
    def encode_style(self, style: StyleInput, batch: int, generator: torch.Generator | None = None,
                     seeds: Sequence[int] | None = None) -> torch.Tensor:
        """The style code of a reference image (batch×z_dim), sampled as the official test-time
        path does (z = μ + ε·σ): ε from ``generator``, or one draw per seed in ``seeds``."""
        encoder = self.networks.encoder
        z_dim = self.config.generator.z_dim
        if encoder is None:
            raise ValueError("this model has no image encoder: style images need a model trained with use_vae")
        if isinstance(style, (str, os.PathLike)):
            image = read_image(style)
        elif isinstance(style, Image.Image):
            image = torch.from_numpy(np.asarray(style.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        else:
            image = style
        if image.dim() == 3:
            image = image[None]
        mu, logvar = encoder(image.to(self.device, torch.float32))
        if mu.shape[1] != z_dim:
            raise ValueError(f"the encoder makes {mu.shape[1]}-wide codes but the generator takes z_dim {z_dim}: "
                             "the official code always builds a 256-wide encoder, so its checkpoints with "
                             "z_dim != 256 cannot take a style image; use a seed instead")
        if seeds is not None:
            rows = range(len(seeds)) if mu.shape[0] == len(seeds) else [0] * len(seeds)
            return torch.cat([reparameterize(mu[i:i + 1], logvar[i:i + 1], self._generator(s))
                              for i, s in zip(rows, seeds)])
        z = reparameterize(mu, logvar, generator)  # as the official test-time path does
        return z.expand(batch, -1) if z.shape[0] == 1 else z

    def __call__(self, label_map: LabelInput | Layout, instance_map: LabelInput | None = None,
                 style: StyleInput | None = None, seed: Seeds | None = None,
                 resize: bool = False, size: tuple[int, int] | None = None,
                 z: torch.Tensor | None = None, reroll_mask: torch.Tensor | None = None,
                 reroll_seed: Seeds | None = None) -> list[Image.Image]:
        """PIL images, one per label map in the batch (or per seed)."""
        images = self.synthesize(label_map, instance_map, style=style, seed=seed, z=z, resize=resize, size=size,
                                 reroll_mask=reroll_mask, reroll_seed=reroll_seed)
        return [to_pil(image) for image in images]


def checkpoint_palette(checkpoint) -> Palette | None:
    """The palette a checkpoint was trained with (its data set's ``palette.json``), or None."""
    entries = checkpoint.meta.get("palette")
    if not entries:
        return None
    semantics = checkpoint.networks.config.semantics
    if len(entries) != semantics.label_nc:
        raise ValueError(f"{checkpoint.folder}: its palette has {len(entries)} classes, the model {semantics.label_nc}")
    dontcare = semantics.label_nc if semantics.contain_dontcare_label else None
    return palette_from_entries(checkpoint.meta.get("palette_name", "data set"), entries, dontcare)


def batches_by_size(layouts: Sequence[Layout], samples: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """(layout index, sample k) pairs for ``samples`` samples of each layout, in batches of at
    most ``batch_size`` among layouts of one size (a batch is one tensor)."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for index, layout in enumerate(layouts):
        groups.setdefault(layout.size, []).extend((index, k) for k in range(samples))
    return [items[i:i + batch_size] for items in groups.values() for i in range(0, len(items), batch_size)]


def style_model(synthesizer: Synthesizer):
    """The facts of a Synthesizer that the style benchmark takes (it sits below the inference layer)."""
    from .evaluation.style_benchmark import StyleModel  # imported on use: serving never needs it

    def synthesize(labels, style, seeds):
        return synthesizer.synthesize(labels, style=style, seed=seeds)

    return StyleModel(synthesize, has_encoder=synthesizer.networks.encoder is not None,
                      label_nc=synthesizer.config.semantics.label_nc, output_size=synthesizer.output_size,
                      takes_seed=synthesizer.takes_style)


def protocol_generator(synthesizer: Synthesizer, style: str, seed: int):
    """For ``spadegan evaluate``: a batch → images function with one seed per image (``seed`` +
    its index in the data set), so the outputs do not depend on the batch size;
    ``style='photo'`` encodes each real photo."""
    counter = {"next": 0}

    def generate(batch):
        n = batch["label"].shape[0]
        seeds = [seed + counter["next"] + i for i in range(n)]
        counter["next"] += n
        if not synthesizer.takes_style:
            return synthesizer.synthesize(batch["label"])
        if style == "photo":
            return synthesizer.synthesize(batch["label"], style=batch["image"], seed=seeds)
        return synthesizer.synthesize(batch["label"], seed=seeds)

    return generate
