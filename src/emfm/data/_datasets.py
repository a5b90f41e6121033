"""The dataset registry and the small contract every dataset module fulfils.

A dataset module (``lucchi_pp.py``, ``vnc.py``) subclasses :class:`EMDataset`, fills in its facts
(citation, licence, URL, archive sha256, reference checksums) and three methods:

- :meth:`EMDataset.stacks`: the stacks on disk (Lucchi++ ``Train`` and ``Test``; VNC ``stack1``),
- :meth:`EMDataset.list_slices`: the (id, image file, mask file) triples of one stack, paired,
- :meth:`EMDataset.split_ids`: which stack and slice ids make up ``train``, ``val``, ``trainval``, ``test``,

and registers an instance with ``DATASETS.register``. Reading, pairing checks, mask rules, the
thread pool and progress bar are shared here, so every dataset loads the same way. ``folder:PATH``
names build a :class:`~emfm.data.folder.FolderDataset` on the fly instead of a registry entry.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emfm._registry import Registry
from emfm.data._masks import MaskRule
from emfm.data._stack import SliceStack
from emfm.data.readers import read_image
from emfm.errors import DataError, UnknownNameError

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "trainval", "test"]
Pairing = Literal["by-number", "text-sorted"]
SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")
PAIRINGS: tuple[str, ...] = ("by-number", "text-sorted")


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


def unknown_dataset_message(name: str, registry: Registry[EMDataset]) -> str:
    return registry.unknown_message(name) + " Or use folder:PATH for your own images/ and masks/."


class EMDataset(ABC):
    """A dataset: its facts and how to list, pair, binarise and split its slices.

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

    # -- shared behaviour ----------------------------------------------------------------------------

    def default_root(self) -> Path:
        from emfm.paths import data_root

        return data_root() / self.name

    def resolve_root(self, root: str | os.PathLike[str] | None) -> Path:
        """The dataset's folder: ``root`` if given, else ``data_root() / name``; checked to exist."""
        where = Path(root).expanduser() if root is not None else self.default_root()
        missing = [r for r in self.required() if not (where / r).exists()]
        if not where.is_dir() or missing:
            what = "does not exist" if not where.is_dir() else f"lacks {', '.join(missing)}"
            hint = ""
            if where.is_dir() and (where / self.name).is_dir():
                hint = f" ({where / self.name} exists: pass that folder as the dataset root.)"
            raise DataError(
                f"{self.name}: no dataset at {where} (it {what}; expected {self.layout_summary()}). "
                f"Run `emfm data fetch {self.name}` or pass --data-root DIR (a folder holding "
                f"{self.name}/) or --root DIR (the {self.name} folder itself).{hint}"
            )
        return where

    def layout_summary(self) -> str:
        return ", ".join(self.required()) or "its files"

    def find_root(self, extracted: Path) -> Path | None:
        """Inside an unpacked archive, the folder that holds :meth:`required` (searched breadth-first)."""
        queue = [extracted]
        while queue:
            here = queue.pop(0)
            if all((here / r).exists() for r in self.required()):
                return here
            queue.extend(sorted(p for p in here.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))))
        return None

    def load(
        self,
        split: Split,
        root: str | os.PathLike[str] | None = None,
        *,
        pairing: Pairing = "by-number",
        progress: bool = True,
    ) -> SliceStack:
        """Read one split into a :class:`SliceStack`; only its slices are decoded, each once."""
        if split not in SPLITS:
            raise DataError(f"{self.name}: unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
        if pairing not in PAIRINGS:
            raise DataError(f"{self.name}: unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}.")
        where = self.resolve_root(root)
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


# --------------------------------------------------------------------------------------------------
# Pairing helpers shared by the dataset modules
# --------------------------------------------------------------------------------------------------


def index_files(
    folder: Path,
    pattern: re.Pattern[str],
    *,
    what: str,
) -> dict[int, Path]:
    """Map each file in ``folder`` whose name matches ``pattern`` (group 1 = index) to its index.

    Raises DataError for two files with one index and for image files that do not fit the pattern
    (hidden files and non-image files are ignored).
    """
    from emfm.data.readers import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise DataError(f"{folder}: folder of {what} does not exist.")
    found: dict[int, list[Path]] = {}
    strays = []
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        m = pattern.fullmatch(p.name)
        if m:
            found.setdefault(int(m.group(1)), []).append(p)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            strays.append(p.name)
    if strays:
        raise DataError(
            f"{folder}: {len(strays)} file(s) do not fit the {what} naming {pattern.pattern!r}: "
            f"{', '.join(sorted(strays)[:5])}. Move them out of the folder."
        )
    dups = {i: ps for i, ps in found.items() if len(ps) > 1}
    if dups:
        i, ps = sorted(dups.items())[0]
        raise DataError(
            f"{folder}: {len(dups)} index(es) have more than one of the {what}, e.g. index {i}: "
            f"{', '.join(sorted(p.name for p in ps))}. Keep one file per index."
        )
    if not found:
        raise DataError(f"{folder}: holds no {what} (expected names like {pattern.pattern!r}).")
    return {i: ps[0] for i, ps in found.items()}


def pair_by_number(
    images: dict[int, Path],
    masks: dict[int, Path],
    *,
    id_of: Callable[[int], str],
    where: str,
) -> list[SliceFiles]:
    """Pair image N with mask N; every image must have exactly one mask and vice versa."""
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask or no_image:
        parts = []
        if no_mask:
            parts.append(f"{len(no_mask)} image(s) with no mask (e.g. {images[no_mask[0]].name})")
        if no_image:
            parts.append(f"{len(no_image)} mask(s) with no image (e.g. {masks[no_image[0]].name})")
        raise DataError(f"{where}: images and masks do not pair one to one: {'; '.join(parts)}.")
    return [SliceFiles(id_of(i), images[i], masks[i]) for i in sorted(images)]


def pair_text_sorted(
    images: dict[int, Path],
    masks: dict[int, Path],
    *,
    id_of: Callable[[int], str],
    where: str,
) -> list[SliceFiles]:
    """The study's mistake, kept as an ablation: the i-th image by name with the i-th mask by name.

    Names are compared as text, so masks ``0.png, 1.png, 10.png, 100.png, ...`` meet images
    ``mask0000, mask0001, mask0002, mask0003, ...``. Logs a WARNING saying how many slices still get
    their own mask.
    """
    if len(images) != len(masks):
        raise DataError(f"{where}: text-sorted pairing needs as many masks as images ({len(masks)} vs {len(images)}).")
    img_sorted = sorted(images.items(), key=lambda kv: kv[1].name)
    mask_sorted = sorted(masks.items(), key=lambda kv: kv[1].name)
    own = sum(1 for (i, _), (j, _) in zip(img_sorted, mask_sorted) if i == j)
    logger.warning(
        "%s: pairing='text-sorted' is the published study's mistake, offered only as an ablation: "
        "images and masks sorted by name as text; only %d of %d slices get their own mask.",
        where,
        own,
        len(images),
    )
    return [SliceFiles(id_of(i), ip, mp) for (i, ip), (_, mp) in zip(img_sorted, mask_sorted)]


DATASETS: Registry[EMDataset] = Registry("dataset")


def get_dataset(name: str) -> EMDataset:
    """The registry entry for ``name`` (with its facts), or a FolderDataset for ``folder:PATH``.

    Raises:
        UnknownNameError: ``name`` is neither registered nor ``folder:PATH``; lists the valid names.
    """
    import emfm.data.lucchi_pp  # noqa: F401  (registration happens on import)
    import emfm.data.vnc  # noqa: F401

    if name.startswith("folder:"):
        from emfm.data.folder import FolderDataset

        return FolderDataset(name[len("folder:") :])
    if name not in DATASETS:
        raise UnknownNameError(unknown_dataset_message(name, DATASETS))
    return DATASETS.get(name)


def dataset_names() -> list[str]:
    """Registered dataset names (``folder:PATH`` is accepted as well but is not listed)."""
    import emfm.data.lucchi_pp  # noqa: F401
    import emfm.data.vnc  # noqa: F401

    return DATASETS.names()
