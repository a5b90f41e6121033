"""Shared fixtures: tiny synthetic EM-like data and the path of ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    from emfm.backbones._testing import write_random_checkpoint

    return write_random_checkpoint("dinov2", tmp_path_factory.mktemp("bb") / "tiny-dinov2", hidden_size=32,
                                   num_layers=2, num_heads=2)


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("data")
    a = write_folder_dataset(base / "a", n_train=10, n_test=4, shape=(40, 56), seed=1)
    b = write_folder_dataset(base / "b", n_train=10, n_test=3, shape=(48, 48), seed=2)
    return a, b
