"""Run directories: what a run records about itself, and how a rerun recognises it.

A run directory holds ``config.yaml`` (the resolved config), ``env.json`` (library versions, git
commit, host), the checkpoint and ``metrics.json``. ``metrics.json`` is written last and atomically;
a run counts as complete when it parses and holds the results of the run its ``config.yaml`` describes
(:func:`complete_metrics`). A directory with a different ``config.yaml`` is refused rather than
overwritten; configs are compared as settings, not as text, so the emfm version that wrote one is not
a difference.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from emfm import __version__
from emfm._io import atomic_write_json, atomic_write_text
from emfm.errors import RunDirError

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
ENV_NAME = "env.json"

log = logging.getLogger(__name__)

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


#: Keys of a saved config that say which emfm wrote it, not what was run: ignored when configs are compared.
PROVENANCE_KEYS = ("emfm_version",)


def is_complete(run_dir: str | Path) -> bool:
    """Whether ``metrics.json`` is there (see :func:`complete_metrics` for whether it can be trusted)."""
    return (Path(run_dir) / METRICS_NAME).is_file()


def _config_dict(text: str) -> dict[str, Any] | None:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if k not in PROVENANCE_KEYS}


def same_config(saved: str, wanted: str, *, load: Callable[[dict[str, Any]], Any] | None = None) -> bool:
    """Whether two saved configs (YAML text) describe the same run, whichever emfm wrote them.

    The emfm version is not compared; with ``load`` (``TrainConfig.from_dict``) the configs are compared
    as built, so a setting that a later emfm added, absent from an older file, counts at its default.
    """
    a, b = _config_dict(saved), _config_dict(wanted)
    if a is None or b is None:
        return False
    if a == b or load is None:
        return a == b
    try:
        return bool(load(a) == load(b))
    except (ValueError, TypeError, KeyError):  # a config this emfm cannot build is not this run
        return False


def complete_metrics(
    run_dir: str | Path, config_yaml: str, *, load: Callable[[dict[str, Any]], Any] | None = None
) -> dict[str, Any] | None:
    """The run's metrics when the run is complete and is the run of ``config_yaml``; else None.

    Complete means more than "``metrics.json`` exists": it parses, its ``config.yaml`` is this config
    (:func:`same_config`), and the metrics are this config's run (its seed, training sets and a score
    for each test set). A damaged file (a disk filled up, a copy cut short) or one from another run
    therefore makes the run be redone, never read as a result.
    """
    run_dir = Path(run_dir)
    cfg_path, path = run_dir / CONFIG_NAME, run_dir / METRICS_NAME
    if not (path.is_file() and cfg_path.is_file()):
        return None
    if not same_config(cfg_path.read_text(), config_yaml, load=load):
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        log.warning("%s is damaged (not JSON); the run counts as not done", path)
        return None
    wanted = _config_dict(config_yaml) or {}
    if not _metrics_fit(metrics, wanted):
        log.warning("%s does not hold the results of the run in %s; the run counts as not done", path, cfg_path)
        return None
    return metrics


def _metrics_fit(metrics: Any, config: dict[str, Any]) -> bool:
    """Whether ``metrics`` has the shape ``train_run`` writes and names the run of ``config``."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("run"), dict):
        return False
    run, tests = metrics["run"], metrics.get("test")
    if not isinstance(tests, dict) or not all(isinstance(m, dict) and "fg_iou" in m for m in tests.values()):
        return False
    if "seed" in config and run.get("seed") != config["seed"]:
        return False
    if "train" in config and list(run.get("train_sets") or []) != list(config["train"]):
        return False
    if config.get("adapter") == "lora" and _lora_layout(run.get("adapter_settings")) != _lora_layout(
        config.get("adapter_settings")
    ):  # a separate-layout LoRA run is never a fused-qkv one, nor the reverse
        return False
    return "test" not in config or set(tests) == set(config["test"])


def _lora_layout(settings: Any) -> str:
    """A LoRA run's layout as its config or metrics record it; ``separate`` where neither says (every LoRA
    run before the layout was a setting, :class:`emfm.adapters.lora.LoraSettings`)."""
    return str(settings.get("layout", "separate")) if isinstance(settings, dict) else "separate"


def prepare(
    run_dir: str | Path,
    config_yaml: str,
    *,
    overwrite: bool = False,
    load: Callable[[dict[str, Any]], Any] | None = None,
) -> Path:
    """Create ``run_dir`` for a run with this resolved config, or refuse if it holds another run
    (compared by :func:`same_config`, with ``load`` where given).

    Raises:
        RunDirError: if the directory holds a run with a different config (and not ``overwrite``).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory; choose another --out")
    existing = run_dir / CONFIG_NAME
    if existing.is_file() and not overwrite and not same_config(existing.read_text(), config_yaml, load=load):
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
