"""Per-domain normalisation in the head: domain-specific BatchNorm while training, AdaBN on a new set.

Chang et al. 2019, "Domain-Specific Batch Normalization for Unsupervised Domain Adaptation" (CVPR): the
network's weights are shared across domains but each domain keeps its own normalisation statistics, so the
two sets' different intensity and texture statistics are taken out before the shared layers see them. Li
et al. 2018, "Adaptive Batch Normalization for practical domain adaptation" (AdaBN): for a set seen in no
training batch, the statistics are re-estimated on its own unlabelled slices. Every head in emfm
normalises with ``nn.BatchNorm2d`` modules, so the method swaps each for a :class:`DomainBatchNorm2d` that
keeps the module's affine weights (shared) and one set of running statistics per training set.

At test time a set named like a training set uses that set's statistics; any other set gets AdaBN
(``unseen: adabn``, the default) or the training sets' pooled statistics (``unseen: pooled``), which is
also what ``emfm predict`` uses on a volume of unknown origin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from emfm._settings import Settings, check_choice
from emfm.align._base import Alignment, register_alignment


class DomainBatchNorm2d(nn.Module):
    """BatchNorm with shared affine weights and running statistics per domain.

    ``domain`` selects the statistics of the next forward pass; ``None`` means unknown: in evaluation the
    domains' statistics pooled (mean of means; mean of variances plus the variance of the means), and in
    training an error, since no domain's statistics should absorb an unlabelled mixture.
    """

    def __init__(self, num_features: int, n_domains: int, *, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False) for _ in range(n_domains)
        )
        self.eps = eps
        self.domain: int | None = None

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, n_domains: int) -> DomainBatchNorm2d:
        out = cls(bn.num_features, n_domains, eps=bn.eps, momentum=bn.momentum)
        with torch.no_grad():
            if bn.affine:
                out.weight.copy_(bn.weight)
                out.bias.copy_(bn.bias)
        return out

    def add_domain(self) -> int:
        """A fresh slot whose statistics average every batch it sees (momentum None): AdaBN's estimate."""
        self.norms.append(nn.BatchNorm2d(self.num_features, eps=self.eps, momentum=None, affine=False))
        return len(self.norms) - 1

    def pooled_statistics(self, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        norms = list(self.norms)[: count or len(self.norms)]
        means = torch.stack([n.running_mean for n in norms])
        variances = torch.stack([n.running_var for n in norms])
        mean = means.mean(0)
        return mean, (variances + (means - mean) ** 2).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.domain is None:
            if self.training:
                raise RuntimeError("DomainBatchNorm2d is training without a domain; set one per batch group")
            mean, var = self.pooled_statistics()
            y = F.batch_norm(x, mean, var, training=False, eps=self.eps)
        else:
            y = self.norms[self.domain](x)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def domain_norms(head: nn.Module) -> list[DomainBatchNorm2d]:
    return [m for m in head.modules() if isinstance(m, DomainBatchNorm2d)]


def swap_batchnorms(module: nn.Module, n_domains: int) -> int:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a :class:`DomainBatchNorm2d`; return how many."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, DomainBatchNorm2d.from_batchnorm(child, n_domains))
            swapped += 1
        else:
            swapped += swap_batchnorms(child, n_domains)
    return swapped


Unseen = Literal["adabn", "pooled"]


@dataclass(frozen=True)
class DomainBNSettings(Settings):
    """``unseen``: how a test set that is none of the training sets is normalised (adabn or pooled)."""

    unseen: Unseen = "adabn"

    def __post_init__(self) -> None:
        check_choice("unseen", self.unseen, ("adabn", "pooled"), "; adabn re-estimates on the set's own slices")


@register_alignment
class DomainBatchNorm(Alignment):
    """Domain-specific BatchNorm in the head (shared weights, statistics per training set); AdaBN on new sets."""

    name = "domain-bn"
    summary = "BatchNorm statistics per training set in the head; AdaBN (or pooled statistics) on a new set"
    source = "Chang et al. 2019 (domain-specific BN); Li et al. 2018 (AdaBN)"
    settings_type = DomainBNSettings
    per_domain_forward = True

    def prepare_head(self, head: nn.Module, domains: Sequence[str]) -> None:
        if domain_norms(head):
            return
        if swap_batchnorms(head, max(1, len(domains))) == 0:
            from emfm.errors import ConfigError

            raise ConfigError(f"align domain-bn needs a head with BatchNorm layers; {type(head).__name__} has none")

    def set_domain(self, head: nn.Module, domain: int | None) -> None:
        for m in domain_norms(head):
            m.domain = domain

    @contextlib.contextmanager
    def test_domain(
        self, head: nn.Module, name: str, domains: Sequence[str], forward_all: Callable[[], None]
    ) -> Iterator[None]:
        """Normalise a test set as the matching training set, or as :class:`DomainBNSettings` says."""
        norms = domain_norms(head)
        if name in domains:
            self.set_domain(head, list(domains).index(name))
            yield
        elif self.settings.unseen == "pooled":  # type: ignore[attr-defined]
            self.set_domain(head, None)
            yield
        else:
            slots = [m.add_domain() for m in norms]
            self.set_domain(head, slots[0])
            was_training = [m.training for m in norms]
            for m in norms:
                m.train()  # only the normalisation layers: they gather the set's statistics, nothing learns
            with torch.no_grad():
                forward_all()
            for m, t in zip(norms, was_training):
                m.train(t)
            try:
                yield
            finally:
                for m in norms:
                    del m.norms[-1]
        self.set_domain(head, None)
