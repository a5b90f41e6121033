"""The contract every dataset fulfils, and the reading and locating that all datasets share.

A dataset subclasses :class:`EMDataset` (published datasets through
:class:`~emfm.data._published.PublishedDataset`, which adds the indexing, pairing and split reading
they have in common), fills in its facts (citation, licence, URL, archive sha256, reference
checksums) and three methods:

- :meth:`EMDataset.stacks`: the stacks on disk (Lucchi++ ``Train`` and ``Test``; VNC ``stack1``),
- :meth:`EMDataset.list_slices`: the (id, image file, mask file) triples of one stack, paired,
- :meth:`EMDataset.split_ids`: which stack and slice ids make up ``train``, ``val``, ``trainval``, ``test``.

Reading, pairing checks, mask rules, the thread pool, the progress bar and finding the dataset's
folder are shared here, so every dataset loads the same way. This module knows no concrete
dataset: :mod:`emfm.data.registry` maps names to them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from emfm.data._masks import MaskRule
from emfm.data._stack import SliceStack
from emfm.data.readers import read_image
from emfm.errors import DataError

Split = Literal["train", "val", "trainval", "test"]
#: How images meet their masks: ``by-number`` is correct; ``text-sorted`` is the published study's
#: mistake, kept as a labelled ablation.
Pairing = Literal["by-number", "text-sorted"]
SPLITS: tuple[str, ...] = get_args(Split)
PAIRINGS: tuple[str, ...] = get_args(Pairing)

PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class StackReference:
    """Checksums of a stack's decoded data, as published in ``shared/README.md``.

    ``raw`` and ``mask`` are the first 16 hex digits of sha256 over the whole stack as one C-order
    array in index order (raw as stored, masks as 0/1 after the dataset's rule).
    """

    shape: tuple[int, int, int]
    raw: str
    mask: str
    foreground: str  # as printed, e.g. "7.00%"


@dataclass(frozen=True)
class SliceFiles:
    """One slice: its id, its image file and the mask file it was paired with."""

    id: str
    image: Path
    mask: Path


@dataclass
class SliceRead:
    """One decoded slice pair, or the reason it could not be read."""

    files: SliceFiles
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    note: str | None = None
    error: str | None = None


def _chunked(items: Sequence[SliceFiles], n: int) -> Iterator[Sequence[SliceFiles]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def read_pair(files: SliceFiles, rule: MaskRule) -> SliceRead:
    """Decode one image and its mask, apply the mask rule and check that the sizes agree."""
    image = read_image(files.image)
    mask, note = rule.apply(read_image(files.mask), files.mask)
    if mask.shape != image.shape:
        raise DataError(
            f"{files.mask}: mask is {mask.shape[0]} x {mask.shape[1]} but its image {files.image.name} is "
            f"{image.shape[0]} x {image.shape[1]}; a mask must have its image's size."
        )
    return SliceRead(files, image, mask, note)


def iter_pairs(
    slices: Sequence[SliceFiles],
    rule: MaskRule,
    *,
    desc: str,
    progress: bool = True,
    keep_going: bool = False,
) -> Iterator[SliceRead]:
    """Decode slice pairs in order, several at a time, with a progress bar on stderr.

    Decoding (zlib, WebP) releases the GIL, so a few threads read a stack several times faster than
    one. Work is submitted in bounded batches so memory stays at a few slices beyond what the caller
    keeps.

    Args:
        keep_going: report a bad slice as ``SliceRead.error`` and go on (for ``emfm data check``)
            instead of raising its :class:`DataError`.
    """
    from tqdm.auto import tqdm

    def work(f: SliceFiles) -> SliceRead:
        try:
            return read_pair(f, rule)
        except DataError as exc:
            if not keep_going:
                raise
            return SliceRead(f, error=str(exc))

    workers = max(1, min(8, (os.cpu_count() or 1)))
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(slices), desc=desc, unit="slice", disable=not progress, leave=False) as bar,
    ):
        for batch in _chunked(slices, 4 * workers):
            for result in pool.map(work, batch):
                bar.update(1)
                yield result


class EMDataset(ABC):
    """A dataset: its facts, where it lives, and how to list, pair, binarise and split its slices.

    Attributes:
        name: registry name (``lucchi_pp``).
        title: human name.
        citation: what to cite.
        licence: terms of use.
        url: the public archive ``emfm data fetch`` downloads (overridable by ``$EMFM_<NAME>_URL``).
        archive_sha256: sha256 of that archive, or None when it is not known; then fetch verifies
            the decoded stacks against :attr:`reference` instead.
        layout: one line per folder, as on disk.
        mask_rule: how masks become {0, 1}.
        reference: per-stack checksums of the decoded data.
        has_test_split: whether ``split="test"`` is the dataset's own held-out part.
        carries_own_path: the dataset's name says where it is (``folder:PATH``), so a data root does
            not apply to it.
    """

    name: str
    title: str
    citation: str
    licence: str
    url: str | None = None
    archive_sha256: str | None = None
    layout: str = ""
    mask_rule: MaskRule
    reference: dict[str, StackReference] = {}
    has_test_split: bool = True
    carries_own_path: bool = False

    # -- the contract ------------------------------------------------------------------------------

    @abstractmethod
    def stacks(self, root: Path) -> list[str]:
        """Names of the stacks on disk (e.g. ``["Train", "Test"]``)."""

    @abstractmethod
    def list_slices(self, root: Path, stack: str, pairing: Pairing = "by-number") -> list[SliceFiles]:
        """All slices of one stack, paired, in index order; raises DataError if they do not pair."""

    @abstractmethod
    def split_ids(self, root: Path, split: Split) -> tuple[str, list[str]]:
        """The stack and the slice ids (in order) that make up ``split``."""

    def required(self) -> list[str]:
        """Sub-paths of the root that must exist (used to tell a root from a wrong folder)."""
        return []

    def extra_checks(self, root: Path, *, progress: bool = True) -> list[str]:
        """Dataset-specific warnings for ``emfm data check`` (e.g. VNC's blank mitochondria masks)."""
        return []

    def describe_splits(self, root: Path) -> list[str]:
        """Lines describing the splits, for ``emfm data check``."""
        return []

    def stack_label(self, stack: str) -> str:
        """How ``emfm data check`` names a stack."""
        return stack

    def make_split_record(self) -> dict[str, Any] | None:
        """The content of the shipped split file (None for datasets that ship none)."""
        return None

    # -- where the data are --------------------------------------------------------------------------

    def root_under(self, data_root: PathArg | None) -> Path:
        """Where the dataset belongs under a data root (not checked): ``DIR/NAME`` for ``--data-root
        DIR``; None means ``$EMFM_DATA``, else the per-user data directory."""
        from emfm.paths import data_root as user_data_root

        return user_data_root(data_root) / self.name

    def holds_dataset(self, folder: Path) -> bool:
        """Whether ``folder`` is this dataset's own folder (it has every :meth:`required` path)."""
        return folder.is_dir() and all((folder / r).exists() for r in self.required())

    def locate(self, data_root: PathArg | None = None, *, root: PathArg | None = None) -> Path:
        """The dataset's folder, checked to hold the dataset.

        Args:
            data_root: the folder holding one folder per dataset, as given to ``--data-root``; the
                dataset is its ``NAME`` sub-folder. None: ``$EMFM_DATA``, else the per-user directory.
            root: the dataset's own folder instead (``emfm data check --root DIR``).

        Raises:
            DataError: both are given, or the folder does not hold the dataset (the message says
                where it looked, what it expected and how to get the data).
        """
        if root is not None and data_root is not None:
            raise DataError(
                f"{self.name}: got both a root ({root}) and a data root ({data_root}); pass either the dataset's own "
                f"folder (--root) or the folder holding {self.name}/ (--data-root)."
            )
        where = Path(root).expanduser() if root is not None else self.root_under(data_root)
        if not self.holds_dataset(where):
            raise DataError(self._no_dataset_message(where))
        return where

    def resolve_root(self, root: PathArg | None) -> Path:
        """The dataset's folder: ``root`` (its own folder) if given, else its default; checked to exist.

        The older form of :meth:`locate`, kept for callers not yet moved to it.
        """
        return self.locate(root=root)

    def _no_dataset_message(self, where: Path) -> str:
        missing = [r for r in self.required() if not (where / r).exists()]
        what = "does not exist" if not where.is_dir() else f"lacks {', '.join(missing)}"
        hint = ""
        if where.is_dir() and (where / self.name).is_dir():
            hint = f" ({where / self.name} exists: pass that folder as the dataset root.)"
        elif not where.exists() and where.name == self.name and self.required() and self.holds_dataset(where.parent):
            hint = (
                f" ({where.parent} is the {self.name} folder itself: pass {where.parent.parent} as --data-root, "
                f"or {where.parent} as --root.)"
            )
        return (
            f"{self.name}: no dataset at {where} (it {what}; expected {self.layout_summary()}). "
            f"Run `emfm data fetch {self.name}` or pass --data-root DIR (a folder holding "
            f"{self.name}/) or --root DIR (the {self.name} folder itself).{hint}"
        )

    def layout_summary(self) -> str:
        return ", ".join(self.required()) or "its files"

    def find_root(self, extracted: Path) -> Path | None:
        """Inside an unpacked archive, the folder that holds :meth:`required` (searched breadth-first)."""
        queue = [extracted]
        while queue:
            here = queue.pop(0)
            if self.holds_dataset(here):
                return here
            queue.extend(sorted(p for p in here.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))))
        return None

    # -- reading -------------------------------------------------------------------------------------

    def load(
        self,
        split: Split,
        root: PathArg | None = None,
        *,
        data_root: PathArg | None = None,
        pairing: Pairing = "by-number",
        progress: bool = True,
    ) -> SliceStack:
        """Read one split into a :class:`SliceStack`; only its slices are decoded, each once.

        ``root`` and ``data_root`` say where the dataset is, as in :meth:`locate`.
        """
        if split not in SPLITS:
            raise DataError(f"{self.name}: unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
        if pairing not in PAIRINGS:
            raise DataError(f"{self.name}: unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}.")
        where = self.locate(data_root, root=root)
        stack, ids = self.split_ids(where, split)
        by_id = {s.id: s for s in self.list_slices(where, stack, pairing)}
        absent = [i for i in ids if i not in by_id]
        if absent:
            raise DataError(
                f"{self.name}: split {split!r} lists {len(absent)} slice(s) that {where} / {stack} does not "
                f"have: {', '.join(absent[:8])}. The copy on disk is incomplete: run `emfm data check "
                f"--root {where} {self.name}`."
            )
        chosen = [by_id[i] for i in ids]
        images, masks = [], []
        for r in iter_pairs(chosen, self.mask_rule, desc=f"{self.name} {split}", progress=progress):
            images.append(r.image)
            masks.append(r.mask)
        return SliceStack(
            dataset=self.name,
            split=split,
            ids=list(ids),
            images=images,
            masks=masks,
            pairing=pairing,
            meta={
                "root": str(where),
                "stack": stack,
                "mask_rule": self.mask_rule.description,
                "image_files": [str(s.image) for s in chosen],
                "mask_files": [str(s.mask) for s in chosen],
            },
        )
