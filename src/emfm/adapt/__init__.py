"""Adapt a trained run to a user's unlabelled data: ``emfm adapt --run DIR --target DATA --method NAME --out DIR``.

The adapted run is a run directory like any other (the source's config, a checkpoint of the same format whose
head changed, and ``adapt.json`` saying how), so ``emfm evaluate --run`` and ``emfm predict --run`` take it.
Methods are registered objects (:mod:`emfm.adapt._base`); importing this package registers the built-in ones:

- ``adabn``: the head's BatchNorm statistics re-estimated on the target (Li et al. 2018), :mod:`emfm.adapt.adabn`;
- ``self-training``: a mean teacher's confident pseudo-labels, with the run's own supervised loss beside them
  (Tarvainen & Valpola 2017; Wu et al. 2021; Huang et al. 2022), :mod:`emfm.adapt.self_training`.
"""

from __future__ import annotations

from emfm.adapt import adabn, self_training  # noqa: F401  (registers the built-in methods)
from emfm.adapt._base import ADAPT_METHODS, Adapted, AdaptMethod, register_method
from emfm.adapt.run import ADAPT_NAME, adapt_run, create_method


def method_names() -> list[str]:
    return ADAPT_METHODS.names()


__all__ = [
    "ADAPT_METHODS",
    "ADAPT_NAME",
    "AdaptMethod",
    "Adapted",
    "adapt_run",
    "create_method",
    "method_names",
    "register_method",
]
