"""Distances between two datasets' embeddings, each with its estimator, interval and "no shift" scale.

For one pair of datasets this runs every Fréchet estimator of :mod:`emfm.analysis.frechet` and KID
(:mod:`emfm.analysis.kid`), and gives each the same three numbers: the value on all images, a bootstrap
interval that resamples images within each dataset (:func:`~emfm.analysis.bootstrap.bootstrap_interval`),
and the same statistic between random halves of each dataset
(:func:`~emfm.analysis.bootstrap.split_half_baseline`). A distance means a shift only if it stands
clear of those baselines; ``above_baselines`` records whether the interval's lower end exceeds every
baseline's upper percentile.

Each Fréchet point estimate is computed with ``scipy.linalg.sqrtm`` (``value``) and through the
symmetric eigenproblem (``value_eigh``, see :func:`~emfm.analysis.frechet.frechet_distance_from_moments`);
the hundreds of resampled evaluations behind the intervals and baselines use the latter, which is real
by construction and far faster on singular covariances, so ``value_eigh`` is the value they belong to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from emfm.analysis._threads import single_threaded_blas
from emfm.analysis.bootstrap import BootstrapMethod, bootstrap_interval, pool_units, split_half_baseline
from emfm.analysis.frechet import FrechetResult, TraceMethod, frechet_distance, pca_frechet_distance
from emfm.analysis.kid import kernel_inception_distance, mmd2_unbiased

log = logging.getLogger(__name__)

Estimator = Literal["full", "pca", "ledoit_wolf", "crops"]
ESTIMATORS: tuple[Estimator, ...] = ("full", "pca", "ledoit_wolf", "crops")

_DESCRIPTIONS = {
    "full": "image embeddings, sample covariance (N - 1); rank-deficient when N - 1 < dim",
    "pca": "image embeddings projected on PCA-k of the union of the two sets compared, k below half the "
    "smaller dataset so that the split-half baselines are full rank too",
    "ledoit_wolf": "image embeddings, Ledoit-Wolf shrunk covariances (sklearn.covariance.ledoit_wolf, "
    "rescaled to N - 1)",
    "crops": "mean patch tokens of random square windows of each image's patch grid, many per image, "
    "sample covariance; samples of one image are correlated, so intervals resample whole images",
}


def pca_components_for(n_a: int, n_b: int, dim: int, requested: int) -> int:
    """PCA-k for the ``pca`` estimator: at most ``requested``, ``dim``, and floor(min(n)/2) - 1.

    The last bound keeps the covariances of the split-half baselines (floor(n/2) images) full rank.
    """
    return max(1, min(requested, dim, min(n_a, n_b) // 2 - 1))


def _frechet(estimator: Estimator, k: int, method: TraceMethod) -> Callable[[np.ndarray, np.ndarray], FrechetResult]:
    if estimator == "pca":
        return lambda x, y: pca_frechet_distance(x, y, n_components=k, method=method)
    if estimator == "ledoit_wolf":
        return lambda x, y: frechet_distance(x, y, covariance="ledoit_wolf", method=method)
    return lambda x, y: frechet_distance(x, y, method=method)


def _summarise(
    name: str,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    value: float,
    units: dict[str, np.ndarray],
    *,
    n_boot: int,
    baseline_repeats: int,
    level: float,
    method: BootstrapMethod,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    (a, xa), (b, xb) = units.items()
    interval = bootstrap_interval(
        statistic, xa, xb, n_boot=n_boot, level=level, method=method, seed=seed, estimate=value,
        progress=progress, desc=f"{name}: bootstrap",
    )
    baselines = {
        ds: split_half_baseline(
            statistic, x, repeats=baseline_repeats, level=level, seed=seed, progress=progress,
            desc=f"{name}: {ds} halves",
        )
        for ds, x in units.items()
    }
    return {
        "interval": interval,
        "baselines": baselines,
        "above_baselines": bool(interval["low"] > max(bl["high"] for bl in baselines.values())),
    }


@single_threaded_blas()
def compare_pair(
    images: dict[str, np.ndarray],
    crops: dict[str, np.ndarray] | None = None,
    *,
    estimators: tuple[Estimator, ...] = ESTIMATORS,
    pca_components: int = 32,
    n_boot: int = 200,
    baseline_repeats: int = 50,
    level: float = 0.95,
    method: BootstrapMethod = "percentile",
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Fréchet distances (Heusel et al. 2017) by each estimator, and KID (Binkowski et al. 2018).

    FD = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)); KID = unbiased MMD^2 with
    k(x, y) = (x . y / d + 1)^3. Each comes with its sample sizes and dimension, a bootstrap interval
    and split-half baselines (see the module docstring).

    Args:
        images: two entries, dataset name -> image embeddings (n, d).
        crops: the same two names -> crop samples (n, crops per image, d); needed for ``crops``.
        estimators: which Fréchet estimators to run.
        pca_components: requested k for ``pca`` (reduced by :func:`pca_components_for`).
        n_boot, level, method: the bootstrap.
        baseline_repeats: split-half repeats per dataset.
        kid_subset_size, kid_subsets: KID's subset report.
        seed: seed of every random choice here.
        progress: show progress bars.

    Returns:
        ``{"datasets", "frechet": {estimator: {...}}, "kid": {...}}``.
    """
    (a, xa), (b, xb) = images.items()
    boot = dict(n_boot=n_boot, baseline_repeats=baseline_repeats, level=level, method=method, seed=seed,
                progress=progress)
    k = pca_components_for(len(xa), len(xb), xa.shape[1], pca_components)
    frechet: dict[str, Any] = {}
    for estimator in estimators:
        if estimator == "crops" and crops is None:
            log.warning("no crop samples given; skipping the crops estimator")
            continue
        units = dict(crops) if estimator == "crops" and crops is not None else dict(images)
        log.info("Fréchet distance %s vs %s, estimator %s", a, b, estimator)
        frechet[estimator] = _frechet_entry(estimator, units, k, pca_components, boot)
    kid = _kid_entry(images, kid_subset_size, kid_subsets, boot)
    return {"datasets": list(images), "frechet": frechet, "kid": kid}


def _frechet_entry(
    estimator: Estimator, units: dict[str, np.ndarray], k: int, pca_components: int, boot: dict[str, Any]
) -> dict[str, Any]:
    """One estimator's value (by ``sqrtm`` and by ``eigh``), its description, sizes, interval and baselines."""
    (a, ua), (b, ub) = units.items()
    pooled_a, pooled_b = pool_units(ua), pool_units(ub)
    point = _frechet(estimator, k, "sqrtm")(pooled_a, pooled_b)
    fast = _frechet(estimator, k, "eigh")
    check = fast(pooled_a, pooled_b).value
    entry: dict[str, Any] = {
        "value": point.value,
        "value_eigh": check,
        "description": _DESCRIPTIONS[estimator],
        "n_images": {a: len(ua), b: len(ub)},
        "n_samples": {a: point.n1, b: point.n2},
        **{key: v for key, v in point.to_dict().items() if key not in ("value", "n1", "n2")},
    }
    if estimator == "pca":
        entry["n_components_requested"] = pca_components
        entry["n_components"] = k
    if estimator == "crops":
        entry["crops_per_image"] = int(np.asarray(ua).shape[1])

    def statistic(x: np.ndarray, y: np.ndarray) -> float:
        return fast(x, y).value

    entry.update(_summarise(f"FD {estimator}", statistic, check, units, **boot))
    return entry


def _kid_entry(images: dict[str, np.ndarray], subset_size: int, n_subsets: int, boot: dict[str, Any]) -> dict[str, Any]:
    """KID on the image embeddings, with its subset report, interval and baselines."""
    (a, xa), (b, xb) = images.items()
    kid = kernel_inception_distance(xa, xb, subset_size=subset_size, n_subsets=n_subsets, seed=boot["seed"])
    entry: dict[str, Any] = {
        "value": kid.value,
        "description": "unbiased MMD^2, kernel (x.y/d + 1)^3, on the image embeddings (Binkowski et al. 2018)",
        "n_images": {a: kid.n1, b: kid.n2},
        "dim": kid.dim,
        "subsets": {"size": kid.subset_size, "n": kid.n_subsets, "mean": kid.subset_mean, "std": kid.subset_std},
        **_summarise("KID", mmd2_unbiased, kid.value, dict(images), **boot),
    }
    entry["interval"]["note"] = (
        "with replacement, a resample repeats images, whose self-similarity then enters the off-diagonal "
        "terms: the bootstrap replicates of KID are biased upwards (see 'bias'); the subset std does not "
        "have this problem"
    )
    return entry
