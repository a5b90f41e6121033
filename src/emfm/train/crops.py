"""Training on random crops: an epoch is a fixed number of crops, whatever the dataset's size.

A crop is a window of ``crop`` network pixels on the patch lattice, so a frozen run cuts the same
window out of each cached token grid (``crop / patch`` tokens) as out of the mask and the pixels:
training stays cache-only. Each crop is drawn from ``(seed, epoch, index)``, so a run is repeatable
and every epoch sees new windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emfm.train.augment import IntensityAugment
from emfm.transforms import Preprocessing


@dataclass
class CropSource:
    """One training slice (one augmentation variant of it) at network size.

    Attributes:
        mask: (H, W) long tensor at network size.
        grids: cached token grids, one (C, H/p, W/p) per layer the head reads (frozen runs), or empty.
        unit: the slice as [0, 1] floats (H, W) at network size, for pixel heads and live encoding.
        dataset: index of the training set it belongs to.
    """

    mask: torch.Tensor
    grids: list[torch.Tensor] = field(default_factory=list)
    unit: torch.Tensor | None = None
    dataset: int = 0


def crop_origin(size: Sequence[int], crop: int, patch: int, rng: np.random.Generator) -> tuple[int, int]:
    """A random top-left corner on the patch lattice for a ``crop`` window in a slice of ``size``
    (a side shorter than ``crop`` gives origin 0 and the whole side)."""
    out = []
    for side in size[:2]:
        slots = (int(side) - crop) // patch
        out.append(int(rng.integers(0, slots + 1)) * patch if slots > 0 else 0)
    return out[0], out[1]


class CropItems(Dataset):
    """``length`` random crops of ``sources`` per epoch; call :meth:`set_epoch` to move on.

    Args:
        sources: the slices (and their variants) to crop from; drawn uniformly, or each training
            set equally often with ``balance``.
        crop: crop edge in network pixels (a multiple of ``patch``).
        patch: the backbone's patch size.
        length: crops per epoch.
        preprocessing: normalisation for pixel crops.
        want_pixels: put normalised pixels in each item (pixel heads, live encoding).
        intensity: intensity augmentation of the pixel crop, or None.
        mixed: item ``i`` is drawn from training set ``i mod K`` (alignment ``mixed``: with a batch size that is
            a multiple of K, each batch holds every set equally).
        seed: base seed.
    """

    def __init__(
        self,
        sources: Sequence[CropSource],
        *,
        crop: int,
        patch: int,
        length: int,
        preprocessing: Preprocessing,
        want_pixels: bool,
        intensity: IntensityAugment | None = None,
        balance: bool = False,
        mixed: bool = False,
        seed: int = 0,
    ) -> None:
        self.sources = list(sources)
        self.crop, self.patch, self.length = int(crop), int(patch), int(length)
        self.prep, self.want_pixels, self.intensity = preprocessing, want_pixels, intensity
        self.balance, self.mixed, self.seed, self.epoch = balance, mixed, int(seed), 0
        self.by_dataset: dict[int, list[int]] = {}
        for i, s in enumerate(self.sources):
            self.by_dataset.setdefault(s.dataset, []).append(i)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _pick(self, rng: np.random.Generator, index: int) -> int:
        if self.mixed:  # item i comes from training set i mod K: a batch of K consecutive items holds each once
            keys = sorted(self.by_dataset)
            group = self.by_dataset[keys[index % len(keys)]]
            return group[int(rng.integers(len(group)))]
        if self.balance:
            group = self.by_dataset[sorted(self.by_dataset)[int(rng.integers(len(self.by_dataset)))]]
            return group[int(rng.integers(len(group)))]
        return int(rng.integers(len(self.sources)))

    def _draw(self, index: int) -> tuple[np.random.Generator, int, int, int]:
        """Item ``index``'s generator (what is left of it serves the intensity change), source and window origin."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        k = self._pick(rng, int(index))
        y0, x0 = crop_origin(self.sources[k].mask.shape, self.crop, self.patch, rng)
        return rng, k, y0, x0

    def window(self, index: int) -> tuple[int, int, int]:
        """Item ``index`` as (source, top, left) without cutting it: the same draw as ``self[index]``, for
        batches cut straight from a :class:`~emfm.train.bank.GridBank`."""
        _, k, y0, x0 = self._draw(index)
        return k, y0, x0

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng, k, y0, x0 = self._draw(index)
        src = self.sources[k]
        y1, x1 = y0 + self.crop, x0 + self.crop
        item: dict[str, Any] = {"mask": src.mask[y0:y1, x0:x1], "source": src.dataset}
        if src.grids:
            p = self.patch
            item["grids"] = [g[:, y0 // p : y1 // p, x0 // p : x1 // p] for g in src.grids]
        if self.want_pixels and src.unit is not None:
            unit = src.unit[y0:y1, x0:x1].float()
            if self.intensity is not None:
                unit = self.intensity(unit, rng)
            item["pixels"] = self.prep.normalise(unit)
        return item

    @property
    def sources_index(self) -> list[int]:
        return [s.dataset for s in self.sources]


class WholeItems(Dataset):
    """Whole slices (every source once per epoch): validation, and training without crops."""

    def __init__(self, sources: Sequence[CropSource], *, preprocessing: Preprocessing, want_pixels: bool) -> None:
        self.sources, self.prep, self.want_pixels = list(sources), preprocessing, want_pixels

    @property
    def sources_index(self) -> list[int]:
        return [s.dataset for s in self.sources]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        src = self.sources[index]
        item: dict[str, Any] = {"mask": src.mask, "source": src.dataset}
        if src.grids:
            item["grids"] = list(src.grids)
        if self.want_pixels and src.unit is not None:
            item["pixels"] = self.prep.normalise(src.unit.float())
        return item
