"""Datasets of EM slices with mitochondria masks: read, validate, pair, binarise, split, fetch, check.

Each dataset is a module (:mod:`~emfm.data.lucchi_pp`, :mod:`~emfm.data.vnc`) with its citation,
licence, download URL, checksums, layout, mask rule and split, registered by name; ``folder:PATH``
reads a user's own images and masks (:mod:`~emfm.data.folder`). Splits are files shipped in the
package (:mod:`~emfm.data.splits`).

Public API::

    load_split(name, split, root=None, *, pairing="by-number") -> SliceStack
    dataset_names() -> list[str]
    get_dataset(name) -> EMDataset
    read_image(path) -> np.ndarray
    open_volume(path) -> Volume
    check_dataset(name, root=None) -> CheckReport
    fetch_dataset(name, root=None, *, url=None) -> Path
    make_val_split(ids, fraction=0.1, seed=42) -> (train_ids, val_ids)
"""

from __future__ import annotations

import os

from emfm.data._datasets import EMDataset, Pairing, Split, StackReference, dataset_names, get_dataset
from emfm.data._stack import SliceStack
from emfm.data.check import CheckReport, check_dataset
from emfm.data.download import fetch_dataset
from emfm.data.readers import Volume, open_volume, read_image
from emfm.data.splits import make_val_split, read_split_file

__all__ = [
    "CheckReport",
    "EMDataset",
    "Pairing",
    "SliceStack",
    "Split",
    "StackReference",
    "Volume",
    "check_dataset",
    "dataset_names",
    "fetch_dataset",
    "get_dataset",
    "load_split",
    "make_val_split",
    "open_volume",
    "read_image",
    "read_split_file",
]


def load_split(
    name: str,
    split: Split,
    root: str | os.PathLike[str] | None = None,
    *,
    pairing: Pairing = "by-number",
    progress: bool = True,
) -> SliceStack:
    """Load one split of a dataset as paired image and {0, 1} mask slices.

    Args:
        name: ``lucchi_pp``, ``vnc`` or ``folder:PATH`` (see :func:`dataset_names`).
        split: ``train`` and ``val`` (the shipped validation split), ``trainval`` (both), ``test``.
        root: the dataset's own folder (for ``lucchi_pp`` the one holding ``Train_In``, for ``vnc`` the
            one holding ``stack1``); None means ``emfm.paths.data_root() / name``. Not allowed for
            ``folder:PATH``, which carries its own path.
        pairing: ``by-number`` (correct); ``text-sorted`` reproduces the published study's mispairing
            as a labelled ablation (a WARNING is logged and ``SliceStack.pairing`` says so).
        progress: a progress bar on stderr while reading.

    Returns:
        A :class:`SliceStack` whose ``meta`` names the root, stack, files and mask rule used.

    Raises:
        UnknownNameError: unknown dataset name (the message lists the valid ones).
        DataError: the data are missing (the message says where it looked and how to fetch them),
            unpaired, corrupt, or have mask values the dataset's rule does not allow.
    """
    return get_dataset(name).load(split, root, pairing=pairing, progress=progress)
