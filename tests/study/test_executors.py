"""The submitit path of the study runner, through submitit's in-process ``debug`` executor."""

from __future__ import annotations

import csv

import pytest

from emfm.study.config import StudyConfig
from emfm.study.runner import run_study


def test_submitit_debug_executor_runs_and_aggregates(tiny_backbone_dir, datasets, tmp_path):
    pytest.importorskip("submitit")
    a, _ = datasets
    study = StudyConfig.from_dict({
        "name": "jobs", "backbones": [str(tiny_backbone_dir)], "adapters": ["frozen"], "heads": ["linear"],
        "train_sets": [a], "test_sets": [a], "seeds": [0, 1],
        "defaults": {"epochs": 1, "resolution": 56, "cache_dir": str(tmp_path / "cache")},
    })
    summary = run_study(study, tmp_path / "s", executor="debug")
    assert summary["ran"] == 2 and summary["pending"] == 0
    with open(tmp_path / "s" / "results.csv") as fh:
        assert sorted(r["seed"] for r in csv.DictReader(fh)) == ["0", "1"]
    assert list((tmp_path / "s" / "jobs").iterdir())  # submitit's job folders


def test_no_wait_returns_after_submitting(tiny_backbone_dir, datasets, tmp_path):
    pytest.importorskip("submitit")
    a, _ = datasets
    study = StudyConfig.from_dict({
        "name": "jobs", "backbones": [str(tiny_backbone_dir)], "adapters": ["frozen"], "heads": ["linear"],
        "train_sets": [a], "test_sets": [a], "seeds": [0],
        "defaults": {"epochs": 1, "resolution": 56, "cache_dir": str(tmp_path / "cache")},
    })
    summary = run_study(study, tmp_path / "s", executor="debug", wait=False)
    assert summary["submitted"] == 1
    later = run_study(study, tmp_path / "s", aggregate_only=True)
    assert later["runs"] == 1 and later["ran"] == 0  # aggregation alone runs nothing
