"""How a run's pairing reaches each split: correct by default, the training data only under ``text-sorted``,
and the test data too under ``study-compose`` (the study's exact "paired" setting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emfm.config import TrainConfig
from emfm.data import get_dataset
from emfm.runsets import load_stacks
from tests.helpers import write_folder_dataset


def config(data: str, pairing: str) -> TrainConfig:
    return TrainConfig(backbone="unused", train=(data,), test=(data,), pairing=pairing)  # type: ignore[arg-type]


@pytest.mark.parametrize(("pairing", "train", "test"), [
    ("by-number", "by-number", "by-number"),
    ("text-sorted", "text-sorted", "by-number"),
    ("study-compose", "text-sorted", "text-sorted"),
])
def test_each_split_gets_the_pairing_of_its_mode(pairing, train, test):
    cfg = config("lucchi_pp", pairing)
    assert (cfg.split_pairing("train"), cfg.split_pairing("val"), cfg.split_pairing("test")) == (train, train, test)


def test_an_unknown_pairing_names_the_three_modes():
    from emfm.errors import ConfigError

    with pytest.raises(ConfigError, match="study-compose"):
        config("lucchi_pp", "by-name")


@pytest.fixture(scope="module")
def twelve(tmp_path_factory) -> str:
    # masks 0.png..11.png sort as text 0, 1, 10, 11, 2, ...: only slices 0 and 1 keep their own mask
    return write_folder_dataset(tmp_path_factory.mktemp("d") / "twelve", n_train=12, n_test=12, shape=(28, 28), seed=3)


def _own(mispaired, right) -> list[str]:
    return [sid for sid, a, b in zip(right.ids, mispaired.masks, right.masks) if np.array_equal(a, b)]


def test_study_compose_mispairs_the_test_masks_and_text_sorted_does_not(twelve):
    right = load_stacks(config(twelve, "by-number"), progress=False)
    ablation = load_stacks(config(twelve, "text-sorted"), progress=False)
    exact = load_stacks(config(twelve, "study-compose"), progress=False)
    assert ablation.test[twelve].pairing == "by-number"
    assert _own(ablation.test[twelve], right.test[twelve]) == right.test[twelve].ids  # every test mask its own
    assert exact.test[twelve].pairing == "text-sorted"
    assert len(_own(exact.test[twelve], right.test[twelve])) == 2
    for data in (ablation, exact):  # both mispair the training data the same way
        (tr, _), (tr_right, _) = data.train[twelve], right.train[twelve]
        assert tr.pairing == "text-sorted" and len(_own(tr, tr_right)) < len(tr_right)
    assert exact.splits_record()[f"test:{twelve}"]["pairing"] == "text-sorted"


def test_study_compose_pairs_the_real_lucchi_test_set_as_the_compose_script_did(shared_dir: Path):
    """The study's compose script: Test_In and Test_Out sorted by name as text, 2 of 165 slices their own."""
    lucchi = get_dataset("lucchi_pp")
    pairing = config("lucchi_pp", "study-compose").split_pairing("test")
    slices = lucchi.list_slices(shared_dir / "data" / "lucchi_pp", "Test", pairing=pairing)
    own = [s.id for s in slices if int(s.mask.stem) == int(s.id)]
    assert len(slices) == 165 and own == ["0000", "0001"]
    assert slices[2].mask.name == "10.png" and slices[3].mask.name == "100.png"


def test_a_fold_replaces_the_published_split_of_its_training_set(twelve, datasets):
    """A folder's test/ is a volume of its own (its ids repeat train/'s), so the folds cut its train part."""
    other = datasets[1]
    published = load_stacks(TrainConfig(backbone="unused", train=(twelve,), test=(twelve, other)), progress=False)
    pool = published.train[twelve][0].ids + published.train[twelve][1].ids
    cfg = TrainConfig(backbone="unused", train=(twelve,), test=(twelve, other), cv_folds=3, cv_fold=1)
    data = load_stacks(cfg, progress=False)
    (tr, va), te = data.train[twelve], data.test[twelve]
    assert te.ids == sorted(pool)[4:8] and sorted(tr.ids + va.ids + te.ids) == sorted(pool)
    assert data.test[other].ids == published.test[other].ids  # a set it does not train on: its published split
    from emfm.runsets import load_training_set

    assert [s.ids for s in load_training_set(cfg, twelve, progress=False)] == [tr.ids, va.ids]


@pytest.mark.parametrize(("folds", "fold", "match"),
                         [(1, 0, "cv_folds"), (3, 3, "cv_fold"), (None, 2, "without cv_folds")])
def test_a_fold_that_cannot_exist_is_a_config_error(folds, fold, match):
    from emfm.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        TrainConfig(backbone="b", train=("vnc",), cv_folds=folds, cv_fold=fold)


def test_vnc_folds_pool_all_twenty_labelled_slices(shared_dir: Path):
    from emfm.runsets import fold_parts, labelled_pool

    cfg = TrainConfig(backbone="unused", train=("vnc",), test=("vnc",), data_root=str(shared_dir / "data"),
                      cv_folds=5, cv_fold=0)
    assert labelled_pool(cfg, "vnc", progress=False).ids == [f"{i:02d}" for i in range(20)]
    tr, va, te = fold_parts(cfg, "vnc", progress=False)
    assert te.ids == ["00", "01", "02", "03"] and len(tr) + len(va) == 16
