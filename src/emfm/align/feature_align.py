"""Feature alignment while training: a term that pulls the training sets' head features together.

The head's features are the input of its last layer (:func:`emfm.models.heads.feature_module`): for the
fusion head the full-resolution decoder map, for the linear heads the normalised patch grid. Every
training batch holds one item of each set (``mixed_batches``), each item's feature pixels are rows of
its set, and a term between the sets' rows is added to the segmentation loss with ``weight``:

- ``coral``: Deep CORAL (Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain
  Adaptation", ECCV workshops): the squared Frobenius distance between the sets' feature covariances,
  divided by 4 d^2.
- ``mmd``: the maximum mean discrepancy (Gretton et al. 2012, JMLR) with a sum of Gaussian kernels at
  several bandwidths around the batch's mean squared distance, as DAN does (Long et al. 2015, ICML).

With more than two training sets the term is the mean over pairs. Pixels are subsampled (``samples``
rows per set and step, drawn from torch's seeded generator) because a full-resolution map has tens of
thousands of pixels per crop and the MMD's kernel matrix grows with their square. Validation loss stays
the segmentation loss alone, so early stopping still picks the model that segments best.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from emfm._settings import Settings
from emfm.align._base import Alignment, register_alignment
from emfm.errors import ConfigError


@dataclass(frozen=True)
class FeatureAlignSettings(Settings):
    """``weight``: the term's weight against the segmentation loss; ``samples``: feature rows per set and step."""

    weight: float = 1.0
    samples: int = 1024

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ConfigError(f"align weight must be >= 0, got {self.weight}")
        if self.samples < 2:
            raise ConfigError(f"align samples must be at least 2 feature rows per set, got {self.samples}")


def subsample_rows(rows: torch.Tensor, n: int) -> torch.Tensor:
    """At most ``n`` rows of ``rows`` (n_rows, C), drawn without replacement from torch's global generator."""
    if rows.shape[0] <= n:
        return rows
    return rows[torch.randperm(rows.shape[0], device=rows.device)[:n]]


def coral_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Deep CORAL's loss between two sets of rows (n, d): ``|C_a - C_b|_F^2 / (4 d^2)``."""
    d = a.shape[1]

    def covariance(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(0, keepdim=True)
        return x.T @ x / max(1, x.shape[0] - 1)

    return (covariance(a) - covariance(b)).pow(2).sum() / (4 * d * d)


MMD_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)  # multiples of the mean squared distance, as DAN's kernel family


def mmd_distance(a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...] = MMD_BANDWIDTHS) -> torch.Tensor:
    """Squared MMD between rows ``a`` and ``b`` with a sum of Gaussian kernels (biased V-statistic, >= 0).

    The bandwidths scale with the mean squared distance of the pooled rows, taken without gradient so the
    term cannot shrink by inflating the kernel width.
    """
    x = torch.cat([a, b])
    d2 = torch.cdist(x, x).pow(2)
    base = d2.detach().sum() / max(1, x.shape[0] * (x.shape[0] - 1))
    kernel = sum(torch.exp(-d2 / (base * m + 1e-12)) for m in bandwidths)
    n = a.shape[0]
    k_aa, k_bb, k_ab = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return (k_aa.mean() + k_bb.mean() - 2 * k_ab.mean()).clamp_min(0)


class _FeatureAlignment(Alignment):
    """A distance between two sets' feature rows, averaged over pairs of sets and weighed (``distance``)."""

    settings_type = FeatureAlignSettings
    mixed_batches = True  # every step needs rows of every set
    needs_features = True
    distance: ClassVar[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

    def feature_loss(self, features: Mapping[int, torch.Tensor]) -> torch.Tensor | None:
        sets = sorted(k for k, rows in features.items() if rows.shape[0] >= 2)
        if len(sets) < 2 or self.settings.weight == 0:  # type: ignore[attr-defined]
            return None
        n = self.settings.samples  # type: ignore[attr-defined]
        rows = {k: subsample_rows(features[k].float(), n) for k in sets}
        terms = [self.distance(rows[i], rows[j]) for i, j in itertools.combinations(sets, 2)]
        return self.settings.weight * torch.stack(terms).mean()  # type: ignore[attr-defined]


@register_alignment
class CoralAlignment(_FeatureAlignment):
    """Deep CORAL between the training sets' head features."""

    name = "coral"
    summary = "Deep CORAL term between the training sets' head features (covariances matched)"
    source = "Sun & Saenko 2016, Deep CORAL"

    distance = staticmethod(coral_distance)


@register_alignment
class MMDAlignment(_FeatureAlignment):
    """Multi-kernel MMD between the training sets' head features."""

    name = "mmd"
    summary = "multi-kernel Gaussian MMD term between the training sets' head features"
    source = "Gretton et al. 2012 (MMD); Long et al. 2015, DAN (multi-kernel)"

    distance = staticmethod(mmd_distance)
