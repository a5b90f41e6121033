"""Tiny inputs shared by the head tests: C=32, grids 4x5, patch 14 -> pixels 56x70."""

from __future__ import annotations

import torch
from torch import nn

from emfm.models.heads import HEADS, create_head

CHANNELS = 32
GRID = (4, 5)
PATCH = 14


def default_num_layers(name: str) -> int:
    return len(HEADS.get(name).default_layers)


def build(name: str, *, num_layers: int | None = None, patch: int = PATCH, seed: int = 0) -> nn.Module:
    """A head with its default number of blocks, seeded so that two builds with one seed are equal."""
    torch.manual_seed(seed)
    n = default_num_layers(name) if num_layers is None else num_layers
    return create_head(name, CHANNELS, num_layers=n, patch_size=patch)


def inputs(
    name: str,
    *,
    batch: int = 2,
    grid: tuple[int, int] = GRID,
    patch: int = PATCH,
    num_layers: int | None = None,
    seed: int = 1,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Random grids for the head's blocks, and pixels only for heads that read them (as the segmenter does)."""
    gen = torch.Generator().manual_seed(seed)
    n = default_num_layers(name) if num_layers is None else num_layers
    grids = [torch.randn(batch, CHANNELS, *grid, generator=gen) for _ in range(n)]
    pixels = None
    if HEADS.get(name).needs_pixels:
        pixels = torch.randn(batch, 3, grid[0] * patch, grid[1] * patch, generator=gen)
    return grids, pixels
