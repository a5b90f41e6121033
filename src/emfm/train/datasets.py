"""Batching and sampling shared by every kind of training item (:mod:`emfm.train.crops`).

Slices of different datasets have different sizes (Lucchi++ 378 x 518, VNC 518 x 518 at 518 px), so a
batch is a list of items, not one stacked tensor, and the head runs once per size group: a
:class:`PackedBatch` holds those groups stacked. Item batches are packed as each step runs
(:func:`pack_items`); cache-only training packs straight from a :class:`~emfm.train.bank.GridBank`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Sampler, WeightedRandomSampler


def list_collate(batch: list[dict]) -> list[dict]:
    return batch


@dataclass
class PackedGroup:
    """The items of one batch that go through the head together, stacked.

    Attributes:
        masks: (B, H, W) targets at network size.
        grids: one (B, C, h, w) per layer the head reads (cached features), or empty.
        pixels: (B, 3, H, W) normalised pixels (pixel heads, live encoding), or None.
        sources: each item's training-set index (feature alignment reads them).
        domain: the training set the head normalises for when the alignment runs one set at a time, else 0.
    """

    masks: torch.Tensor
    grids: list[torch.Tensor] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    sources: list[int] = field(default_factory=list)
    domain: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])

    def to(self, device: torch.device | str) -> PackedGroup:
        pixels = self.pixels.to(device) if self.pixels is not None else None
        return PackedGroup(self.masks.to(device), [g.to(device) for g in self.grids], pixels, self.sources,
                           self.domain)


@dataclass
class PackedBatch:
    """A batch as the groups the head runs on: one per size, and per training set with ``per_domain``.

    Groups keep the order of their first item in the batch, and items their order within a group, so a
    packed batch runs exactly as its list of items would.
    """

    groups: list[PackedGroup]
    per_domain: bool = False

    def __len__(self) -> int:
        return sum(len(g.sources) for g in self.groups)

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch([g.to(device) for g in self.groups], self.per_domain)


def group_key(shape: Sequence[int], source: int, per_domain: bool) -> tuple[int, ...]:
    """Items with equal keys run together: same size, and same training set when ``per_domain``."""
    return (*(int(n) for n in shape), int(source) if per_domain else 0)


def pack_items(items: Sequence[dict], *, per_domain: bool) -> PackedBatch:
    """Stack a list of training items (``emfm.train.crops``) into the groups the head runs on."""
    groups: dict[tuple[int, ...], list[dict]] = {}
    for item in items:
        groups.setdefault(group_key(item["mask"].shape, item.get("source", 0), per_domain), []).append(item)
    packed = []
    for key, members in groups.items():
        first = members[0]
        grids = [torch.stack([it["grids"][j] for it in members]) for j in range(len(first.get("grids", ())))]
        pixels = torch.stack([it["pixels"] for it in members]) if "pixels" in first else None
        packed.append(PackedGroup(
            masks=torch.stack([it["mask"] for it in members]), grids=grids, pixels=pixels,
            sources=[int(it.get("source", 0)) for it in members], domain=key[-1],
        ))
    return PackedBatch(packed, per_domain)


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
