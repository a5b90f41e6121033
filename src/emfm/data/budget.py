"""Label budgets: train on N labelled slices of a stack, spread through it, the validation split untouched.

The question a microscopist asks of a foundation model is how few labelled slices it needs; the answer is
only fair when every method gets the same slices. Adjacent slices of a FIB-SEM or ssTEM stack are nearly
the same image, so a budget of N slices is spread through the stack: ``even`` takes N evenly spaced slices,
``random`` one seeded random slice from each of N equal parts of the stack (another seed redraws them),
``first`` the first N (adjacent: the old ``max_train_slices``, for quick checks). Only the training split is
ever drawn from; the validation split stays as it is, so early stopping never sees a slice the budget hides.
"""

from __future__ import annotations

import zlib

import numpy as np

from emfm.data._stack import SliceStack


def pick_indices(n_slices: int, budget: int, how: str = "random", seed: int = 0, salt: str = "") -> list[int]:
    """``budget`` of ``range(n_slices)``, sorted, spread as ``how`` says; all of them if the budget covers them.

    Args:
        n_slices: slices in the training split.
        budget: how many to keep (at least 1).
        how: ``random`` (one per equal part, seeded), ``even`` (evenly spaced) or ``first``.
        seed: the run's seed (``random`` only).
        salt: mixed into the seed (the dataset's name), so two training sets are not drawn alike.
    """
    if budget < 1:
        raise ValueError(f"a label budget keeps at least one slice, got {budget}")
    if budget >= n_slices:
        return list(range(n_slices))
    if how == "first":
        return list(range(budget))
    # N equal parts [k n / N, (k + 1) n / N): each holds at least one slice because N < n.
    parts = [(k * n_slices // budget, (k + 1) * n_slices // budget) for k in range(budget)]
    if how == "even":
        return [(a + b - 1) // 2 for a, b in parts]
    if how == "random":
        rng = np.random.default_rng([int(seed), zlib.crc32(salt.encode()), n_slices, budget])
        return [int(rng.integers(a, b)) for a, b in parts]
    raise ValueError(f"unknown label pick {how!r}; use random, even or first")


def apply_budget(stack: SliceStack, budget: int | None, how: str = "random", seed: int = 0) -> SliceStack:
    """The training stack cut to its label budget (the stack itself when there is none)."""
    if budget is None:
        return stack
    keep = pick_indices(len(stack), budget, how, seed, salt=stack.dataset)
    return stack.subset([stack.ids[i] for i in keep], stack.split)
