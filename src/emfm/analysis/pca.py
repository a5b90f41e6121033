"""Principal components of embeddings: explained variance, 2-D coordinates, and RGB pictures of patches.

PCA here is scikit-learn's, unwhitened (Pearson 1901; the "PCA of patch features as RGB" picture is the
one shown in the DINOv2 paper, Oquab et al. 2023, Fig. 1).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from emfm.analysis.embeddings import patch_tokens

log = logging.getLogger(__name__)


def fit_pca(x: np.ndarray, n_components: int = 32) -> tuple[Any, dict[str, Any]]:
    """Fit an unwhitened PCA and describe it.

    The number of components is ``min(n_components, n_samples, n_features)``; when that is fewer than
    asked for, the summary says so.

    Returns:
        (the fitted ``sklearn.decomposition.PCA``, a summary with ``n_components_requested``,
        ``n_components``, ``explained_variance_ratio``, ``cumulative``, ``n_samples``, ``dim``,
        ``whiten`` and a ``note`` if the count was reduced).
    """
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    k = min(n_components, x.shape[0], x.shape[1])
    pca = PCA(n_components=k, whiten=False, svd_solver="full").fit(x)
    ratio = pca.explained_variance_ratio_
    summary: dict[str, Any] = {
        "n_components_requested": n_components,
        "n_components": k,
        "explained_variance_ratio": [float(r) for r in ratio],
        "cumulative": [float(c) for c in np.cumsum(ratio)],
        "n_samples": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "whiten": False,
    }
    if k < n_components:
        summary["note"] = f"reduced from {n_components} to {k} components: {x.shape[0]} samples in {x.shape[1]} dims"
        log.info("PCA %s", summary["note"])
    return pca, summary


def pca_rgb(fit_patches: np.ndarray, grid: Any) -> tuple[np.ndarray, list[float]]:
    """An RGB picture of one slice's patch features: its first three principal components.

    The PCA is fitted on ``fit_patches`` (patch tokens of the slice's dataset, (n, C)); the slice's
    patches are projected on it and each component is min-max scaled to [0, 1] over the slice.

    Args:
        fit_patches: patch tokens to fit the PCA on, (n, C) with n >= 3.
        grid: the slice's patch-token grid, (C, h, w).

    Returns:
        ((h, w, 3) float array in [0, 1], explained-variance ratios of the components on ``fit_patches``).
    """
    pca, summary = fit_pca(fit_patches, 3)
    tokens = patch_tokens(grid)
    _, h, w = np.asarray(grid).shape
    comp = pca.transform(tokens.astype(np.float64))
    lo, hi = comp.min(axis=0), comp.max(axis=0)
    scaled = (comp - lo) / np.where(hi > lo, hi - lo, 1.0)
    rgb = np.zeros((h * w, 3))
    rgb[:, : scaled.shape[1]] = scaled
    return rgb.reshape(h, w, 3), summary["explained_variance_ratio"]
