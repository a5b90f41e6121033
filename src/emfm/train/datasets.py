"""Torch datasets over in-memory stacks: cached feature grids (frozen) or pixels (LoRA).

Slices of different datasets have different sizes (Lucchi++ 378 x 518, VNC 518 x 518 at 518 px), so
batches are lists, not stacked tensors; the LightningModule runs the head once per size group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from emfm.data._stack import SliceStack
from emfm.transforms import image_to_tensor, mask_to_tensor


class FeatureItems(Dataset):
    """(cached patch grid, mask at the network's input size) pairs."""

    def __init__(self, grids: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], sources: Sequence[int]) -> None:
        self.grids, self.masks, self.sources = list(grids), list(masks), list(sources)

    def __len__(self) -> int:
        return len(self.grids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return {"grid": self.grids[i], "mask": self.masks[i], "source": self.sources[i]}


class PixelItems(Dataset):
    """(normalised pixels, mask) pairs, resized on the fly so memory stays at one batch."""

    def __init__(
        self,
        stacks: Sequence[SliceStack],
        sizes: Sequence[Sequence[tuple[int, int]]],
        mean: Sequence[float],
        std: Sequence[float],
        intensity: str = "dtype",
    ) -> None:
        self.items = [(s, i, size[i], k) for k, (s, size) in enumerate(zip(stacks, sizes)) for i in range(len(s))]
        self.mean, self.std, self.intensity = tuple(mean), tuple(std), intensity

    @property
    def sources(self) -> list[int]:
        return [k for *_, k in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor | int]:
        stack, i, size, k = self.items[j]
        return {
            "pixels": image_to_tensor(stack.images[i], size, self.mean, self.std, intensity=self.intensity),
            "mask": mask_to_tensor(stack.masks[i], size),
            "source": k,
        }


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
