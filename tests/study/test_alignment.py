"""The alignment section of a study report: methods per test set, t intervals over seeds, paired
differences from the single-set model, the head-feature shift, and the figure."""

from __future__ import annotations

import pytest
from scipy import stats

from emfm.stats import t_interval
from emfm.study.alignment import SINGLE, UNSEEN, alignment_points, alignment_text, method_of


def row(train, test, seed, iou, align="none", fd=None, auc=None):
    return {"backbone": "b", "adapter": "frozen", "head": "multilinear", "resolution": 518, "label_budget": "",
            "train_sets": train, "test_set": test, "seed": seed, "fg_iou": iou, "align": align,
            "feature_frechet": fd, "feature_probe_auc": auc}


ROWS = [
    row("a", "a", 0, 0.80), row("a", "a", 1, 0.82), row("a", "b", 0, 0.30), row("a", "b", 1, 0.34),
    row("b", "b", 0, 0.70), row("b", "b", 1, 0.74), row("b", "a", 0, 0.40), row("b", "a", 1, 0.42),
    row("a+b", "a", 0, 0.79, fd=9.0, auc=1.0), row("a+b", "a", 1, 0.81, fd=11.0, auc=1.0),
    row("a+b", "b", 0, 0.50, fd=9.0, auc=1.0), row("a+b", "b", 1, 0.55, fd=11.0, auc=1.0),
    row("a+b", "a", 0, 0.80, "domain-bn", 2.0, 0.7), row("a+b", "a", 1, 0.82, "domain-bn", 4.0, 0.8),
    row("a+b", "b", 0, 0.69, "domain-bn", 2.0, 0.7), row("a+b", "b", 1, 0.75, "domain-bn", 4.0, 0.8),
    row("a+b", "pooled", 0, 0.7), row("a+b", "c", 0, 0.1),
]


def test_rows_are_sorted_into_methods():
    assert method_of(row("a", "a", 0, 1)) == SINGLE and method_of(row("a", "b", 0, 1)) == UNSEEN
    assert method_of(row("a+b", "b", 0, 1, "coral")) == "joint: coral"
    assert method_of(row("a+b", "pooled", 0, 1)) is None and method_of(row("a+b", "c", 0, 1)) is None


def test_t_interval_matches_scipy_and_needs_two_seeds():
    values = [0.5, 0.6, 0.8]
    low, high = t_interval(values)
    ref = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert (low, high) == pytest.approx(ref)
    assert t_interval([0.5]) is None


def test_points_pair_each_method_with_the_single_set_model_on_the_same_seeds():
    points = {(p["test_set"], p["method"]): p for p in alignment_points(ROWS)}
    assert set(points) == {(t, m) for t in "ab" for m in (SINGLE, UNSEEN, "joint: none", "joint: domain-bn")}
    plain = points[("b", "joint: none")]
    assert plain["mean"] == pytest.approx(0.525) and plain["difference"]["mean"] == pytest.approx(-0.195)
    assert plain["difference"]["n"] == 2 and plain["feature_frechet"] == pytest.approx(10.0)
    assert "difference" not in points[("a", SINGLE)]
    assert points[("a", UNSEEN)]["mean"] == pytest.approx(0.41)


def test_the_section_has_the_figure_and_marks_differences_whose_interval_excludes_zero(tmp_path):
    text = alignment_text(ROWS, tmp_path)
    assert (tmp_path / "alignment.png").stat().st_size > 0
    lines = {tuple(c.strip() for c in line.split("|")[2:4]): line for line in text.splitlines() if "|" in line}
    assert lines[("b", "joint: none")].count("*") == 1  # -0.20 and -0.19: t interval (1 df) below 0
    assert "*" not in lines[("b", "joint: domain-bn")]  # -0.01 and +0.01: it spans 0
    assert "| 0.720 [" in lines[("b", "joint: domain-bn")] and "| 2 | 3 | 0.750 |" in lines[("b", "joint: domain-bn")]
    assert alignment_text([r for r in ROWS if r["align"] == "none"], tmp_path) == ""
