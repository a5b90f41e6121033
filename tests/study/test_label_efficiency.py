"""A study's label-budget axis and from-scratch U-Net cells, end to end to the label-efficiency report."""

from __future__ import annotations

import csv

import pytest

from emfm.errors import ConfigError
from emfm.study.config import StudyConfig
from emfm.study.grid import expand_grid
from emfm.study.label_efficiency import efficiency_points, smallest_budgets
from emfm.study.runner import run_study


def study_dict(backbone, a, tmp_path, **kw):
    return {
        "name": "labels", "backbones": ["unet-small", str(backbone)], "adapters": ["frozen"],
        "heads": ["linear", "multilinear"], "train_sets": [a], "test_sets": [a], "seeds": [0, 1],
        "label_budgets": [2, "all"],
        "defaults": {"epochs": 1, "resolution": 56, "lr": 1e-3, "min_steps": 0, "cache_dir": str(tmp_path / "c")},
        **kw,
    }


def test_a_unet_is_one_cell_per_budget_and_seed_whatever_the_heads(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    specs = expand_grid(StudyConfig.from_dict(study_dict(tiny_backbone_dir, a, tmp_path)))
    unet = [s for s in specs if s.config.backbone == "unet-small"]
    assert len(unet) == 4 and {s.config.head for s in unet} == {"unet-small"}
    assert {s.config.adapter for s in unet} == {"scratch"}
    assert len(specs) == 4 + 2 * 2 * 2
    assert {s.config.label_budget for s in specs} == {2, None}
    assert sum("-n2-" in s.run_id for s in specs) == 6
    assert {s.config.test for s in specs} == {(a,)}


def test_own_test_sets_score_each_run_on_what_it_trained_on(tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    d = study_dict(tiny_backbone_dir, a, tmp_path, train_sets=[a, b], test_sets="own", label_budgets=None)
    specs = expand_grid(StudyConfig.from_dict(d))
    assert {(s.config.train, s.config.test) for s in specs} == {((a,), (a,)), ((b,), (b,))}


def test_label_budgets_are_checked_and_ablations_can_name_backbones(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    with pytest.raises(ConfigError, match="whole numbers of slices"):
        StudyConfig.from_dict(study_dict(tiny_backbone_dir, a, tmp_path, label_budgets=[0, 2]))
    with pytest.raises(ConfigError, match="belong in the grid lists"):
        StudyConfig.from_dict(study_dict(tiny_backbone_dir, a, tmp_path, defaults={"label_budget": 2}))
    d = study_dict(tiny_backbone_dir, a, tmp_path, backbones=[str(tiny_backbone_dir)], label_budgets=None,
                   ablations=[{"name": "baseline", "backbones": ["unet-small"]}])
    specs = expand_grid(StudyConfig.from_dict(d))
    assert [s.ablation for s in specs if s.config.backbone == "unet-small"] == ["baseline", "baseline"]


def test_label_efficiency_report_with_times_and_memory(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    study = StudyConfig.from_dict(study_dict(tiny_backbone_dir, a, tmp_path, heads=["linear"]))
    out = tmp_path / "study"
    summary = run_study(study, out)
    assert summary["ran"] == 8 and summary["pending"] == 0
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["train_slices"] for r in rows} == {"2", "9"}
    assert all(float(r["train_seconds"]) > 0 and float(r["peak_memory_mb"]) > 0 for r in rows)
    points = efficiency_points(rows)
    assert {(p["method"], p["slices"]) for p in points} == {
        ("unet-small (from scratch)", 2), ("unet-small (from scratch)", 9), ("frozen + linear", 2),
        ("frozen + linear", 9),
    }
    assert all(p["n"] == 2 for p in points)
    for s in smallest_budgets(points):
        assert s["full_slices"] == 9 and s["smallest"] in (2, 9)
        assert s["smallest_mean"] >= 0.9 * s["full_mean"] or s["smallest"] == 9
    report = (out / "report.md").read_text()
    assert "## Label efficiency" in report and "reaches 90% at" in report
    assert (out / "figures" / "label_efficiency.png").stat().st_size > 0
    assert "2 labelled slices" in report


def test_smallest_budget_is_the_first_that_reaches_the_share():
    means = [(1, 0.2), (4, 0.5), (8, 0.46), (16, 0.5)]
    pts = [{"dataset": "d", "method": "m", "slices": n, "mean": v} for n, v in means]
    (row,) = smallest_budgets(pts)
    assert (row["smallest"], row["full_slices"], row["full_mean"]) == (4, 16, 0.5)
