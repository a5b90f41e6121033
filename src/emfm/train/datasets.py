"""Batching and sampling shared by every kind of training item (:mod:`emfm.train.crops`).

Slices of different datasets have different sizes (Lucchi++ 378 x 518, VNC 518 x 518 at 518 px), so
batches are lists, not stacked tensors; the LightningModule runs the head once per size group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Sampler, WeightedRandomSampler


def list_collate(batch: list[dict]) -> list[dict]:
    return batch


def make_sampler(sources: Sequence[int], *, balance: bool, seed: int) -> Sampler | None:
    """None (plain shuffling) or, with ``balance``, a sampler that draws each dataset equally often.

    Each slice is weighted by 1 / (size of its dataset), so every dataset contributes the same
    expected number of slices per epoch; an epoch keeps the length of the concatenated sets.
    """
    if not balance:
        return None
    counts: dict[int, int] = {}
    for s in sources:
        counts[s] = counts.get(s, 0) + 1
    weights = torch.tensor([1.0 / counts[s] for s in sources], dtype=torch.double)
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(sources), replacement=True, generator=gen)
