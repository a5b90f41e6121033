"""vnc: mitochondria from the label map (== 191), the shipped 17/3 split, and the mitochondria/ warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emfm.data import get_dataset, load_split
from emfm.errors import DataError
from tests.data.synth_data import index_mask, make_vnc, mask_index, save_grey

DS = get_dataset("vnc")


def test_test_split_is_00_03_08_and_pairs(vnc_root: Path) -> None:
    test = load_split("vnc", "test", vnc_root, progress=False)
    assert test.ids == ["00", "03", "08"]
    for sid, img, mask in zip(test.ids, test.images, test.masks):
        assert img[0, 0] == int(sid) and mask_index(mask) == int(sid)


def test_trainval_is_the_other_17(vnc_root: Path) -> None:
    tv = load_split("vnc", "trainval", vnc_root, progress=False)
    train = load_split("vnc", "train", vnc_root, progress=False)
    val = load_split("vnc", "val", vnc_root, progress=False)
    assert len(tv) == 17 and len(train) == 15 and len(val) == 2
    assert set(tv.ids) == {f"{i:02d}" for i in range(20)} - {"00", "03", "08"}
    assert set(train.ids) | set(val.ids) == set(tv.ids) and not set(train.ids) & set(val.ids)


def test_mask_is_label_191_not_the_mitochondria_folder(vnc_root: Path) -> None:
    # make the mitochondria folder disagree: emfm must not read it
    save_grey(vnc_root / "stack1" / "mitochondria" / "03.png", np.zeros((6, 8), np.uint8))
    stack = load_split("vnc", "test", vnc_root, progress=False)
    m = stack.masks[1]
    assert stack.ids[1] == "03" and np.array_equal(m, index_mask(3))
    assert stack.meta["mask_rule"] == "label map; foreground = value == 191"


def test_unknown_label_value_is_a_warning(vnc_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = vnc_root / "stack1" / "labels" / "labels00000000.png"
    labels = np.asarray(Image.open(path)).copy()
    labels[2, 2] = 17
    save_grey(path, labels)
    with caplog.at_level(logging.WARNING):
        stack = load_split("vnc", "test", vnc_root, progress=False)
    assert mask_index(stack.masks[0]) == 0
    assert any(
        "labels00000000.png: label map holds values {17} outside the known classes" in r.message for r in caplog.records
    )


def test_missing_label_map(vnc_root: Path) -> None:
    (vnc_root / "stack1" / "labels" / "labels00000004.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) with no mask \(e\.g\. 04\.tif\)"):
        load_split("vnc", "train", vnc_root)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"vnc: no dataset at .* expected stack1/raw, stack1/labels\)\. Run `emfm data fetch vnc`"
    ):
        load_split("vnc", "test", tmp_path)


def test_blank_mitochondria_masks_are_reported(tmp_path: Path) -> None:
    root = make_vnc(tmp_path / "vnc", blank_mito=(1, 7, 18))
    (warning,) = DS.extra_checks(root, progress=False)
    assert "blank masks on slices 01, 07, 18" in warning and "labels == 191" in warning


def test_one_bit_mitochondria_masks_are_reported(vnc_root: Path) -> None:
    for i in (1, 7, 18):  # stored as 1-bit PNGs, as in the public repository
        m = index_mask(i).astype(bool)
        Image.fromarray(m).convert("1").save(vnc_root / "stack1" / "mitochondria" / f"{i:02d}.png")
    (warning,) = DS.extra_checks(vnc_root, progress=False)
    assert "masks 01, 07, 18 are 1-bit PNGs" in warning and "come out blank" in warning


def test_clean_mitochondria_folder_gives_no_warning(vnc_root: Path) -> None:
    assert DS.extra_checks(vnc_root, progress=False) == []
