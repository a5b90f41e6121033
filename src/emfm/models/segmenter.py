"""A backbone and a head, seen as one model from pixels (or cached grids) to logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emfm.transforms import logits_to_size


class Segmenter(nn.Module):
    """Backbone (optional: frozen runs feed cached grids) + head; logits resized to the output size."""

    def __init__(self, head: nn.Module, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.backbone = backbone

    def logits_from_grid(self, grid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return logits_to_size(self.head(grid), size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.backbone is None:
            raise RuntimeError("this Segmenter has no backbone; call logits_from_grid with cached features")
        grid = self.backbone.encode(pixels).patch_grid
        return self.logits_from_grid(grid, pixels.shape[-2:])
