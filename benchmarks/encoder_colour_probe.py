"""How much of a picture's colour can be read off an image encoder's code.

A linear probe: ridge regression from the encoder's mean code μ to the picture's colour
statistics (per RGB channel: the mean, the standard deviation, the mean of the top half and of
the bottom half), fitted and scored by 5-fold cross-validation; the score is R² per statistic
(1: the code determines it, 0 or below: the code says nothing of it). A style code that cannot
carry a picture's colours cannot pass them on, whatever the generator does with it.

    python benchmarks/encoder_colour_probe.py --images DATA/train_img [--count 400] \\
        [--checkpoint FOLDER ...] [--random_norm spectralinstance spectral ...]

``--checkpoint`` scores trained encoders (our checkpoint folders or run folders);
``--random_norm`` scores freshly initialized encoders of that ``--norm_E`` (ndf 16, 6 layers,
z 256, the official initialization, a few train-mode passes so that spectral norm's vectors
settle), which shows what the architecture lets through before any training: instance norm
removes each feature map's mean and variance, and with them a picture's global colour.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spadegan.checkpoint import load_checkpoint
from spadegan.config import EncoderConfig
from spadegan.models import build_encoder
from spadegan.nn.init import init_weights

STATISTICS = [f"{what} {channel}" for what in ("mean", "std", "top", "bottom") for channel in "RGB"]


def load_images(folder: Path, count: int) -> list[torch.Tensor]:
    files = sorted(folder.glob("*.png"))[:count]
    if len(files) < 20:
        raise SystemExit(f"--images {folder}: {len(files)} PNG files; the probe needs at least 20")
    return [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 127.5 - 1)
            .permute(2, 0, 1)[None] for f in files]


def colour_statistics(image: torch.Tensor) -> np.ndarray:
    x = image[0]
    half = x.shape[1] // 2
    parts = [x.flatten(1).mean(1), x.flatten(1).std(1), x[:, :half].flatten(1).mean(1), x[:, half:].flatten(1).mean(1)]
    return torch.cat(parts).numpy()


def probe_r2(codes: np.ndarray, targets: np.ndarray, folds: int = 5, ridge: float = 10.0) -> np.ndarray:
    """Cross-validated R² of a ridge regression from standardized codes to each target column."""
    order = np.random.default_rng(0).permutation(len(codes))
    predicted = np.zeros_like(targets)
    for test in np.array_split(order, folds):
        train = np.setdiff1d(order, test)
        mean, scale = codes[train].mean(0), codes[train].std(0) + 1e-12
        x = (codes[train] - mean) / scale
        offset = targets[train].mean(0)
        weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ (targets[train] - offset))
        predicted[test] = (codes[test] - mean) / scale @ weights + offset
    residual = ((predicted - targets) ** 2).sum(0)
    return 1 - residual / ((targets - targets.mean(0)) ** 2).sum(0)


@torch.no_grad()
def codes_of(encoder: torch.nn.Module, images: list[torch.Tensor]) -> np.ndarray:
    encoder.eval()
    return np.concatenate([encoder(image)[0].double().numpy() for image in images])


def random_encoder(norm: str, images: list[torch.Tensor]) -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = init_weights(build_encoder(EncoderConfig(ndf=16, num_layers=6, latent_dim=256, norm_E=norm)))
    with torch.no_grad():  # let spectral norm's power iteration settle, as a few training steps would
        encoder.train()
        for image in images[:10]:
            encoder(image)
    return encoder


def trained_encoder(path: Path) -> torch.nn.Module:
    newest = path / "checkpoints" / "latest"
    if newest.is_file():
        path = path / "checkpoints" / newest.read_text().strip()
    encoder = load_checkpoint(path, with_training_state=False).networks.encoder
    if encoder is None:
        raise SystemExit(f"--checkpoint {path}: this model has no image encoder")
    return encoder.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="a folder of pictures (e.g. spadegan landscapes' train_img)")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--checkpoint", type=Path, nargs="*", default=[])
    parser.add_argument("--random_norm", nargs="*", default=[])
    args = parser.parse_args()
    images = load_images(args.images, args.count)
    targets = np.stack([colour_statistics(image) for image in images])
    rows = [(f"trained {path}", trained_encoder(path)) for path in args.checkpoint]
    rows += [(f"random, --norm_E {norm}", random_encoder(norm, images)) for norm in args.random_norm]
    print(f"R² of a linear probe from the code μ to the colour statistics, {len(images)} pictures, 5-fold CV")
    print("| encoder | " + " | ".join(STATISTICS) + " |")
    print("| --- |" + " --- |" * len(STATISTICS))
    for name, encoder in rows:
        r2 = probe_r2(codes_of(encoder, images), targets)
        print(f"| {name} | " + " | ".join(f"{value:.2f}" for value in r2) + " |")


if __name__ == "__main__":
    main()
