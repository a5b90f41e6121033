"""Mask rules: how a decoded label image becomes a {0, 1} foreground mask, per dataset.

Every dataset names its rule, and a mask holding values the rule does not expect is an error (for
binary masks, where an odd value means the file is not what we think) or a logged warning (for label
maps, where an unknown class does not change which pixels are mitochondria). Nothing is binarised
silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emfm.errors import DataError

logger = logging.getLogger(__name__)


def value_set(arr: np.ndarray) -> list[int]:
    """The distinct values of an integer image, fast for uint8 (a histogram instead of a sort)."""
    if arr.dtype == np.uint8:
        return [int(v) for v in np.flatnonzero(np.bincount(arr.ravel(), minlength=256))]
    return [int(v) for v in np.unique(arr)]


def _show(values: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return "{" + shown + (", ..." if len(values) > limit else "") + "}"


@dataclass(frozen=True)
class BinaryMaskRule:
    """Foreground is ``value > 0`` in a mask whose values are a subset of one of ``allowed``.

    Lucchi++ uses ``allowed=({0, 255},)``; user folders accept {0, 1} or {0, 255}.
    """

    allowed: tuple[frozenset[int], ...]

    @property
    def description(self) -> str:
        sets = " or ".join(_show(sorted(a)) for a in self.allowed)
        return f"values in {sets}; foreground = value > 0"

    def apply(self, grey: np.ndarray, path: Path | str) -> tuple[np.ndarray, str | None]:
        values = value_set(grey)
        if not any(set(values) <= a for a in self.allowed):
            expected = " or ".join(_show(sorted(a)) for a in self.allowed)
            raise DataError(
                f"{path}: mask has values {_show(values)}, expected {expected}. "
                "Save the mask as 0 = background and 1 or 255 = foreground."
            )
        return (grey > 0).view(np.uint8), None


@dataclass(frozen=True)
class LabelMapRule:
    """Foreground is ``value == label`` in a multi-class label map; unknown classes are warned about."""

    label: int
    known: frozenset[int]

    @property
    def description(self) -> str:
        return f"label map; foreground = value == {self.label}"

    def apply(self, grey: np.ndarray, path: Path | str) -> tuple[np.ndarray, str | None]:
        note = None
        unknown = sorted(set(value_set(grey)) - self.known)
        if unknown:
            note = (
                f"{path}: label map holds values {_show(unknown)} outside the known classes "
                f"{_show(sorted(self.known))}; only value {self.label} counts as foreground."
            )
            logger.warning(note)
        return (grey == self.label).view(np.uint8), note


MaskRule = BinaryMaskRule | LabelMapRule
