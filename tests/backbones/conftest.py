"""Helpers for backbone tests: the official fixtures, a hand-built hub cache, and an offline switch."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def official_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "official"


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, and any download attempt fails the test."""
    import huggingface_hub

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)


def _add_to_hub_cache(cache: Path, repo_id: str, files: Path, revision: str = "0" * 40) -> Path:
    """Lay ``files``' contents out in ``cache`` as the hub client does: blobs named by sha256, a snapshot of
    symlinks and ``refs/main``. Returns the snapshot directory."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(files.iterdir()):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = repo / "blobs" / sha
        shutil.copyfile(path, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture()
def add_to_hub_cache():
    """The function that lays a model directory out in a hand-made hub cache."""
    return _add_to_hub_cache
