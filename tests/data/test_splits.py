"""Shipped split files: what the generators give, the study's counts, and the draw's properties."""

from __future__ import annotations

import math

import pytest

from emfm.data import get_dataset, make_val_split, read_split_file
from emfm.data.splits import make_holdout_split, n_val_for, split_file
from emfm.errors import DataError


@pytest.mark.parametrize("name", ["lucchi_pp", "vnc"])
def test_shipped_file_equals_generator(name: str) -> None:
    assert split_file(name).is_file()
    assert read_split_file(name) == get_dataset(name).make_split_record()


def test_lucchi_counts_149_16_and_test_is_the_test_volume() -> None:
    r = read_split_file("lucchi_pp")
    assert (len(r["train"]), len(r["val"]), len(r["test"])) == (149, 16, 165)
    assert r["stacks"] == {"train": "Train", "val": "Train", "test": "Test"}
    assert sorted(r["train"] + r["val"]) == [f"{i:04d}" for i in range(165)]


def test_vnc_counts_15_2_3_and_test_slices() -> None:
    r = read_split_file("vnc")
    assert r["test"] == ["00", "03", "08"]
    assert (len(r["train"]), len(r["val"])) == (15, 2)
    assert sorted(r["train"] + r["val"] + r["test"]) == [f"{i:02d}" for i in range(20)]


def test_rounding_matches_the_study() -> None:
    # the study: max(1, int(round(n * 0.1))); Python rounds half to even
    assert n_val_for(165, 0.1) == 16 and math.ceil(165 * 0.1) == 17  # ceil would not give the study's 16
    assert n_val_for(17, 0.1) == 2 and int(17 * 0.1) == 1  # truncation would not give its 2
    assert n_val_for(5, 0.1) == 1


def test_holdout_reproduces_the_study_vnc_draw() -> None:
    ids = [f"{i:02d}" for i in range(20)]
    trainval, test = make_holdout_split(ids, 0.15, seed=42)
    assert test == ["00", "03", "08"] and len(trainval) == 17


def test_val_split_is_deterministic_disjoint_and_complete() -> None:
    ids = [f"s{i}" for i in range(40)]
    train, val = make_val_split(ids, fraction=0.1, seed=42)
    assert (train, val) == make_val_split(ids, fraction=0.1, seed=42)
    assert len(val) == 4 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert train == [s for s in ids if s in set(train)]  # keeps the given order
    assert make_val_split(ids, seed=1)[1] != val


def test_val_split_bad_inputs() -> None:
    with pytest.raises(DataError, match=r"needs at least 2 training slices, got 1"):
        make_val_split(["a"])
    with pytest.raises(DataError, match=r"slice ids must be unique"):
        make_val_split(["a", "a", "b"])
    with pytest.raises(DataError, match=r"fraction must be between 0 and 1, got 1.5"):
        make_val_split(["a", "b", "c"], fraction=1.5)
