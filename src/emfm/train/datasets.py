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


class MixedOrder(Sampler[int]):
    """Whole-slice items in an order where every run of K consecutive items holds one of each training set.

    Each epoch shuffles each set on its own (seeded by ``seed`` and the epoch) and interleaves them; smaller
    sets are cycled so that every slice of the largest set is seen once per epoch.
    """

    def __init__(self, sources: Sequence[int], *, seed: int) -> None:
        self.by_set: dict[int, list[int]] = {}
        for i, s in enumerate(sources):
            self.by_set.setdefault(s, []).append(i)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.by_set) * max((len(v) for v in self.by_set.values()), default=0)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        orders = []
        for _, idx in sorted(self.by_set.items()):
            orders.append([idx[j] for j in torch.randperm(len(idx), generator=gen).tolist()])
        longest = max((len(o) for o in orders), default=0)
        for step in range(longest):
            for order in orders:
                yield order[step % len(order)]
