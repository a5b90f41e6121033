"""Uncertainty for two-sample statistics: bootstrap intervals and the within-dataset "no shift" scale.

A distance between two datasets means little alone: it needs an interval (how much would it move with
other images from the same sources?) and a scale (what does it read when there is no shift at all?).

- :func:`bootstrap_interval`: the percentile bootstrap (Efron and Tibshirani, "An Introduction to the
  Bootstrap", 1993, ch. 13): resample the images of each dataset with replacement, recompute the
  statistic, and take the (1 - level)/2 and (1 + level)/2 quantiles of the B replicates. It runs on
  ``scipy.stats.bootstrap``, which also offers the bias-aware ``basic`` and ``BCa`` intervals.
- :func:`split_half_baseline`: split one dataset's images into two random halves and compute the same
  statistic between them, repeatedly. Halves have half the images, and small-sample bias grows as N
  falls, so the baseline is, if anything, an overestimate of "no shift" for the full sets.

Both resample *images* (units along axis 0). A unit may hold several samples (for example many patch
crops of one image, shape (n_images, crops, d)); those stay together, so correlated samples from one
image never count as independent evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from emfm.errors import ConfigError, DataError

Statistic = Callable[[np.ndarray, np.ndarray], float]
BootstrapMethod = Literal["percentile", "basic", "BCa"]
BOOTSTRAP_METHODS: tuple[BootstrapMethod, ...] = ("percentile", "basic", "BCa")


def pool_units(units: np.ndarray) -> np.ndarray:
    """(n, d) stays as it is; (n, k, d) (k samples per unit) becomes (n * k, d)."""
    units = np.asarray(units)
    if units.ndim == 2:
        return units
    if units.ndim == 3:
        return units.reshape(-1, units.shape[-1])
    raise DataError(f"expected samples of shape (n, d) or (n, k, d), got {units.shape}")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ConfigError(f"interval level must be between 0 and 1 (e.g. 0.95), got {level}")


def bootstrap_interval(
    statistic: Statistic,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    method: BootstrapMethod = "percentile",
    seed: int = 0,
    estimate: float | None = None,
    progress: bool = False,
    desc: str = "bootstrap",
) -> dict[str, Any]:
    """Bootstrap interval of ``statistic(x, y)``, resampling units within each set.

    Each of the B replicates draws len(x) units of x and len(y) units of y with replacement (seeded),
    pools their samples and evaluates the statistic. The ``percentile`` interval is the
    [(1 - level)/2, (1 + level)/2] quantile range of the replicates (Efron and Tibshirani 1993, ch. 13);
    ``basic`` and ``BCa`` are scipy's bias-aware alternatives. The percentile interval does not remove a
    small-sample bias of the statistic (the Fréchet distance is biased upwards), so ``bias`` reports the
    bootstrap's estimate of it: mean of the replicates minus the statistic.

    Args:
        statistic: f(x_samples, y_samples) -> float on 2-D sample matrices.
        x, y: units, shape (n, d) or (n, k, d).
        n_boot: B, the number of replicates.
        level: coverage of the interval.
        method: ``percentile`` (default), ``basic`` or ``BCa`` (``scipy.stats.bootstrap``).
        seed: seed of the resampling.
        estimate: ``statistic(x, y)`` if the caller has it already (for ``bias``); computed otherwise.
        progress: show a progress bar.
        desc: its label.

    Returns:
        ``{"low", "high", "level", "std", "bias", "n_boot", "seed", "method"}``.
    """
    from scipy import stats
    from tqdm.auto import tqdm

    _check_level(level)
    if n_boot < 2:
        raise ConfigError(f"a bootstrap needs at least 2 replicates, got {n_boot}; use e.g. 200")
    if method not in BOOTSTRAP_METHODS:
        raise ConfigError(f"unknown bootstrap method {method!r}; use 'percentile', 'basic' or 'BCa'")
    x, y = np.asarray(x), np.asarray(y)
    bar = tqdm(total=n_boot, desc=desc, disable=not progress, leave=False)

    # scipy resamples each index array independently (paired=False): units stay whole.
    def on_indices(ix: np.ndarray, iy: np.ndarray) -> float:
        bar.update(1)
        return statistic(pool_units(x[ix]), pool_units(y[iy]))

    result = stats.bootstrap(
        (np.arange(len(x)), np.arange(len(y))),
        on_indices,
        n_resamples=n_boot,
        vectorized=False,
        paired=False,
        confidence_level=level,
        method=method,
        rng=np.random.default_rng(seed),
    )
    bar.close()
    replicates = np.asarray(result.bootstrap_distribution, dtype=float)
    if estimate is None:
        estimate = statistic(pool_units(x), pool_units(y))
    return {
        "low": float(result.confidence_interval.low),
        "high": float(result.confidence_interval.high),
        "level": level,
        "std": float(result.standard_error),
        "bias": float(replicates.mean() - estimate),
        "n_boot": n_boot,
        "seed": seed,
        "method": f"{method} bootstrap (scipy.stats.bootstrap), images resampled with replacement "
        "within each dataset",
    }


def split_half_baseline(
    statistic: Statistic,
    x: np.ndarray,
    *,
    repeats: int = 50,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
    desc: str = "split halves",
) -> dict[str, Any]:
    """The statistic between two random halves of one set, repeated: the scale of "no shift".

    Each repeat permutes the units (seeded), splits them into floor(n/2) and the rest, and evaluates
    ``statistic`` on the pooled samples of the two halves.

    Returns:
        ``{"mean", "std", "median", "low", "high", "level", "min", "max", "repeats", "n_half", "seed"}``;
        ``low``/``high`` are the percentile range at ``level`` over repeats.

    Raises:
        DataError: if there are fewer than 4 units (each half needs 2).
    """
    from tqdm.auto import tqdm

    _check_level(level)
    if repeats < 2:
        raise ConfigError(f"the split-half baseline needs at least 2 repeats, got {repeats}")
    x = np.asarray(x)
    n = len(x)
    if n < 4:
        raise DataError(f"a split-half baseline needs at least 4 images (2 per half), got {n}")
    half = n // 2
    rng = np.random.default_rng(seed)
    values = np.empty(repeats)
    for r in tqdm(range(repeats), desc=desc, disable=not progress, leave=False):
        perm = rng.permutation(n)
        values[r] = statistic(pool_units(x[perm[:half]]), pool_units(x[perm[half:]]))
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)),
        "median": float(np.median(values)),
        "low": float(low),
        "high": float(high),
        "level": level,
        "min": float(values.min()),
        "max": float(values.max()),
        "repeats": repeats,
        "n_half": [half, n - half],
        "seed": seed,
    }
