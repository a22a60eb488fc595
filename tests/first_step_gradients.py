"""Run ``spadegan`` with its arguments and save the gradients each optimizer steps with first.

``python first_step_gradients.py OUT_DIR train ...`` (under ``torch.distributed.run`` as well)
writes ``OUT_DIR/rank{R}_optimizer{N}.pt``: the list of gradients of the N-th optimizer to take
a step, in parameter order, as that optimizer received them (after DistributedDataParallel has
averaged them over the processes). Used by the DDP test to compare two runs' gradients before
Adam, which turns a gradient's rounding noise into a full-size step wherever the gradient is
near zero.
"""

import os
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from spadegan.cli import main


def record_first_steps(out_dir: Path) -> None:
    rank = int(os.environ.get("RANK", "0"))
    seen: list[torch.optim.Optimizer] = []

    def hook(optimizer, args, kwargs):
        if any(optimizer is other for other in seen):
            return
        seen.append(optimizer)
        gradients = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                     for group in optimizer.param_groups for p in group["params"]]
        torch.save(gradients, out_dir / f"rank{rank}_optimizer{len(seen) - 1}.pt")

    register_optimizer_step_pre_hook(hook)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    record_first_steps(out)
    sys.exit(main(sys.argv[2:]))
