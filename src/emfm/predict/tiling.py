"""Overlapping tiles over one slice, blended so that tile borders leave no seams.

A ViT sees less context near a tile's edge, so its logits there are the least trustworthy and
differ from the neighbouring tile's. Each tile's logits are therefore weighted by a window that is
1 in the middle and falls smoothly (sin^2) to ~0 over the ``halo`` pixels at each edge; the weighted
sum over tiles is divided by the summed weights. Neighbouring tiles overlap by at least ``halo``, so
every pixel lies in the flat middle of some tile or in a cross-fade between two, and where the
overlap is exactly ``halo`` the two ramps add up to 1 (sin^2 + cos^2). The slice is padded by
``halo`` (mirror) on every side, so its own border pixels also get full weight, and the padding is
cropped off afterwards.

Everything here works at the network's scale; the caller resizes the slice to that scale first and
the logits back to the slice's size afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from emfm.errors import ConfigError


def check_tiling(tile: int, halo: int, patch_size: int) -> None:
    """Raise ConfigError for a tile that is not a patch multiple or a halo that leaves no stride."""
    if tile < patch_size or tile % patch_size:
        raise ConfigError(
            f"--tile {tile} is not a multiple of the backbone's patch size {patch_size}; "
            f"use e.g. {max(1, round(tile / patch_size)) * patch_size}"
        )
    if halo < 0 or 2 * halo >= tile:
        raise ConfigError(f"--halo {halo} must be >= 0 and less than half the tile ({tile}); use e.g. {tile // 8}")


def default_halo(tile: int) -> int:
    """An eighth of the tile on each side: enough context for a ViT at a modest extra cost."""
    return max(1, tile // 8)


def tile_starts(length: int, tile: int, halo: int) -> tuple[list[int], int, int]:
    """Where tiles start along one axis of a slice padded by ``halo`` on each side.

    Returns:
        ``(starts, pad_before, pad_after)``: start offsets in padded coordinates, and the padding
        (``pad_after`` is larger when the padded slice is still shorter than one tile). Consecutive
        tiles are a whole number of pixels apart and overlap by at least ``halo``; the last tile ends
        at the end of the padded axis.
    """
    pad_before = halo
    padded = max(length + 2 * halo, tile)
    pad_after = padded - length - pad_before
    if padded == tile:
        return [0], pad_before, pad_after
    span = padded - tile
    n = math.ceil(span / (tile - halo)) + 1
    step = math.ceil(span / (n - 1))  # <= tile - halo, so overlaps stay >= halo
    return [min(i * step, span) for i in range(n)], pad_before, pad_after


def blend_window(tile: int, halo: int) -> np.ndarray:
    """1-D weights (tile,): sin^2 ramp from ~0 to 1 over ``halo`` px at each end, 1 in between."""
    w = np.ones(tile, dtype=np.float64)
    if halo > 0:
        t = np.arange(halo, dtype=np.float64) + 0.5
        ramp = np.sin(0.5 * np.pi * t / halo) ** 2
        w[:halo] = ramp
        w[tile - halo :] = ramp[::-1]
    return w


def tiled_logits(
    forward: Callable,
    pixels,
    *,
    tile: int,
    halo: int,
    batch_size: int = 4,
):
    """Blend a model's logits over overlapping tiles of one slice.

    Args:
        forward: maps a batch of tiles (B, C, tile, tile) to logits (B, K, tile, tile) (float32, CPU).
        pixels: the preprocessed slice (C, H, W) at the network's scale, a torch tensor.
        tile: tile edge in pixels (a multiple of the patch size).
        halo: width of each tile's fading border, and the least overlap between neighbours.
        batch_size: tiles per call of ``forward``.

    Returns:
        Logits (K, H, W) as a float32 tensor.
    """
    import torch

    c, h, w = pixels.shape
    ys, top, bottom = tile_starts(h, tile, halo)
    xs, left, right = tile_starts(w, tile, halo)
    # numpy's mirror padding repeats itself for pads wider than the slice, which torch's does not.
    padded = torch.from_numpy(
        np.pad(pixels.numpy(), ((0, 0), (top, bottom), (left, right)), mode="reflect" if min(h, w) > 1 else "edge")
    )
    window = blend_window(tile, halo)
    weight = torch.from_numpy(np.outer(window, window).astype(np.float32))
    acc: torch.Tensor | None = None
    wsum = torch.zeros(padded.shape[-2:], dtype=torch.float32)
    corners = [(y, x) for y in ys for x in xs]
    for i in range(0, len(corners), batch_size):
        batch = corners[i : i + batch_size]
        tiles = torch.stack([padded[:, y : y + tile, x : x + tile] for y, x in batch])
        logits = forward(tiles).float()
        if acc is None:
            acc = torch.zeros((logits.shape[1], *padded.shape[-2:]), dtype=torch.float32)
        for (y, x), lg in zip(batch, logits):
            acc[:, y : y + tile, x : x + tile] += lg * weight
            wsum[y : y + tile, x : x + tile] += weight
    assert acc is not None  # at least one tile always exists
    return (acc / wsum)[:, top : top + h, left : left + w].contiguous()
