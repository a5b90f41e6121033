"""Dataset names -> datasets: the registered published datasets, ``folder:PATH``, and where each lives.

This is the one place that knows the concrete datasets and the one place that reads a dataset name:
a registered name (``lucchi_pp``, ``vnc``) or ``folder:PATH`` for a user's own images and masks.
Callers hand over what the user typed, the name and ``--data-root`` (the folder holding one folder
per dataset), and get the dataset and its checked folder back; none of them builds a dataset's path.

The published datasets are registered on first use rather than when :mod:`emfm.data` is imported:
``import emfm.data`` (which the config does for :data:`~emfm.data.Pairing`) then costs nothing of
theirs, and their modules depend on the base module, never the other way round.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple

from emfm._registry import Registry
from emfm.data._datasets import EMDataset, Pairing, PathArg, Split
from emfm.data._stack import SliceStack
from emfm.errors import UnknownNameError

#: The prefix of a user's own dataset: ``folder:PATH`` or ``folder:IMAGES_DIR,MASKS_DIR``.
FOLDER_PREFIX = "folder:"

_DATASETS: Registry[EMDataset] = Registry("dataset")
_filled = False
_lock = threading.RLock()


def _registered() -> Registry[EMDataset]:
    """The registry, filled once with the datasets that ship with emfm."""
    global _filled
    with _lock:
        if not _filled:
            from emfm.data.lucchi_pp import LucchiPP
            from emfm.data.vnc import VNC

            for dataset in (LucchiPP(), VNC()):
                _DATASETS.register(dataset.name, dataset)
            _filled = True
    return _DATASETS


def get_dataset(name: str) -> EMDataset:
    """The registry entry for ``name`` (with its facts), or a FolderDataset for ``folder:PATH``.

    Raises:
        UnknownNameError: ``name`` is neither registered nor ``folder:PATH``; lists the valid names.
        DataError: ``folder:PATH`` names no usable folder.
    """
    if name.startswith(FOLDER_PREFIX):
        from emfm.data.folder import FolderDataset

        return FolderDataset(name[len(FOLDER_PREFIX) :])
    registry = _registered()
    if name not in registry:
        raise UnknownNameError(registry.unknown_message(name) + " Or use folder:PATH for your own images/ and masks/.")
    return registry.get(name)


def dataset_names() -> list[str]:
    """Registered dataset names (``folder:PATH`` is accepted as well but is not listed)."""
    return _registered().names()


class ResolvedDataset(NamedTuple):
    """A dataset and the folder it was found in (unpacks as ``dataset, root = ...``)."""

    dataset: EMDataset
    root: Path


def resolve_dataset(
    name: str,
    data_root: PathArg | None = None,
    *,
    root: PathArg | None = None,
) -> ResolvedDataset:
    """The dataset a user named and its folder, checked to hold it.

    Args:
        name: ``lucchi_pp``, ``vnc`` or ``folder:PATH`` (see :func:`dataset_names`).
        data_root: exactly what the user passed as ``--data-root``: the folder holding one folder per
            dataset (``DIR/lucchi_pp``). None: ``$EMFM_DATA``, else the per-user data directory. A
            ``folder:PATH`` dataset is where its name says, whatever the data root.
        root: the dataset's own folder instead (``emfm data check --root DIR``); refused for
            ``folder:PATH``, which carries its own path, and together with ``data_root``.

    Raises:
        UnknownNameError: unknown dataset name (the message lists the valid ones).
        DataError: the dataset is not where it was looked for (the message says where, what was
            expected and how to fetch it).
    """
    dataset = get_dataset(name)
    return ResolvedDataset(dataset, dataset.locate(data_root, root=root))


def load_split(
    name: str,
    split: Split,
    root: PathArg | None = None,
    *,
    data_root: PathArg | None = None,
    pairing: Pairing = "by-number",
    progress: bool = True,
) -> SliceStack:
    """Load one split of a dataset as paired image and {0, 1} mask slices.

    Args:
        name: ``lucchi_pp``, ``vnc`` or ``folder:PATH`` (see :func:`dataset_names`).
        split: ``train`` and ``val`` (the shipped validation split), ``trainval`` (both), ``test``.
        root: the dataset's own folder (for ``lucchi_pp`` the one holding ``Train_In``, for ``vnc`` the
            one holding ``stack1``). Not allowed for ``folder:PATH``, nor together with ``data_root``.
        data_root: what the user passed as ``--data-root``, the folder holding one folder per dataset;
            with neither, ``$EMFM_DATA/NAME``, else the per-user directory (see :func:`resolve_dataset`).
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
    from emfm.data import memo

    dataset = get_dataset(name)

    def read() -> SliceStack:
        return dataset.load(split, root, data_root=data_root, pairing=pairing, progress=progress)

    if not memo.active():
        return read()
    # Kept splits are told apart by the folder they come from, so ``--data-root``, ``$EMFM_DATA`` and a
    # relative path name the same split when they lead to the same place.
    return memo.remembered((name, split, str(dataset.locate(data_root, root=root).resolve()), pairing), read)


def write_split_files(directory: str | Path | None = None) -> list[Path]:
    """Regenerate the shipped split files of the registered datasets (a maintainer's tool; tests check
    that the shipped files are up to date). Lives here, not in :mod:`~emfm.data.splits`, because it
    needs every dataset and the dataset modules need the split functions."""
    from emfm._io import atomic_write_json
    from emfm.data.splits import split_file

    out = Path(directory) if directory is not None else split_file("x").parent
    written = []
    for name in dataset_names():
        record = get_dataset(name).make_split_record()
        if record is None:
            continue  # a dataset that draws its split at load time ships no file
        atomic_write_json(out / f"{name}.json", record)
        written.append(out / f"{name}.json")
    return written
