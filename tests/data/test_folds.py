"""K-fold cross-validation over a dataset's labelled slices: contiguous test blocks, every slice tested once."""

from __future__ import annotations

import pytest

from emfm.data.splits import make_fold_split, make_val_split
from emfm.errors import DataError

IDS = [f"{i:02d}" for i in range(20)]


def test_five_folds_of_twenty_test_four_contiguous_slices_each_and_every_slice_once():
    tests = []
    for k in range(5):
        train, val, test = make_fold_split(IDS, 5, k)
        assert test == IDS[4 * k: 4 * k + 4]
        assert sorted(train + val + test) == IDS and not set(train) & set(val)
        assert (train, val) == make_val_split([s for s in IDS if s not in test])  # the study's draw on the rest
        assert len(val) == 2  # round(0.1 x 16)
        tests += test
    assert tests == IDS


def test_uneven_folds_differ_by_at_most_one_slice():
    sizes = [len(make_fold_split(IDS[:17], 5, k)[2]) for k in range(5)]
    assert sizes == [4, 4, 3, 3, 3]


@pytest.mark.parametrize(("n", "folds", "fold", "match"), [
    (20, 1, 0, "at least 2 folds"), (20, 5, 5, r"fold in 0\.\.4"), (20, 5, -1, "fold in"), (6, 5, 0, "at least 7"),
])
def test_impossible_folds_are_refused_with_the_reason(n, folds, fold, match):
    with pytest.raises(DataError, match=match):
        make_fold_split(IDS[:n], folds, fold)
