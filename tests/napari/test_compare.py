"""emfm.napari.compare: 1 where only A is foreground, 2 where only B, and the fraction that disagrees."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.napari.compare import disagreeing_fraction, disagreement


def test_disagreement_labels_and_fraction():
    a = np.array([[1, 1, 0, 0]], np.uint8)
    b = np.array([[1, 0, 1, 0]], np.uint8)
    labels = disagreement(a, b)
    np.testing.assert_array_equal(labels, [[0, 1, 2, 0]])
    assert labels.dtype == np.uint8
    assert disagreeing_fraction(labels) == 0.5
    assert disagreeing_fraction(disagreement(a, a)) == 0.0


def test_masks_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="cannot be compared"):
        disagreement(np.zeros((2, 3)), np.zeros((3, 2)))
