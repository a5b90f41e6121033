"""Helpers shared by several test modules: tiny synthetic EM-like slices and folder datasets.

Fixtures live in ``conftest.py``; plain functions live here so that tests import them by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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


def write_folder_dataset(root: Path, n_train: int, n_test: int, shape, seed: int) -> str:
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)):
        (root / part / "images").mkdir(parents=True)
        (root / part / "masks").mkdir(parents=True)
        for i in range(n):
            img, mask = synthetic_slice(rng, shape)
            Image.fromarray(img).save(root / part / "images" / f"img_{i:03d}.png")
            Image.fromarray(mask * 255).save(root / part / "masks" / f"{i}.png")
    return f"folder:{root}"
