"""What the published datasets have in common: numbered files in per-stack folders, shipped splits.

Lucchi++ and VNC differ only in facts: their stacks, their folders, how their files are named and
numbered, their mask rule, how they are cited and checked. A module declares those on a subclass of
:class:`PublishedDataset` and inherits the indexing, the pairing and the reading of its split file,
so a new published dataset is a list of facts, not a copy of the loader.
"""

from __future__ import annotations

import re
from pathlib import Path

from emfm.data._datasets import EMDataset, Pairing, SliceFiles, Split
from emfm.data._pairing import index_files, pair_files
from emfm.data.splits import read_split_file
from emfm.errors import DataError


class PublishedDataset(EMDataset):
    """A dataset laid out as published: per stack, a folder of images and one of masks, numbered alike.

    Declared by each module:
        stack_names: the stacks, in order.
        image_dir, mask_dir: a stack's folders under the root, with ``{stack}`` for its name
            (``"{stack}_In"``, ``"{stack}/raw"``).
        image_name, mask_name: file-name patterns; group 1 is the slice number that pairs them.
        image_what, mask_what: what the files are, as error messages name them.
        id_digits: a slice's id is its number with this many digits (``0007``).
        stack_label_template: how ``emfm data check`` names a stack, with ``{stack}``.
        no_stack_message: the error for a stack the dataset does not have, with ``{name}``,
            ``{stack}`` and ``{stacks}``.

    Splits are read from the package's split file of :attr:`name` (see :mod:`emfm.data.splits`).
    """

    stack_names: tuple[str, ...]
    image_dir: str
    mask_dir: str
    image_name: re.Pattern[str]
    mask_name: re.Pattern[str]
    image_what: str = "raw images"
    mask_what: str = "label masks"
    id_digits: int
    stack_label_template: str = "{stack}"
    no_stack_message: str = "{name}: no stack {stack!r}; it has {stacks}."

    def slice_id(self, index: int) -> str:
        """A slice's id: its number, zero-padded to :attr:`id_digits`."""
        return f"{index:0{self.id_digits}d}"

    def image_folder(self, root: Path, stack: str) -> Path:
        return root / self.image_dir.format(stack=stack)

    def mask_folder(self, root: Path, stack: str) -> Path:
        return root / self.mask_dir.format(stack=stack)

    def required(self) -> list[str]:
        return [d.format(stack=s) for s in self.stack_names for d in (self.image_dir, self.mask_dir)]

    def stacks(self, root: Path) -> list[str]:
        return list(self.stack_names)

    def stack_label(self, stack: str) -> str:
        return self.stack_label_template.format(stack=stack)

    def list_slices(self, root: Path, stack: str, pairing: Pairing = "by-number") -> list[SliceFiles]:
        if stack not in self.stack_names:
            stacks = ", ".join(self.stack_names)
            raise DataError(self.no_stack_message.format(name=self.name, stack=stack, stacks=stacks))
        images = index_files(self.image_folder(root, stack), self.image_name, what=self.image_what)
        masks = index_files(self.mask_folder(root, stack), self.mask_name, what=self.mask_what)
        return pair_files(images, masks, pairing, id_of=self.slice_id, where=f"{self.name} {stack} ({root})")

    def split_ids(self, root: Path, split: Split) -> tuple[str, list[str]]:
        record = read_split_file(self.name)
        if split == "trainval":
            return record["stacks"]["train"], sorted(record["train"] + record["val"])
        return record["stacks"][split], list(record[split])
