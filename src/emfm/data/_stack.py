"""The in-memory form of one split of one dataset: paired image and mask slices."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from emfm.errors import DataError


@dataclass
class SliceStack:
    """Slices of one split of one dataset, each image paired with its binary mask.

    Attributes:
        dataset: dataset name as the user gave it (``lucchi_pp``, ``vnc``, ``folder:/path``).
        split: ``train``, ``val``, ``trainval`` or ``test``.
        ids: one identifier per slice (the index in the source, e.g. ``"0007"``), used in splits,
            reports and per-slice metrics.
        images: 2-D arrays (H, W), uint8 or uint16, as stored.
        masks: 2-D uint8 arrays of 0/1, each the same shape as its image.
        pairing: how images were paired with masks (``by-number`` is correct; ``text-sorted`` is the
            study's mistake, offered only as a labelled ablation).
    """

    dataset: str
    split: str
    ids: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    pairing: str = "by-number"
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.images) == len(self.masks)):
            raise DataError(
                f"{self.dataset}/{self.split}: got {len(self.ids)} ids, {len(self.images)} images and "
                f"{len(self.masks)} masks; give one image and one mask per id."
            )

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: list[str], split: str) -> SliceStack:
        """The slices named by ``ids``, in that order (for validation splits).

        Raises:
            DataError: an id is not in this stack (the message lists a few, and the ids it has).
        """
        where = {sid: i for i, sid in enumerate(self.ids)}
        missing = [s for s in ids if s not in where]
        if missing:
            have = f"{self.ids[0]} .. {self.ids[-1]}" if self.ids else "none"
            raise DataError(
                f"{self.dataset}: {len(missing)} slice id(s) are not in split {self.split!r}: "
                f"{', '.join(missing[:5])}; it has {len(self.ids)} ids ({have}). Name ids of that split."
            )
        idx = [where[s] for s in ids]
        return SliceStack(
            dataset=self.dataset,
            split=split,
            ids=[self.ids[i] for i in idx],
            images=[self.images[i] for i in idx],
            masks=[self.masks[i] for i in idx],
            pairing=self.pairing,
            meta=dict(self.meta),
        )

    def with_images(self, images: list[np.ndarray]) -> SliceStack:
        """The same slices (ids, masks, pairing) with other pixels, one image per slice of the same shape:
        an input-side alignment's standardised copy (:mod:`emfm.align.inputs`).

        Raises:
            DataError: a count or a shape differs from this stack's.
        """
        if len(images) != len(self.images):
            raise DataError(f"{self.dataset}/{self.split}: got {len(images)} images for {len(self.images)} slices")
        for sid, old, new in zip(self.ids, self.images, images):
            if old.shape != new.shape:
                raise DataError(f"{self.dataset}/{self.split} slice {sid}: image shape {new.shape} is not {old.shape}")
        return SliceStack(self.dataset, self.split, list(self.ids), list(images), list(self.masks), self.pairing,
                          dict(self.meta))

    def image_digest(self, i: int) -> str:
        """sha256 of one decoded image (dtype, shape and bytes): the data part of a cache key."""
        img = np.ascontiguousarray(self.images[i])
        h = hashlib.sha256(f"{img.dtype.str}{img.shape}".encode())
        h.update(img.tobytes())
        return h.hexdigest()

    def foreground_fraction(self) -> float:
        total = sum(int(m.size) for m in self.masks)
        return float(sum(int(m.sum()) for m in self.masks) / total) if total else 0.0
