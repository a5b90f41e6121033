"""lucchi_pp: pairing by number, Train/Test as named, mask rules, splits, the text-sorted ablation, errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emfm.data import get_dataset, load_split, read_split_file
from emfm.data._datasets import read_pair
from emfm.errors import DataError
from tests.data.synth_data import index_image, make_lucchi, mask_index, save_grey, save_rgb_grey

DS = get_dataset("lucchi_pp")


def read_stack(root: Path, stack: str = "Train") -> list:
    return [read_pair(s, DS.mask_rule) for s in DS.list_slices(root, stack)]


@pytest.mark.parametrize("split,n", [("train", 149), ("val", 16), ("trainval", 165), ("test", 165)])
def test_every_image_meets_its_own_mask(lucchi_full: Path, split: str, n: int) -> None:
    stack = load_split("lucchi_pp", split, lucchi_full, progress=False)
    assert len(stack) == n and stack.split == split and stack.pairing == "by-number"
    code = 2 if split == "test" else 1  # Train_* slices carry code 1, Test_* code 2: never swapped
    for sid, img, mask in zip(stack.ids, stack.images, stack.masks):
        assert img[0, 0] == int(sid) and img[0, 1] == code
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert mask_index(mask) == int(sid)
    assert stack.meta["stack"] == ("Test" if split == "test" else "Train")


def test_splits_come_from_the_shipped_file(lucchi_full: Path) -> None:
    record = read_split_file("lucchi_pp")
    train = load_split("lucchi_pp", "train", lucchi_full, progress=False)
    val = load_split("lucchi_pp", "val", lucchi_full, progress=False)
    assert train.ids == record["train"] and val.ids == record["val"]
    assert not set(train.ids) & set(val.ids)
    assert sorted(train.ids + val.ids) == [f"{i:04d}" for i in range(165)]


def test_text_sorted_ablation_is_loud_and_mispairs(lucchi_full: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        stack = load_split("lucchi_pp", "trainval", lucchi_full, pairing="text-sorted", progress=False)
    assert stack.pairing == "text-sorted"
    assert any(
        "text-sorted" in r.message and "only 2 of 165" in r.message
        for r in caplog.records
        if r.levelno == logging.WARNING
    )
    own = [sid for sid, m in zip(stack.ids, stack.masks) if mask_index(m) == int(sid)]
    assert own == ["0000", "0001"]  # 0.png and 1.png; then 10.png meets mask0002, 100.png mask0003, ...
    assert mask_index(stack.masks[2]) == 10 and mask_index(stack.masks[3]) == 100


def test_webp_raw_reads_as_grey_and_pairs(tmp_path: Path) -> None:
    root = make_lucchi(tmp_path / "l", n=12, raw_ext=".webp")
    for r in read_stack(root, "Test"):
        assert r.image.ndim == 2 and r.image[0, 0] == int(r.files.id) and r.image[0, 1] == 2
        assert mask_index(r.mask) == int(r.files.id)


def test_rgba_test_masks_and_l_train_masks_both_become_0_1(lucchi_root: Path) -> None:
    assert Image.open(lucchi_root / "Test_Out" / "3.png").mode == "RGBA"
    assert Image.open(lucchi_root / "Train_Out" / "3.png").mode == "L"
    for stack in ("Train", "Test"):
        r = read_stack(lucchi_root, stack)[3]
        assert set(np.unique(r.mask)) == {0, 1} and mask_index(r.mask) == 3


def test_16bit_raw_is_supported(lucchi_root: Path) -> None:
    path = lucchi_root / "Train_In" / "mask0004.png"
    arr = index_image(4).astype(np.uint16) * 257
    Image.fromarray(arr).save(path)
    r = read_stack(lucchi_root)[4]
    assert r.image.dtype == np.uint16 and np.array_equal(r.image, arr)


def test_image_with_no_mask(lucchi_root: Path) -> None:
    (lucchi_root / "Train_Out" / "5.png").unlink()
    with pytest.raises(DataError, match=r"do not pair one to one: 1 image\(s\) with no mask \(e\.g\. mask0005\.png\)"):
        DS.list_slices(lucchi_root, "Train")


def test_mask_with_no_image(lucchi_root: Path) -> None:
    (lucchi_root / "Test_In" / "mask0007.png").unlink()
    with pytest.raises(DataError, match=r"1 mask\(s\) with no image \(e\.g\. 7\.png\)"):
        DS.list_slices(lucchi_root, "Test")


def test_two_masks_for_one_index(lucchi_root: Path) -> None:
    shutil.copy(lucchi_root / "Train_Out" / "5.png", lucchi_root / "Train_Out" / "05.png")
    with pytest.raises(
        DataError, match=r"index\(es\) have more than one of the label masks, e\.g\. index 5: 05\.png, 5\.png"
    ):
        DS.list_slices(lucchi_root, "Train")


def test_two_images_for_one_index(lucchi_root: Path) -> None:
    save_rgb_grey(lucchi_root / "Train_In" / "mask0003.webp", index_image(3))
    with pytest.raises(DataError, match=r"e\.g\. index 3: mask0003\.png, mask0003\.webp"):
        DS.list_slices(lucchi_root, "Train")


def test_stray_image_file_is_not_ignored(lucchi_root: Path) -> None:
    save_grey(lucchi_root / "Train_In" / "mask0003 copy.png", index_image(3))
    (lucchi_root / "Train_In" / ".DS_Store").write_bytes(b"x")  # hidden files are ignored
    with pytest.raises(DataError, match=r"1 file\(s\) do not fit the raw images naming .*: mask0003 copy\.png"):
        DS.list_slices(lucchi_root, "Train")


def test_mask_of_another_size(lucchi_root: Path) -> None:
    save_grey(lucchi_root / "Train_Out" / "2.png", np.zeros((3, 8), np.uint8))
    with pytest.raises(DataError, match=r"2\.png: mask is 3 x 8 but its image mask0002\.png is 6 x 8"):
        read_stack(lucchi_root)


def test_mask_with_unexpected_values(lucchi_root: Path) -> None:
    m = np.zeros((6, 8), np.uint8)
    m[0, :3] = [255, 128, 255]
    save_grey(lucchi_root / "Train_Out" / "1.png", m)
    with pytest.raises(DataError, match=r"1\.png: mask has values \{0, 128, 255\}, expected \{0, 255\}"):
        read_stack(lucchi_root)


def test_rgb_image_with_different_channels(lucchi_root: Path) -> None:
    img = index_image(6)
    Image.fromarray(np.stack([img, img, 255 - img], -1)).save(lucchi_root / "Train_In" / "mask0006.png")
    with pytest.raises(DataError, match=r"mask0006\.png: is a colour image"):
        read_stack(lucchi_root)


def test_corrupt_and_truncated_images(lucchi_root: Path) -> None:
    path = lucchi_root / "Test_In" / "mask0008.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"mask0008\.png: cannot be decoded, the file is corrupt or truncated"):
        read_stack(lucchi_root, "Test")


def test_missing_root_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"lucchi_pp: no dataset at .*nowhere \(it does not exist.*"
        r"Run `emfm data fetch lucchi_pp` or pass --data-root",
    ):
        load_split("lucchi_pp", "train", tmp_path / "nowhere")
    (tmp_path / "half" / "Train_In").mkdir(parents=True)
    with pytest.raises(DataError, match=r"it lacks Train_Out, Test_In, Test_Out"):
        load_split("lucchi_pp", "train", tmp_path / "half")


def test_parent_folder_gets_a_hint(lucchi_root: Path) -> None:
    with pytest.raises(DataError, match=r"lucchi_pp exists: pass that folder as the dataset root"):
        load_split("lucchi_pp", "test", lucchi_root.parent)


def test_default_root_is_data_root(monkeypatch: pytest.MonkeyPatch, lucchi_full: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("EMFM_DATA", str(lucchi_full.parent))
    assert len(load_split("lucchi_pp", "val", progress=False)) == 16
    monkeypatch.setenv("EMFM_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"empty/lucchi_pp"):
        load_split("lucchi_pp", "val")


def test_incomplete_copy_names_missing_split_slices(lucchi_root: Path) -> None:
    # 12 slices on disk, but the shipped split lists 165
    with pytest.raises(DataError, match=r"split 'test' lists 153 slice\(s\) that .* does not have: 0012, 0013"):
        load_split("lucchi_pp", "test", lucchi_root)


def test_bad_split_and_pairing_names(lucchi_root: Path) -> None:
    with pytest.raises(DataError, match=r"unknown split 'validation'; expected one of train, val, trainval, test"):
        load_split("lucchi_pp", "validation", lucchi_root)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"unknown pairing 'sorted'"):
        load_split("lucchi_pp", "train", lucchi_root, pairing="sorted")  # type: ignore[arg-type]
