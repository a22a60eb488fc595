"""Build the networks of a model from its :class:`~spadegan.config.ModelConfig`.

The one place where configs become modules: the input sizes that depend on the data (semantic
channels, the discriminator's input) are derived here once and passed in explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .config import DiscriminatorConfig, EncoderConfig, GeneratorConfig, ModelConfig, SemanticsConfig
from .nn.discriminator import MultiscaleDiscriminator
from .nn.encoder import ConvEncoder
from .nn.generator import Pix2PixHDGenerator, SPADEGenerator
from .nn.init import init_weights
from .nn.norm import parse_norm_spec
from .nn.oasis import OASISDiscriminator, OASISGenerator
from .semantics import semantic_channels


def label_channels(semantics: SemanticsConfig) -> int:
    return semantic_channels(semantics.label_nc, semantics.contain_dontcare_label, semantics.use_instance)


def build_generator(config: GeneratorConfig, semantics: SemanticsConfig) -> nn.Module:
    channels = label_channels(semantics)
    if config.netG == "spade":
        return SPADEGenerator(channels, ngf=config.ngf, crop_size=config.crop_size,
                              aspect_ratio=config.aspect_ratio,
                              num_upsampling_layers=config.num_upsampling_layers, z_dim=config.z_dim,
                              norm=config.norm_G, spade_hidden=config.spade_hidden,
                              z_modulation=config.z_modulation, class_modulation=config.class_modulation,
                              upsample=config.upsample,
                              norm_mode=config.norm_mode, instance_edges=semantics.use_instance)
    if config.netG == "oasis":
        spec = parse_norm_spec(config.norm_G)
        if not spec.spade:
            raise ValueError(f"norm_G {config.norm_G!r}: OASIS takes a SPADE norm, e.g. spectralspadesyncbatch3x3")
        return OASISGenerator(channels, crop_size=config.crop_size, aspect_ratio=config.aspect_ratio, ngf=config.ngf,
                              z_dim=config.z_dim, param_free=spec.kind, spade_kernel_size=spec.kernel_size,
                              spectral=spec.spectral)
    if config.netG == "pix2pixhd":
        return Pix2PixHDGenerator(channels, ngf=config.ngf, n_downsample=config.resnet_n_downsample,
                                  n_blocks=config.resnet_n_blocks, kernel_size=config.resnet_kernel_size,
                                  initial_kernel_size=config.resnet_initial_kernel_size, norm=config.norm_G)
    raise ValueError(f"netG {config.netG!r}: expected spade, oasis or pix2pixhd")


def build_discriminator(config: DiscriminatorConfig, semantics: SemanticsConfig) -> nn.Module:
    if config.netD == "oasis":
        # OASIS's D sees the image only and segments it into the semantic classes + "fake".
        return OASISDiscriminator(label_channels(semantics), ndf=config.ndf,
                                  spectral=parse_norm_spec(config.norm_D).spectral)
    # D sees the semantic map and the image, concatenated (pix2pixHD conditional D).
    return MultiscaleDiscriminator(label_channels(semantics) + config.output_nc, ndf=config.ndf,
                                   n_layers=config.n_layers_D, num_D=config.num_D, norm=config.norm_D,
                                   return_features=config.return_features)


def build_encoder(config: EncoderConfig) -> ConvEncoder:
    return ConvEncoder(ndf=config.ndf, num_layers=config.num_layers, latent_dim=config.latent_dim,
                       norm=config.norm_E)


@dataclass
class Networks:
    """The networks of a model; ``discriminator`` and ``encoder`` are None where absent."""

    config: ModelConfig
    generator: nn.Module
    discriminator: nn.Module | None = None    # MultiscaleDiscriminator, or OASISDiscriminator
    encoder: ConvEncoder | None = None

    def to(self, *args, **kwargs) -> "Networks":
        for net in (self.generator, self.discriminator, self.encoder):
            if net is not None:
                net.to(*args, **kwargs)
        return self

    def eval(self) -> "Networks":
        for net in (self.generator, self.discriminator, self.encoder):
            if net is not None:
                net.eval()
        return self


def build_networks(config: ModelConfig, init_type: str | None = "xavier", init_gain: float = 0.02) -> Networks:
    """Networks with the official initialization (``--init_type``, ``--init_variance``); None
    skips it (weights about to be loaded)."""
    networks = Networks(
        config=config,
        generator=build_generator(config.generator, config.semantics),
        discriminator=None if config.discriminator is None else build_discriminator(config.discriminator, config.semantics),
        encoder=None if config.encoder is None else build_encoder(config.encoder),
    )
    for net in (networks.generator, networks.discriminator, networks.encoder):
        if net is not None and init_type is not None:
            init_weights(net, init_type, init_gain)
    return networks
