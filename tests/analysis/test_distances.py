"""One pair of synthetic datasets through every estimator: labelled, finite, and clear of the baselines."""

from __future__ import annotations

import json

import numpy as np

from emfm.analysis.distances import ESTIMATORS, compare_pair, pca_components_for


def test_pca_components_keep_split_halves_full_rank():
    assert pca_components_for(165, 17, 384, 32) == 7
    assert pca_components_for(1000, 1000, 384, 32) == 32
    assert pca_components_for(4, 4, 10, 32) == 1


def test_compare_pair_reports_every_estimator_with_interval_and_baselines():
    rng = np.random.default_rng(0)
    d = 24
    images = {"a": rng.normal(size=(30, d)), "b": rng.normal(size=(12, d)) + 1.0}
    crops = {"a": rng.normal(size=(30, 5, d)), "b": rng.normal(size=(12, 5, d)) + 1.0}
    out = compare_pair(images, crops, n_boot=20, baseline_repeats=5, kid_subsets=5, seed=0)
    assert out["datasets"] == ["a", "b"]
    assert set(out["frechet"]) == set(ESTIMATORS)
    for name, entry in out["frechet"].items():
        assert np.isfinite(entry["value"]) and entry["interval"]["n_boot"] == 20
        assert set(entry["baselines"]) == {"a", "b"} and entry["baselines"]["b"]["n_half"] == [6, 6]
        assert entry["above_baselines"] is True, name
    full = out["frechet"]["full"]
    assert full["singular"] is True and full["n_samples"] == {"a": 30, "b": 12} and full["dim"] == d
    assert out["frechet"]["pca"]["n_components"] == 5 and out["frechet"]["pca"]["dim"] == 5
    assert out["frechet"]["crops"]["n_samples"] == {"a": 150, "b": 60}
    assert out["frechet"]["crops"]["n_images"] == {"a": 30, "b": 12}
    assert out["frechet"]["ledoit_wolf"]["singular"] is False
    kid = out["kid"]
    assert kid["value"] > 0 and kid["above_baselines"] is True and kid["subsets"]["size"] == 12
    json.dumps(out)  # everything is plain JSON


def test_no_shift_stays_within_the_baselines():
    rng = np.random.default_rng(1)
    images = {"a": rng.normal(size=(40, 6)), "b": rng.normal(size=(40, 6))}
    out = compare_pair(images, estimators=("full", "pca"), n_boot=30, baseline_repeats=10, kid_subsets=5)
    assert set(out["frechet"]) == {"full", "pca"}
    assert not out["frechet"]["full"]["above_baselines"]
    assert not out["kid"]["above_baselines"]
