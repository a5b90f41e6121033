"""The slices of a run: each training set's (train, val) stacks and the test stacks, as its model sees them.

Training, ``emfm evaluate``'s transfer report and ``emfm adapt`` all need a run's training slices exactly as
training took them (label budget, ``max_train_slices``, input-side standardisation), so they are read here,
below the layers that train and evaluate, rather than inside the training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emfm.config import TrainConfig
from emfm.data._stack import SliceStack
from emfm.errors import ConfigError, DataError


@dataclass
class RunData:
    """The run's slices: (train, val) per training set and the test stack per test set."""

    train: dict[str, tuple[SliceStack, SliceStack]]
    test: dict[str, SliceStack]
    align_state: dict[str, Any] = field(default_factory=dict)  # what an input-side alignment fitted

    def all_stacks(self) -> list[SliceStack]:
        return [s for pair in self.train.values() for s in pair] + list(self.test.values())

    def splits_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: {"train": tr.ids, "val": va.ids, "pairing": tr.pairing} for name, (tr, va) in self.train.items()
        }
        out.update({f"test:{name}": {"test": st.ids, "pairing": st.pairing} for name, st in self.test.items()})
        return out


def load_stacks(config: TrainConfig, *, progress: bool = True) -> RunData:
    """Training (train, val) stacks per training set and test stacks per test set.

    The pairing ablation ``text-sorted`` applies to the training data only: test sets are paired
    correctly, so the reported IoU measures the model, not the mispairing. ``study-compose`` mispairs
    the test sets too, as the study's compose script did (:meth:`TrainConfig.split_pairing`).
    """
    from emfm.data import get_dataset, load_split

    for name in set(config.train) & set(config.test):
        if not get_dataset(name).has_test_split:
            raise ConfigError(
                f"{name} is both a training and a test set but has no test/ part, so the test would score "
                f"slices the model was trained on; add PATH/test/images and PATH/test/masks or test on another set"
            )
    train = {name: load_training_set(config, name, progress=progress) for name in config.train}
    test = {}
    for name in config.test:
        st = load_split(name, "test", data_root=config.data_root, pairing=config.split_pairing("test"),
                        progress=progress)
        if len(st) == 0:
            raise DataError(f"test set {name} has no slices; check --data-root or the dataset's split")
        test[name] = st
    return standardise_inputs(config.make_alignment(), RunData(train, test))


def load_training_set(config: TrainConfig, name: str, *, progress: bool = True) -> tuple[SliceStack, SliceStack]:
    """One training set's (train, val) stacks as the run trains on them (``max_train_slices``, label budget),
    raw: before any input-side standardisation (:func:`standardise_inputs`)."""
    from emfm.data import load_split
    from emfm.data.budget import apply_budget

    pairing = config.split_pairing("train")
    tr = load_split(name, "train", data_root=config.data_root, pairing=pairing, progress=progress)
    va = load_split(name, "val", data_root=config.data_root, pairing=pairing, progress=progress)
    if config.max_train_slices:
        tr = tr.subset(tr.ids[: config.max_train_slices], "train")
    tr = apply_budget(tr, config.label_budget, config.label_pick, config.seed)
    if len(tr) == 0:
        raise DataError(f"training set {name} has no slices; check --data-root")
    return tr, va


def standardise_inputs(alignment, data: RunData) -> RunData:
    """The run's slices as its model sees them, for an input-side alignment (:mod:`emfm.align.inputs`).

    The method is fitted on the training splits; then each training set's train and val splits are
    standardised together (one volume) and each test set on its own, before anything is encoded, so the
    feature cache keys the standardised slices apart from the raw ones. Masks are unchanged.
    """
    from emfm.align.inputs import standardise_stacks

    if not alignment.input_side:
        return data
    state = alignment.fit_inputs({name: tr.images for name, (tr, _) in data.train.items()})
    train = {name: tuple(standardise_stacks(alignment, pair, state)) for name, pair in data.train.items()}
    test = {name: standardise_stacks(alignment, [st], state)[0] for name, st in data.test.items()}
    return RunData(train, test, align_state=state)  # type: ignore[arg-type]
