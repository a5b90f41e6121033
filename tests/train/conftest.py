"""Tiny random backbones and tiny synthetic folder datasets for end-to-end training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import synthetic_slice


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
