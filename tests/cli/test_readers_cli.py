"""Valid data that the readers used to refuse, through `emfm data check`: 1-bit TIFF masks, names with
digits after a dot, and a 3-slice TIFF written with tifffile's defaults (refused as a slice with a hint,
opened as a 3-slice volume)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from emfm.cli import main
from emfm.data.readers import number_in_name, open_volume, read_image
from tests.helpers import synthetic_slice


def write_pairs(root: Path, image_name: str, mask_name: str, n: int = 4, *, bool_tiff: bool = False) -> str:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(n):
        img, mask = synthetic_slice(rng, (40, 56))
        Image.fromarray(img).save(root / "images" / image_name.format(i))
        if bool_tiff:
            tifffile.imwrite(root / "masks" / mask_name.format(i), mask.astype(bool))
        else:
            Image.fromarray(mask * 255).save(root / "masks" / mask_name.format(i))
    return f"folder:{root}"


def test_one_bit_tiff_masks_are_read(tmp_path, capsys):
    data = write_pairs(tmp_path / "d", "img_{:03d}.png", "mask_{:03d}.tif", bool_tiff=True)
    assert tifffile.TiffFile(tmp_path / "d" / "masks" / "mask_000.tif").pages[0].bitspersample == 1
    assert main(["data", "check", data, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "is usable" in printed and "4 x 40 x 56" in printed
    mask = read_image(tmp_path / "d" / "masks" / "mask_000.tif")
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}  # as a bilevel PNG reads


def test_names_with_digits_after_a_dot_pair_by_number(tmp_path, capsys):
    data = write_pairs(tmp_path / "d", "img.{:04d}.png", "msk.{:04d}.png")
    assert main(["data", "check", data, "--no-progress"]) == 0
    assert "is usable" in capsys.readouterr().out
    assert [number_in_name(n) for n in ("img.0012.png", "msk.0012.png", "z7.ome.tif", "mask0007.png")] == [12, 12, 7, 7]


@pytest.fixture
def three_slice_tiff(tmp_path) -> tuple[Path, np.ndarray]:
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 56), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tifffile: "stored as RGB with separate planes"
        tifffile.imwrite(tmp_path / "stack.tif", stack)  # tifffile's defaults
    assert tifffile.TiffFile(tmp_path / "stack.tif").series[0].axes == "SYX"
    return tmp_path / "stack.tif", stack


def test_a_three_slice_tiff_opens_as_a_volume(three_slice_tiff):
    path, stack = three_slice_tiff
    with open_volume(path) as volume:
        assert volume.shape == (3, 40, 56)
        for z in range(3):
            np.testing.assert_array_equal(volume[z], stack[z])


def test_a_three_slice_tiff_as_one_slice_is_refused_with_the_fix(three_slice_tiff, tmp_path, capsys):
    path, _ = three_slice_tiff
    data = write_pairs(tmp_path / "d", "img_{:03d}.png", "{}.png", n=4)
    path.replace(tmp_path / "d" / "images" / "img_000.tif")
    (tmp_path / "d" / "images" / "img_000.png").unlink()
    assert main(["data", "check", data, "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "holds 3 different planes stored as planar RGB" in printed
    assert "photometric='minisblack'" in printed and "open it as a volume" in printed
