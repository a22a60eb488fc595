"""Random style seeds: one range for the command line, the web API and the library.

A seed is a whole number 0 ≤ S < 2**63: what a signed 64-bit integer holds (SQLite, JSON
readers, other languages), inside what ``torch.Generator.manual_seed`` takes. Several samples
of one map take seeds S, S+1, ..., so all of them must be in range.
"""

from __future__ import annotations

SEED_LIMIT = 2 ** 63


def seed_problem(seed: int, count: int = 1) -> str | None:
    """Why seeds ``seed .. seed + count - 1`` cannot be used, or None when they can."""
    if not 0 <= seed < SEED_LIMIT:
        return f"expected a whole number from 0 to {SEED_LIMIT - 1} (2**63 - 1)"
    if seed + count - 1 >= SEED_LIMIT:
        return (f"its {count} samples take seeds {seed} to {seed + count - 1}, past the largest seed "
                f"{SEED_LIMIT - 1} (2**63 - 1); give a smaller seed")
    return None


def check_seed(seed: int, count: int = 1, name: str = "seed") -> int:
    """``seed`` when it and the ``count - 1`` seeds after it are in range; ``ValueError`` naming
    ``name`` and the value otherwise."""
    problem = seed_problem(int(seed), count)
    if problem:
        raise ValueError(f"{name} {seed}: {problem}")
    return int(seed)
