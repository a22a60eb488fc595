"""The training loop: data, optimizers with TTUR, the learning-rate schedule, EMA, logging,
checkpoints that never lose work, and DistributedDataParallel.

Reproducibility is designed in rather than bolted on: the order of samples is a function of
(seed, epoch) (a seeded ``DistributedSampler``), each sample's augmentation a function of
(seed, epoch, index), and the RNG states, optimizer states and position in the epoch are in the
checkpoint. So a resumed run continues exactly where it stopped, and in deterministic mode on the
CPU, N steps + resume + M steps give the same weights as N + M steps in one go.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..atomic import atomic_write
from ..checkpoint import CHECKPOINTS, LATEST, latest_checkpoint, load_checkpoint, save_checkpoint
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..data import build_dataset
from ..losses import VGGPerceptualLoss
from ..models import Networks, build_networks
from ..nn.norm import convert_sync_batchnorm
from ..nn.vgg import load_vgg19, resolve_vgg19_path
from ..palettes import PALETTE_FILE, palette_entries, palette_for, read_palette_file
from ..semantics import build_semantics
from . import oasis_steps, steps
from .logging import RunLogger
from .steps import StepNetworks
from .warm_start import freeze_all_but_modulation, warm_start



class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainResult:
    step: int
    epoch: int
    checkpoint: Path | None
    run_dir: Path


# ---------------------------------------------------------------------------------------------
# Schedule (official: constant for `niter` epochs, then linear decay to 0 over `niter_decay`)


def learning_rates(config: TrainConfig, epoch: int) -> tuple[float, float]:
    """(lr_G, lr_D) during ``epoch`` (1-based). The official code lowers the rate at the end of
    each epoch after ``niter``, so epoch ``niter + 1`` still runs at the full rate."""
    def scheduled(rate: float) -> float:
        if config.niter_decay > 0:
            return max(0.0, rate - rate / config.niter_decay * max(0, epoch - 1 - config.niter))
        return rate

    if config.lr_G is not None or config.lr_D is not None:  # a rate per network (OASIS's lr_g, lr_d)
        return (scheduled(config.lr if config.lr_G is None else config.lr_G),
                scheduled(config.lr if config.lr_D is None else config.lr_D))
    lr = scheduled(config.lr)
    if config.no_TTUR:
        return lr, lr
    return lr / 2, lr * 2  # TTUR (Heusel et al. 2017), as the paper trains


def adam_betas(config: TrainConfig) -> tuple[float, float]:
    return (config.beta1, config.beta2) if config.no_TTUR else (0.0, 0.9)


# ---------------------------------------------------------------------------------------------
# Checkpoint folders of a run


def _prune(checkpoints_dir: Path, keep: int, protect: Path) -> None:
    steps = sorted(p for p in checkpoints_dir.glob("step_*") if re.fullmatch(r"step_\d+", p.name))
    for folder in steps[:-keep] if keep > 0 else []:
        if folder != protect:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# RNG state, kept in the checkpoint so a resumed run draws the same random numbers


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def _as_tuples(value):
    """random.setstate wants tuples; a checkpoint round trip may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------------
# Exponential moving average of the generator


class EMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ after each generator step; buffers (BatchNorm statistics,
    spectral-norm vectors) are copied. Evaluate with the EMA copy for smoother results."""

    def __init__(self, generator: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), generator.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), generator.buffers()):
            ema_b.copy_(b)


# ---------------------------------------------------------------------------------------------
# Distributed set-up and teardown (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    ctx = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return ctx


def pick_device(requested: str | torch.device | None, ctx_local_rank: int) -> torch.device:
    if requested is not None:
        device = torch.device(requested)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx_local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# ---------------------------------------------------------------------------------------------
# The loop


def train(run: RunConfig, *, resume: bool = False, device: str | torch.device | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue) the run described by ``run``; see the module doc."""
    if run.train.deterministic:
        # cuBLAS needs this before any CUDA work to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved_device = pick_device(device, local_rank)
    ctx = init_distributed(resolved_device)
    try:
        return _train(run, ctx, resolved_device, resume, progress)
    except BaseException as error:
        # The traceback keeps the loop's frame, hence the DDP models and loaders, alive: release
        # them before the teardown below, or the process group can abort on exit.
        traceback.clear_frames(error.__traceback__)
        raise
    finally:
        if ctx.enabled and dist.is_initialized():
            gc.collect()
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()


def _check_finite(losses: dict[str, torch.Tensor], step: int, ctx: Distributed, checkpoints_dir: Path) -> None:
    # One flag on the losses' device and one read of it: a read per loss would wait for the GPU
    # once per term (7 times per iteration) and keep the CPU from queueing the next work.
    finite = torch.stack([torch.isfinite(v.detach()).all() for v in losses.values()]).all().to(torch.int32)
    if ctx.enabled:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every rank stops together
    if bool(finite.item()):
        return
    values = ", ".join(f"{k} = {float(v.detach().float().mean()):.4g}" for k, v in losses.items())
    last = latest_checkpoint(checkpoints_dir) if checkpoints_dir.is_dir() else None
    raise TrainingDiverged(
        f"step {step}: a loss is not finite ({values}); training stopped before the optimizer step. "
        f"The last good checkpoint is {last or 'not written yet'}: resume from it with --continue_train, "
        "perhaps with a lower --lr, or without --amp fp16.")


def _assert_replicas_identical(modules: dict[str, nn.Module], ctx: Distributed) -> None:
    """DDP keeps every process's copy identical; check it bit for bit at the end of a run, since a
    silent divergence (a non-synchronized buffer, a rank-dependent branch) would waste the run."""
    digests = {}
    for name, module in modules.items():
        h = hashlib.sha256()
        for tensor in list(module.parameters()) + list(module.buffers()):
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digests[name] = h.hexdigest()
    everyone: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everyone, digests)
    differing = [name for name in digests if len({d[name] for d in everyone}) > 1]
    if differing:
        raise RuntimeError(f"the DDP processes ended with different weights in {', '.join(differing)}")


def _refuse_to_replace(checkpoints_dir: Path) -> None:
    """A new run must not overwrite the checkpoints of an earlier run of the same name."""
    existing = latest_checkpoint(checkpoints_dir) if checkpoints_dir.is_dir() else None
    if existing is not None:
        raise FileExistsError(f"{checkpoints_dir.parent} already holds a run (checkpoint {existing.name}); "
                              "pass --continue_train to continue it, or choose another --name")


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def data_set_palette(data: DataConfig, model: ModelConfig) -> dict[str, Any]:
    """A custom data set's ``palette.json`` (beside its label folder, as ``spadegan dataset
    convert`` writes it), for the checkpoints: so that synthesize and serve show its class names
    and colours. Empty where there is none."""
    if data.dataset_mode != "custom" or not data.label_dir:
        return {}
    path = Path(data.label_dir).parent / PALETTE_FILE
    if not path.is_file():
        return {}
    palette = read_palette_file(path)
    if len(palette) != model.semantics.label_nc:
        raise ValueError(f"{path}: {len(palette)} classes, but --label_nc is {model.semantics.label_nc}")
    return {"palette": palette_entries(palette), "palette_name": Path(data.label_dir).parent.name}


class RunCheckpoints:
    """A run's checkpoints as the loop saves them: every rank calls :meth:`save` together (the
    RNG states are gathered from all), rank 0 writes the folder, points ``latest`` at it and
    prunes the older step checkpoints."""

    def __init__(self, checkpoints_dir: Path, ctx: Distributed, keep: int, model_config: ModelConfig,
                 trained: tuple[nn.Module, nn.Module, nn.Module | None], ema: EMA | None,
                 optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
                 scalers: tuple[torch.amp.GradScaler, torch.amp.GradScaler] | None, batch_size: int, seed: int,
                 meta: dict[str, Any] | None = None):
        self.checkpoints_dir, self.ctx, self.keep = checkpoints_dir, ctx, keep
        self.model_config, self.trained, self.ema = model_config, trained, ema  # G, D, E as trained (maybe DDP-wrapped)
        self.optimizers, self.scalers = optimizers, scalers  # (G, D); scalers only with fp16 loss scaling
        self.batch_size, self.seed = batch_size, seed
        self.meta = meta or {}  # more for every checkpoint's config.json (the data set's palette)
        self.last_saved: Path | None = None
        self.saved_at_step = -1  # on every rank, so that all ranks agree on the final save

    def _gather_rng(self) -> Any:
        mine = rng_state()
        if not self.ctx.enabled:
            return mine
        everyone: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def save(self, name: str, step: int, epoch: int, batch_in_epoch: int) -> None:
        rng = self._gather_rng()  # a collective: every rank takes part, rank 0 writes
        self.saved_at_step = step
        if not self.ctx.is_main:
            return
        optimizer_g, optimizer_d = self.optimizers
        training_state = {
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "batch_size": self.batch_size,
            "seed": self.seed, "optimizer_G": optimizer_g.state_dict(), "optimizer_D": optimizer_d.state_dict(),
            "scaler_G": self.scalers[0].state_dict() if self.scalers else None,
            "scaler_D": self.scalers[1].state_dict() if self.scalers else None, "rng": rng,
        }
        generator, discriminator, encoder = self.trained
        plain = Networks(self.model_config, _unwrap(generator), _unwrap(discriminator),
                         None if encoder is None else _unwrap(encoder))
        folder = save_checkpoint(self.checkpoints_dir / name, plain,
                                 ema_generator=None if self.ema is None else self.ema.model,
                                 training_state=training_state, extra={**self.meta, "step": step, "epoch": epoch})
        atomic_write(self.checkpoints_dir / LATEST, lambda tmp: tmp.write_text(name + "\n"))
        _prune(self.checkpoints_dir, self.keep, protect=folder)
        self.last_saved = folder


def due(step: int, freq: int, batch_size: int) -> bool:
    """Whether a ``freq`` (the official counters count images) was just passed at ``step``."""
    return freq > 0 and (step * batch_size) % freq < batch_size


def out_of_time(deadline: float | None, ctx: Distributed, device: torch.device) -> bool:
    """Whether ``deadline`` (time.monotonic) has passed, on any rank: rank clocks differ, and the
    ranks must stop together."""
    if deadline is None:
        return False
    late = torch.tensor([int(time.monotonic() > deadline)], dtype=torch.int32)
    if ctx.enabled:
        flag = late.to(device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        late = flag.cpu()
    return bool(late.item())


@contextmanager
def discriminator_held_fixed(discriminator: nn.Module):
    """The generator step with D's weights out of autograd. Its loss reaches G through D's input
    gradients only; the weight gradients the official code also computes there are zeroed
    before the D step reads them, so leaving them out changes no number and saves their
    computation (and, under DDP, their all-reduce: the forward runs in ``no_sync``)."""
    weights = [p for p in discriminator.parameters() if p.requires_grad]
    for p in weights:
        p.requires_grad_(False)
    try:
        with discriminator.no_sync() if isinstance(discriminator, DistributedDataParallel) else nullcontext():
            yield
    finally:
        for p in weights:
            p.requires_grad_(True)


def _step_functions(model: ModelConfig):
    """The method's two loss functions, ``(nets, semantics, real, loss config)`` → terms: SPADE's
    (hinge GAN, feature matching, VGG, KL) or OASIS's (segmenting D, LabelMix)."""
    if model.generator.netG != "oasis":
        return steps.generator_losses, steps.discriminator_losses
    semantics = model.semantics
    if semantics.use_instance:
        raise ValueError("netG oasis takes no instance maps (its D segments the classes): use --no_instance")
    # Don't-care pixels weigh nothing in the balanced loss: the official data sets' class 0,
    # this project's extra last channel.
    dontcare = semantics.label_nc if semantics.contain_dontcare_label else None
    return (partial(oasis_steps.generator_losses, dontcare_channel=dontcare),
            partial(oasis_steps.discriminator_losses, dontcare_channel=dontcare))


def _train(run: RunConfig, ctx: Distributed, device: torch.device, resume: bool, progress: bool) -> TrainResult:
    cfg = run.train
    run_dir = Path(cfg.run_dir)
    checkpoints_dir = run_dir / CHECKPOINTS

    # -- networks: fresh, or from the newest checkpoint of the run
    state: dict[str, Any] | None = None
    ema: EMA | None = None
    if resume:
        folder = latest_checkpoint(checkpoints_dir)
        if folder is None:
            raise FileNotFoundError(f"--continue_train: no checkpoint to resume in {checkpoints_dir}")
        checkpoint = load_checkpoint(folder, device="cpu")
        networks, state = checkpoint.networks, checkpoint.training_state
        if state is None:
            raise ValueError(f"{folder}: has no training state to resume from (an exported checkpoint?)")
        model_config = networks.config
        if cfg.ema:
            ema = EMA(networks.generator, cfg.ema_decay)
            if checkpoint.ema_generator is not None:
                ema.model.load_state_dict(checkpoint.ema_generator.state_dict())
    else:
        _refuse_to_replace(checkpoints_dir)
        torch.manual_seed(cfg.seed)
        model_config = run.model
        networks = build_networks(model_config, cfg.init_type, cfg.init_variance)
        if cfg.ema:
            ema = EMA(networks.generator, cfg.ema_decay)
        if cfg.init_from:
            for line in warm_start(networks, None if ema is None else ema.model, cfg.init_from,
                                   fresh=cfg.init_fresh):
                if ctx.is_main:
                    print(f"init_from: {line}", file=sys.stderr)
    if networks.discriminator is None:
        raise ValueError("training needs a discriminator: the model config has none")
    if hasattr(networks.generator, "fast_spade"):
        networks.generator.fast_spade = networks.generator.fast_spade and cfg.fast_spade
    # -- the VGG loss first: a missing weights file should stop the run before any work
    vgg_loss = None
    if not run.loss.no_vgg_loss:
        vgg_loss = VGGPerceptualLoss(load_vgg19(resolve_vgg19_path(run.loss.vgg_path), device))

    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    networks.to(device)
    if cfg.channels_last:
        for net in (networks.generator, networks.discriminator, networks.encoder):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    if ema is not None:
        ema.model.to(device)
    if cfg.freeze_generator:  # before DDP, which hooks the parameters that need gradients
        freeze_all_but_modulation(networks.generator)
    generator, discriminator, encoder = networks.generator, networks.discriminator, networks.encoder
    if ctx.enabled:
        generator, discriminator = convert_sync_batchnorm(generator), convert_sync_batchnorm(discriminator)
        device_ids = [device.index] if device.type == "cuda" else None
        generator = DistributedDataParallel(generator, device_ids=device_ids)
        discriminator = DistributedDataParallel(discriminator, device_ids=device_ids)
        if encoder is not None:
            encoder = DistributedDataParallel(encoder, device_ids=device_ids)
    nets = StepNetworks(generator, discriminator, encoder, vgg_loss)
    generator_losses, discriminator_losses = _step_functions(model_config)

    # -- optimizers (TTUR) and loss scaling
    epoch = int(state["epoch"]) if state else 1
    lr_g, lr_d = learning_rates(cfg, epoch)
    betas = adam_betas(cfg)
    g_params = [p for p in generator.parameters() if p.requires_grad]
    g_params += list(encoder.parameters()) if encoder is not None else []
    optimizer_g = torch.optim.Adam(g_params, lr=lr_g, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=betas)
    use_scaler = cfg.amp == "fp16"
    scaler_g = torch.amp.GradScaler(device.type, enabled=use_scaler)
    scaler_d = torch.amp.GradScaler(device.type, enabled=use_scaler)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)
                if cfg.amp != "none" else nullcontext())
    if state:
        optimizer_g.load_state_dict(state["optimizer_G"])
        optimizer_d.load_state_dict(state["optimizer_D"])
        if state.get("scaler_G"):
            scaler_g.load_state_dict(state["scaler_G"])
        if state.get("scaler_D"):
            scaler_d.load_state_dict(state["scaler_D"])

    # -- data: a seeded sampler shards the epoch's permutation over the processes
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"--batchSize {cfg.batch_size} does not split over {ctx.world_size} processes")
    per_rank = cfg.batch_size // ctx.world_size
    if ctx.is_main or not ctx.enabled:
        dataset = build_dataset(run.data, seed=cfg.seed, check=True, progress=progress)
    if ctx.enabled:
        dist.barrier()  # rank 0 checked every file; the others only list them
        if not ctx.is_main:
            dataset = build_dataset(run.data, seed=cfg.seed, check=False)
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=not cfg.serial_batches, seed=cfg.seed, drop_last=True)
    batches_per_epoch = len(sampler) // per_rank
    if batches_per_epoch == 0:
        raise ValueError(f"the data set has {len(dataset)} samples: not one full batch of {cfg.batch_size}")
    palette_meta = data_set_palette(run.data, model_config)
    # the run folder appears only once the data, its palette and the VGG weights passed their checks
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "run_config.json",
                     lambda tmp: tmp.write_text(json.dumps(RunConfig(model_config, run.data, run.loss, cfg).to_dict(),
                                                           indent=2) + "\n"))
    total_epochs = cfg.niter + cfg.niter_decay
    total_steps = total_epochs * batches_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    step = int(state["step"]) if state else 0
    batch_index = int(state["batch_in_epoch"]) if state else 0
    if state:
        set_rng_state(state["rng"][ctx.rank] if isinstance(state["rng"], list) else state["rng"])
    else:
        torch.manual_seed(cfg.seed + ctx.rank)
        random.seed(cfg.seed + ctx.rank)
        np.random.seed(cfg.seed + ctx.rank)

    semantics_config = model_config.semantics
    logger = RunLogger(run_dir, ctx.is_main, palette_for(run.data.dataset_mode, semantics_config.label_nc),
                       tensorboard=cfg.tensorboard)
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    # With --max_minutes the time limit usually comes long before --niter's last step, so the
    # bar's ETA (to the last step) would mislead: its label says when the run will stop.
    stop_clock = "" if deadline is None else time.strftime(
        " (stops by %H:%M)", time.localtime(time.time() + deadline - time.monotonic()))
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and ctx.is_main), unit="it",
               desc="train" + stop_clock, dynamic_ncols=True)
    checkpoints = RunCheckpoints(checkpoints_dir, ctx, cfg.keep_checkpoints, model_config,
                                 (generator, discriminator, encoder), ema,
                                 (optimizer_g, optimizer_d), (scaler_g, scaler_d) if use_scaler else None,
                                 cfg.batch_size, cfg.seed, meta=palette_meta)

    loader_generator = torch.Generator()  # keeps DataLoader seeding off the global RNG (exact resume)
    # Wall time, and this process's CPU time (all threads), which time stolen by other tenants of
    # a shared machine does not inflate.
    started, started_cpu, steps_timed = time.perf_counter(), time.process_time(), 0
    g_losses: dict[str, torch.Tensor] = {}
    fake: torch.Tensor | None = None  # the latest generator output, for display
    while epoch <= total_epochs and step < total_steps:
        lr_g, lr_d = learning_rates(cfg, epoch)
        for group in optimizer_g.param_groups:
            group["lr"] = lr_g
        for group in optimizer_d.param_groups:
            group["lr"] = lr_d
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        indices = list(sampler)
        batches = [indices[i * per_rank:(i + 1) * per_rank] for i in range(batches_per_epoch)]
        loader = DataLoader(dataset, batch_sampler=batches[batch_index:], num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda", generator=loader_generator.manual_seed(0))
        for batch in loader:
            real = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            semantics = build_semantics(
                batch["label"].to(device), semantics_config.label_nc, semantics_config.contain_dontcare_label,
                batch["instance"].to(device) if semantics_config.use_instance else None,
                semantics_config.use_instance, source=", ".join(batch["path"]),
            ).contiguous(memory_format=memory_format)

            # -- generator step (official order: G, then D)
            if batch_index % cfg.D_steps_per_G == 0:
                with autocast, discriminator_held_fixed(discriminator):
                    g_losses, fake = generator_losses(nets, semantics, real, run.loss)
                _check_finite(g_losses, step, ctx, checkpoints_dir)
                # Gradients stay allocated between steps, zeroed (0 + g is g exactly), as the official
                # code's zero_grad() left them with the PyTorch of its day: the backward pass writes
                # into the same buffers every step rather than making a new set, which the default
                # allocator maps and zero-fills afresh and which, made between the activations the
                # backward pass frees, splits a heap that keeps freed memory (spadegan.memory).
                optimizer_g.zero_grad(set_to_none=False)
                scaler_g.scale(sum(g_losses.values())).backward()
                scaler_g.step(optimizer_g)
                scaler_g.update()
                if ema is not None:
                    ema.update(_unwrap(generator))

            # -- discriminator step
            with autocast:
                d_losses = discriminator_losses(nets, semantics, real, run.loss)
            _check_finite(d_losses, step, ctx, checkpoints_dir)
            optimizer_d.zero_grad(set_to_none=False)
            scaler_d.scale(sum(d_losses.values())).backward()
            scaler_d.step(optimizer_d)
            scaler_d.update()

            step += 1
            batch_index += 1
            steps_timed += 1
            bar.update(1)

            # -- bookkeeping: log, show, save
            if due(step, cfg.print_freq, cfg.batch_size) or step == total_steps:
                elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
                losses = {k: float(v.detach().float().mean()) for k, v in {**g_losses, **d_losses}.items()}
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
                logger.log({"step": step, "epoch": epoch, "images": step * cfg.batch_size, "losses": losses,
                            "lr_G": lr_g, "lr_D": lr_d, "seconds_per_iteration": elapsed / max(1, steps_timed),
                            "cpu_seconds_per_iteration": elapsed_cpu / max(1, steps_timed)})
                started, started_cpu, steps_timed = time.perf_counter(), time.process_time(), 0
            if due(step, cfg.display_freq, cfg.batch_size) and ctx.is_main and fake is not None:
                columns = {"synthesized": fake.detach()}
                if ema is not None:
                    with torch.no_grad(), autocast:
                        z = None
                        if encoder is not None:
                            z = _unwrap(encoder)(real)[0]  # the mean code: the style of the real image
                        columns["EMA"] = ema.model(semantics, z)
                columns["real"] = real
                logger.display(step, batch["label"], columns)
            if due(step, cfg.save_latest_freq, cfg.batch_size):
                checkpoints.save(f"step_{step:08d}", step, epoch, batch_index)
            if step >= total_steps or out_of_time(deadline, ctx, device):
                total_steps = step  # the run ends here; the final checkpoint below records it
                break
        if batch_index >= batches_per_epoch:  # the epoch is complete
            finished = epoch
            epoch, batch_index = epoch + 1, 0
            if finished % cfg.save_epoch_freq == 0 or finished == total_epochs:
                checkpoints.save(f"epoch_{finished:04d}", step, epoch, batch_index)
    if checkpoints.saved_at_step != step:
        checkpoints.save(f"step_{step:08d}", step, epoch, batch_index)
    if ctx.enabled:
        _assert_replicas_identical({"generator": _unwrap(generator), "discriminator": _unwrap(discriminator)}, ctx)
        if ctx.is_main:
            print(f"{ctx.world_size} processes ended with identical weights", file=sys.stderr)
    bar.close()
    logger.close()
    return TrainResult(step=step, epoch=epoch, checkpoint=checkpoints.last_saved, run_dir=run_dir)
