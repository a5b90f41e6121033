"""Metrics and evaluation of a trained segmenter on test stacks."""

from emfm.evaluate.metrics import PooledCounts, dice_loss, pooled_scores

__all__ = ["PooledCounts", "dice_loss", "pooled_scores"]
