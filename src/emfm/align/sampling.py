"""Alignment by what a batch holds and how the sets' losses count: the cheap baselines.

- ``none``: batches drawn from the pooled training sets, the loss pooled over the batch (the study's joint
  training, and every single-set run).
- ``mixed``: one slice (or crop) of each training set in every batch, the study's "balanced" ablation as it
  describes it. Not the same as ``--balance``, which draws each set equally often *in expectation* with a
  weighted sampler with replacement, so a batch may hold one set only; both are kept, named apart.
- ``weighted``: each set's loss computed on its own items and weighed (equal weights by default, so a small
  set counts as much as a large one whatever its share of the pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from emfm._settings import Settings
from emfm.align._base import Alignment, register_alignment
from emfm.errors import ConfigError


@register_alignment
class NoAlignment(Alignment):
    """Plain joint training: pooled batches, pooled loss."""

    name = "none"
    summary = "no alignment: batches from the pooled sets, loss pooled over the batch"
    source = "the study's joint training"


@register_alignment
class MixedBatches(Alignment):
    """Every batch holds one item of each training set."""

    name = "mixed"
    summary = "one slice of each training set in every batch"
    source = "the study's balanced ablation (protocol.md); common multi-domain practice"
    mixed_batches = True


@dataclass(frozen=True)
class WeightSettings(Settings):
    """``weights``: one per training set, in the order of ``train``; empty means equal."""

    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) <= 0):
            raise ConfigError(f"align weights must be non-negative with a positive sum, got {list(self.weights)}")


@register_alignment
class WeightedSets(Alignment):
    """Each training set's loss on its own items, weighed by ``weights`` (equal by default)."""

    name = "weighted"
    summary = "each training set's loss weighed (equal weights by default)"
    source = "per-domain loss weighting (multi-task / multi-source practice)"
    settings_type = WeightSettings
    mixed_batches = True  # a batch without one of the sets would silently drop its weight
    per_set_loss = True

    def check(self, train_sets: Sequence[str]) -> None:
        weights = self.settings.weights  # type: ignore[attr-defined]
        if weights and len(weights) != len(train_sets):
            raise ConfigError(
                f"align weights {list(weights)} need one weight per training set ({', '.join(train_sets)})"
            )

    def combine(self, losses: Mapping[int, torch.Tensor], counts: Mapping[int, int]) -> torch.Tensor:
        weights = self.settings.weights or (1.0,) * (max(losses) + 1)  # type: ignore[attr-defined]
        total = sum(weights[k] for k in losses)
        return sum(loss * (weights[k] / total) for k, loss in losses.items())  # type: ignore[return-value]
