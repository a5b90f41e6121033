"""Fixtures for the data tests: tiny synthetic datasets laid out like the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.synth_data import make_lucchi, make_vnc


@pytest.fixture
def lucchi_root(tmp_path: Path) -> Path:
    return make_lucchi(tmp_path / "lucchi_pp")


@pytest.fixture
def vnc_root(tmp_path: Path) -> Path:
    return make_vnc(tmp_path / "vnc")


@pytest.fixture(scope="session")
def lucchi_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic Lucchi++ layout with the real slice count (165 per stack), read-only for tests."""
    return make_lucchi(tmp_path_factory.mktemp("full") / "lucchi_pp", n=165)
