"""Checkpoints: ours (a folder of safetensors + ``config.json`` + training state) and the
official layout (``{epoch}_net_G.pth`` + ``opt.txt``), both ways.

Official checkpoints load unchanged: their key names are ours. Every load uses
``weights_only=True``; every write is atomic (temporary file or folder, fsync, rename), so a
process killed at any moment leaves the previous checkpoint intact and loadable.

Our checkpoint folder::

    config.json                 format, version, the ModelConfig, step/epoch, the run's configs
    generator.safetensors       weights with the official key names
    discriminator.safetensors   (when trained)
    encoder.safetensors         (VAE models)
    generator_ema.safetensors   (when an EMA generator is kept)
    training_state.pt           optimizers, grad scaler, step, epoch, RNG states (weights_only)
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from .atomic import atomic_write
from .config import ModelConfig, model_config_from_options, options_from_model_config, read_opt_txt, write_opt_txt
from .models import Networks, build_networks
from .safe_load import load_weights_only, read_versioned_json

NETWORK_TAGS = {"generator": "G", "discriminator": "D", "encoder": "E"}


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    state = load_weights_only(path, "a PyTorch state dict")
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
        # Sizes the options cannot tell: the official encoder is 256 wide whatever z_dim says,
        # and ours may be narrower than ngf; read them from the weights.
        encoder_state = states["encoder"]
        sizes = {}
        if "fc_mu.weight" in encoder_state:
            sizes["latent_dim"] = encoder_state["fc_mu.weight"].shape[0]
        first = [v for k, v in encoder_state.items() if k.startswith("layer1.") and v.dim() == 4]
        if first:
            sizes["ndf"] = first[0].shape[0]
        sizes["num_layers"] = 6 if any(k.startswith("layer6.") for k in encoder_state) else 5
        config = replace(config, encoder=replace(config.encoder, **sizes))
    networks = build_networks(config, init_type=None)
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


CHECKPOINT_FORMAT = "spade-checkpoint"
CHECKPOINT_VERSION = 1
_WEIGHT_FILES = {"generator": "generator.safetensors", "discriminator": "discriminator.safetensors",
                 "encoder": "encoder.safetensors"}
EMA_FILE = "generator_ema.safetensors"
STATE_FILE = "training_state.pt"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _contiguous_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state as safetensors writes it: on the CPU, contiguous, one storage per entry.
    Views (γ and β of one matrix, ``fast_spade.share_gamma_beta_storage``) become contiguous
    copies, and entries that still share a storage, which safetensors refuses, are copied; the
    others are written from the module's own memory, so that a save does not hold a second copy
    of the model beside it."""
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    owners: dict[int, int] = {}
    for value in state.values():
        pointer = value.untyped_storage().data_ptr()
        owners[pointer] = owners.get(pointer, 0) + 1
    return {key: value.clone() if owners[value.untyped_storage().data_ptr()] > 1 else value
            for key, value in state.items()}


_CHECKPOINT_FILES = {"config.json", EMA_FILE, STATE_FILE, *_WEIGHT_FILES.values()}


def _files_to_keep(folder: Path) -> list[Path]:
    """The entries of an existing ``folder`` that a new checkpoint written there must keep: all but
    the checkpoint files. Refuses a folder that is not one of our checkpoints, since writing the
    checkpoint replaces it whole (``spadegan export CKPT --inference ~/models`` must not empty
    ``~/models``)."""
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder; expected a new or checkpoint folder")
    entries = list(folder.iterdir())
    if entries and not is_checkpoint_folder(folder):
        raise FileExistsError(f"{folder}: exists and is not a checkpoint folder (no config.json and "
                              f"{_WEIGHT_FILES['generator']}); writing a checkpoint there would replace what it "
                              "holds. Choose a new folder or empty this one.")
    return [path for path in entries if path.name not in _CHECKPOINT_FILES]


def save_checkpoint(folder: str | os.PathLike, networks: Networks, *, ema_generator: nn.Module | None = None,
                    training_state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write our checkpoint folder atomically: everything goes to a temporary sibling folder,
    each file is fsynced, then one rename makes the folder appear complete. An existing folder of
    the same name is replaced only after the new one is complete on disk, and only if it is one of
    our checkpoints; what it holds besides checkpoint files (a README, samples) is carried over."""
    folder = Path(folder)
    keep = _files_to_keep(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": networks.config.to_dict()}
        meta.update(extra or {})
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for name, filename in _WEIGHT_FILES.items():
            net = getattr(networks, name)
            if net is not None:
                save_safetensors(_contiguous_state(net), str(tmp / filename))
        if ema_generator is not None:
            save_safetensors(_contiguous_state(ema_generator), str(tmp / EMA_FILE))
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
        for path in keep:
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, tmp / path.name)
        for path in tmp.iterdir():
            _fsync_path(path)
        _fsync_path(tmp)
        if folder.exists():
            trash = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(folder, trash)
            os.replace(tmp, folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        _fsync_path(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def save_inference_checkpoint(folder: str | os.PathLike, checkpoint: "Checkpoint", *, use_ema: bool = True,
                              dtype: torch.dtype = torch.float32, extra: dict[str, Any] | None = None) -> Path:
    """What inference needs of a training checkpoint: the (EMA) generator as ``generator`` and the
    image encoder, without the discriminator and the training state; optionally stored in
    float16, which halves the files (the weights are rounded once; loading casts them back to
    float32, so the stored values *are* the model)."""
    networks = checkpoint.networks
    use_ema = use_ema and checkpoint.ema_generator is not None
    generator = checkpoint.ema_generator if use_ema else networks.generator
    encoder = networks.encoder
    if dtype != torch.float32:  # rounded copies: the caller's networks stay as they are
        generator = copy.deepcopy(generator).to(dtype)
        encoder = None if encoder is None else copy.deepcopy(encoder).to(dtype)
    meta = {**(extra or {}), "weights_dtype": str(dtype).removeprefix("torch."), "generator_is_ema": use_ema}
    return save_checkpoint(folder, Networks(networks.config, generator, None, encoder), extra=meta)


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    folder: Path
    meta: dict[str, Any]
    networks: Networks
    ema_generator: nn.Module | None
    training_state: dict[str, Any] | None


def is_checkpoint_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / "config.json").is_file() and (Path(folder) / _WEIGHT_FILES["generator"]).is_file()


# A training run folder holds its checkpoints in CHECKPOINTS/, and CHECKPOINTS/LATEST names the newest.
CHECKPOINTS = "checkpoints"
LATEST = "latest"


def latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run's ``checkpoints/`` folder: the one ``latest``
    names, else (a pointer lost or naming a folder that is gone) the highest step found."""
    checkpoints_dir = Path(checkpoints_dir)
    pointer = checkpoints_dir / LATEST
    if pointer.is_file():
        folder = checkpoints_dir / pointer.read_text().strip()
        if is_checkpoint_folder(folder):
            return folder
    best, best_step = None, -1
    for folder in checkpoints_dir.glob("[!.]*"):  # temporary folders start with a dot
        if not is_checkpoint_folder(folder):
            continue
        try:
            step = json.loads((folder / "config.json").read_text()).get("step", -1)
        except (OSError, json.JSONDecodeError):
            continue
        if step > best_step:
            best, best_step = folder, step
    return best


def resolve_checkpoint(path: str | os.PathLike, epoch: str = "latest") -> Path:
    """The folder a checkpoint argument names, as every command reads it: one of our checkpoint
    folders as it is, a training run folder → its newest checkpoint (:func:`latest_checkpoint`),
    an official folder (``opt.txt``) as it is. ``FileNotFoundError`` naming the path otherwise."""
    path = Path(path)
    if is_checkpoint_folder(path) or (path / "opt.txt").is_file():
        return path
    newest = latest_checkpoint(path / CHECKPOINTS) if (path / CHECKPOINTS).is_dir() else None
    if newest is not None:
        return newest
    raise FileNotFoundError(f"{path}: not a checkpoint folder (expected config.json + {_WEIGHT_FILES['generator']}, "
                            f"a run folder with checkpoints/, or an official opt.txt + {epoch}_net_G.pth)")


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    with_training_state: bool = True) -> Checkpoint:
    """Rebuild the networks of one of our checkpoint folders from the folder alone."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a checkpoint folder (no config.json)")
    meta = read_versioned_json(config_path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
    config = ModelConfig.from_dict(meta["model"])
    networks = build_networks(config, init_type=None)
    for name, filename in _WEIGHT_FILES.items():
        net = getattr(networks, name)
        path = folder / filename
        if net is None:
            continue
        if not path.is_file():
            if name == "generator":
                raise FileNotFoundError(f"{path}: no such weights file")
            setattr(networks, name, None)  # e.g. an exported generator-only checkpoint
            continue
        load_into(net, load_safetensors(str(path)), str(path))
    ema = None
    if (folder / EMA_FILE).is_file():
        from .models import build_generator
        ema = build_generator(config.generator, config.semantics)
        load_into(ema, load_safetensors(str(folder / EMA_FILE)), str(folder / EMA_FILE))
        ema.to(device)
    state = None
    if with_training_state and (folder / STATE_FILE).is_file():
        state = load_weights_only(folder / STATE_FILE, "a training state")
    return Checkpoint(folder=folder, meta=meta, networks=networks.to(device), ema_generator=ema,
                      training_state=state)
