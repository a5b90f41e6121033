"""Domain-alignment methods for one model across EM sets, as registered objects (see :mod:`emfm.align._base`).

Importing this package registers the built-in methods; :func:`create_alignment` builds one from a name
and its settings (``--align NAME``, ``align_settings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emfm.align import adversarial, domain_bn, feature_align, inputs, sampling  # noqa: F401  (registers the built-in methods)
from emfm.align._base import ALIGNMENTS, Alignment, register_alignment


def alignment_names() -> list[str]:
    return ALIGNMENTS.names()


def create_alignment(name: str, settings: Mapping[str, Any] | None = None) -> Alignment:
    """Build a registered method; an unknown name lists the valid ones with the nearest first."""
    return ALIGNMENTS.get(name)(settings)


__all__ = ["ALIGNMENTS", "Alignment", "alignment_names", "create_alignment", "register_alignment"]
