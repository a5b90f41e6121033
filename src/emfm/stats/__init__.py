"""Uncertainty shared by every layer: t intervals over seeds and block bootstraps over slices.

It sits at the bottom of the layer order (numpy, scipy and :mod:`emfm.errors` only), so the analysis
(Fréchet and KID intervals), the evaluation (IoU intervals in ``metrics.json``) and the study (the report's
intervals and paired comparisons) use one implementation.
"""

from emfm.stats.blocks import (
    block_resampled_sums,
    default_block_length,
    moving_block_indices,
    resolve_block_length,
)
from emfm.stats.intervals import (
    N_BOOT,
    BlockBootstrap,
    excludes_zero,
    paired_ratio_difference_interval,
    paired_t,
    pooled_ratio_interval,
    t_interval,
)

__all__ = [
    "N_BOOT",
    "BlockBootstrap",
    "block_resampled_sums",
    "default_block_length",
    "excludes_zero",
    "moving_block_indices",
    "paired_ratio_difference_interval",
    "paired_t",
    "pooled_ratio_interval",
    "resolve_block_length",
    "t_interval",
]
