"""Checkpoints: the official layout (``{epoch}_net_G.pth`` + ``opt.txt``), both ways.

Official checkpoints load unchanged: their key names are ours. Every load uses
``weights_only=True``; every write is atomic (temporary file, fsync, rename), so a process
killed mid-write leaves the previous file intact.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .config import ModelConfig, model_config_from_options, options_from_model_config, read_opt_txt, write_opt_txt
from .models import Networks, build_networks

NETWORK_TAGS = {"generator": "G", "discriminator": "D", "encoder": "E"}


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise ValueError(f"{path}: cannot read it as a PyTorch state dict ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with errors that name the file and the first offending key."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing:
        raise ValueError(f"{source}: missing key {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise ValueError(f"{source}: unexpected key {unexpected[0]!r}"
                         + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
                         + "; the options do not describe these weights")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(f"{source}: key {key!r} has shape {tuple(tensor.shape)}, "
                             f"the network built from the options expects {tuple(expected[key].shape)}")
    module.load_state_dict(state)


@dataclass
class OfficialCheckpoint:
    """What :func:`load_official` returns: the options as read, and the networks found."""

    folder: Path
    options: dict[str, Any]
    networks: Networks


def load_official(folder: str | os.PathLike, epoch: str = "latest", device: str | torch.device = "cpu",
                  ) -> OfficialCheckpoint:
    """Load an official SPADE checkpoint folder: ``opt.txt`` and ``{epoch}_net_{G,D,E}.pth``.

    The generator is required; the discriminator is loaded when its file exists; the encoder
    when the options say ``use_vae``. The official encoder is 256 wide whatever ``--z_dim`` says,
    so its width is read from the weights.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    options = read_opt_txt(folder / "opt.txt")
    paths = {name: folder / f"{epoch}_net_{tag}.pth" for name, tag in NETWORK_TAGS.items()}
    config = model_config_from_options(options, with_discriminator=paths["discriminator"].is_file())
    states = {"generator": load_state_dict_file(paths["generator"])}
    if config.discriminator is not None:
        states["discriminator"] = load_state_dict_file(paths["discriminator"])
    if config.encoder is not None:
        states["encoder"] = load_state_dict_file(paths["encoder"])
        mu = states["encoder"].get("fc_mu.weight")
        if mu is not None:
            config = replace(config, encoder=replace(config.encoder, latent_dim=mu.shape[0]))
    networks = build_networks(config)
    for name, state in states.items():
        load_into(getattr(networks, name), state, str(paths[name]))
    return OfficialCheckpoint(folder=folder, options=options, networks=networks.to(device))


def save_official(folder: str | os.PathLike, networks: Networks, epoch: str = "latest",
                  options: dict[str, Any] | None = None) -> None:
    """Write networks in the official layout: ``{epoch}_net_{G,D,E}.pth`` (CPU tensors) and
    ``opt.txt`` (``options`` over the ones derived from the networks' config)."""
    folder = Path(folder)
    merged = options_from_model_config(networks.config)
    merged.update(options or {})
    for name, tag in NETWORK_TAGS.items():
        net = getattr(networks, name)
        if net is not None:
            state = {key: value.detach().cpu() for key, value in net.state_dict().items()}
            atomic_write(folder / f"{epoch}_net_{tag}.pth", lambda tmp, s=state: torch.save(s, tmp))
    atomic_write(folder / "opt.txt", lambda tmp: write_opt_txt(tmp, merged))


def model_config_of(checkpoint: OfficialCheckpoint) -> ModelConfig:
    return checkpoint.networks.config
