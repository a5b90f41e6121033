"""Output stores: formats by extension, OME-Zarr metadata, TIFF via a sidecar, resume records, refusals."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import numpy as np
import pytest

from emfm.errors import ConfigError
from emfm.predict.errors import DiskSpaceError, OutputExistsError
from emfm.predict.volume_io import PredictionOutputs, output_kind
from tests.predict.helpers import read_any, read_output

SHAPE = (4, 20, 30)
JOB = {"run": "/r", "checkpoint_sha256": "abc", "input": "/in.tif", "mode": "resize"}


@pytest.mark.parametrize(
    "name,kind", [("a.zarr", "zarr"), ("a.ome.zarr", "ome-zarr"), ("A.OME.ZARR", "ome-zarr"), ("a.tif", "tif"),
                  ("a.tiff", "tif"), ("a.zarr/", "zarr")],
)
def test_output_kind_by_extension(name, kind):
    assert output_kind(name) == kind


@pytest.mark.parametrize("name", ["masks.npy", "masks.h5", "masks"])
def test_unknown_output_extension(name):
    with pytest.raises(ConfigError, match=r"unknown output extension .* name the output .zarr, .ome.zarr, .tif or"):
        output_kind(name)


def _fill(out: PredictionOutputs, zs, with_p=False):
    for z in zs:
        m = np.full(SHAPE[1:], z % 2, np.uint8)
        out.write(z, m, np.full(SHAPE[1:], z / 10, np.float16) if with_p else None)
        out.mark_done(z)


@pytest.mark.parametrize("ext", [".zarr", ".ome.zarr", ".tif"])
def test_write_all_formats_and_read_back(tmp_path, ext):
    mask_path, prob_path = tmp_path / f"m{ext}", tmp_path / f"p{ext}"
    out = PredictionOutputs(mask_path, SHAPE, JOB, probability=prob_path, probability_dtype="float16")
    assert not out.inspect().any()
    out.open()
    _fill(out, range(SHAPE[0]), with_p=True)
    assert out.done().all()
    out.finish()
    masks = read_output(mask_path)
    assert masks.shape == SHAPE and masks.dtype == np.uint8
    assert [int(m[0, 0]) for m in masks] == [0, 1, 0, 1]
    probs = read_any(prob_path)
    assert probs.dtype == np.float16 and probs.shape == SHAPE
    np.testing.assert_allclose(probs[:, 0, 0], np.array([0, 0.1, 0.2, 0.3], np.float16))
    assert not (tmp_path / f"m{ext}.partial.zarr").exists()
    assert not (mask_path / ".emfm_done").exists()


def test_ome_zarr_has_ngff_multiscales_with_input_pixel_sizes(tmp_path):
    scale = {"scale": [50.0, 5.0, 5.0], "units": ["nanometer"] * 3}
    out = PredictionOutputs(tmp_path / "m.ome.zarr", SHAPE, JOB, ome_scale=scale)
    out.inspect()
    out.open()
    _fill(out, range(SHAPE[0]))
    out.finish()
    meta = json.loads((tmp_path / "m.ome.zarr" / "zarr.json").read_text())
    assert meta["node_type"] == "group" and meta["zarr_format"] == 3
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "nanometer" for a in ms["axes"])
    (level,) = ms["datasets"]
    assert level["path"] == "0"
    assert level["coordinateTransformations"] == [{"type": "scale", "scale": [50.0, 5.0, 5.0]}]
    assert meta["attributes"]["emfm_predict"]["complete"] is True
    assert (tmp_path / "m.ome.zarr" / "0" / "zarr.json").is_file()


def test_tif_is_written_from_a_partial_sidecar(tmp_path):
    out = PredictionOutputs(tmp_path / "m.tif", SHAPE, JOB)
    out.inspect()
    out.open()
    _fill(out, [0, 1])
    assert (tmp_path / "m.tif.partial.zarr").is_dir() and not (tmp_path / "m.tif").exists()
    resumed = PredictionOutputs(tmp_path / "m.tif", SHAPE, JOB)
    assert resumed.inspect().tolist() == [True, True, False, False] and resumed.resumed
    resumed.open()
    _fill(resumed, [2, 3])
    resumed.finish()
    import tifffile

    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.series[0].shape == SHAPE and tif.series[0].axes == "ZYX"
    assert not (tmp_path / "m.tif.partial.zarr").exists()


def test_existing_outputs_are_refused_unless_same_partial_job(tmp_path):
    path = tmp_path / "m.zarr"
    out = PredictionOutputs(path, SHAPE, JOB)
    out.inspect()
    out.open()
    _fill(out, [1])
    assert PredictionOutputs(path, SHAPE, JOB).inspect().tolist() == [False, True, False, False]
    other = {**JOB, "mode": "tile"}
    with pytest.raises(OutputExistsError, match=r"partial prediction of another job \(mode: 'resize' != 'tile'\)"):
        PredictionOutputs(path, SHAPE, other).inspect()
    _fill(out, [0, 2, 3])
    out.finish()
    with pytest.raises(OutputExistsError, match="already holds a complete prediction; pass --overwrite"):
        PredictionOutputs(path, SHAPE, JOB).inspect()
    again = PredictionOutputs(path, SHAPE, other)
    assert not again.inspect(overwrite=True).any()
    again.open(overwrite=True)
    assert again.mask.read_record()["job"]["mode"] == "tile"


def test_foreign_outputs_are_refused(tmp_path):
    (tmp_path / "m.tif").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match=r"m.tif already exists; pass --overwrite to replace it"):
        PredictionOutputs(tmp_path / "m.tif", SHAPE, JOB).inspect()
    import zarr

    zarr.create_array(str(tmp_path / "other.zarr"), shape=(2,), dtype="uint8")
    with pytest.raises(OutputExistsError, match="already exists and is not an emfm prediction"):
        PredictionOutputs(tmp_path / "other.zarr", SHAPE, JOB).inspect()
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="is a folder but not a zarr store; refusing to delete it"):
        PredictionOutputs(tmp_path / "plain.zarr", SHAPE, JOB).inspect(overwrite=True)
    assert (tmp_path / "plain.zarr" / "keep.txt").exists()


def test_partial_output_missing_its_probability_store_is_refused(tmp_path):
    out = PredictionOutputs(tmp_path / "m.zarr", SHAPE, JOB, probability=tmp_path / "p.zarr")
    out.inspect()
    out.open()
    _fill(out, [0], with_p=True)
    shutil.rmtree(tmp_path / "p.zarr")
    with pytest.raises(OutputExistsError, match="p.zarr is missing, so it cannot be resumed"):
        PredictionOutputs(tmp_path / "m.zarr", SHAPE, JOB, probability=tmp_path / "p.zarr").inspect()


def test_not_enough_disk(tmp_path, monkeypatch):
    from emfm.predict.volume_io import check_disk_space

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    out = PredictionOutputs(tmp_path / "m.tif", SHAPE, JOB)
    with pytest.raises(DiskSpaceError, match=r"not enough disk space for the output at .*: it may need 0.00 GB"):
        check_disk_space(out.targets, SHAPE, SHAPE[0])
    assert check_disk_space(out.targets, SHAPE, 0) == 0
