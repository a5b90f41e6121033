"""Fréchet distance: closed forms, an independent implementation, the singular case and the retry path."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from emfm.analysis.frechet import frechet_distance, frechet_distance_from_moments, pca_frechet_distance
from emfm.errors import ConfigError, DataError


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def eigen_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Independent FD: Tr(sqrtm(S1 S2)) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))), all via eigh."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(r @ s2 @ r)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(eig, 0, None))))


def test_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 7), rng.uniform(0.1, 3, 7)
    mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
    value, eps, _ = frechet_distance_from_moments(mu1, np.diag(a), mu2, np.diag(b))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert value == pytest.approx(expected, rel=1e-10)
    assert eps == 0.0


def test_closed_form_for_general_commuting_covariances():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # a shared rotation: S1 and S2 commute
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    value, _, _ = frechet_distance_from_moments(np.zeros(5), s1, np.ones(5), s2)
    assert value == pytest.approx(5 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-9)


def test_large_sample_estimate_converges_to_the_truth():
    rng = np.random.default_rng(2)
    a, b = np.array([1.0, 2.0, 0.5]), np.array([0.3, 2.0, 1.5])
    mu1, mu2 = np.array([0.0, 1.0, 0.0]), np.array([0.5, 0.0, 0.0])
    truth = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    errors = []
    for n in (200, 200_000):
        x = mu1 + rng.normal(size=(n, 3)) * np.sqrt(a)
        y = mu2 + rng.normal(size=(n, 3)) * np.sqrt(b)
        errors.append(abs(frechet_distance(x, y).value - truth))
    assert errors[1] < 0.01 * truth
    assert errors[1] < errors[0]


def test_matches_independent_eigen_implementation_on_random_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 12)) @ rng.normal(size=(12, 12))
    y = rng.normal(size=(90, 12)) @ rng.normal(size=(12, 12)) + 0.3
    result = frechet_distance(x, y)
    assert result.value == pytest.approx(eigen_frechet(x, y), rel=1e-8)
    assert (result.n1, result.n2, result.dim, result.singular) == (80, 90, 12, False)


def test_singular_case_gives_a_finite_labelled_number():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(10, 50)), rng.normal(size=(12, 50)) + 0.2
    result = frechet_distance(x, y)
    assert isinstance(result.value, float) and np.isfinite(result.value)
    assert result.singular is True
    assert result.value == pytest.approx(eigen_frechet(x, y), rel=1e-5)
    d = result.to_dict()
    assert d["singular"] is True and d["dim"] == 50 and d["n1"] == 10


def test_identical_sets_give_zero():
    x = np.random.default_rng(5).normal(size=(40, 6))
    assert frechet_distance(x, x.copy()).value == pytest.approx(0.0, abs=1e-9)


def test_non_finite_sqrtm_is_retried_with_eps_and_recorded(monkeypatch):
    real = scipy.linalg.sqrtm
    calls = []

    def flaky(a, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return np.full_like(a, np.nan)
        return real(a, *args, **kwargs)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky)
    rng = np.random.default_rng(6)
    result = frechet_distance(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)))
    assert len(calls) == 2
    assert result.eps > 0 and np.isfinite(result.value)


def test_large_imaginary_part_raises_after_retry(monkeypatch):
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a, *args, **kw: np.eye(len(a)) * (1 + 1j))
    rng = np.random.default_rng(7)
    with pytest.raises(DataError, match="not finite and real even after adding"):
        frechet_distance(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)))


def test_negligible_imaginary_part_is_dropped_and_reported(monkeypatch):
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a, *args, **kw: np.eye(len(a)) * (1 + 1e-9j))
    value, eps, max_imag = frechet_distance_from_moments(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))
    assert isinstance(value, float) and value == pytest.approx(0.0)
    assert eps == 0.0 and max_imag == pytest.approx(1e-9)


def test_ledoit_wolf_shrinks_and_is_never_singular():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(10, 50)), rng.normal(size=(12, 50))
    result = frechet_distance(x, y, covariance="ledoit_wolf")
    assert result.singular is False and np.isfinite(result.value)
    assert result.shrinkage is not None and all(0 < s <= 1 for s in result.shrinkage)
    big_x, big_y = rng.normal(size=(5000, 3)), rng.normal(size=(5000, 3)) * 2
    assert frechet_distance(big_x, big_y, covariance="ledoit_wolf").value == pytest.approx(
        frechet_distance(big_x, big_y).value, rel=0.02
    )


def test_pca_with_all_components_equals_full_distance():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(50, 5)) * 1.5 + 1
    assert pca_frechet_distance(x, y, n_components=5).value == pytest.approx(frechet_distance(x, y).value, rel=1e-8)
    low = pca_frechet_distance(x, y, n_components=2)
    assert low.dim == 2 and low.singular is False


def test_bad_inputs_raise_actionable_errors():
    rng = np.random.default_rng(10)
    with pytest.raises(DataError, match="same d"):
        frechet_distance(rng.normal(size=(5, 3)), rng.normal(size=(5, 4)))
    with pytest.raises(DataError, match="at least 2 samples"):
        frechet_distance(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)))
    bad = rng.normal(size=(5, 3))
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(bad, rng.normal(size=(5, 3)))
    with pytest.raises(ConfigError, match="choose 1..3"):
        pca_frechet_distance(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) + 9, n_components=0)
    with pytest.raises(ConfigError, match="unknown covariance"):
        frechet_distance(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), covariance="oas")


def test_eigh_trace_agrees_with_sqrtm():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, 20)) @ rng.normal(size=(20, 20))
    y = rng.normal(size=(150, 20)) @ rng.normal(size=(20, 20)) + 0.5
    ref = frechet_distance(x, y)
    fast = frechet_distance(x, y, method="eigh")
    assert fast.value == pytest.approx(ref.value, rel=1e-7) and fast.method == "eigh"
    s_x, s_y = rng.normal(size=(8, 30)), rng.normal(size=(9, 30)) + 0.1  # singular: stays real and finite
    assert frechet_distance(s_x, s_y, method="eigh").value == pytest.approx(eigen_frechet(s_x, s_y), rel=1e-7)
    assert pca_frechet_distance(x, y, n_components=4, method="eigh").value == pytest.approx(
        pca_frechet_distance(x, y, n_components=4).value, rel=1e-8
    )
    with pytest.raises(ConfigError, match="unknown trace method"):
        frechet_distance(x, y, method="svd")
