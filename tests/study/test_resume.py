"""A study killed with SIGKILL at two different points, then rerun, gives the uninterrupted results."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers import write_folder_dataset

METRIC_COLUMNS = ("run_id", "test_set", "seed", "fg_iou", "dice", "fg_iou_resized", "epochs_run", "best_epoch")


def study_yaml(tmp_path: Path, backbone: Path, a: str, b: str) -> Path:
    cfg = {
        "name": "tiny", "backbones": [str(backbone)], "adapters": ["frozen"], "heads": ["linear"],
        "train_sets": [a, b], "test_sets": [a, b], "seeds": [0, 1],
        "defaults": {"epochs": 3, "resolution": 56, "lr": 1e-3, "cache_dir": str(tmp_path / "cache")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(cfg: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "emfm", "study", str(cfg), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError("the study finished before it could be killed")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the kill point")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def rows(path: Path) -> list[tuple]:
    with open(path) as fh:
        return sorted(tuple(r[c] for c in METRIC_COLUMNS) for r in csv.DictReader(fh))


def test_sigkill_twice_then_rerun_equals_an_uninterrupted_study(tiny_backbone_dir, tmp_path):
    a = write_folder_dataset(tmp_path / "a", 6, 2, (28, 42), seed=5)
    b = write_folder_dataset(tmp_path / "b", 6, 2, (42, 42), seed=6)
    cfg = study_yaml(tmp_path, tiny_backbone_dir, a, b)
    killed = tmp_path / "killed"

    def n_complete() -> int:
        return len(list((killed / "runs").glob("*/metrics.json"))) if (killed / "runs").is_dir() else 0

    # 1st kill: in the middle of the first run (its config is written, its metrics are not)
    kill_when(
        run_cli(cfg, killed),
        lambda: any((killed / "runs").glob("*/config.yaml")) if (killed / "runs").is_dir() else False,
    )
    assert n_complete() == 0
    # 2nd kill: right after a run completes, while the next one is under way
    kill_when(run_cli(cfg, killed), lambda: n_complete() >= 2)
    assert 2 <= n_complete() < 4
    assert subprocess.run([sys.executable, "-m", "emfm", "study", str(cfg), "--out", str(killed)],
                          capture_output=True).returncode == 0

    clean = tmp_path / "clean"
    assert subprocess.run([sys.executable, "-m", "emfm", "study", str(cfg), "--out", str(clean)],
                          capture_output=True).returncode == 0
    got, want = rows(killed / "results.csv"), rows(clean / "results.csv")
    assert got == want
    assert len(got) == 4 * 3  # 4 runs x (2 test sets + pooled), each run exactly once
    assert len({r[0] for r in got}) == 4
