"""Train the landscape segmenter shipped in ``spadegan/weights/landscape_segmenter``.

    python scripts/train_segmenter.py --out /tmp/segmenter_run --export src/spadegan/weights/landscape_segmenter

1. Data: ``--train-count`` procedural landscapes of seed ``--train-seed`` and ``--val-count`` of
   seed ``--val-seed`` (disjoint random streams: sample i is seed (S, i)), written once by
   :func:`spadegan.data.landscapes.write_dataset` under ``OUT/data`` and held in memory as uint8.
2. Augmentation, per sample: a random crop of 35-100 % of the side, resized to ``--crop``
   (random scale) — half of the time placed around a pixel of a class drawn uniformly from the
   sample's classes, so that small classes are seen often —, horizontal flip, colour jitter (brightness, contrast, saturation, hue,
   gamma) and — because the segmenter reads *synthesized* images, which are blurrier, noisier and
   less exact in colour than the renders — Gaussian blur or down/up resampling, pixel noise and
   low-frequency colour blotches.
3. Cross-entropy (classes weighted by frequency^-``--class-weight-power``), AdamW, linear warm-up
   then cosine decay, one CPU thread by default, bf16 autocast and channels-last (about twice the
   fp32 speed on CPUs with AMX / AVX512-BF16; the weights stay float32). ``OUT/checkpoint.pt`` (model, optimizer, step,
   RNG, elapsed time) is written atomically every ``--save-every`` steps: rerunning the same
   command resumes; rerunning it with a larger ``--steps`` extends the run (the cosine continues
   on the longer horizon; ``OUT/commands.jsonl`` lists the invocations and the steps each trained).
   ``OUT/log.jsonl`` holds losses and validation scores.
4. At the end: scores on the whole validation set at full resolution (and on degraded copies),
   and with ``--export FOLDER`` the weights + ``config.json`` with the command, seeds, steps, wall
   and CPU time and scores (rerunning a finished run's command with ``--export`` only exports).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from spadegan.atomic import atomic_write
from spadegan.data import landscapes
from spadegan.evaluation.segmentation import ConfusionMatrix, SegmentationScores
from spadegan.evaluation.segmenters.landscape import (
    DEFAULT_PREPROCESSING,
    LandscapeNetConfig,
    LandscapeSegmenter,
    LandscapeSegNet,
    save_landscape_segmenter,
)

IGNORE = 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="/tmp/segmenter_run", help="run folder: data, checkpoint, log")
    p.add_argument("--export", default=None, help="write the final weights + config.json to this folder")
    p.add_argument("--train-count", type=int, default=2500)
    p.add_argument("--val-count", type=int, default=300)
    p.add_argument("--train-seed", type=int, default=1000)
    p.add_argument("--val-seed", type=int, default=2000)
    p.add_argument("--size", type=int, default=256, help="side of the generated landscapes")
    p.add_argument("--crop", type=int, default=128, help="side of the training crops")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--class-weight-power", type=float, default=0.3)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="autocast precision of the training steps (bf16: ~2× faster on CPUs with AMX/AVX512-BF16)")
    p.add_argument("--widths", default="16,32,64,128,192", help="channels per level of the network")
    p.add_argument("--val-every", type=int, default=300)
    p.add_argument("--val-subset", type=int, default=100, help="validation images scored during training")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-crop", type=float, default=0.35, help="smallest crop side / image side")
    p.add_argument("--focus", type=float, default=0.5, help="probability of a crop around a random class")
    p.add_argument("--blur", type=float, default=0.35, help="probability of a Gaussian blur")
    p.add_argument("--resample", type=float, default=0.25, help="probability of a down/up resampling")
    p.add_argument("--loader-workers", type=int, default=0, help="processes augmenting batches (0: in-process)")
    p.add_argument("--data-workers", type=int, default=1, help="processes generating the landscapes")
    p.add_argument("--device", default="cpu", help="where the network runs (augmentation stays on the CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization, sample order and augmentation")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def load_split(root: Path, count: int, seed: int, size: int, workers: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Write the split once (resumable), then read it: N×3×H×W and N×H×W uint8 tensors."""
    landscapes.write_dataset(root, count, (size, size), seed=seed, workers=workers, progress=True)
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    labels = torch.empty(count, size, size, dtype=torch.uint8)
    for index in tqdm(range(count), desc=f"reading {root.name}", unit="sample"):
        label_path, _, image_path = landscapes.sample_paths(root, index)
        images[index] = torch.from_numpy(np.asarray(Image.open(image_path).convert("RGB"))).permute(2, 0, 1)
        labels[index] = torch.from_numpy(np.asarray(Image.open(label_path)))
    return images, labels


def class_lookup(class_ids: tuple[int, ...]) -> torch.Tensor:
    """COCO-Stuff id → output index (255 for ids the network does not predict)."""
    lut = torch.full((256,), IGNORE, dtype=torch.long)
    lut[torch.tensor(class_ids)] = torch.arange(len(class_ids))
    return lut


# ---------------------------------------------------------------------------------------------
# Augmentation (all on float images in [0, 1])
# ---------------------------------------------------------------------------------------------

def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def rotate_hue(image: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate the hue by ``turns`` of a full circle (a rotation of the YIQ chroma plane)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    angle = 2 * math.pi * turns
    rotation = torch.tensor([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    return torch.einsum("ij,jhw->ihw", matrix, image)


def augment(image: torch.Tensor, label: torch.Tensor, crop: int, rng: random.Random, min_crop: float = 0.35,
            blur: float = 0.35, resample: float = 0.25, focus: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One training sample: uint8 3×S×S image and S×S label → float 3×crop×crop and crop×crop.

    ``min_crop``: smallest crop side as a fraction of the image side; ``blur`` / ``resample``:
    probabilities of a Gaussian blur / a down-and-up resampling (never both); ``focus``:
    probability that the crop holds a pixel of a class drawn uniformly from those in the
    sample (small classes — bushes, rocks, paths — are seen far more often than their area says)."""
    size = image.shape[-1]
    side = int(size * rng.uniform(min_crop, 1.0))
    aspect = rng.uniform(0.8, 1.25)
    h, w = min(size, int(side * aspect ** 0.5)), min(size, int(side / aspect ** 0.5))
    top, left = rng.randint(0, size - h), rng.randint(0, size - w)
    if rng.random() < focus:
        present = label.unique().tolist()
        pixels = (label == rng.choice(present)).nonzero()
        y, x = pixels[rng.randrange(len(pixels))].tolist()
        top = min(max(0, y - rng.randrange(h)), size - h)
        left = min(max(0, x - rng.randrange(w)), size - w)
    image = image[:, top:top + h, left:left + w].float().div(255)
    label = label[top:top + h, left:left + w]
    image = F.interpolate(image[None], size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)[0]
    label = F.interpolate(label[None, None].float(), size=(crop, crop), mode="nearest")[0, 0].to(torch.uint8)
    if rng.random() < 0.5:
        image, label = image.flip(-1), label.flip(-1)
    # Colour: the synthesized pictures' colours drift from the renders' (and per class).
    image = image * rng.uniform(0.7, 1.3)
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.7, 1.3) + mean
    gray = image.mean(dim=0, keepdim=True)
    image = (image - gray) * rng.uniform(0.6, 1.4) + gray
    if rng.random() < 0.5:
        image = rotate_hue(image, rng.uniform(-0.06, 0.06))
    image = image.clamp(0, 1) ** rng.uniform(0.8, 1.25)
    # Softness: synthesized images are blurrier than the renders.
    roll = rng.random()
    if roll < blur:
        image = gaussian_blur(image, rng.uniform(0.4, 1.5))
    elif roll < blur + resample:
        factor = rng.uniform(1.5, 3.0)
        small = (max(8, int(crop / factor)),) * 2
        image = F.interpolate(F.interpolate(image[None], size=small, mode="bilinear", antialias=True),
                              size=(crop, crop), mode="bilinear", align_corners=False)[0]
    # Noise: per-pixel grain and low-frequency colour blotches.
    if rng.random() < 0.5:
        image = image + torch.randn_like(image) * rng.uniform(0.005, 0.05)
    if rng.random() < 0.3:
        cells = rng.choice((4, 8, 16))
        blotches = torch.randn(1, 3, cells, cells) * rng.uniform(0.02, 0.06)
        image = image + F.interpolate(blotches, size=(crop, crop), mode="bicubic", align_corners=False)[0]
    return image.clamp(0, 1), label


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A fixed 'synthesized-like' degradation for validation: blur, down/up sampling, noise."""
    out = []
    for image in images:
        image = gaussian_blur(image, 1.0)
        size = image.shape[-2:]
        image = F.interpolate(F.interpolate(image[None], scale_factor=0.5, mode="bilinear", antialias=True),
                              size=size, mode="bilinear", align_corners=False)[0]
        out.append(image + torch.randn(image.shape, generator=generator) * 0.03)
    return torch.stack(out).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def evaluate(segmenter: LandscapeSegmenter, images: torch.Tensor, labels: torch.Tensor,
             degraded: bool = False, batch: int = 8) -> SegmentationScores:
    """Scores on real validation images at full resolution (degraded copies if asked)."""
    segmenter.network.eval()
    matrix = ConfusionMatrix(182, valid_classes=segmenter.class_ids)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(images), batch):
        x = images[start:start + batch].float().div(255)
        if degraded:
            x = degrade(x, generator)
        matrix.update(segmenter.predict(x), labels[start:start + batch].long())
    return matrix.compute()


def summary(scores: SegmentationScores, names: dict[int, str]) -> dict:
    return {"miou": round(scores.miou, 4), "pixel_accuracy": round(scores.pixel_accuracy, 4),
            "mean_class_accuracy": round(scores.mean_class_accuracy, 4),
            "per_class_iou": {names[c]: round(v, 4) for c, v in scores.per_class_iou.items()},
            "per_class_accuracy": {names[c]: round(v, 4) for c, v in scores.per_class_accuracy.items()}}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

class TrainingBatches(torch.utils.data.Dataset):
    """Item ``step``: the augmented batch of that step, a pure function of (seed, step), so a
    resumed run sees the same data, whatever the number of loader workers."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, lut: torch.Tensor, args: argparse.Namespace):
        self.images, self.labels, self.lut, self.args = images, labels, lut, args

    def __len__(self) -> int:
        return self.args.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        args = self.args
        rng = random.Random(f"{args.seed}:{step}")
        torch.manual_seed(hash((args.seed, step)) & 0xFFFFFFFF)   # the noise of augment()
        picks = [rng.randrange(len(self.images)) for _ in range(args.batch)]
        pairs = [augment(self.images[i], self.labels[i], args.crop, rng, args.min_crop, args.blur,
                         args.resample, args.focus)
                 for i in picks]
        x = DEFAULT_PREPROCESSING(torch.stack([p[0] for p in pairs]))
        return x, self.lut[torch.stack([p[1] for p in pairs]).long()]


def learning_rate(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])

    class_ids = tuple(landscapes.CLASS_IDS)
    names = {c: landscapes.CLASS_NAMES[c] for c in class_ids}
    lut = class_lookup(class_ids)
    train_images, train_labels = load_split(out / "data" / "train", args.train_count, args.train_seed, args.size,
                                              args.data_workers)
    val_images, val_labels = load_split(out / "data" / "val", args.val_count, args.val_seed, args.size,
                                          args.data_workers)

    counts = torch.bincount(lut[train_labels.long()].flatten(), minlength=256)[: len(class_ids)].double()
    weights = (counts / counts.sum()).clamp_min(1e-6) ** -args.class_weight_power
    weights = (weights / (weights * counts / counts.sum()).sum()).float()  # pixel-weighted mean 1

    torch.manual_seed(args.seed)
    config = LandscapeNetConfig(num_classes=len(class_ids), widths=tuple(int(w) for w in args.widths.split(",")))
    device = torch.device(args.device)
    network = LandscapeSegNet(config).to(device, memory_format=torch.channels_last)
    weights = weights.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    segmenter = LandscapeSegmenter("landscapes", network, class_ids, DEFAULT_PREPROCESSING, device,
                                   class_names=[names[c] for c in class_ids])
    step, elapsed, cpu_elapsed = 0, 0.0, 0.0
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        network.load_state_dict(state["model"])   # onto the network's device
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, cpu_elapsed = int(state["step"]), float(state["elapsed"]), float(state.get("cpu_elapsed", 0))
        print(f"resumed from {checkpoint} at step {step} ({elapsed / 60:.1f} min trained)")

    bar = tqdm(total=args.steps, initial=step, desc="train segmenter", unit="step")
    # Wall time, and the CPU time of this process (what the training costs on a shared machine).
    started, cpu_started = time.perf_counter() - elapsed, time.process_time() - cpu_elapsed
    first_step = step
    batches = torch.utils.data.DataLoader(
        TrainingBatches(train_images, train_labels, lut, args), batch_size=None,
        sampler=range(step, args.steps), num_workers=args.loader_workers)
    for x, y in batches:
        network.train()
        x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = network(x)
        loss = F.cross_entropy(logits.float(), y, weight=weights, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        record = {"step": step, "loss": round(loss.item(), 5), "lr": optimizer.param_groups[0]["lr"],
                  "minutes": round((time.perf_counter() - started) / 60, 2),
                  "cpu_minutes": round((time.process_time() - cpu_started) / 60, 2)}
        if step % args.val_every == 0 or step == args.steps:
            scores = evaluate(segmenter, val_images[: args.val_subset], val_labels[: args.val_subset])
            record.update(val_miou=round(scores.miou, 4), val_pixel_accuracy=round(scores.pixel_accuracy, 4))
            bar.write(f"step {step}: val mIoU {scores.miou:.4f}, pixel accuracy {scores.pixel_accuracy:.4f} "
                      f"({args.val_subset} images)")
        with open(out / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        if step % args.save_every == 0 or step == args.steps:
            save_state(checkpoint, {"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                                    "step": step, "elapsed": time.perf_counter() - started,
                                    "cpu_elapsed": time.process_time() - cpu_started})
    bar.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    # Every invocation, with the steps it trained: a run extended with a larger --steps (the cosine
    # schedule then continues on the longer horizon) is reproduced by rerunning them in order.
    with open(out / "commands.jsonl", "a") as history:
        history.write(json.dumps({"command": command, "from_step": first_step, "to_step": step}) + "\n")
    commands = [json.loads(line) for line in (out / "commands.jsonl").read_text().splitlines() if line.strip()]

    real = evaluate(segmenter, val_images, val_labels)
    degraded = evaluate(segmenter, val_images, val_labels, degraded=True)
    result = {"real": summary(real, names), "degraded": summary(degraded, names)}
    print(json.dumps(result, indent=2))
    (out / "final_scores.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.export:
        training = {
            "command": command,
            "commands": [c for c in commands if c["to_step"] > c["from_step"]],   # those that trained
            "data": {"generator": "spadegan.data.landscapes.write_dataset", "size": args.size,
                     "train": {"seed": args.train_seed, "count": args.train_count},
                     "validation": {"seed": args.val_seed, "count": args.val_count}},
            "steps": args.steps, "batch": args.batch, "crop": args.crop, "optimizer": "AdamW",
            "lr": args.lr, "weight_decay": args.weight_decay, "schedule": f"linear warm-up {args.warmup}, cosine",
            "class_weight_power": args.class_weight_power, "threads": args.threads, "device": args.device,
            "wall_time_minutes": round(wall / 60, 1), "cpu_time_minutes": round(cpu / 60, 1),
            "precision": args.precision, "focus": args.focus, "min_crop": args.min_crop,
            "blur": args.blur, "resample": args.resample, "torch": torch.__version__,
            "validation": {"images": args.val_count, "resolution": args.size, **result},
        }
        save_landscape_segmenter(args.export, network, class_ids, [names[c] for c in class_ids],
                                 DEFAULT_PREPROCESSING, training)
        print(f"wrote {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
