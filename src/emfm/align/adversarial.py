"""Domain-adversarial training (DANN): a discriminator learns which training set a head feature came from,
and the head learns, through a reversed gradient, to leave it guessing.

Ganin & Lempitsky 2015 ("Unsupervised Domain Adaptation by Backpropagation", ICML) and Ganin et al. 2016
(JMLR). The head's features (the input of its last layer, as for CORAL and MMD) are subsampled per
training set, equally many rows of each, and passed through a gradient-reversal layer to a small MLP that
classifies their set. The cross-entropy is added to the training loss: the discriminator descends it, the
head ascends it with ``weight`` (the reversal's coefficient, Ganin's lambda, constant here rather than
ramped up over training). Where CORAL and MMD match two statistics of the features, the discriminator can
find any difference that a small network can see, which is what the domain probe of the report measures.

The discriminator exists for training only: it is trained with the head and is not part of the saved
model, so evaluation, prediction and export see the segmenter alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from emfm.align._base import Alignment, register_alignment
from emfm.align.feature_align import FeatureAlignSettings, subsample_rows
from emfm.errors import ConfigError


@dataclass(frozen=True)
class AdversarialSettings(FeatureAlignSettings):
    """``weight``: the reversed gradient's coefficient; ``samples``: feature rows per set and step (both
    checked as CORAL's and MMD's are); ``hidden``: the discriminator's width (two hidden layers)."""

    weight: float = 0.1
    hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise ConfigError(f"align hidden must be a positive width, got {self.hidden}")


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, gradient times ``-coefficient`` backward. Written here because the operation is
    three lines and no dependency emfm has (torch, Lightning, MONAI, peft) ships one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``x`` unchanged; its gradient comes back multiplied by ``-coefficient``."""
    return _ReverseGradient.apply(x, coefficient)


def feature_width(feature_layer: nn.Module) -> int:
    """Channels of a head's features: the input width of its last layer, which is a 1x1 Conv2d or a block
    around one (the fusion head's MONAI UnetOutBlock)."""
    first = next((m for m in feature_layer.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if first is None:
        raise ConfigError(f"the head's feature layer {type(feature_layer).__name__} holds no Conv2d or Linear "
                          f"whose input width could size a domain discriminator; dann needs one")
    return int(first.in_channels if isinstance(first, nn.Conv2d) else first.in_features)


@register_alignment
class AdversarialAlignment(Alignment):
    """DANN: a domain discriminator on the head's features behind a gradient-reversal layer."""

    name = "dann"
    summary = "domain-adversarial training: a set discriminator on the head's features, gradient reversed"
    source = "Ganin & Lempitsky 2015, DANN (gradient reversal)"
    settings_type = AdversarialSettings
    mixed_batches = True  # every step needs rows of every set
    needs_features = True

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.discriminator: nn.Module | None = None
        self.n_sets: int | None = None

    def prepare_head(self, head: nn.Module, domains) -> None:
        self.n_sets = len(domains)  # the discriminator's classes; the head itself is not changed

    def training_module(self, feature_layer: nn.Module) -> nn.Module | None:
        s: AdversarialSettings = self.settings  # type: ignore[assignment]
        if self.n_sets is None:  # a run reloaded to go on training without the term (emfm adapt's source loss)
            return None
        n_sets = self.n_sets
        width = feature_width(feature_layer)
        self.discriminator = nn.Sequential(
            nn.Linear(width, s.hidden), nn.ReLU(), nn.Linear(s.hidden, s.hidden), nn.ReLU(), nn.Linear(s.hidden, n_sets)
        )
        return self.discriminator

    def feature_loss(self, features: Mapping[int, torch.Tensor]) -> torch.Tensor | None:
        s: AdversarialSettings = self.settings  # type: ignore[assignment]
        sets = sorted(k for k, rows in features.items() if rows.shape[0] >= 1)
        if len(sets) < 2 or s.weight == 0:
            return None
        if self.discriminator is None:
            raise RuntimeError("dann's discriminator was not built: call prepare_head, then training_module")
        n = min(s.samples, *(features[k].shape[0] for k in sets))  # equally many rows of each set: chance is 1/K
        rows = torch.cat([subsample_rows(features[k].float(), n) for k in sets])
        labels = torch.cat([torch.full((n,), k, dtype=torch.long, device=rows.device) for k in sets])
        logits = self.discriminator(reverse_gradient(rows, s.weight))
        return nn.functional.cross_entropy(logits, labels)
