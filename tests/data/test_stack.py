"""SliceStack: one image and one mask per id, and subsets by id; mistakes are emfm DataErrors."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.data import SliceStack
from emfm.errors import DataError


def _stack(n: int = 3) -> SliceStack:
    images = [np.full((2, 2), i, np.uint8) for i in range(n)]
    return SliceStack("toy", "trainval", [f"{i:02d}" for i in range(n)], images, [np.zeros((2, 2), np.uint8)] * n)


def test_subset_keeps_the_order_asked_for() -> None:
    sub = _stack().subset(["02", "00"], "val")
    assert sub.ids == ["02", "00"] and sub.split == "val" and [int(i[0, 0]) for i in sub.images] == [2, 0]


def test_subset_with_an_unknown_id_says_which_and_what_there_is() -> None:
    missing = r"toy: 1 slice id\(s\) are not in split 'trainval': 07; it has 3 ids \(00 .. 02\)"
    with pytest.raises(DataError, match=missing):
        _stack().subset(["00", "07"], "val")


def test_ids_images_and_masks_must_match() -> None:
    with pytest.raises(DataError, match=r"toy/test: got 2 ids, 1 images and 1 masks; give one image and one mask"):
        SliceStack("toy", "test", ["a", "b"], [np.zeros((2, 2))], [np.zeros((2, 2), np.uint8)])


def test_with_images_keeps_ids_masks_and_pairing_and_checks_shapes() -> None:
    stack = _stack()
    stack.pairing = "text-sorted"
    new = stack.with_images([np.full((2, 2), 9, np.uint8)] * 3)
    assert new.ids == stack.ids and new.pairing == "text-sorted" and all(m is n for m, n in zip(new.masks, stack.masks))
    assert all(int(i[0, 0]) == 9 for i in new.images) and int(stack.images[2][0, 0]) == 2  # the original untouched
    assert new.image_digest(0) != stack.image_digest(0)
    with pytest.raises(DataError, match="got 2 images for 3 slices"):
        stack.with_images([np.zeros((2, 2), np.uint8)] * 2)
    with pytest.raises(DataError, match=r"slice 01: image shape \(3, 2\) is not \(2, 2\)"):
        stack.with_images([np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8), np.zeros((2, 2), np.uint8)])
