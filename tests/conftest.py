"""Shared fixtures: tiny synthetic EM-like data and the path of ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED


def synthetic_slice(rng: np.random.Generator, shape=(40, 56), n_blobs: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A grey slice with bright elliptical 'mitochondria' on textured background, and its 0/1 mask."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.08, 0.18) * h, rng.uniform(0.08, 0.18) * w
        mask |= (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
    image = rng.normal(90, 20, size=shape) + 100 * mask
    return np.clip(image, 0, 255).astype(np.uint8), mask
