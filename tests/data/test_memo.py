"""Splits kept in memory while a study runs: read once, handed out as copies, bounded, and the same results."""

from __future__ import annotations

import contextlib
import csv

import numpy as np
import pytest

from emfm.data import load_split, memo
from emfm.data.folder import FolderDataset
from emfm.study.config import StudyConfig
from emfm.study.runner import run_study


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every split a FolderDataset reads from disk, in order."""
    calls: list[str] = []
    original = FolderDataset.load

    def counting(self, split, *args, **kwargs):
        calls.append(split)
        return original(self, split, *args, **kwargs)

    monkeypatch.setattr(FolderDataset, "load", counting)
    return calls


def test_outside_a_study_every_load_reads(datasets, reads):
    a, _ = datasets
    load_split(a, "test", progress=False)
    load_split(a, "test", progress=False)
    assert reads == ["test", "test"]
    assert not memo.active()


def test_inside_each_split_is_read_once_and_handed_out_as_a_copy(datasets, reads):
    a, _ = datasets
    with memo.splits_kept_in_memory():
        first = load_split(a, "test", progress=False)
        first.images[0][:] = 0  # a run that writes into its slices ...
        first.masks[0][:] = 1
        first.ids.append("x")
        second = load_split(a, "test", progress=False)
        load_split(a, "train", progress=False)
    fresh = load_split(a, "test", progress=False)
    assert reads == ["test", "train", "test"]  # the last read is after the block
    # ... does not hand the next one altered slices
    assert second.ids == fresh.ids
    for got, want in zip(second.images + second.masks, fresh.images + fresh.masks):
        np.testing.assert_array_equal(got, want)
    assert second.images[0] is not first.images[0]


def test_pairings_and_folders_are_kept_apart(datasets, reads):
    a, b = datasets
    with memo.splits_kept_in_memory():
        by_number = load_split(a, "train", progress=False)
        text_sorted = load_split(a, "train", pairing="text-sorted", progress=False)
        other = load_split(b, "train", progress=False)
    assert len(reads) == 3
    assert (by_number.pairing, text_sorted.pairing) == ("by-number", "text-sorted")
    assert other.images[0].shape != by_number.images[0].shape


def test_what_is_kept_is_bounded(datasets, reads, monkeypatch):
    a, _ = datasets

    def size(split: str) -> int:
        stack = load_split(a, split, progress=False)
        return sum(x.nbytes for x in stack.images + stack.masks)

    monkeypatch.setattr(memo, "MAX_BYTES", size("test") + size("train") - 1)  # room for one of them at a time
    reads.clear()
    with memo.splits_kept_in_memory():
        load_split(a, "test", progress=False)
        load_split(a, "train", progress=False)  # pushes the test split out
        load_split(a, "train", progress=False)
        load_split(a, "test", progress=False)
    assert reads == ["test", "train", "test"]


def _tiny_study(backbone, a, b, cache) -> StudyConfig:
    return StudyConfig.from_dict({
        "name": "kept", "backbones": [str(backbone)], "adapters": ["frozen"], "heads": ["linear"],
        "train_sets": [a, b], "test_sets": [a, b], "seeds": [0],
        "defaults": {"epochs": 2, "resolution": 56, "lr": 1e-3, "cache_dir": str(cache)},
    })


def _results(path) -> list[tuple]:
    with open(path) as fh:
        return sorted((r["run_id"], r["test_set"], r["fg_iou"], r["best_epoch"]) for r in csv.DictReader(fh))


def test_a_study_reads_each_split_once_with_the_same_results(tiny_backbone_dir, datasets, reads, tmp_path,
                                                             monkeypatch):
    a, b = datasets
    study = _tiny_study(tiny_backbone_dir, a, b, tmp_path / "cache")
    run_study(study, tmp_path / "kept")
    # each run reads the train and val splits of its training set and both test sets
    assert sorted(reads) == sorted(["train", "val", "test", "train", "val", "test"])
    reads.clear()
    monkeypatch.setattr(memo, "splits_kept_in_memory", contextlib.nullcontext)
    run_study(study, tmp_path / "every-time")
    assert len(reads) == 2 * 4  # 2 runs: train, val and 2 test sets each
    assert _results(tmp_path / "kept" / "results.csv") == _results(tmp_path / "every-time" / "results.csv")
