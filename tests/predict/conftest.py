"""Fixtures for prediction tests: a pixel-wise model saved as a run, and tiny volumes in every format.

The pixel-wise model (patch size 1, a 1x1 convolution as "backbone") is translation-equivariant and
cheap, so tiled and whole-slice predictions must agree exactly, and every test runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.predict.helpers import (
    PixelBackbone,
    make_pixel_run,
    make_vit_run,
    synthetic_volume,
)


@pytest.fixture
def volume() -> np.ndarray:
    return synthetic_volume()


@pytest.fixture
def pixel_run(tmp_path) -> Path:
    return make_pixel_run(tmp_path / "run", resolution=32)


@pytest.fixture
def backbone() -> PixelBackbone:
    return PixelBackbone()


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    from emfm.backbones._testing import write_random_checkpoint

    return write_random_checkpoint("dinov2", tmp_path_factory.mktemp("bb") / "tiny-dinov2", hidden_size=32,
                                   num_layers=2, num_heads=2)


@pytest.fixture
def vit_run(tmp_path, tiny_vit_dir) -> Path:
    return make_vit_run(tmp_path / "vit_run", tiny_vit_dir)
