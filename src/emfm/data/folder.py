"""A user's own data: ``folder:PATH`` (or ``folder:IMAGES_DIR,MASKS_DIR``).

Layouts, tried in this order:

- ``folder:IMAGES_DIR,MASKS_DIR``: one folder of images and one of masks.
- ``PATH/train/images`` + ``PATH/train/masks``, optionally with ``PATH/test/images`` + ``PATH/test/masks``.
- ``PATH/images`` + ``PATH/masks``, optionally with ``PATH/test/images`` + ``PATH/test/masks``.

Pairing: an image and a mask with the same stem (``a.tif`` / ``a.png``) pair when every stem has its
partner; otherwise they pair by the number in the name (``img_0007.tif`` / ``7.png``). Anything that
does not pair one to one (an image with no mask, two masks for one index, a name with no number) is
an error that names the files. Slices are ordered by that number (or by name where there is none);
a slice's id is its image's stem.

Masks: values must be a subset of {0, 1} or of {0, 255}; foreground = value > 0. Any other value is
an error naming the values (threshold or relabel your masks first).

Splits:

- ``trainval``: every slice of the training folder; ``train``/``val``: :func:`~emfm.data.splits.make_val_split`
  of those (10 %, seed 42), drawn at load time; the ids are in ``SliceStack.meta["val_ids"]`` so
  that the caller can write them into its run dir.
- ``test``: ``PATH/test/...`` when it exists. A folder without a test part has no held-out slices of
  its own: naming it as a test set evaluates on all of its slices (with a logged warning), which is
  what you want for an annotated volume of your own; a folder used for both training and testing
  is the caller's to refuse (``has_test_split`` is False for it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from emfm.data._datasets import EMDataset, Pairing, PathArg, SliceFiles, Split
from emfm.data._masks import BinaryMaskRule
from emfm.data._pairing import pair_by_number, pair_text_sorted
from emfm.data._stack import SliceStack
from emfm.data.readers import IMAGE_SUFFIXES, number_in_name
from emfm.data.splits import make_val_split
from emfm.errors import DataError

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.1
VAL_SEED = 42


def _image_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of {what} does not exist.")
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"{folder}: holds no {what} (files ending {', '.join(IMAGE_SUFFIXES)}).")
    return files


def _by_key(files: list[Path], key: str, folder: Path, what: str) -> dict[object, Path]:
    grouped: dict[object, list[Path]] = {}
    for p in files:
        k = p.stem if key == "stem" else number_in_name(p.name)
        if k is None:
            raise DataError(
                f"{folder}: {p.name} has no number in its name, and not every image has a mask of the same "
                "name; name images and masks alike, or put the slice index in every name."
            )
        grouped.setdefault(k, []).append(p)
    dups = {k: ps for k, ps in grouped.items() if len(ps) > 1}
    if dups:
        k, ps = sorted(dups.items(), key=lambda kv: str(kv[0]))[0]
        label = f"name {k!r}" if key == "stem" else f"index {k}"
        raise DataError(
            f"{folder}: {len(dups)} {'name' if key == 'stem' else 'index'}(es) have two or more {what}, e.g. "
            f"{label}: {', '.join(sorted(p.name for p in ps))}. Keep one file per slice."
        )
    return {k: ps[0] for k, ps in grouped.items()}


def pair_folders(images_dir: Path, masks_dir: Path, pairing: Pairing = "by-number") -> list[SliceFiles]:
    """Pair the images of one folder with the masks of another (see the module docstring)."""
    images = _image_files(images_dir, "images")
    masks = _image_files(masks_dir, "masks")
    where = f"{images_dir} + {masks_dir}"
    img_stem = _by_key(images, "stem", images_dir, "images")
    mask_stem = _by_key(masks, "stem", masks_dir, "masks")
    numbers = {p.stem: number_in_name(p.name) for p in images}
    numbered = all(n is not None for n in numbers.values()) and len(set(numbers.values())) == len(numbers)

    def order(stem: str) -> tuple[int, str]:
        return (numbers[stem] if numbered else 0, stem)  # type: ignore[return-value]

    if pairing == "text-sorted":  # keyed by number (or stem) only to count who meets their own mask
        key = "number" if all(number_in_name(p.name) is not None for p in images + masks) else "stem"
        pairs = pair_text_sorted(
            _by_key(images, key, images_dir, "images"),  # type: ignore[arg-type]
            _by_key(masks, key, masks_dir, "masks"),  # type: ignore[arg-type]
            id_of=str,
            where=where,
        )
        return [SliceFiles(s.image.stem, s.image, s.mask) for s in pairs]
    if set(img_stem) == set(mask_stem):
        return [SliceFiles(stem, img_stem[stem], mask_stem[stem]) for stem in sorted(img_stem, key=order)]
    img_num = _by_key(images, "number", images_dir, "images")
    mask_num = _by_key(masks, "number", masks_dir, "masks")
    pairs = pair_by_number(img_num, mask_num, id_of=str, where=where)  # type: ignore[arg-type]
    return [SliceFiles(s.image.stem, s.image, s.mask) for s in pairs]


class FolderDataset(EMDataset):
    """``folder:PATH``: a user's own images and masks; see the module docstring."""

    title = "your own images and masks"
    citation = ""
    licence = "yours"
    layout = "PATH/images + PATH/masks (or PATH/train/..., PATH/test/...), or IMAGES_DIR,MASKS_DIR"
    mask_rule = BinaryMaskRule(allowed=(frozenset({0, 1}), frozenset({0, 255})))
    reference = {}
    carries_own_path = True

    def __init__(self, spec: str) -> None:
        if not spec:
            raise DataError("folder: needs a path, as folder:PATH or folder:IMAGES_DIR,MASKS_DIR.")
        self.name = f"folder:{spec}"
        self.spec = spec
        self._dirs = self._layout()
        self.has_test_split = "test" in self._dirs
        self._paired: dict[tuple[str, str], list[SliceFiles]] = {}  # listing + pairing, done once
        self._val_split: tuple[list[str], list[str]] | None = None

    def _layout(self) -> dict[str, tuple[Path, Path]]:
        spec = self.spec
        path = Path(spec).expanduser()
        if "," in spec and not path.exists():
            parts = [p.strip() for p in spec.split(",")]
            if len(parts) != 2 or not all(parts):
                raise DataError(f"{self.name}: expected folder:IMAGES_DIR,MASKS_DIR with exactly two folders.")
            images, masks = (Path(p).expanduser() for p in parts)
            for d, what in ((images, "images"), (masks, "masks")):
                if not d.is_dir():
                    raise DataError(f"{self.name}: the {what} folder {d} does not exist.")
            return {"trainval": (images, masks)}
        if not path.is_dir():
            raise DataError(
                f"{self.name}: {path} does not exist or is not a folder. Expected PATH/images and PATH/masks "
                "(or PATH/train/..., PATH/test/...), or folder:IMAGES_DIR,MASKS_DIR."
            )
        dirs: dict[str, tuple[Path, Path]] = {}
        for base in (path / "train", path):
            if (base / "images").is_dir() and (base / "masks").is_dir():
                dirs["trainval"] = (base / "images", base / "masks")
                break
        if (path / "test" / "images").is_dir() and (path / "test" / "masks").is_dir():
            dirs["test"] = (path / "test" / "images", path / "test" / "masks")
        if not dirs:
            raise DataError(
                f"{self.name}: found neither {path}/images + {path}/masks, nor {path}/train/images + "
                f"{path}/train/masks, nor {path}/test/images + {path}/test/masks. Lay the data out so, or name "
                "the two folders as folder:IMAGES_DIR,MASKS_DIR."
            )
        return dirs

    def root_under(self, data_root: PathArg | None) -> Path:
        """The path in the name: a data root, meant for the registered datasets, does not move it."""
        return Path(self.spec)

    def locate(self, data_root: PathArg | None = None, *, root: PathArg | None = None) -> Path:
        """The path in the name, checked when the name was looked up.

        ``data_root`` is ignored: one ``--data-root`` serves every registered dataset of a run, and a
        folder dataset beside them is not under it. A ``root`` is refused: it would be a second path.
        """
        if root is not None:
            raise DataError(
                f"{self.name}: a folder dataset carries its own path; do not pass a root (--root) for it (got {root})."
            )
        return Path(self.spec)

    def stacks(self, root: Path) -> list[str]:
        return list(self._dirs)

    def stack_label(self, stack: str) -> str:
        images, masks = self._dirs[stack]
        return f"{stack} ({images} + {masks})"

    def list_slices(self, root: Path, stack: str, pairing: Pairing = "by-number") -> list[SliceFiles]:
        if stack not in self._dirs:
            raise DataError(f"{self.name}: has no {stack} part; it has {', '.join(self._dirs)}.")
        if (stack, pairing) not in self._paired:
            self._paired[(stack, pairing)] = pair_folders(*self._dirs[stack], pairing=pairing)
        return self._paired[(stack, pairing)]

    def split_ids(self, root: Path, split: Split) -> tuple[str, list[str]]:
        if split == "test":
            if "test" in self._dirs:
                return "test", [s.id for s in self.list_slices(root, "test")]
            if "trainval" not in self._dirs:
                raise DataError(f"{self.name}: has no slices to test on.")
            logger.warning(
                "%s has no test/ part of its own: testing on all of its slices. Do not also train on it.",
                self.name,
            )
            return "trainval", [s.id for s in self.list_slices(root, "trainval")]
        if "trainval" not in self._dirs:
            raise DataError(
                f"{self.name}: has only a test/ part, so there is nothing to train or validate on "
                f"(split {split!r}); add PATH/train/images and PATH/train/masks."
            )
        ids = [s.id for s in self.list_slices(root, "trainval")]
        if split == "trainval":
            return "trainval", ids
        if self._val_split is None:
            self._val_split = make_val_split(ids, fraction=VAL_FRACTION, seed=VAL_SEED)
        train, val = self._val_split
        return "trainval", train if split == "train" else val

    def describe_splits(self, root: Path) -> list[str]:
        lines = [
            f"train/val: drawn at load time with make_val_split(fraction={VAL_FRACTION}, seed={VAL_SEED}); "
            "a run writes the ids it used into its run dir"
        ]
        if not self.has_test_split:
            lines.append("no test/ part: named as a test set, all its slices are tested on")
        return lines

    def load(
        self,
        split: Split,
        root: PathArg | None = None,
        *,
        data_root: PathArg | None = None,
        pairing: Pairing = "by-number",
        progress: bool = True,
    ) -> SliceStack:
        """As :meth:`EMDataset.load`; train/val stacks also record the drawn ids in ``meta``."""
        stack = super().load(split, root, data_root=data_root, pairing=pairing, progress=progress)
        if self._val_split is not None and split in ("train", "val"):
            train, val = self._val_split
            stack.meta.update(train_ids=train, val_ids=val, val_fraction=VAL_FRACTION, val_seed=VAL_SEED)
        return stack
