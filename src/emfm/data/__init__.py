"""Datasets of EM slices with mitochondria masks: read, validate, pair, binarise, split, fetch, check.

Each published dataset is a module (:mod:`~emfm.data.lucchi_pp`, :mod:`~emfm.data.vnc`) that declares
its citation, licence, download URL, checksums, layout, mask rule and split on top of a shared base
(:mod:`~emfm.data._published`); :mod:`~emfm.data.registry` maps names to them, and ``folder:PATH``
reads a user's own images and masks (:mod:`~emfm.data.folder`). Splits are files shipped in the
package (:mod:`~emfm.data.splits`).

Public API::

    resolve_dataset(name, data_root=None, *, root=None) -> ResolvedDataset(dataset, root)
    load_split(name, split, root=None, *, data_root=None, pairing="by-number", progress=True) -> SliceStack
    dataset_names() -> list[str]
    get_dataset(name) -> EMDataset
    read_image(path) -> np.ndarray
    open_volume(path) -> Volume
    check_dataset(name, root=None, *, data_root=None) -> CheckReport
    fetch_dataset(name, root=None, *, data_root=None, url=None) -> Path
    make_val_split(ids, fraction=0.1, seed=42) -> (train_ids, val_ids)

``data_root`` is always what the user passed as ``--data-root``, the folder holding one folder per
dataset; ``root`` is one dataset's own folder.
"""

from __future__ import annotations

from emfm.data._datasets import PAIRINGS, SPLITS, EMDataset, Pairing, Split, StackReference
from emfm.data._stack import SliceStack
from emfm.data.check import CheckReport, check_dataset
from emfm.data.download import fetch_dataset
from emfm.data.readers import Volume, open_volume, read_image
from emfm.data.registry import ResolvedDataset, dataset_names, get_dataset, load_split, resolve_dataset
from emfm.data.splits import make_val_split, read_split_file

__all__ = [
    "PAIRINGS",
    "SPLITS",
    "CheckReport",
    "EMDataset",
    "Pairing",
    "ResolvedDataset",
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
    "resolve_dataset",
]
