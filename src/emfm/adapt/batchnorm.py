"""A head's BatchNorm statistics for the target: where they live, how they are estimated, how they are kept.

Li et al. 2018, "Adaptive Batch Normalization for practical domain adaptation" (AdaBN): a network's weights
hold what it learned, its BatchNorm statistics what its training domain looked like; replacing the
statistics by the target's adapts it without a label. :func:`estimate` is that step: each BatchNorm layer
starts afresh and averages the batch statistics of every target slice (momentum None, a cumulative
average), in evaluation mode otherwise and without gradients, as PyTorch's own BatchNorm computes them.

Two kinds of head hold statistics:

- a plain head (``nn.BatchNorm2d`` layers): the target's statistics replace the source's;
- a head trained with ``align: domain-bn`` (:class:`~emfm.align.domain_bn.DomainBatchNorm2d`, one set of
  statistics per training set, Chang et al. 2019): the target gets a slot of its own (:func:`target_norms`),
  and the adapted run keeps that slot only, as its one domain named after the target (:func:`keep_target`).
  Then ``emfm evaluate --test TARGET`` and ``emfm predict`` (which normalises an input of unknown origin with
  the pooled statistics of the run's domains, here the target's alone) both use the target's statistics,
  and a source set tested again is normalised as a set the adapted run has not seen (AdaBN on itself, or
  the target's, as the run's ``unseen`` setting says). The source run keeps the per-set statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from emfm.align.domain_bn import domain_norms
from emfm.errors import ConfigError

#: A BatchNorm layer's statistics: running mean, running variance, batches counted.
Statistics = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def plain_norms(head: nn.Module) -> list[_BatchNorm]:
    """The head's BatchNorm layers that are not a per-domain slot of a ``DomainBatchNorm2d``."""
    inner = {id(n) for m in domain_norms(head) for n in m.norms}
    return [m for m in head.modules() if isinstance(m, _BatchNorm) and id(m) not in inner and m.track_running_stats]


def has_batchnorm(head: nn.Module) -> bool:
    return bool(domain_norms(head) or plain_norms(head))


def require_batchnorm(head: nn.Module, run: str, method: str) -> None:
    """ConfigError unless the head normalises with BatchNorm statistics that can be re-estimated."""
    if not has_batchnorm(head):
        raise ConfigError(
            f"--method {method} re-estimates BatchNorm statistics, and the {type(head).__name__} of run {run} has no "
            f"BatchNorm layer; use --method self-training for it"
        )


def target_norms(head: nn.Module) -> tuple[list[_BatchNorm], int | None]:
    """The BatchNorm layers that will hold the target's statistics, and the target's domain slot.

    A per-domain head gets a fresh slot in every :class:`~emfm.align.domain_bn.DomainBatchNorm2d` (selected for
    the next forward passes); a plain head's own layers are returned, with slot None.
    """
    per_domain = domain_norms(head)
    if not per_domain:
        return plain_norms(head), None
    slots = {m.add_domain() for m in per_domain}
    (slot,) = slots  # every layer has the same number of domains
    for m in per_domain:
        m.domain = slot
    return [m.norms[slot] for m in per_domain], slot


@contextlib.contextmanager
def gathering(norms: Sequence[_BatchNorm]) -> Iterator[None]:
    """The layers' statistics reset and set to average every batch they see (momentum None), with only
    these layers in training mode; their momentum and mode are restored on exit."""
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        yield
    finally:
        for m, (momentum, training) in zip(norms, saved):
            m.momentum = momentum
            m.train(training)


def estimate(head: nn.Module, norms: Sequence[_BatchNorm], forward_all: Callable[[], None]) -> None:
    """AdaBN: re-estimate ``norms`` from the batches ``forward_all`` runs through the model; nothing learns."""
    head.eval()
    with gathering(norms), torch.no_grad():
        forward_all()
    head.eval()


def snapshot(norms: Sequence[_BatchNorm]) -> Statistics:
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]


def load(norms: Sequence[_BatchNorm], stats: Statistics) -> None:
    """Make ``stats`` the layers' buffers. The tensors are swapped, not copied into: a graph that saved the
    buffers of a forward pass (BatchNorm in evaluation mode does) must find them unchanged at backward."""
    for m, (mean, var, count) in zip(norms, stats):
        m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count


@contextlib.contextmanager
def using(norms: Sequence[_BatchNorm], stats: Statistics) -> Iterator[None]:
    """The layers normalise with ``stats`` inside the block and with their own statistics again after it."""
    own: Statistics = [(m.running_mean, m.running_var, m.num_batches_tracked) for m in norms]
    load(norms, stats)
    try:
        yield
    finally:
        load(norms, own)


def keep_target(head: nn.Module, slot: int | None) -> None:
    """A per-domain head keeps the target's slot only (its one domain) with the layers' own momentum; a plain
    head (slot None) already holds nothing but the target's statistics."""
    if slot is None:
        return
    for m in domain_norms(head):
        momentum = m.norms[0].momentum
        kept = m.norms[slot]
        kept.momentum = momentum
        m.norms = nn.ModuleList([kept])
        m.domain = None


def select_domain(head: nn.Module, slot: int | None) -> None:
    """Point every ``DomainBatchNorm2d`` of the head at ``slot`` (None: unknown; a plain head: no-op)."""
    for m in domain_norms(head):
        m.domain = slot



@dataclass
class TwoDomains:
    """How a student normalises while it self-trains: source items with the run's statistics, target items
    with the target's, both frozen (domain-specific normalisation, Chang et al. 2019).

    Batches of a few crops give noisy statistics, and one running average over both domains would hold
    neither, so BatchNorm layers stay in evaluation mode while the weights train. A per-domain head selects
    the target's slot for target items; a plain head has the target's statistics swapped in for them.
    """

    norms: list[_BatchNorm]
    slot: int | None = None
    target_stats: Statistics | None = None

    @contextlib.contextmanager
    def target(self, head: nn.Module) -> Iterator[None]:
        """Forward passes inside the block normalise as the target."""
        if self.slot is not None:
            select_domain(head, self.slot)
            try:
                yield
            finally:
                select_domain(head, None)
        elif self.target_stats is not None:
            with using(self.norms, self.target_stats):
                yield
        else:  # a head without BatchNorm
            yield


def split_statistics(head: nn.Module, forward_all: Callable[[], None]) -> tuple[TwoDomains, nn.Module]:
    """Estimate the target's statistics (AdaBN) for a student ``head`` that keeps the source's, and return how
    the student switches between the two and a copy of the head that normalises as the target (the teacher)."""
    import copy

    if not has_batchnorm(head):
        return TwoDomains([]), copy.deepcopy(head)
    norms, slot = target_norms(head)
    own = snapshot(norms) if slot is None else None
    estimate(head, norms, forward_all)
    teacher = copy.deepcopy(head)  # the target's statistics (a per-domain head: the target's slot selected)
    if own is None:
        select_domain(head, None)
        return TwoDomains(norms, slot=slot), teacher
    target = snapshot(norms)
    load(norms, own)
    return TwoDomains(norms, target_stats=target), teacher


def target_slot_norms(head: nn.Module, slot: int | None) -> list[_BatchNorm]:
    """The layers that hold the target's statistics in a head made by :func:`split_statistics`."""
    if slot is None:
        return plain_norms(head)
    return [m.norms[slot] for m in domain_norms(head)]
