"""folder:PATH: layouts, pairing by stem or number, mask values, splits, and every bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from emfm.data import get_dataset, load_split, make_val_split
from emfm.errors import DataError
from tests.data.synth_data import index_image, index_mask, mask_index, save_grey


def make_folder(
    root: Path, n: int = 10, *, img_name: str = "img_{i:03d}.tif", mask_name: str = "{i}.png", scale: int = 255
) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = root / "images" / img_name.format(i=i)
        if image.suffix == ".tif":
            tifffile.imwrite(image, index_image(i))
        else:
            save_grey(image, index_image(i))
        save_grey(root / "masks" / mask_name.format(i=i), index_mask(i) * scale)
    return root


def check_pairs(stack) -> None:
    for sid, img, mask in zip(stack.ids, stack.images, stack.masks):
        assert mask_index(mask) == img[0, 0], sid


def test_pairs_by_number_and_orders_by_number(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=12, img_name="slice_z{i}.tif", mask_name="gt-{i:04d}.png")
    stack = load_split(f"folder:{root}", "trainval", progress=False)
    assert stack.ids == [f"slice_z{i}" for i in range(12)]  # z2 before z10
    check_pairs(stack)


def test_pairs_by_identical_stem(tmp_path: Path) -> None:
    root = tmp_path / "s"
    names = ["alpha", "beta", "gamma"]
    for i, name in enumerate(names):
        save_grey(root / "images" / f"{name}.png", index_image(i))
        save_grey(root / "masks" / f"{name}.png", index_mask(i))  # {0, 1} masks
    stack = load_split(f"folder:{root}", "trainval", progress=False)
    assert stack.ids == names
    check_pairs(stack)


def test_explicit_images_masks_pair(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "p", n=4)
    stack = load_split(f"folder:{root / 'images'},{root / 'masks'}", "trainval", progress=False)
    assert len(stack) == 4
    check_pairs(stack)


def test_train_test_layout(tmp_path: Path) -> None:
    make_folder(tmp_path / "tt" / "train", n=10)
    make_folder(tmp_path / "tt" / "test", n=3)
    ds = get_dataset(f"folder:{tmp_path / 'tt'}")
    assert ds.has_test_split
    assert len(load_split(f"folder:{tmp_path / 'tt'}", "test", progress=False)) == 3
    assert len(load_split(f"folder:{tmp_path / 'tt'}", "trainval", progress=False)) == 10


def test_val_split_is_drawn_and_recorded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "v", n=20)
    name = f"folder:{root}"
    train = load_split(name, "train", progress=False)
    val = load_split(name, "val", progress=False)
    ids = [f"img_{i:03d}" for i in range(20)]
    assert (train.ids, val.ids) == make_val_split(ids)
    assert val.meta["val_ids"] == val.ids and train.meta["train_ids"] == train.ids and len(val) == 2


def test_flat_folder_as_test_set_uses_everything_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder(tmp_path / "f", n=5)
    assert not get_dataset(f"folder:{root}").has_test_split
    with caplog.at_level(logging.WARNING):
        test = load_split(f"folder:{root}", "test", progress=False)
    assert len(test) == 5
    assert any("has no test/ part of its own: testing on all of its slices" in r.message for r in caplog.records)


def test_image_with_no_mask(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "a", n=5)
    (root / "masks" / "3.png").unlink()
    with pytest.raises(DataError, match=r"do not pair one to one: 1 image\(s\) with no mask \(e\.g\. img_003\.tif\)"):
        load_split(f"folder:{root}", "trainval")


def test_two_masks_for_one_index(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "b", n=5)
    save_grey(root / "masks" / "mask_02.png", index_mask(2) * 255)
    with pytest.raises(DataError, match=r"index\(es\) have two or more masks, e\.g\. index 2: 2\.png, mask_02\.png"):
        load_split(f"folder:{root}", "trainval")


def test_name_without_number(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "c", n=3)
    save_grey(root / "images" / "overview.png", index_image(9))
    with pytest.raises(DataError, match=r"overview\.png has no number in its name"):
        load_split(f"folder:{root}", "trainval")


def test_mask_with_values_0_128_255(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "m", n=3)
    m = index_mask(1) * 255
    m[3, 3] = 128
    save_grey(root / "masks" / "1.png", m)
    with pytest.raises(DataError, match=r"1\.png: mask has values \{0, 128, 255\}, expected \{0, 1\} or \{0, 255\}"):
        load_split(f"folder:{root}", "trainval")


def test_mask_mixing_1_and_255_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "mix", n=3)
    m = index_mask(1) * 255
    m[3, 3] = 1
    save_grey(root / "masks" / "1.png", m)
    with pytest.raises(DataError, match=r"mask has values \{0, 1, 255\}"):
        load_split(f"folder:{root}", "trainval")


def test_mask_of_another_size(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "sz", n=3)
    save_grey(root / "masks" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"0\.png: mask is 4 x 4 but its image img_000\.tif is 6 x 8"):
        load_split(f"folder:{root}", "trainval")


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    with pytest.raises(DataError, match=r"e/images: holds no images"):
        load_split(f"folder:{tmp_path / 'e'}", "trainval")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=r"found neither .*nothing/images \+ .*nothing/masks"):
        get_dataset(f"folder:{tmp_path / 'nothing'}")


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"folder:.*missing: .*missing does not exist or is not a folder"):
        load_split(f"folder:{tmp_path / 'missing'}", "train")
    with pytest.raises(DataError, match=r"the masks folder .*nomasks does not exist"):
        get_dataset(f"folder:{tmp_path},{tmp_path / 'nomasks'}")
    with pytest.raises(DataError, match=r"folder: needs a path"):
        get_dataset("folder:")


def test_root_is_refused_for_folder_datasets(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "r", n=3)
    with pytest.raises(DataError, match=r"a folder dataset carries its own path; do not pass a root"):
        load_split(f"folder:{root}", "trainval", tmp_path)


def test_only_test_part_cannot_train(tmp_path: Path) -> None:
    make_folder(tmp_path / "o" / "test", n=3)
    with pytest.raises(DataError, match=r"has only a test/ part, so there is nothing to train or validate on"):
        load_split(f"folder:{tmp_path / 'o'}", "train")


def test_text_sorted_on_a_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder(tmp_path / "ts", n=12, img_name="img{i:02d}.png", mask_name="{i}.png")
    with caplog.at_level(logging.WARNING):
        stack = load_split(f"folder:{root}", "trainval", pairing="text-sorted", progress=False)
    own = sum(mask_index(m) == img[0, 0] for img, m in zip(stack.images, stack.masks))
    assert stack.pairing == "text-sorted" and own == 2  # 0, 1 right; then 10, 11, 2, ... meet img02, img03, ...
    assert any("only 2 of 12 slices get their own mask" in r.message for r in caplog.records)
