"""What a training run shows: a jsonl log of losses, TensorBoard scalars and images, and image
grids (colourized label | synthesized | real) as PNG files with an HTML page of them."""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path

import torch

from ..imageio import save_png_atomic, to_pil
from ..palettes import Palette, colorize_label_tensor


def image_grid(columns: list[torch.Tensor], max_rows: int = 4) -> torch.Tensor:
    """Columns of N×3×H×W images in [-1, 1] → one 3×(rows·H)×(cols·W) grid, 2-px white gutters."""
    rows = min(max_rows, columns[0].shape[0])
    _, h, w = columns[0].shape[1:]
    gutter = 2
    grid = torch.ones(3, rows * (h + gutter) - gutter, len(columns) * (w + gutter) - gutter)
    for c, column in enumerate(columns):
        for r in range(rows):
            grid[:, r * (h + gutter): r * (h + gutter) + h, c * (w + gutter): c * (w + gutter) + w] = \
                column[r].detach().float().cpu().clamp(-1, 1)
    return grid


class RunLogger:
    """Writes the run's logs; inactive on ranks other than 0."""

    def __init__(self, run_dir: Path, active: bool, palette: Palette, tensorboard: bool = True):
        self.active = active
        self.palette = palette
        self.log_path = run_dir / "logs" / "losses.jsonl"
        self.web_dir = run_dir / "web"
        self.writer = None
        if not active:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        (self.web_dir / "images").mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a trimmed install may lack it
                warnings.warn("tensorboard is not installed: losses go to logs/losses.jsonl only", stacklevel=2)

    def log(self, record: dict) -> None:
        if not self.active:
            return
        with open(self.log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.get("losses", {}).items():
                self.writer.add_scalar(f"loss/{name}", value, record["step"])
            for name in ("lr_G", "lr_D", "seconds_per_iteration", "cpu_seconds_per_iteration"):
                if name in record:
                    self.writer.add_scalar(f"train/{name}", record[name], record["step"])

    def display(self, step: int, label: torch.Tensor, columns: dict[str, torch.Tensor]) -> Path | None:
        """Save the grid (label | each column) for ``step`` and refresh the HTML page."""
        if not self.active:
            return None
        grid = image_grid([colorize_label_tensor(label.cpu(), self.palette)] + list(columns.values()))
        path = self.web_dir / "images" / f"step_{step:08d}.png"
        save_png_atomic(to_pil(grid), path)
        if self.writer is not None:
            self.writer.add_image("samples", (grid + 1) / 2, step)
        self._write_page(["label"] + list(columns))
        return path

    def _write_page(self, headers: list[str]) -> None:
        images = sorted((self.web_dir / "images").glob("step_*.png"), reverse=True)
        rows = "\n".join(f"<h3>step {int(p.stem[5:])}</h3><img src='images/{html.escape(p.name)}'>" for p in images)
        page = ("<!doctype html><meta charset='utf-8'><title>training samples</title>"
                "<style>body{font-family:sans-serif}img{max-width:100%;image-rendering:pixelated}</style>"
                f"<p>columns: {html.escape(' | '.join(headers))}</p>\n{rows}\n")
        tmp = self.web_dir / ".index.html.tmp"
        tmp.write_text(page)
        tmp.replace(self.web_dir / "index.html")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
