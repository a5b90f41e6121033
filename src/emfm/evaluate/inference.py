"""Logits for whole slices, at the network's size or brought back to the slice's own size.

Slices are prepared by the run's :class:`~emfm.transforms.Preprocessing` (``ModelInfo.preprocessing``),
the one definition that training, evaluation and ``emfm predict`` share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emfm.evaluate.metrics import class_map
from emfm.models.segmenter import Segmenter
from emfm.transforms import Preprocessing, logits_to_size


@torch.inference_mode()
def slice_logits(
    segmenter: Segmenter,
    image: np.ndarray,
    preprocessing: Preprocessing,
    *,
    grids: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (1, K, H', W') at the network's input size (``preprocessing.network_size``) for one slice.

    ``grids`` (one (C, h, w) per block the head reads) skip the backbone when the features are
    cached (frozen runs); a tiled run's live encoding goes through the same overlapping tiles.
    """
    size = preprocessing.network_size(image.shape)
    device = next(segmenter.head.parameters()).device
    if grids is not None:
        pixels = preprocessing.pixels(image, size)[None].to(device) if segmenter.needs_pixels else None
        batch = [g[None].float().to(device) for g in grids]
        return segmenter.head_logits(batch, pixels, size).float().cpu()
    pixels = preprocessing.pixels(image, size)[None].to(device)
    return segmenter(pixels).float().cpu()


def native_prediction(logits: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """Argmax after resizing logits bilinearly to the slice's native ``shape``: a uint8 0/1 mask."""
    return class_map(logits_to_size(logits, shape))[0].to(torch.uint8).numpy()
