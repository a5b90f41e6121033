"""PCA summary and the RGB picture of patch features."""

from __future__ import annotations

import numpy as np

from emfm.analysis.pca import fit_pca, pca_rgb


def test_summary_reports_explained_variance_and_reduction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 40)) * np.linspace(5, 0.1, 40)
    pca, summary = fit_pca(x, 32)
    assert summary["n_components"] == 10 and summary["n_components_requested"] == 32
    assert "reduced from 32 to 10" in summary["note"]
    ratios = summary["explained_variance_ratio"]
    assert ratios == sorted(ratios, reverse=True)
    assert summary["cumulative"][-1] <= 1.0 + 1e-9
    assert summary["whiten"] is False and pca.whiten is False
    assert "note" not in fit_pca(rng.normal(size=(100, 5)), 3)[1]


def test_rgb_is_min_max_scaled_per_component_and_shows_structure():
    rng = np.random.default_rng(1)
    grid = rng.normal(scale=0.1, size=(8, 4, 6))
    grid[0, :2] += 5.0  # the top half differs strongly along one direction
    fit = np.concatenate([grid.reshape(8, -1).T, rng.normal(scale=0.1, size=(50, 8))])
    rgb, explained = pca_rgb(fit, grid)
    assert rgb.shape == (4, 6, 3)
    assert len(explained) == 3 and explained[0] > 0.5
    np.testing.assert_allclose(rgb.reshape(-1, 3).min(axis=0), 0)
    np.testing.assert_allclose(rgb.reshape(-1, 3).max(axis=0), 1)
    first = rgb[..., 0]
    assert abs(first[:2].mean() - first[2:].mean()) > 0.8
