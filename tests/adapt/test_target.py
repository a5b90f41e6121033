"""``--target``: volumes through emfm's readers, folders of images with or without masks (never read), dataset
names (training-split images only); a target is images only, and one that is not there is one clear error."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from emfm.adapt.target import load_target, spread
from emfm.errors import DataError
from tests.adapt.helpers import target_images


@pytest.mark.parametrize("kind", ["tif", "zarr", "h5", "slices"])
def test_volumes_are_read_as_predict_reads_them(kind, target_dir, tmp_path):
    volume = target_images(target_dir)
    if kind == "tif":
        spec = str(tmp_path / "v.tif")
        tifffile.imwrite(spec, volume, photometric="minisblack")
    elif kind == "zarr":
        spec = str(tmp_path / "v.zarr")
        zarr.create_array(spec, shape=volume.shape, dtype=volume.dtype)[:] = volume
    elif kind == "h5":
        with h5py.File(tmp_path / "v.h5", "w") as fh:
            fh["raw"] = volume
        spec = f"{tmp_path / 'v.h5'}:raw"
    else:
        spec = str(target_dir / "images")
    target = load_target(spec)
    assert target.kind == "volume" and len(target) == 4
    np.testing.assert_array_equal(np.stack(target.images), volume)
    record = target.record()
    assert record["fingerprint"]["files"] >= 1 and len(record["slices_sha256"]) == 64


def test_a_folder_needs_images_not_masks(target_dir):
    with_masks = load_target(f"folder:{target_dir}")
    shutil.rmtree(target_dir / "masks")
    without = load_target(f"folder:{target_dir}")
    assert with_masks.kind == "folder" and with_masks.ids == ["slice_000", "slice_001", "slice_002", "slice_003"]
    assert with_masks.record() == without.record()  # masks are not part of a target, not even of its fingerprint
    assert all(m.size == 0 for m in without.stack().masks)  # the feature cache's stack carries no labels
    shutil.rmtree(target_dir / "images")
    with pytest.raises(DataError, match="has no images/ folder; put the target's slices in"):
        load_target(f"folder:{target_dir}")


@pytest.mark.parametrize("spec,message", [
    ("/nonexistent/volume.tif", "no such file or folder, and no dataset of that name"),
    ("folder:/nonexistent/place", "does not exist; put the target's slices in"),
    ("lucchi", "no such file or folder, and no dataset of that name"),
])
def test_a_target_that_is_not_there_is_one_error(spec, message):
    with pytest.raises(DataError, match=message):
        load_target(spec)


def test_max_slices_spreads_through_the_target(target_dir):
    assert spread(10, 3) == [0, 4, 9] and spread(3, 5) == [0, 1, 2]
    target = load_target(f"folder:{target_dir}", max_slices=2)
    assert target.ids == ["slice_000", "slice_003"]
    with pytest.raises(DataError, match="--max-slices must be a positive"):
        load_target(f"folder:{target_dir}", max_slices=0)


def test_a_dataset_name_reads_its_training_images(shared_dir):
    target = load_target("lucchi_pp", data_root=shared_dir / "data", max_slices=2)
    assert target.kind == "dataset" and len(target) == 2 and target.images[0].ndim == 2
    assert "training-split images of lucchi_pp" in target.description
