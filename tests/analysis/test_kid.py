"""KID: the unbiased MMD^2 estimator against a brute-force sum, its zero mean under no shift, subsets."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.analysis.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from emfm.errors import ConfigError, DataError


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kernel_is_cubic_polynomial():
    x, y = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])
    # x . y = 1*3 + 2*(-1) = 1, d = 2: (1/2 + 1)^3
    assert polynomial_kernel(x, y)[0, 0] == pytest.approx(1.5**3)


def test_matches_brute_force_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(7, 4)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)


def test_unbiased_under_no_shift_and_positive_under_shift():
    rng = np.random.default_rng(1)
    same = [mmd2_unbiased(rng.normal(size=(15, 8)), rng.normal(size=(15, 8))) for _ in range(400)]
    se = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 3 * se
    assert min(same) < 0  # unbiased, so it can dip below zero
    shifted = mmd2_unbiased(rng.normal(size=(15, 8)), rng.normal(size=(15, 8)) + 1.0)
    assert shifted > 10 * np.std(same)


def test_subsets_report_mean_and_std():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(20, 5)) + 0.5
    r = kernel_inception_distance(x, y, subset_size=10, n_subsets=30, seed=0)
    assert (r.n1, r.n2, r.dim, r.subset_size, r.n_subsets) == (60, 20, 5, 10, 30)
    assert r.subset_std > 0 and r.value > 0
    assert abs(r.subset_mean - r.value) < 3 * r.subset_std
    again = kernel_inception_distance(x, y, subset_size=10, n_subsets=30, seed=0)
    assert again == r
    assert kernel_inception_distance(x, y, subset_size=1000, n_subsets=2).subset_size == 20


def test_errors():
    rng = np.random.default_rng(3)
    with pytest.raises(DataError, match="same d"):
        mmd2_unbiased(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))
    with pytest.raises(DataError, match="at least 2 samples"):
        mmd2_unbiased(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)))
    with pytest.raises(ConfigError, match="subset_size >= 2"):
        kernel_inception_distance(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), subset_size=1)
