"""The head-feature shift between test sets: recorded from the head's last layer while scoring, larger for
sets that differ, and written into a joint run's metrics."""

from __future__ import annotations

import numpy as np
import torch

from emfm.config import TrainConfig
from emfm.evaluate.feature_shift import HeadFeatureRecorder, feature_shift
from emfm.models.heads import create_head
from emfm.train.run import train_run


def test_the_recorder_keeps_region_means_of_the_classifier_input():
    head = create_head("linear", 3).eval()
    recorder = HeadFeatureRecorder(head, windows=2)
    grid = torch.randn(1, 3, 4, 4)
    with recorder.recording():
        head([grid])
        head([grid])
    head([grid])  # outside: not recorded
    rows = recorder.embeddings()
    assert rows.shape == (2, 4, 3)
    normed = head.norm(grid)[0]
    expected = normed[:, :2, :2].mean((1, 2)).detach().numpy()  # top-left region
    assert np.allclose(rows[0, 0], expected, atol=1e-6)


def test_shifted_sets_lie_further_apart_than_draws_of_one_distribution():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 4, 5))
    b = rng.normal(size=(12, 4, 5))
    c = rng.normal(size=(12, 4, 5)) + 2.0
    out = feature_shift({"a": a, "b": b, "c": c}, n_boot=50)
    assert set(out) == {"a|b", "a|c", "b|c"}
    same, shifted = out["a|b"], out["a|c"]
    assert shifted["frechet"]["low"] > same["frechet"]["high"]
    assert shifted["probe_auc"] > 0.95 and same["probe_auc"] < 0.8
    assert same["frechet"]["low"] < same["frechet"]["high"]  # (percentile intervals of FD sit above it: biased)
    # a set of one slice has nothing to resample: left out
    assert feature_shift({"a": a, "one": a[:1]}) == {}


def test_a_joint_run_reports_the_shift_between_its_test_sets(tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    config = TrainConfig.from_dict({
        "backbone": str(tiny_backbone_dir), "train": [a, b], "test": [a, b], "cache_dir": str(tmp_path / "cache"),
        "epochs": 1, "resolution": 56, "min_steps": 0, "batch_size": 2,
    })
    metrics = train_run(config, tmp_path / "run", progress=False)
    entry = metrics["feature_shift"][f"{a}|{b}"]
    assert entry["n_slices"] == {a: len(metrics["test"][a]["per_slice"]), b: len(metrics["test"][b]["per_slice"])}
    assert entry["frechet"]["value"] > 0 and 0.0 <= entry["probe_auc"] <= 1.0
