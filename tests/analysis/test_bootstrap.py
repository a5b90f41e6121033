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


def mean_gap(x, y):
    return float(x.mean() - y.mean())


def test_the_record_names_the_moving_blocks_and_their_lengths():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(27, 2)), rng.normal(size=(8, 2))
    ci = bootstrap_interval(mean_gap, x, y, n_boot=10)
    assert ci["block_length"] == [3, 2]  # ceil(27^(1/3)), ceil(8^(1/3))
    assert all(type(length) is int for length in ci["block_length"])
    assert "moving-block" in ci["method"] and "blocks of 3 and 2 adjacent images" in ci["method"]
    same = bootstrap_interval(mean_gap, x, y, n_boot=10, block_length=4)
    assert same["block_length"] == [4, 4] and "blocks of 4 adjacent images" in same["method"]
    assert bootstrap_interval(mean_gap, x, y, n_boot=10, block_length=10)["block_length"] == [10, 8]


def test_replicates_are_made_of_blocks_of_adjacent_units():
    seen = []

    def record(x, y):
        seen.append((x[:, 0].copy(), y[:, 0].copy()))
        return 0.0

    x, y = np.arange(10.0)[:, None], np.arange(7.0)[:, None]
    bootstrap_interval(record, x, y, n_boot=30, block_length=3, estimate=0.0)
    assert len(seen) == 30
    for xs, ys in seen:
        for units, n in ((xs, 10), (ys, 7)):
            assert len(units) == n
            for first in range(0, n, 3):
                block = units[first:first + 3]
                assert 0 <= block[0] <= n - 3
                np.testing.assert_array_equal(block, block[0] + np.arange(len(block)))


@pytest.mark.parametrize("method", ["percentile", "basic", "BCa"])
def test_blocks_as_long_as_each_set_collapse_the_interval_to_the_estimate(method):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(6, 3, 2)), rng.normal(size=(5, 3, 2)) + 1
    estimate = float(x.reshape(-1, 2).mean() - y.reshape(-1, 2).mean())
    ci = bootstrap_interval(mean_gap, x, y, n_boot=20, block_length=6, method=method)
    assert ci["block_length"] == [6, 5]
    assert ci["low"] == pytest.approx(estimate, abs=1e-12) and ci["high"] == pytest.approx(estimate, abs=1e-12)
    assert ci["std"] == pytest.approx(0.0, abs=1e-12) and ci["bias"] == pytest.approx(0.0, abs=1e-12)


def test_the_basic_interval_is_the_percentile_interval_reflected_about_the_estimate():
    rng = np.random.default_rng(7)
    x, y = rng.exponential(size=(12, 2)), rng.normal(size=(9, 2))
    estimate = float(x.mean() - y.mean())
    percentile = bootstrap_interval(mean_gap, x, y, n_boot=50, seed=2, block_length=2)
    basic = bootstrap_interval(mean_gap, x, y, n_boot=50, seed=2, block_length=2, method="basic")
    assert percentile["low"] < estimate < percentile["high"]
    assert basic["low"] == pytest.approx(2 * estimate - percentile["high"], abs=1e-12)
    assert basic["high"] == pytest.approx(2 * estimate - percentile["low"], abs=1e-12)
    assert basic["method"].startswith("basic moving-block") and percentile["method"].startswith("percentile")


def test_bootstrap_interval_rejects_a_bad_block_length_and_method():
    x = np.zeros((5, 2))
    with pytest.raises(ConfigError, match="block_length"):
        bootstrap_interval(mean_gap, x, x, n_boot=5, block_length=0)
    with pytest.raises(ConfigError, match="unknown bootstrap method"):
        bootstrap_interval(mean_gap, x, x, n_boot=5, method="studentized")
