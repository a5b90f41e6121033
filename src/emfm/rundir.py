"""Run directories: what a run records about itself, and how a rerun recognises it.

A run directory holds ``config.yaml`` (the resolved config), ``env.json`` (library versions, git
commit, host), the checkpoint and ``metrics.json``. ``metrics.json`` is written last and atomically,
so its presence means the run is complete; a directory with a different ``config.yaml`` is refused
rather than overwritten.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from emfm import __version__
from emfm._io import atomic_write_json, atomic_write_text
from emfm.errors import RunDirError

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
ENV_NAME = "env.json"

_LIBRARIES = ("torch", "transformers", "peft", "lightning", "numpy", "scikit-learn", "scipy", "safetensors")


def environment() -> dict[str, Any]:
    """Versions, git commit and host, so a number can be traced back to the code that made it."""
    versions = {}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "emfm": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": versions,
    }


def git_commit() -> str | None:
    """The commit of the emfm source tree, with ``-dirty`` if it has uncommitted changes."""
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=src, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def is_complete(run_dir: str | Path) -> bool:
    return (Path(run_dir) / METRICS_NAME).is_file()


def prepare(run_dir: str | Path, config_yaml: str, *, overwrite: bool = False) -> Path:
    """Create ``run_dir`` for a run with this resolved config, or refuse if it holds another run.

    Raises:
        RunDirError: if the directory holds a run with a different config (and not ``overwrite``).
    """
    run_dir = Path(run_dir)
    existing = run_dir / CONFIG_NAME
    if existing.is_file() and not overwrite and existing.read_text() != config_yaml:
        raise RunDirError(
            f"{run_dir} already holds a different run (its {CONFIG_NAME} differs); "
            f"choose another --out or pass --overwrite"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS_NAME).unlink(missing_ok=True)  # no stale completion marker for a rerun
    atomic_write_text(existing, config_yaml)
    atomic_write_json(run_dir / ENV_NAME, environment())
    return run_dir


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no {METRICS_NAME}: the run is missing or did not finish")
    return json.loads(path.read_text())
