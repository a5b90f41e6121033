"""Tile placement and blending: full coverage, partition of unity, and no seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emfm.errors import ConfigError
from emfm.predict.tiling import blend_window, check_tiling, tile_starts, tiled_logits


@pytest.mark.parametrize("length", [1, 5, 40, 41, 64, 100, 257])
@pytest.mark.parametrize("tile,halo", [(32, 4), (28, 7), (16, 0), (14, 6)])
def test_tiles_cover_the_padded_axis_with_at_least_halo_overlap(length, tile, halo):
    starts, before, after = tile_starts(length, tile, halo)
    padded = before + length + after
    assert before == halo and after >= halo
    assert starts[0] == 0 and starts[-1] + tile == padded
    assert all(b - a <= tile - halo and b > a for a, b in zip(starts, starts[1:]))
    assert all(isinstance(s, int) for s in starts)


def test_window_fades_to_nearly_zero_and_complements_its_neighbour():
    w = blend_window(64, 8)
    assert w[0] < 0.01 and w[-1] < 0.01 and np.all(w[8:-8] == 1.0)
    # Two tiles overlapping by exactly the halo: the falling and rising ramps add up to 1.
    np.testing.assert_allclose(w[-8:] + w[:8], 1.0, atol=1e-12)
    assert np.all(np.diff(w[:8]) > 0)


def _pixelwise(tiles: torch.Tensor) -> torch.Tensor:
    """A translation-equivariant 'model': logits depend on each pixel only."""
    x = tiles[:, :1]
    return torch.cat([-torch.sin(3 * x), torch.sin(3 * x) + x**2], 1)


@pytest.mark.parametrize("shape", [(50, 70), (7, 90), (28, 28), (3, 3)])
def test_pixelwise_model_tiled_equals_whole_slice(shape):
    pixels = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    tiled = tiled_logits(_pixelwise, pixels, tile=28, halo=5, batch_size=3)
    whole = _pixelwise(pixels[None])[0]
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_constant_model_stays_constant():
    pixels = torch.zeros(3, 61, 45)
    const = lambda t: torch.tensor([0.3, -1.2]).view(1, 2, 1, 1).expand(t.shape[0], 2, *t.shape[-2:])  # noqa: E731
    out = tiled_logits(const, pixels, tile=16, halo=4)
    torch.testing.assert_close(out, const(pixels[None])[0], atol=1e-6, rtol=1e-6)


class _TileDependent:
    """A 'model' whose output carries a different offset in every tile, like a ViT's edge effects."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        offsets = torch.from_numpy(self.rng.uniform(-2, 2, size=(tiles.shape[0], 1, 1, 1))).float()
        base = tiles[:, :1] * 0.1
        return torch.cat([-base - offsets, base + offsets], 1)


def _border_jump(p: np.ndarray, starts: list[int], pad: int, tile: int) -> float:
    """Largest jump between horizontal neighbours across any tile edge."""
    edges = {s - pad for s in starts[1:]} | {s + tile - pad for s in starts[:-1]}
    cols = [e for e in edges if 0 < e < p.shape[1]]
    return float(max(np.abs(p[:, c] - p[:, c - 1]).max() for c in cols))


def test_blended_probabilities_have_no_jump_at_tile_borders():
    pixels = torch.randn(3, 40, 150, generator=torch.Generator().manual_seed(1)) * 0.01
    tile, halo = 32, 8
    starts, pad, _ = tile_starts(150, tile, halo)

    def prob(h):
        logits = tiled_logits(_TileDependent(), pixels, tile=tile, halo=h)
        return logits.softmax(0)[1].numpy()

    blended = prob(halo)
    hard = prob(0)
    starts0, pad0, _ = tile_starts(150, tile, 0)
    # Without a halo every tile edge is a visible step; with it, neighbours differ by little more
    # than the largest step divided by the ramp's length.
    assert _border_jump(hard, starts0, pad0, tile) > 0.2
    jump = _border_jump(blended, starts, pad, tile)
    interior = float(np.abs(np.diff(blended, axis=1)).max())
    assert jump < 0.12
    assert jump <= interior + 1e-6  # no edge stands out from the rest of the slice


def test_tiling_settings_are_checked():
    with pytest.raises(ConfigError, match="--tile 30 is not a multiple of the backbone's patch size 14"):
        check_tiling(30, 2, 14)
    with pytest.raises(ConfigError, match="--halo 14 must be >= 0 and less than half the tile"):
        check_tiling(28, 14, 14)
