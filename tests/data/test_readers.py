"""read_image and open_volume: formats, bit depths, colour, corruption, and lazy volumes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from emfm.data import open_volume, read_image
from emfm.data.readers import FolderVolume, number_in_name
from emfm.errors import DataError
from tests.data.synth_data import save_grey, save_rgb_grey


@pytest.fixture
def grey() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(9, 13), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".bmp"])
def test_grey_8bit_roundtrip(tmp_path: Path, grey: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"a{suffix}"
    if suffix.startswith(".tif"):
        tifffile.imwrite(path, grey)
    else:
        save_grey(path, grey)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (9, 13)
    np.testing.assert_array_equal(out, grey)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_loads_as_uint16(tmp_path: Path, suffix: str) -> None:
    arr = (np.arange(9 * 13).reshape(9, 13) * 500).astype(np.uint16)
    path = tmp_path / f"a{suffix}"
    tifffile.imwrite(path, arr) if suffix == ".tif" else Image.fromarray(arr).save(path)
    out = read_image(path)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, arr)


def test_big_endian_16bit_tiff_becomes_native(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=">u2").reshape(3, 4) * 1000
    tifffile.imwrite(tmp_path / "be.tif", arr, byteorder=">")
    out = read_image(tmp_path / "be.tif")
    assert out.dtype == np.dtype("=u2")
    np.testing.assert_array_equal(out, arr.astype(np.uint16))


@pytest.mark.parametrize("suffix", [".webp", ".png", ".tif"])
def test_rgb_with_equal_channels_reads_as_grey(tmp_path: Path, grey: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"g{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, np.stack([grey] * 3, axis=-1), photometric="rgb")
    else:
        save_rgb_grey(path, grey)
    out = read_image(path)
    assert out.shape == grey.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, grey)


def test_rgba_white_on_black_reads_as_grey(tmp_path: Path) -> None:
    m = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    Image.fromarray(np.stack([m, m, m, np.full_like(m, 255)], -1), mode="RGBA").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_image(tmp_path / "m.png"), m)


def test_bilevel_png_reads_as_0_255(tmp_path: Path) -> None:
    m = np.array([[0, 1], [1, 0]], dtype=bool)
    Image.fromarray(m).convert("1").save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), m.astype(np.uint8) * 255)


def test_rgb_with_different_channels_is_refused(tmp_path: Path, grey: np.ndarray) -> None:
    rgb = np.stack([grey, grey, 255 - grey], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour\.png: is a colour image \(its channels differ\)"):
        read_image(tmp_path / "colour.png")


def test_transparent_rgba_is_refused(tmp_path: Path, grey: np.ndarray) -> None:
    Image.fromarray(np.stack([grey, grey, grey, np.zeros_like(grey)], -1), mode="RGBA").save(tmp_path / "t.png")
    with pytest.raises(DataError, match=r"t\.png: has transparent pixels"):
        read_image(tmp_path / "t.png")


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint32])
def test_unsupported_dtype_says_what_is_supported(tmp_path: Path, dtype: type) -> None:
    tifffile.imwrite(tmp_path / "f.tif", np.ones((4, 5), dtype=dtype))
    with pytest.raises(DataError, match=r"f\.tif: pixel type \w+ is not supported; emfm reads 8-bit or 16-bit"):
        read_image(tmp_path / "f.tif")


def test_3d_tiff_is_not_a_slice(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match=r"stack\.tif: is a stack of shape \(3, 4, 5\).*Use open_volume"):
        read_image(tmp_path / "stack.tif")


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_truncated_file_names_the_file(tmp_path: Path, grey: np.ndarray, suffix: str) -> None:
    big = np.random.default_rng(1).integers(0, 256, size=(64, 64), dtype=np.uint8)
    path = tmp_path / f"cut{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, big, compression="zlib")
    elif suffix == ".webp":
        save_rgb_grey(path, big)
    else:
        save_grey(path, big)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"cut\{suffix}: cannot be decoded, the file is corrupt or truncated"):
        read_image(path)


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"junk\.png: cannot be decoded"):
        read_image(tmp_path / "junk.png")


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "a.xyz").write_bytes(b"x")
    with pytest.raises(DataError, match=r"unknown image type '\.xyz'"):
        read_image(tmp_path / "a.xyz")


def test_number_in_name() -> None:
    assert number_in_name("mask0007.png") == 7
    assert number_in_name("labels00000019.png") == 19
    assert number_in_name("z10_slice.tif") == 10
    assert number_in_name("scan_v2_0003.tif") == 3
    assert number_in_name("image.png") is None


# ------------------------------------------------------------------------------------------------
# Volumes
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def vol() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, size=(5, 12, 16), dtype=np.uint8)


def _assert_volume(v, expected: np.ndarray) -> None:
    assert v.shape == expected.shape and len(v) == expected.shape[0] and v.dtype == expected.dtype
    for z in range(len(v)):
        np.testing.assert_array_equal(v[z], expected[z])
    np.testing.assert_array_equal(v[-1], expected[-1])
    with pytest.raises(IndexError):
        v[len(v)]


def test_tiff_stack_is_memory_mapped(tmp_path: Path, vol: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "v.tif", vol)
    with open_volume(tmp_path / "v.tif") as v:
        assert isinstance(v._array, np.memmap)  # not loaded into memory
        assert v.chunks is None
        _assert_volume(v, vol)


def test_compressed_tiled_tiff_stack_reads_through_zarr(tmp_path: Path, vol: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "c.tif", vol, compression="zlib", tile=(16, 16))
    with open_volume(tmp_path / "c.tif") as v:
        assert not isinstance(v._array, np.ndarray)
        assert v.chunks is not None
        _assert_volume(v, vol)


def test_16bit_tiff_stack(tmp_path: Path) -> None:
    arr = (np.arange(3 * 4 * 5).reshape(3, 4, 5) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v16.tif", arr, photometric="minisblack")
    with open_volume(tmp_path / "v16.tif") as v:
        _assert_volume(v, arr)


def test_truncated_tiff_stack_names_the_file(tmp_path: Path, vol: np.ndarray) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, vol, compression="zlib")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cut\.tif"), open_volume(path) as v:
        for z in range(len(v)):
            v[z]


def test_folder_of_slices_sorted_by_number_not_text(tmp_path: Path, vol: np.ndarray) -> None:
    for z in range(len(vol)):  # names z0, z1, z2, z3, z4 shuffled into text order 'z10'-like traps
        save_grey(tmp_path / "slices" / f"z{z * 5}.png", vol[z])  # z0, z5, z10, z15, z20
    v = open_volume(tmp_path / "slices")
    assert isinstance(v, FolderVolume)
    assert [p.name for p in v.files] == ["z0.png", "z5.png", "z10.png", "z15.png", "z20.png"]
    _assert_volume(v, vol)


def test_folder_with_mismatched_slice_sizes(tmp_path: Path, vol: np.ndarray) -> None:
    save_grey(tmp_path / "s" / "0.png", vol[0])
    save_grey(tmp_path / "s" / "1.png", vol[1][:5])
    v = open_volume(tmp_path / "s")
    with pytest.raises(DataError, match=r"1\.png: is 5 x 16 uint8, but the first slice .* all slices must match"):
        v[1]


def test_folder_with_duplicate_or_unnumbered_slices(tmp_path: Path, vol: np.ndarray) -> None:
    save_grey(tmp_path / "d" / "s1.png", vol[0])
    save_grey(tmp_path / "d" / "s01.png", vol[1])
    with pytest.raises(DataError, match=r"slice numbers occur more than once, e\.g\. 1: s01\.png, s1\.png"):
        open_volume(tmp_path / "d")
    save_grey(tmp_path / "u" / "first.png", vol[0])
    with pytest.raises(DataError, match=r"these have no number: first\.png"):
        open_volume(tmp_path / "u")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: holds no image slices"):
        open_volume(tmp_path / "empty")


def test_zarr_array_and_group_key(tmp_path: Path, vol: np.ndarray) -> None:
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=vol.shape, dtype=vol.dtype, chunks=(1, 6, 8))
    arr[:] = vol
    with open_volume(tmp_path / "a.zarr") as v:
        assert v.chunks == (1, 6, 8)
        _assert_volume(v, vol)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("em/raw", shape=vol.shape, dtype=vol.dtype, chunks=(1, 12, 16))[:] = vol
    g.create_array("em/other", shape=(2, 2), dtype="uint8")
    with open_volume(f"{tmp_path / 'g.zarr'}:em/raw") as v:
        _assert_volume(v, vol)
    with pytest.raises(DataError, match=r"g\.zarr: is a zarr group with 0 arrays .* name one as STORE\.zarr:ARRAY"):
        open_volume(tmp_path / "g.zarr")
    with pytest.raises(DataError, match=r"no array 'em/missing'"):
        open_volume(f"{tmp_path / 'g.zarr'}:em/missing")


def test_ome_zarr_opens_first_multiscale_level(tmp_path: Path, vol: np.ndarray) -> None:
    g = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    full = vol[None, None]  # t, c, z, y, x
    g.create_array("0", shape=full.shape, dtype=vol.dtype, chunks=(1, 1, 1, 12, 16))[:] = full
    g.create_array("1", shape=(1, 1, 5, 6, 8), dtype=vol.dtype)[:] = full[..., ::2, ::2]
    axes = [{"name": n, "type": t} for n, t in zip("tczyx", ["time", "channel", "space", "space", "space"])]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}, {"path": "1"}]}]
    with open_volume(tmp_path / "img.ome.zarr") as v:
        assert v.shape == vol.shape
        _assert_volume(v, vol)


def test_h5_dataset(tmp_path: Path, vol: np.ndarray) -> None:
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("volumes/raw", data=vol, chunks=(1, 12, 16))
        f.create_dataset("volumes/labels", data=vol > 100)
    with open_volume(f"{tmp_path / 'v.h5'}:volumes/raw") as v:
        assert v.chunks == (1, 12, 16)
        _assert_volume(v, vol)
    with pytest.raises(DataError, match=r"v\.h5: holds 2 datasets \(.*\); name one as FILE\.h5:DATASET"):
        open_volume(tmp_path / "v.h5")
    with pytest.raises(DataError, match=r"pixel type bool is not supported"):
        open_volume(f"{tmp_path / 'v.h5'}:volumes/labels")
    with pytest.raises(DataError, match=r"no dataset 'nope'"):
        open_volume(f"{tmp_path / 'v.h5'}:nope")


def test_h5_single_dataset_needs_no_key(tmp_path: Path, vol: np.ndarray) -> None:
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f.create_dataset("data", data=vol)
    with open_volume(tmp_path / "one.h5") as v:
        _assert_volume(v, vol)


def test_corrupt_h5_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"bad\.h5:raw: cannot be opened as a volume, the file is corrupt or truncated"):
        open_volume(f"{tmp_path / 'bad.h5'}:raw")


def test_volume_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does-not-exist\.tif: no such file or folder"):
        open_volume(tmp_path / "does-not-exist.tif")
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(DataError, match=r"unknown volume type '\.bin'"):
        open_volume(tmp_path / "x.bin")


def test_single_2d_image_is_a_one_slice_volume(tmp_path: Path, grey: np.ndarray) -> None:
    save_grey(tmp_path / "one.png", grey)
    v = open_volume(tmp_path / "one.png")
    assert v.shape == (1, 9, 13)
    np.testing.assert_array_equal(v[0], grey)
