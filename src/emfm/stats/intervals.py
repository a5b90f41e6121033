"""95% intervals for the study's numbers: a t interval over seeds, and block-bootstrap intervals over slices.

- :func:`t_interval`: Student's t interval of a mean, mean ± t_{1-a/2, K-1} s / sqrt(K) (Student 1908),
  for K seeds (or K paired differences): the seeds are independent repeats of the whole run.
- :func:`pooled_ratio_interval`: the pooled foreground IoU sum_i I_i / sum_i U_i of one run, with a
  percentile interval (Efron and Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13) from a
  moving-block bootstrap of its slices in slice order (:mod:`emfm.stats.blocks`, Künsch 1989). This says
  how much the number would move with other slices like these from the same stacks, not how much it would
  move with another seed.
- :func:`paired_ratio_difference_interval`: the same for the difference of two runs' pooled IoUs on the
  same slices, resampling the same blocks for both (a paired bootstrap), for comparisons with one seed.

With several test sets (a ``pooled`` score), blocks are drawn within each set (a stratified bootstrap):
no block straddles two stacks, and each set keeps its number of slices.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emfm.errors import ConfigError, DataError
from emfm.stats.blocks import block_resampled_sums, resolve_block_length

#: Replicates of a slice bootstrap. The ends of a percentile interval sit in the tails of the replicates and
#: need far more of them than a standard error does (Efron and Tibshirani 1993 advise 1000 or more); 2000
#: cost a few milliseconds per test set, the sums being taken from prefix sums.
N_BOOT = 2000


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean of ``values`` (seeds, or paired differences); None with fewer than two.

    mean ± t.ppf(0.5 + level / 2, K - 1) * s / sqrt(K), s the sample standard deviation (K - 1).
    """
    _check_level(level)
    if len(values) < 2:
        return None
    from scipy import stats

    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return mean - half, mean + half


def excludes_zero(interval: Sequence[float] | None) -> bool | None:
    """Whether an interval lies wholly above or wholly below 0 (None for no interval)."""
    if interval is None:
        return None
    low, high = interval
    return bool(low > 0 or high < 0)


def paired_t(differences: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences (one per seed or fold), its t interval and whether it excludes zero."""
    diffs = [float(d) for d in differences]
    if not diffs:
        raise DataError("a paired comparison needs at least one pair")
    interval = t_interval(diffs, level)
    return {
        "mean": statistics.fmean(diffs), "interval": interval, "n": len(diffs), "level": level,
        "excludes_zero": excludes_zero(interval), "differences": diffs,
        "method": f"t over {len(diffs)} paired seeds" if interval else "one pair, no interval",
    }


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ConfigError(f"interval level must be between 0 and 1 (e.g. 0.95), got {level}")


@dataclass(frozen=True)
class BlockBootstrap:
    """How a slice bootstrap is drawn.

    Attributes:
        block_length: slices per block; None takes ceil(n^(1/3)) for each stack of n slices
            (:func:`emfm.stats.blocks.default_block_length`); 1 is the ordinary, independent bootstrap.
        n_boot: B, the number of replicates.
        level: the interval's coverage.
        seed: seed of the resampling, so an interval is the same each time it is computed.
    """

    block_length: int | None = None
    n_boot: int = N_BOOT
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        _check_level(self.level)
        if self.block_length is not None:
            resolve_block_length(1, self.block_length)  # type and range
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, (int, np.integer)) or self.n_boot < 2:
            raise ConfigError(f"a bootstrap needs at least 2 replicates, got {self.n_boot!r}; use e.g. {N_BOOT}")


Counts = tuple[Sequence[float], Sequence[float]]


def _stratified_sums(strata: Sequence[np.ndarray], settings: BlockBootstrap) -> tuple[np.ndarray, list[int]]:
    """(B, c) column sums of a block resample of every stratum, added up; and each stratum's block length."""
    rng = np.random.default_rng(settings.seed)
    total = np.zeros((settings.n_boot, strata[0].shape[1]))
    lengths = []
    for values in strata:
        length = resolve_block_length(len(values), settings.block_length)
        total += block_resampled_sums(values, length, settings.n_boot, rng)
        lengths.append(length)
    return total, lengths


def _interval_record(replicates: np.ndarray, lengths: list[int], settings: BlockBootstrap, what: str) -> dict | None:
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return None
    low, high = np.quantile(finite, [(1 - settings.level) / 2, (1 + settings.level) / 2])
    blocks = f"{lengths[0]}" if len(set(lengths)) == 1 else "/".join(map(str, lengths))
    return {
        "low": float(low), "high": float(high), "level": settings.level,
        "method": f"block bootstrap over slices ({what}): moving blocks of {blocks} adjacent slices "
        f"(Künsch 1989), {settings.n_boot} replicates, percentile interval",
        "block_length": lengths[0] if len(lengths) == 1 else lengths,
        "n_boot": settings.n_boot, "seed": settings.seed,
        # replicates whose resampled slices had no foreground at all (0 / 0), left out of the quantiles
        "n_undefined": int(len(replicates) - len(finite)),
    }


def _columns(counts: Counts) -> np.ndarray:
    num, den = (np.asarray(c, dtype=float) for c in counts)
    if num.shape != den.shape or num.ndim != 1 or len(num) == 0:
        raise DataError(f"expected two equal, non-empty lists of per-slice counts, got {num.shape} and {den.shape}")
    return np.stack([num, den], axis=1)


def pooled_ratio_interval(strata: Sequence[Counts], settings: BlockBootstrap = BlockBootstrap()) -> dict | None:
    """Percentile interval of sum(num) / sum(den) under a moving-block bootstrap of slices within each stratum.

    Args:
        strata: one (per-slice numerators, per-slice denominators) pair per stack, each in slice order;
            for the foreground IoU, per-slice intersections and unions.
        settings: block length, replicates, level and seed.

    Returns:
        ``{"low", "high", "level", "method", "block_length", "n_boot", "seed", "n_undefined"}``, or None
        when the ratio itself is undefined (every denominator 0).
    """
    columns = [_columns(c) for c in strata]
    if not columns or sum(c[:, 1].sum() for c in columns) == 0:
        return None
    sums, lengths = _stratified_sums(columns, settings)
    with np.errstate(divide="ignore", invalid="ignore"):
        replicates = sums[:, 0] / sums[:, 1]
    return _interval_record(replicates, lengths, settings, "pooled IoU recomputed per replicate")


def paired_ratio_difference_interval(
    a: Sequence[Counts], b: Sequence[Counts], settings: BlockBootstrap = BlockBootstrap()
) -> dict | None:
    """Interval of ratio(a) - ratio(b) for two runs scored on the same slices, the same blocks drawn for both.

    Drawing the same slices for both runs keeps what the slices share (a hard slice is hard for both), so
    the interval is that of the difference, not of two independent numbers.

    Raises:
        DataError: if the two runs do not have the same number of slices in each stratum.
    """
    if len(a) != len(b) or any(len(x[0]) != len(y[0]) for x, y in zip(a, b)):
        raise DataError("a paired slice bootstrap needs both runs scored on the same slices")
    columns = [np.concatenate([_columns(x), _columns(y)], axis=1) for x, y in zip(a, b)]
    if not columns or any(sum(c[:, k].sum() for c in columns) == 0 for k in (1, 3)):
        return None
    sums, lengths = _stratified_sums(columns, settings)
    with np.errstate(divide="ignore", invalid="ignore"):
        replicates = sums[:, 0] / sums[:, 1] - sums[:, 2] / sums[:, 3]
    return _interval_record(replicates, lengths, settings, "paired, difference of pooled IoUs per replicate")
