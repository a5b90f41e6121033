"""Plain helpers of the adaptation tests: the shifted target, reading a checkpoint's tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import synthetic_slice


def shifted_slice(rng: np.random.Generator, shape=(40, 56)) -> tuple[np.ndarray, np.ndarray]:
    """A source-like slice darker and flatter (intensity shift) with stripes over it (texture shift)."""
    image, mask = synthetic_slice(rng, shape)
    xx = np.arange(shape[1])[None, :]
    shifted = 0.55 * image.astype(np.float64) + 40 + 18 * np.sin(xx * 1.7) + rng.normal(0, 6, size=shape)
    return np.clip(shifted, 0, 255).astype(np.uint8), mask


def write_target(root: Path, n: int, shape, seed: int) -> Path:
    """``root/images`` (and ``root/masks`` beside them, which adaptation must never read)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = shifted_slice(rng, shape)
        Image.fromarray(image).save(root / "images" / f"slice_{i:03d}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"slice_{i:03d}.png")
    return root


def target_images(root: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((root / "images").iterdir())])


def tensors(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoint.safetensors"))
