"""Shared fixtures: tiny synthetic EM-like data, a tiny random backbone and the path of ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_folder_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED


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
