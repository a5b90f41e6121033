"""What every domain-alignment method provides, and the registry that names them.

The study's open problem is one model across EM sets: trained jointly on Lucchi++ and VNC, a frozen model
loses much of what each single-set model reaches. An alignment method changes how a joint run sees its
training sets: how batches are composed, how the sets' losses are weighed, how the head normalises each
set's features. Like the adapters (:mod:`emfm.adapters`), each is one registered class with typed
settings that training, checkpoints, evaluation, the CLI (``--align NAME``) and studies (``aligns:``) ask,
never its name, and any of them combines with any backbone, adapter and head.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from emfm._registry import Registry
from emfm._settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


@dataclass(frozen=True)
class NoSettings(Settings):
    """Settings of a method that has none."""


class Alignment:
    """One way of training a model on several EM sets at once.

    Attributes:
        name: the registry name (``--align NAME``).
        summary: one line for ``--help`` and reports.
        source: where the method comes from (paper or prior practice), for reports.
        settings_type: a frozen :class:`~emfm._settings.Settings` dataclass of the method's options.
        mixed_batches: every training batch holds one item of each training set (``batch_size`` is then
            rounded to a multiple of the number of sets).
        per_set_loss: the loss is computed per training set and joined by :meth:`combine` (otherwise it is
            pooled over the batch, as in plain training).
        per_domain_forward: the head must see one training set at a time (its normalisation is per set),
            so items are grouped by set before the forward pass and :meth:`set_domain` is called per group.
        input_side: the method changes the pixels before the model sees them (:meth:`fit_inputs`,
            :meth:`standardise`): every stack a run trains, validates, tests or predicts on goes through it.
        needs_features: the method adds :meth:`feature_loss` on the head's features (the input of its
            last layer, see :func:`emfm.models.heads.feature_module`), taken per training set.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    source: ClassVar[str] = ""
    settings_type: ClassVar[type[Settings]] = NoSettings
    mixed_batches: ClassVar[bool] = False
    per_set_loss: ClassVar[bool] = False
    per_domain_forward: ClassVar[bool] = False
    input_side: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    def __init__(self, settings: Settings | Mapping[str, Any] | None = None) -> None:
        if settings is None or isinstance(settings, Mapping):
            settings = self.settings_type.from_dict(settings or {})
        self.settings = settings

    def check(self, train_sets: Sequence[str]) -> None:
        """Refuse settings that do not fit the run's training sets (ConfigError); called when a config is built."""

    def prepare_head(self, head: nn.Module, domains: Sequence[str]) -> None:
        """Change the head before training or loading (e.g. per-domain normalisation); idempotent per head."""

    def set_domain(self, head: nn.Module, domain: int | None) -> None:
        """Tell the head which training set the next forward pass belongs to (None: unknown)."""

    @contextlib.contextmanager
    def test_domain(
        self, head: nn.Module, name: str, domains: Sequence[str], forward_all: Callable[[], None]
    ) -> Iterator[None]:
        """Ready the head for scoring test set ``name`` (``forward_all`` runs it over the set's slices,
        without labels, for methods that adapt to it); undone on exit."""
        yield

    def fit_inputs(self, train_images: Mapping[str, Sequence[np.ndarray]]) -> dict[str, Any]:
        """What input standardisation learns from the training sets' slices (e.g. a reference histogram).

        The result is JSON-able, saved with the run (``ModelInfo.align_state``) and handed back to
        :meth:`standardise`, so prediction on a new volume uses exactly what training used.
        """
        return {}

    def standardise(self, images: Sequence[np.ndarray], state: Mapping[str, Any]) -> list[np.ndarray]:
        """One volume's slices as the model sees them; the identity unless the method is ``input_side``."""
        return list(images)

    def training_module(self, feature_layer: nn.Module) -> nn.Module | None:
        """Trainable parts the method adds for training only (e.g. a domain discriminator on the features that
        enter the head's ``feature_layer``), trained beside the head and never saved with the model; None for
        most methods. Called for ``needs_features`` methods, after :meth:`prepare_head`."""
        return None

    def feature_loss(self, features: Mapping[int, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the training loss from the head's features of each training set, (n_k, C) rows
        per set index k; None adds nothing (methods that are not ``needs_features``)."""
        return None

    def combine(self, losses: Mapping[int, torch.Tensor], counts: Mapping[int, int]) -> torch.Tensor:
        """One loss from each training set's loss (``counts``: its pixels in the batch).

        The default weighs each set by its pixels, which is the pooled loss over the batch.
        """
        total = sum(counts.values())
        return sum(loss * (counts[k] / total) for k, loss in losses.items())  # type: ignore[return-value]

    def settings_dict(self) -> dict[str, Any]:
        return self.settings.to_dict()


ALIGNMENTS: Registry[type[Alignment]] = Registry("alignment method")


def register_alignment(cls: type[Alignment]) -> type[Alignment]:
    """Class decorator: ``@register_alignment`` on an :class:`Alignment` subclass with a ``name``."""
    return ALIGNMENTS.register(cls.name, cls)
