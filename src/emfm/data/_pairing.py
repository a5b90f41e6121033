"""Indexing numbered files and pairing images with masks, shared by every dataset.

Pairing is where the published study went wrong (masks sorted as text met the wrong images), so it is
written once, here: by number, every image with exactly one mask, or the study's text-sorted
mistake, loudly, as an ablation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from emfm.data._datasets import Pairing, SliceFiles
from emfm.errors import DataError

logger = logging.getLogger(__name__)


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


def pair_files(
    images: dict[int, Path],
    masks: dict[int, Path],
    pairing: Pairing,
    *,
    id_of: Callable[[int], str],
    where: str,
) -> list[SliceFiles]:
    """Pair indexed images with indexed masks the way ``pairing`` names."""
    pair = pair_text_sorted if pairing == "text-sorted" else pair_by_number
    return pair(images, masks, id_of=id_of, where=where)
