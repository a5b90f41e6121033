"""From a backbone's patch-token grids to the samples the analysis compares.

- One embedding per image: the mean of the final normalised patch tokens (what the study uses), or the
  CLS token (FD-DINOv2 as defined by Stein et al. 2023 and layer6ai-labs/dgm-eval).
- Many samples per image: the mean token of random square windows ("crops") of the patch grid. A crop of
  c x c patches is what the backbone saw of a (c p) x (c p) pixel region, in the context of the whole
  slice; taking crops from the cached grid costs no extra forward pass.
- One sample per patch, with its label: the patch is foreground if more than half of its pixels are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from emfm.errors import ConfigError, DataError

EmbeddingKind = Literal["mean", "cls"]
EMBEDDINGS: tuple[EmbeddingKind, ...] = ("mean", "cls")


def _as_grid(grid: Any) -> np.ndarray:
    arr = np.asarray(grid, dtype=np.float32)
    if arr.ndim != 3:
        raise DataError(f"expected a patch-token grid of shape (C, h, w), got {arr.shape}")
    return arr


def image_embeddings(grids: Sequence[Any], cls: Any, kind: EmbeddingKind = "mean") -> np.ndarray:
    """One vector per image, (N, C): the mean patch token (``mean``) or the class token (``cls``).

    Args:
        grids: final normalised patch tokens, one (C, h, w) array or tensor per image.
        cls: class tokens, (N, C).
        kind: ``mean`` (the study) or ``cls`` (FD-DINOv2, Stein et al. 2023).
    """
    if kind == "mean":
        return np.stack([_as_grid(g).mean(axis=(1, 2)) for g in grids]).astype(np.float64)
    if kind == "cls":
        return np.asarray(cls, dtype=np.float64).reshape(len(grids), -1)
    raise ConfigError(f"unknown embedding {kind!r}; use 'mean' (mean patch token) or 'cls' (class token)")


def patch_tokens(grid: Any) -> np.ndarray:
    """A (C, h, w) grid as (h * w, C) rows, in row-major patch order."""
    arr = _as_grid(grid)
    return arr.reshape(arr.shape[0], -1).T


def crop_embeddings(grid: Any, *, crop: int, n_crops: int, rng: np.random.Generator) -> np.ndarray:
    """Mean tokens of ``n_crops`` random ``crop`` x ``crop`` windows of one patch grid, (n_crops, C).

    Window positions are drawn uniformly (with replacement) from all positions that fit; a grid smaller
    than the window gives windows of the whole side.
    """
    if crop < 1 or n_crops < 1:
        raise ConfigError(f"crops need a size and a count of at least 1; got crop={crop}, n_crops={n_crops}")
    arr = _as_grid(grid)
    _, h, w = arr.shape
    ch, cw = min(crop, h), min(crop, w)
    # Summed-area table: every window mean in O(1), instead of n_crops slices of the grid.
    table = np.zeros((arr.shape[0], h + 1, w + 1), dtype=np.float64)
    table[:, 1:, 1:] = arr.cumsum(axis=1).cumsum(axis=2)
    top = rng.integers(0, h - ch + 1, n_crops)
    left = rng.integers(0, w - cw + 1, n_crops)
    sums = (
        table[:, top + ch, left + cw] - table[:, top, left + cw] - table[:, top + ch, left] + table[:, top, left]
    )
    return (sums / (ch * cw)).T


def patch_labels(mask: np.ndarray, grid_shape: Sequence[int], *, threshold: float = 0.5) -> np.ndarray:
    """Foreground label per patch, (h * w,) bool: more than ``threshold`` of the patch's pixels are 1.

    The slice is resized as a whole to the patch grid times the patch size, so patch (i, j) covers rows
    i H/h .. (i+1) H/h and columns j W/w .. (j+1) W/w of the native mask; the fraction is the mean of the
    mask over that region (adaptive average pooling), computed at native resolution.
    """
    import torch
    import torch.nn.functional as F

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"expected a 2-D mask, got shape {mask.shape}")
    h, w = int(grid_shape[0]), int(grid_shape[1])
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    frac = F.adaptive_avg_pool2d(t, (h, w))[0, 0].numpy()
    return (frac > threshold).reshape(-1)
