"""How training steps are cut and paced: random or length-bucketed batches, and a linear
learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def random_batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive batches of `size` items of `order` (already shuffled)."""
    return [order[b : b + size] for b in range(0, len(order), size)]


def length_batches(
    order: np.ndarray, lengths: np.ndarray, size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Batches of `size` items of similar token length (less padding), in random order.

    Items are taken in `order` in pools of 50 batches; each pool is sorted by length and cut.
    Only for losses that treat the pairs of a batch independently: where the batch's other
    items are the negatives, batches of alike texts hurt (see `trainer._Objective.in_batch`).
    """
    pool = size * 50
    out: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out.extend(chunk[b : b + size] for b in range(0, len(chunk), size))
    return [out[i] for i in rng.permutation(len(out))]


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up to the full rate, then linear decay to zero at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor
