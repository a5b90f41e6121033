"""Splits are data: the slice ids of train, val and test, shipped as JSON files in the package.

A run names the split file it used, so anyone can see exactly which slices it trained, validated and
tested on, and no library upgrade can silently change a split. The files are generated once
(:func:`emfm.data.registry.write_split_files`) by the functions below, which reproduce the published
study's draws (read from its code, uhlmanngroup/MicroscopyFoundationHub):

- **Held-out test part** (VNC only; Lucchi++ has its own Test volume): ``scripts/data/
  compose_em_datasets.py`` shuffles the slices, in index order, with ``random.Random(42).shuffle`` and
  keeps the first ``round(0.85 * n)`` for training. For VNC's 20 slices that leaves 00, 03 and 08 as test.
- **Validation part**: ``src/dino_peft/trainers/seg_trainer.py`` draws
  ``torch.randperm(n, generator=torch.Generator().manual_seed(42))`` over the training slices in index
  order, with ``n_val = max(1, int(round(n * 0.1)))``, and validates on the *last* ``n_val`` of that
  permutation. Python's ``round`` halves to even, which gives the study's counts: Lucchi++
  165 -> 16 (16.5 rounds to 16; ``ceil`` would give 17), VNC 17 -> 2 (``int`` would give 1).

``test_splits.py`` checks that the shipped files equal what these functions produce. For a user's own
folder, :func:`make_val_split` draws the same way and the caller writes the result to its run dir.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from emfm.errors import DataError

#: How the validation part is drawn, as recorded in every split file.
VAL_DRAW = (
    "torch.randperm(n, generator=torch.Generator().manual_seed(seed)) over the training ids in index "
    "order; the last max(1, round(fraction * n)) are val (the study's seg_trainer.py)"
)
#: How a held-out test part is drawn (VNC).
HOLDOUT_DRAW = (
    "random.Random(seed).shuffle of the ids in index order; the first round((1 - fraction) * n) are "
    "train+val, the rest test (the study's compose_em_datasets.py)"
)


def n_val_for(n: int, fraction: float) -> int:
    """Validation size as the study computes it: ``max(1, int(round(n * fraction)))`` (half to even)."""
    if n < 2:
        raise DataError(f"a validation split needs at least 2 training slices, got {n}.")
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1, got {fraction}.")
    return min(n - 1, max(1, int(round(n * fraction))))


def make_val_split(ids: Sequence[str], fraction: float = 0.1, seed: int = 42) -> tuple[list[str], list[str]]:
    """Split training ids into (train, val) with the study's draw.

    Args:
        ids: the training slice ids in index order (the draw depends on the order).
        fraction: share of slices for validation.
        seed: seed of the torch generator.

    Returns:
        ``(train_ids, val_ids)``, each in the order of ``ids``.
    """
    import torch  # the study's draw is torch's permutation; imported here to keep `import emfm` light

    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise DataError("make_val_split: slice ids must be unique.")
    n_val = n_val_for(len(ids), fraction)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx = set(perm[len(ids) - n_val :])
    return [s for i, s in enumerate(ids) if i not in val_idx], [s for i, s in enumerate(ids) if i in val_idx]


def make_holdout_split(ids: Sequence[str], fraction: float, seed: int = 42) -> tuple[list[str], list[str]]:
    """Split ids into (train+val, test) with the study's held-out draw (used for VNC's test slices).

    Returns:
        ``(kept_ids, held_out_ids)``, each in the order of ``ids``.
    """
    ids = list(ids)
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    n_keep = int(round((1.0 - fraction) * len(ids)))
    held = set(order[n_keep:])
    return [s for i, s in enumerate(ids) if i not in held], [s for i, s in enumerate(ids) if i in held]


def split_record(
    dataset: str,
    *,
    trainval: Sequence[str],
    test: Sequence[str],
    stacks: dict[str, str],
    fraction: float = 0.1,
    seed: int = 42,
    test_draw: str,
) -> dict[str, Any]:
    """The content of one split file: ids per split, where they live, and how they were drawn."""
    train, val = make_val_split(trainval, fraction=fraction, seed=seed)
    return {
        "dataset": dataset,
        "stacks": dict(stacks),
        "val_fraction": fraction,
        "seed": seed,
        "val_draw": VAL_DRAW,
        "test_draw": test_draw,
        "counts": {"train": len(train), "val": len(val), "test": len(test)},
        "train": train,
        "val": val,
        "test": list(test),
    }


def split_file(name: str) -> Path:
    """Where the shipped split file of ``name`` lives (inside the installed package)."""
    return Path(str(resources.files("emfm.data") / "splits" / f"{name}.json"))


def read_split_file(name: str) -> dict[str, Any]:
    """The shipped split of a registered dataset."""
    path = split_file(name)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{name}: the package ships no split file {path}; reinstall emfm.") from None


def make_fold_split(
    ids: Sequence[str], folds: int, fold: int, *, val_fraction: float = 0.1, seed: int = 42
) -> tuple[list[str], list[str], list[str]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation over a dataset's labelled slices.

    The test part is the fold-th of ``folds`` contiguous blocks of ``ids`` in slice order (as
    ``numpy.array_split`` cuts them: sizes differ by at most one): neighbouring EM slices look alike, so
    interleaved folds would test on near-copies of training slices. The rest is split into train and val
    with the study's draw (:func:`make_val_split`). Every slice is tested in exactly one fold.

    Returns:
        ``(train_ids, val_ids, test_ids)``, each in the order of ``ids``.

    Raises:
        DataError: fewer slices than ``folds`` + 2 (each fold needs a test slice and two to train on), or a
            fold outside 0 .. folds - 1.
    """
    import numpy as np

    ids = list(ids)
    if folds < 2 or not 0 <= fold < folds:
        raise DataError(f"fold {fold} of {folds}: cross-validation needs at least 2 folds and a fold in 0..{folds - 1}")
    if len(ids) < folds + 2:
        raise DataError(f"{folds}-fold cross-validation needs at least {folds + 2} labelled slices, got {len(ids)}")
    blocks = np.array_split(np.arange(len(ids)), folds)
    held = set(blocks[fold].tolist())
    test = [s for i, s in enumerate(ids) if i in held]
    train, val = make_val_split([s for i, s in enumerate(ids) if i not in held], val_fraction, seed)
    return train, val, test
