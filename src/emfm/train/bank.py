"""Cache-only training: a run's cached grids and masks stacked once, so that a step only indexes them.

With a frozen backbone and a head that reads nothing but cached grids, a training step is a few small
ops. The item path (:mod:`emfm.train.crops`: a dict per item, stacked by the LightningModule each step,
walked item by item by Lightning to move it to the device) spends about as long on that bookkeeping as
on the head. A :class:`GridBank` does once per run what does not depend on the step: each size group's
masks (already at network size) and grids become one preallocated tensor, a step's batch is an
``index_select`` of its rows (or a cut of its crop windows) straight into the groups the head runs on,
and the validation batches are built once and kept (:func:`prebuilt_loader`).

Batches are those of the item path, item for item: the same sampler, generator and crop draws pick
the same rows in the same order, and :class:`~emfm.train.datasets.PackedBatch` groups them as
:func:`~emfm.train.datasets.pack_items` does, so a seed gives the same weights either way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from emfm.train.crops import CropItems, CropSource, WholeItems
from emfm.train.datasets import PackedBatch, PackedGroup, group_key

#: ``(old, new)``: a source's grids before it was copied into the bank, and the bank's rows now standing in
#: for them; whoever else holds the old tensors (the run's features) swaps them so their memory is freed.
OnCopy = Callable[[list[torch.Tensor], list[torch.Tensor]], None]

#: A batch key: a source index (whole slice) or (source index, top, left) of a crop window.
Key = int | tuple[int, int, int]


class GridBank:
    """The masks and cached grids of ``sources``, one (N, ...) tensor per size group.

    Each source's ``mask`` and ``grids`` become views of its row, so the bank replaces them rather than
    copying them: with ``on_copy`` the other holders of the grids can let go of theirs as each source
    is copied, and memory stays at one copy of the features, plus one slice, while the bank fills.

    Args:
        sources: training or validation sources with cached grids (no pixels: they stay per item).
        on_copy: called after each source is copied, see :data:`OnCopy`.
    """

    def __init__(self, sources: Sequence[CropSource], *, on_copy: OnCopy | None = None) -> None:
        self.sources = list(sources)
        members: dict[tuple, list[int]] = {}
        for k, src in enumerate(self.sources):
            members.setdefault((tuple(src.mask.shape), tuple(tuple(g.shape) for g in src.grids)), []).append(k)
        self.where: list[tuple[int, int]] = [(0, 0)] * len(self.sources)  # source -> (group, row)
        self.masks: list[torch.Tensor] = []
        self.grids: list[list[torch.Tensor]] = []
        for g, rows in enumerate(members.values()):
            first = self.sources[rows[0]]
            masks = torch.empty((len(rows), *first.mask.shape), dtype=first.mask.dtype, device=first.mask.device)
            grids = [torch.empty((len(rows), *t.shape), dtype=t.dtype, device=t.device) for t in first.grids]
            for r, k in enumerate(rows):
                src = self.sources[k]
                masks[r].copy_(src.mask)
                old = list(src.grids)
                for j, t in enumerate(old):
                    grids[j][r].copy_(t)
                src.mask, src.grids = masks[r], [layer[r] for layer in grids]
                self.where[k] = (g, r)
                if on_copy is not None:
                    on_copy(old, src.grids)
                del old
            self.masks.append(masks)
            self.grids.append(grids)

    def __len__(self) -> int:
        return len(self.sources)

    def batch(self, keys: Sequence[Key], *, per_domain: bool, crop: int | None = None, patch: int = 1) -> PackedBatch:
        """The packed batch of ``keys``: rows of whole slices, or crop windows of ``crop`` pixels whose grids
        are cut on the ``patch`` lattice (as :class:`~emfm.train.crops.CropItems` cuts them)."""
        picked: dict[tuple[int, ...], list[tuple[int, torch.Tensor, list[torch.Tensor]]]] = {}
        for key in keys:
            k = key[0] if isinstance(key, tuple) else int(key)
            mask, grids = self._cut(key, crop, patch)
            picked.setdefault(group_key(mask.shape, self.sources[k].dataset, per_domain), []).append((k, mask, grids))
        groups = []
        for gkey, members in picked.items():
            sources = [self.sources[k].dataset for k, _, _ in members]
            bank_groups = {self.where[k][0] for k, _, _ in members}
            if crop is None and len(bank_groups) == 1:  # whole rows of one size group: gathered in one go
                g = bank_groups.pop()
                rows = torch.tensor([self.where[k][1] for k, _, _ in members], device=self.masks[g].device)
                masks = self.masks[g].index_select(0, rows)
                grids = [layer.index_select(0, rows) for layer in self.grids[g]]
            else:
                masks = torch.stack([m for _, m, _ in members])
                grids = [torch.stack([gr[j] for _, _, gr in members]) for j in range(len(members[0][2]))]
            groups.append(PackedGroup(masks=masks, grids=grids, sources=sources, domain=gkey[-1]))
        return PackedBatch(groups, per_domain)

    def _cut(self, key: Key, crop: int | None, patch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A source's mask and grids as views: whole, or cut to the crop window at (top, left)."""
        if not isinstance(key, tuple):
            src = self.sources[int(key)]
            return src.mask, list(src.grids)
        if crop is None:
            raise ValueError(f"crop window {key} given without a crop size")
        k, y0, x0 = key
        src, y1, x1 = self.sources[k], y0 + crop, x0 + crop
        return src.mask[y0:y1, x0:x1], [t[:, y0 // patch : y1 // patch, x0 // patch : x1 // patch] for t in src.grids]


class BankItems(Dataset):
    """A train or val set's items as keys into its :class:`GridBank`; :meth:`collate` packs a batch of keys.

    Indexing the set draws what the items would (a crop's source and window, from the crop items' own
    seed and epoch) without cutting anything; the DataLoader's sampler and generator are the item path's.
    """

    def __init__(self, items: CropItems | WholeItems, bank: GridBank, *, per_domain: bool) -> None:
        self.items, self.bank, self.per_domain = items, bank, per_domain

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Key:
        return self.items.window(index) if isinstance(self.items, CropItems) else int(index)

    def set_epoch(self, epoch: int) -> None:
        """New crop windows each epoch (:class:`~emfm.train.module.NewCropsEachEpoch`); whole slices ignore it."""
        if isinstance(self.items, CropItems):
            self.items.set_epoch(epoch)

    @property
    def sources_index(self) -> list[int]:
        return self.items.sources_index

    def collate(self, keys: list[Key]) -> PackedBatch:
        if isinstance(self.items, CropItems):
            return self.bank.batch(keys, per_domain=self.per_domain, crop=self.items.crop, patch=self.items.patch)
        return self.bank.batch(keys, per_domain=self.per_domain)


class PrebuiltBatches(Dataset):
    """Batches packed once and handed out as they are (validation: the same batches every epoch)."""

    def __init__(self, batches: Sequence[PackedBatch]) -> None:
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> PackedBatch:
        return self.batches[index]


def _as_is(batch: Any) -> Any:
    return batch


def prebuilt_loader(items: BankItems, batch_size: int) -> DataLoader:
    """The val loader: ``items`` in order, ``batch_size`` at a time (the item path's val batches), packed now."""
    n = len(items)
    batches = [items.collate([items[i] for i in range(s, min(s + batch_size, n))]) for s in range(0, n, batch_size)]
    return DataLoader(PrebuiltBatches(batches), batch_size=None, collate_fn=_as_is)


class WholeEpoch:
    """One epoch's packed batches, handed to the module in one Lightning step (see :class:`OneCallPerEpoch`).

    Iterating it iterates the train loader once. It has no ``to`` method on purpose: Lightning then hands it
    to the module as it is, and each batch moves itself (:meth:`PackedBatch.to`) when it is used.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[PackedBatch]:
        # Exactly len(loader) batches, never the extra next() that would find the end: Lightning's fetcher stops
        # on the count too, and that extra call runs the shuffling sampler's tail, which draws from its generator
        # (where the batch size divides the set) and would shuffle every later epoch differently.
        return itertools.islice(iter(self.loader), len(self.loader))

    def __len__(self) -> int:
        return len(self.loader)


class OneCallPerEpoch:
    """A train loader of packed batches seen by Lightning as one batch per epoch: a :class:`WholeEpoch`.

    Why: on a CPU a cache-only step of a small head is a few milliseconds of arithmetic, and Lightning's loop
    around each step (hooks, logging, the optimiser closure) added a good share on top of it (measured with
    ``benchmarks/cached_training.py``, 149 Lucchi++ grids, linear head: 0.481 against 0.370 s an epoch at
    224 px, 1.30x; 1.154 against 1.016 at 518 px, 1.14x). The module runs the epoch's optimiser steps itself
    (:meth:`SegmentationModule.training_step`, manual optimisation) with the same order of operations, so the
    weights and losses are the same to the bit.
    ``dataset`` and ``sampler`` are the loader's, so the per-epoch crop windows and batch order are set as before.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.sampler = loader.sampler

    def __iter__(self) -> Iterator[WholeEpoch]:
        yield WholeEpoch(self.loader)

    def __len__(self) -> int:
        return 1
