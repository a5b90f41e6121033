"""Domain probe and per-layer mitochondria probe on synthetic features with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.analysis.probes import domain_probe, mitochondria_probe
from emfm.errors import DataError


def test_domain_probe_separates_shifted_sets_and_reports_counts():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 20)), rng.normal(size=(12, 20)) + 1.5])
    labels = np.array([0] * 60 + [1] * 12)
    out = domain_probe(x, labels, ("a", "b"), seed=0)
    assert out["n"] == {"a": 60, "b": 12}
    hold = out["holdout"]
    assert sum(hold["n_test"].values()) == 15 and hold["n_test"]["b"] >= 2
    assert hold["roc_auc"] > 0.95 and hold["balanced_accuracy"] > 0.8
    assert hold["majority_accuracy"] == pytest.approx(max(hold["n_test"].values()) / 15)
    cv = out["cross_validation"]
    assert cv["n_folds"] == 5 and cv["roc_auc_mean"] > 0.95 and cv["pooled_roc_auc"] > 0.95
    assert out["n_components"] == 20 and "reduced from 64 to 20" in out["n_components_note"]


def test_domain_probe_is_at_chance_without_shift_and_reduces_folds():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(44, 30))
    labels = np.array([0] * 40 + [1] * 4)
    out = domain_probe(x, labels, ("a", "b"), seed=0)
    assert out["cross_validation"]["n_folds"] == 4
    assert "the smaller dataset has 4 images" in out["cross_validation"]["note"]
    assert out["cross_validation"]["pooled_roc_auc"] < 0.8


def test_domain_probe_needs_two_classes():
    with pytest.raises(DataError, match="at least 2 images each"):
        domain_probe(np.zeros((5, 3)), np.array([0, 0, 0, 0, 1]), ("a", "b"))


def _items(rng, n_images, layers, signal):
    """Patches whose first channel carries the label with strength ``signal[layer]``."""
    for _ in range(n_images):
        labels = rng.random(100) < 0.2
        tokens = {}
        for layer in layers:
            t = rng.normal(size=(100, 6))
            t[:, 0] += signal[layer] * labels
            tokens[layer] = t
        yield tokens, labels


def test_mitochondria_probe_ranks_layers_by_their_signal():
    rng = np.random.default_rng(2)
    layers = [0, 1, 2]
    signal = {0: 0.0, 1: 1.5, 2: 6.0}
    out = mitochondria_probe(
        _items(rng, 8, layers, signal), _items(rng, 5, layers, signal), layers=layers, patches_per_image=40, seed=0
    )
    assert out["n_train_patches"] == 8 * 40 and out["n_test_patches"] == 500 and out["n_test_images"] == 5
    iou = out["iou"]
    assert iou[2] > 0.9 and iou[2] > iou[1] > iou[0]
    assert 0.1 < out["trivial_iou"] < 0.3
    tp, fp, fn = (out["per_layer"][2][k] for k in ("tp", "fp", "fn"))
    assert iou[2] == pytest.approx(tp / (tp + fp + fn))


def test_mitochondria_probe_needs_both_classes():
    items = [({0: np.zeros((10, 3))}, np.zeros(10, dtype=bool))]
    with pytest.raises(DataError, match="0 foreground patches"):
        mitochondria_probe(items, items, layers=[0], patches_per_image=5)
