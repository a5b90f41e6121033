"""Logits for whole slices, at the network's size or brought back to the slice's own size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emfm.models.segmenter import Segmenter
from emfm.transforms import image_to_tensor, logits_to_size, resized_shape


@torch.inference_mode()
def slice_logits(
    segmenter: Segmenter,
    image: np.ndarray,
    *,
    resolution: int,
    patch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    intensity: str = "dtype",
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (1, K, H', W') at the network's input size for one slice.

    ``grid`` (C, h, w) skips the backbone when the features are cached (frozen runs).
    """
    size = resized_shape(image.shape, resolution, patch_size)
    device = next(segmenter.head.parameters()).device
    if grid is not None:
        return segmenter.logits_from_grid(grid[None].float().to(device), size).float().cpu()
    pixels = image_to_tensor(image, size, mean, std, intensity=intensity)[None].to(device)
    return segmenter(pixels).float().cpu()


def native_prediction(logits: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """Argmax after resizing logits bilinearly to the slice's native ``shape``: a uint8 0/1 mask."""
    return logits_to_size(logits, shape).argmax(1)[0].to(torch.uint8).numpy()
