"""Bootstrap intervals cover the truth; split-half baselines sit near zero when there is no shift."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.analysis.bootstrap import bootstrap_interval, pool_units, split_half_baseline
from emfm.analysis.frechet import frechet_distance
from emfm.analysis.kid import mmd2_unbiased
from emfm.errors import ConfigError, DataError


def fd(x, y):
    return frechet_distance(x, y).value


def test_percentile_interval_covers_the_true_distance_in_most_repeats():
    mu1, mu2 = np.zeros(2), np.array([1.0, 0.0])
    a, b = np.array([1.0, 1.0]), np.array([2.0, 0.5])
    truth = 1.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(30):
        x = mu1 + rng.normal(size=(1000, 2)) * np.sqrt(a)
        y = mu2 + rng.normal(size=(1000, 2)) * np.sqrt(b)
        ci = bootstrap_interval(fd, x, y, n_boot=100, level=0.9, seed=rep)
        covered += ci["low"] <= truth <= ci["high"]
        assert ci["low"] < ci["high"] and ci["std"] > 0
    assert covered >= 24, f"90% interval covered the truth in {covered}/30 repeats"


def test_units_with_several_samples_are_resampled_together():
    seen = []

    def record(x, y):
        seen.append((x.shape, y.shape))
        return 0.0

    x, y = np.zeros((5, 3, 2)), np.zeros((4, 3, 2))
    bootstrap_interval(record, x, y, n_boot=3, estimate=0.0)
    assert seen == [((15, 2), (12, 2))] * 3
    assert pool_units(x).shape == (15, 2)
    with pytest.raises(DataError, match=r"\(n, d\) or \(n, k, d\)"):
        pool_units(np.zeros(4))


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 1
    assert bootstrap_interval(fd, x, y, n_boot=20, seed=3) == bootstrap_interval(fd, x, y, n_boot=20, seed=3)
    assert bootstrap_interval(fd, x, y, n_boot=20, seed=3) != bootstrap_interval(fd, x, y, n_boot=20, seed=4)


def test_split_half_baseline_is_small_without_shift_and_below_a_real_shift():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    shifted = rng.normal(size=(200, 3)) + 2.0
    base = split_half_baseline(fd, x, repeats=20, seed=0)
    assert base["n_half"] == [100, 100] and base["repeats"] == 20
    assert 0 <= base["mean"] < 0.2
    assert base["min"] <= base["low"] <= base["median"] <= base["high"] <= base["max"]
    assert fd(x, shifted) > 10 * base["high"]
    kid_base = split_half_baseline(mmd2_unbiased, x, repeats=50, seed=0)
    assert abs(kid_base["mean"]) < 3 * kid_base["std"] / np.sqrt(50) + 1e-12


def test_errors():
    x = np.zeros((3, 2))
    with pytest.raises(DataError, match="at least 4 images"):
        split_half_baseline(fd, x)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        bootstrap_interval(fd, x, x, level=95)
    with pytest.raises(ConfigError, match="at least 2 replicates"):
        bootstrap_interval(fd, x, x, n_boot=1)
