"""The slices of a run: each training set's (train, val) stacks and the test stacks, as its model sees them.

Training, ``emfm evaluate``'s transfer report and ``emfm adapt`` all need a run's training slices exactly as
training took them (label budget, ``max_train_slices``, input-side standardisation), so they are read here,
below the layers that train and evaluate, rather than inside the training run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from emfm.config import TrainConfig
from emfm.data._stack import SliceStack
from emfm.errors import ConfigError, DataError

log = logging.getLogger(__name__)


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
    if config.cv_folds:
        return standardise_inputs(config.make_alignment(), _load_fold(config, progress=progress))
    train = {name: load_training_set(config, name, progress=progress) for name in config.train}
    test = {}
    for name in config.test:
        st = load_split(name, "test", data_root=config.data_root, pairing=config.split_pairing("test"),
                        progress=progress)
        if len(st) == 0:
            raise DataError(f"test set {name} has no slices; check --data-root or the dataset's split")
        test[name] = st
    return standardise_inputs(config.make_alignment(), RunData(train, test))


def labelled_pool(config: TrainConfig, name: str, *, progress: bool = True) -> SliceStack:
    """A dataset's labelled slices for cross-validation, in slice order.

    Where the test part is cut from the same stack as the training part (VNC: 20 slices of stack1; ids never
    repeat), the pool is all of them. Where it is a volume of its own (Lucchi++: Train and Test both count
    from 0000; a folder's train/ and test/), slices of two volumes cannot be told apart by id or ordered as one
    stack, so the pool is the training volume alone and the published test volume stays unused by the folds.
    """
    from emfm.data import load_split

    trainval = load_split(name, "trainval", data_root=config.data_root, pairing=config.split_pairing("train"),
                          progress=progress)
    test = load_split(name, "test", data_root=config.data_root, pairing=config.split_pairing("test"),
                      progress=progress)
    if set(trainval.ids) & set(test.ids):
        log.info("%s: its test part is a volume of its own; cross-validating over its %d training slices",
                 name, len(trainval))
        ids, images, masks = trainval.ids, trainval.images, trainval.masks
    else:
        ids, images, masks = trainval.ids + test.ids, trainval.images + test.images, trainval.masks + test.masks
    order = sorted(range(len(ids)), key=lambda i: _slice_order(ids[i]))
    return SliceStack(name, "labelled", [ids[i] for i in order], [images[i] for i in order],
                      [masks[i] for i in order], pairing=trainval.pairing, meta=dict(trainval.meta))


def _slice_order(sid: str) -> tuple[int, int | str]:
    """Slice ids by number where they are numbers (``9`` before ``10``), else as text after them."""
    return (0, int(sid)) if sid.isdigit() else (1, sid)


def fold_parts(config: TrainConfig, name: str, *, progress: bool = True) -> tuple[SliceStack, SliceStack, SliceStack]:
    """Training set ``name``'s (train, val, test) under ``cv_folds``: its labelled slices cut into fold
    ``cv_fold``'s parts (:func:`emfm.data.splits.make_fold_split`), then ``max_train_slices`` and the label
    budget applied to the train part, as :func:`load_training_set` applies them to the published split."""
    from emfm.data.budget import apply_budget
    from emfm.data.splits import make_fold_split

    pool = labelled_pool(config, name, progress=progress)
    tr_ids, va_ids, te_ids = make_fold_split(pool.ids, int(config.cv_folds or 0), config.cv_fold)
    tr = pool.subset(tr_ids, "train")
    if config.max_train_slices:
        tr = tr.subset(tr.ids[: config.max_train_slices], "train")
    tr = apply_budget(tr, config.label_budget, config.label_pick, config.seed)
    return tr, pool.subset(va_ids, "val"), pool.subset(te_ids, "test")


def _load_fold(config: TrainConfig, *, progress: bool) -> RunData:
    """The run's data under ``cv_folds``: each training set's fold (:func:`fold_parts`); a test set that is
    not a training set is its published test split, as without cross-validation."""
    from emfm.data import load_split

    train, test = {}, {}
    for name in config.train:
        tr, va, te = fold_parts(config, name, progress=progress)
        train[name] = (tr, va)
        if name in config.test:
            test[name] = te
    for name in config.test:
        if name not in test:
            test[name] = load_split(name, "test", data_root=config.data_root, pairing=config.split_pairing("test"),
                                    progress=progress)
    log.info("cross-validation fold %d of %d: %s", config.cv_fold + 1, config.cv_folds,
             "; ".join(f"{n} tests {len(test[n])} slices {test[n].ids[0]}..{test[n].ids[-1]}"
                       for n in config.train if n in test))
    return RunData(train, test)


def load_training_set(config: TrainConfig, name: str, *, progress: bool = True) -> tuple[SliceStack, SliceStack]:
    """One training set's (train, val) stacks as the run trains on them (``max_train_slices``, label budget),
    raw: before any input-side standardisation (:func:`standardise_inputs`); under ``cv_folds``, the fold's."""
    if config.cv_folds:
        tr, va, _ = fold_parts(config, name, progress=progress)
        return tr, va
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
