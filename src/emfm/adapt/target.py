"""The target of an adaptation: a user's slices, images only, read with emfm's own readers.

``--target`` takes what the user has:

- a volume: a 3-D tif, ``STORE.zarr[:ARRAY]``, ``FILE.h5[:DATASET]`` or a folder of 2-D slices, opened by
  :func:`emfm.data.open_volume` exactly as ``emfm predict --input`` opens it;
- ``folder:PATH``: the slices in ``PATH/images`` (a ``PATH/masks`` beside them is allowed and never read);
- a registered dataset name (``lucchi_pp``, ``vnc``): the images of its training split, under ``--data-root``.

Labels are never read: a :class:`TargetSet` holds images and ids only, and the
:class:`~emfm.data.SliceStack` it hands to the feature cache carries empty placeholder masks. With
``max_slices`` only that many slices, spread evenly through the target, are decoded, so a large volume
costs what is used of it. The record (``adapt.json``) names the target and fingerprints it: the input's
file fingerprint (:func:`emfm.predict.fingerprint.input_fingerprint`, as a prediction job records its input)
where the images are files of their own, and always a digest of the decoded slices used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emfm.data._stack import SliceStack
from emfm.errors import DataError

FOLDER_PREFIX = "folder:"
_FORMS = (
    "give a volume (3-D tif, STORE.zarr[:ARRAY], FILE.h5[:DATASET], a folder of slices), folder:PATH with the "
    "slices in PATH/images, or a dataset name"
)


@dataclass
class TargetSet:
    """Unlabelled target slices, in order.

    Attributes:
        name: the target as a domain name (a dataset name as given; paths made absolute).
        kind: ``volume``, ``folder`` or ``dataset``.
        description: one line saying what was read.
        ids: one id per slice (its index in the volume, or its file name).
        images: 2-D uint8/uint16 arrays as stored.
        fingerprint: the files' fingerprint where the images are files of their own (else empty).
    """

    name: str
    kind: str
    description: str
    ids: list[str]
    images: list[np.ndarray]
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def stack(self) -> SliceStack:
        """The slices as a :class:`SliceStack` for the feature cache; its masks are empty placeholders."""
        empty = [np.zeros((0, 0), dtype=np.uint8) for _ in self.images]
        return SliceStack(dataset=self.name, split="target", ids=list(self.ids), images=list(self.images),
                          masks=empty, meta={"unlabelled": True})

    def slices_digest(self) -> str:
        """sha256 over the decoded slices used (dtype, shape and bytes of each, in order)."""
        h = hashlib.sha256()
        for img in self.images:
            img = np.ascontiguousarray(img)
            h.update(f"{img.dtype.str}{img.shape}".encode())
            h.update(img.tobytes())
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        shapes = sorted({tuple(int(s) for s in img.shape) for img in self.images})
        return {
            "name": self.name, "kind": self.kind, "description": self.description, "slices": len(self),
            "first_id": self.ids[0], "last_id": self.ids[-1], "shapes": [list(s) for s in shapes],
            "fingerprint": self.fingerprint, "slices_sha256": self.slices_digest(),
        }

    def standardised(self, standardise: Callable[[Sequence[np.ndarray]], list[np.ndarray]]) -> TargetSet:
        """The same target with each slice as the run's input-side alignment shows it to the model."""
        images = standardise(self.images)
        return TargetSet(self.name, self.kind, self.description, list(self.ids), list(images), self.fingerprint)


def spread(n: int, most: int | None) -> list[int]:
    """``most`` indices spread evenly through ``range(n)`` (first and last included), or all of them."""
    if most is None or most >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, most)})


def load_target(spec: str, *, data_root: str | Path | None = None, max_slices: int | None = None) -> TargetSet:
    """Read the target named by ``spec`` (see the module docstring), images only.

    Raises:
        DataError: nothing usable is there; a name that is neither a path nor a dataset is one too, and
            the message says what ``--target`` takes.
    """
    from emfm.data import dataset_names

    if max_slices is not None and (isinstance(max_slices, bool) or int(max_slices) < 1):
        raise DataError(f"--max-slices must be a positive number of slices, got {max_slices}")
    if spec.startswith(FOLDER_PREFIX):
        target = _folder_target(spec[len(FOLDER_PREFIX):], max_slices)
    elif spec in dataset_names():
        target = _dataset_target(spec, data_root, max_slices)
    else:
        target = _volume_target(spec, max_slices)
    if not target.images:
        raise DataError(f"--target {spec}: holds no slices; {_FORMS}")
    return target


def _folder_target(path: str, max_slices: int | None) -> TargetSet:
    from emfm.predict.fingerprint import input_fingerprint

    if not path:
        raise DataError("--target folder: needs a path, as folder:PATH with the slices in PATH/images")
    folder = Path(path).expanduser().resolve()
    images = folder / "images"
    if not images.is_dir():
        where = "does not exist" if not folder.exists() else "has no images/ folder"
        raise DataError(
            f"--target folder:{path}: {folder} {where}; put the target's slices in {folder}/images "
            f"(no masks needed), or pass a volume file"
        )
    names, slices = _read_volume(str(images), max_slices, ids_from_files=True)
    return TargetSet(
        name=f"{FOLDER_PREFIX}{folder}", kind="folder", description=f"{len(slices)} slices of {images}",
        ids=names, images=slices, fingerprint=input_fingerprint(str(images)),
    )


def _volume_target(spec: str, max_slices: int | None) -> TargetSet:
    from emfm.data.readers import split_container
    from emfm.predict.fingerprint import input_fingerprint

    file, key = split_container(str(Path(spec).expanduser()))
    if not file.exists():
        raise DataError(f"--target {spec}: no such file or folder, and no dataset of that name; {_FORMS}")
    resolved = str(file.resolve()) + (f":{key}" if key else "")
    ids, slices = _read_volume(resolved, max_slices, ids_from_files=False)
    return TargetSet(
        name=resolved, kind="volume", description=f"{len(slices)} slices of volume {resolved}", ids=ids,
        images=slices, fingerprint=input_fingerprint(resolved),
    )


def _read_volume(spec: str, max_slices: int | None, *, ids_from_files: bool) -> tuple[list[str], list[np.ndarray]]:
    """The chosen slices of a volume and their ids (file stems for a folder of slices, else indices)."""
    from emfm.data import open_volume

    with open_volume(spec) as volume:
        picks = spread(len(volume), max_slices)
        files = getattr(volume, "files", None)
        ids = [Path(files[z]).stem if ids_from_files and files else f"{z:05d}" for z in picks]
        return ids, [np.asarray(volume[z]) for z in picks]


def _dataset_target(name: str, data_root: str | Path | None, max_slices: int | None) -> TargetSet:
    """A registered dataset's training-split images (the mask files are listed to pair slices, never read)."""
    from emfm.data import read_image, resolve_dataset

    dataset, root = resolve_dataset(name, data_root)
    stack, ids = dataset.split_ids(root, "train")
    files = {s.id: s.image for s in dataset.list_slices(root, stack)}
    missing = [i for i in ids if i not in files]
    if missing:
        raise DataError(f"--target {name}: {len(missing)} training slices are missing under {root}, e.g. "
                        f"{missing[0]}; check it with `emfm data check {name}`")
    chosen = [ids[i] for i in spread(len(ids), max_slices)]
    return TargetSet(
        name=name, kind="dataset", description=f"{len(chosen)} training-split images of {name} in {root}",
        ids=chosen, images=[read_image(files[i]) for i in chosen], fingerprint={},
    )
