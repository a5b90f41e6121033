"""Where two masks disagree: the comparison the *Compare* tab shows (plain numpy, no napari)."""

from __future__ import annotations

import numpy as np

#: Values of the disagreement labels.
ONLY_A, ONLY_B = 1, 2


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 labels of ``a``'s shape: 0 where the masks agree, 1 where only ``a`` is foreground, 2 only ``b``.

    Raises:
        ValueError: the masks differ in shape (they must come from the same image and slices).
    """
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {a.shape} and {b.shape} cannot be compared; predict the same slices")
    out = np.zeros(a.shape, np.uint8)
    out[a & ~b] = ONLY_A
    out[b & ~a] = ONLY_B
    return out


def disagreeing_fraction(labels: np.ndarray) -> float:
    """The fraction of pixels where the masks disagree (any non-zero disagreement label)."""
    labels = np.asarray(labels)
    return float(np.count_nonzero(labels)) / labels.size if labels.size else 0.0
