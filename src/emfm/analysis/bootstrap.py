"""Uncertainty for two-sample statistics: bootstrap intervals and the within-dataset "no shift" scale.

A distance between two datasets means little alone: it needs an interval (how much would it move with
other images from the same sources?) and a scale (what does it read when there is no shift at all?).

- :func:`bootstrap_interval`: the percentile bootstrap (Efron and Tibshirani, "An Introduction to the
  Bootstrap", 1993, ch. 13): resample the images of each dataset with replacement, recompute the
  statistic, and take the (1 - level)/2 and (1 + level)/2 quantiles of the B replicates; also the
  bias-aware ``basic`` and ``BCa`` intervals. Images are drawn in *blocks of adjacent slices* (a
  moving-block bootstrap, Künsch 1989, :mod:`emfm.stats.blocks`): neighbouring EM slices look alike, and
  drawing them one by one would treat n correlated images as n independent ones (too narrow an interval).
  The block length is recorded beside the interval.
- :func:`split_half_baseline`: split one dataset's images into two random halves and compute the same
  statistic between them, repeatedly. Halves have half the images, and small-sample bias grows as N
  falls, so the baseline is, if anything, an overestimate of "no shift" for the full sets.

Both resample *images* (units along axis 0, in slice order). A unit may hold several samples (for example many patch
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
    block_length: int | None = None,
) -> dict[str, Any]:
    """Bootstrap interval of ``statistic(x, y)``, resampling blocks of adjacent units within each set.

    Units are taken to be in slice order. Each of the B replicates draws a moving-block resample of x and,
    independently, of y (blocks of ``block_length`` adjacent units, Künsch 1989; see
    :mod:`emfm.stats.blocks`), pools their samples and evaluates the statistic: neighbouring slices are
    correlated, and drawing them one by one would count them as independent evidence. The ``percentile``
    interval is the [(1 - level)/2, (1 + level)/2] quantile range of the replicates (Efron and Tibshirani
    1993, ch. 13); ``basic`` reflects it about the estimate (Davison and Hinkley 1997, sec. 5.2); ``BCa``
    (Efron 1987) takes its bias correction from the replicates and its acceleration from a delete-one-block
    jackknife of each set (Künsch 1989's block jackknife, in scipy's multi-sample form). scipy has no block
    bootstrap, so the resampling is written here; with ``block_length=1`` it is the ordinary bootstrap of
    ``scipy.stats.bootstrap``. The percentile interval does not remove a small-sample bias of the statistic
    (the Fréchet distance is biased upwards), so ``bias`` reports the bootstrap's estimate of it: mean of
    the replicates minus the statistic.

    Args:
        statistic: f(x_samples, y_samples) -> float on 2-D sample matrices.
        x, y: units in slice order, shape (n, d) or (n, k, d).
        n_boot: B, the number of replicates.
        level: coverage of the interval.
        method: ``percentile`` (default), ``basic`` or ``BCa``.
        seed: seed of the resampling.
        estimate: ``statistic(x, y)`` if the caller has it already; computed otherwise.
        progress: show a progress bar.
        desc: its label.
        block_length: units per block; None takes ceil(n^(1/3)) for each set (n its units).

    Returns:
        ``{"low", "high", "level", "std", "bias", "n_boot", "seed", "method", "block_length", "units"}``;
        ``block_length`` is [L for x, L for y].
    """
    from tqdm.auto import tqdm

    from emfm.stats.blocks import moving_block_indices, resolve_block_length

    _check_level(level)
    if n_boot < 2:
        raise ConfigError(f"a bootstrap needs at least 2 replicates, got {n_boot}; use e.g. 200")
    if method not in BOOTSTRAP_METHODS:
        raise ConfigError(f"unknown bootstrap method {method!r}; use 'percentile', 'basic' or 'BCa'")
    x, y = np.asarray(x), np.asarray(y)
    lengths = [resolve_block_length(len(x), block_length), resolve_block_length(len(y), block_length)]
    rng = np.random.default_rng(seed)
    ix, iy = (moving_block_indices(len(u), L, n_boot, rng) for u, L in zip((x, y), lengths))
    replicates = np.array([
        statistic(pool_units(x[a]), pool_units(y[b]))
        for a, b in tqdm(zip(ix, iy), total=n_boot, desc=desc, disable=not progress, leave=False)
    ], dtype=float)
    if estimate is None:
        estimate = statistic(pool_units(x), pool_units(y))
    low, high = _interval_ends(statistic, x, y, lengths, replicates, estimate, level, method)
    blocks = f"{lengths[0]}" if lengths[0] == lengths[1] else f"{lengths[0]} and {lengths[1]}"
    return {
        "low": float(low),
        "high": float(high),
        "level": level,
        "std": float(replicates.std(ddof=1)),
        "bias": float(replicates.mean() - estimate),
        "n_boot": n_boot,
        "seed": seed,
        "method": f"{method} moving-block bootstrap (Künsch 1989): blocks of {blocks} adjacent images (slice "
        "order) resampled with replacement within each dataset",
        "block_length": lengths,
        "units": "images in slice order",
    }


def _interval_ends(
    statistic: Statistic,
    x: np.ndarray,
    y: np.ndarray,
    lengths: list[int],
    replicates: np.ndarray,
    estimate: float,
    level: float,
    method: BootstrapMethod,
) -> tuple[float, float]:
    """The interval's ends from the replicates by ``method`` (see :func:`bootstrap_interval`)."""
    from scipy.special import ndtr, ndtri

    alpha = (1 - level) / 2
    if method == "percentile":
        low, high = np.quantile(replicates, [alpha, 1 - alpha])
        return float(low), float(high)
    if method == "basic":
        low, high = np.quantile(replicates, [alpha, 1 - alpha])
        return float(2 * estimate - high), float(2 * estimate - low)
    # BCa: z0 from the share of replicates below the estimate (ties count half, as scipy's), a from the
    # block jackknife: a = sum_j sum_i U_ji^3 / n_j^3 / (6 (sum_j sum_i U_ji^2 / n_j^2)^(3/2)).
    z0 = ndtri(((replicates < estimate).sum() + (replicates <= estimate).sum()) / (2 * len(replicates)))
    nums = dens = 0.0
    for jack in _block_jackknife(statistic, x, y, lengths):
        n = len(jack)
        spread = (n - 1) * (jack.mean() - jack)
        nums += (spread**3).sum() / n**3
        dens += (spread**2).sum() / n**2
    accel = nums / (6 * dens**1.5) if dens > 0 else 0.0
    ends = [
        float(np.quantile(replicates, ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))))
        for z in (ndtri(alpha), ndtri(1 - alpha))
    ]
    return ends[0], ends[1]


def _block_jackknife(statistic: Statistic, x: np.ndarray, y: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """For each set, the statistic with one block of adjacent units left out, for each non-overlapping block
    (a set that is one block leaves none out)."""
    out = []
    for side, (units, length) in enumerate(zip((x, y), lengths)):
        values = []
        for start in range(0, len(units), length) if length < len(units) else ():
            kept = pool_units(np.delete(units, np.s_[start:start + length], axis=0))
            values.append(statistic(kept, pool_units(y)) if side == 0 else statistic(pool_units(x), kept))
        if values:
            out.append(np.array(values, dtype=float))
    return out


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
