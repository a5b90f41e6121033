"""A prediction resumes only onto the input it started on: a rewrite with the same shape is refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from emfm.predict.errors import OutputExistsError
from emfm.predict.fingerprint import input_fingerprint
from tests.predict.helpers import PixelBackbone


def _volume(path, seed):
    rng = np.random.default_rng(seed)
    tifffile.imwrite(path, rng.integers(0, 255, (4, 24, 32), dtype=np.uint8), photometric="minisblack")


def test_the_fingerprint_follows_the_bytes_not_the_path(tmp_path):
    _volume(tmp_path / "v.tif", 0)
    first = input_fingerprint(str(tmp_path / "v.tif"))
    assert first == input_fingerprint(str(tmp_path / "v.tif"))
    st = os.stat(tmp_path / "v.tif")
    _volume(tmp_path / "v.tif", 1)  # same size and shape, other pixels
    os.utime(tmp_path / "v.tif", ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old time
    assert input_fingerprint(str(tmp_path / "v.tif"))["sample_sha256"] != first["sample_sha256"]
    (tmp_path / "folder").mkdir()
    for i in range(3):
        tifffile.imwrite(tmp_path / "folder" / f"s{i}.tif", np.full((8, 8), i, np.uint8))
    assert input_fingerprint(str(tmp_path / "folder"))["files"] == 3


def test_a_partial_prediction_refuses_a_rewritten_input(pixel_run, tmp_path):
    from emfm.predict.runner import predict_volume

    _volume(tmp_path / "v.tif", 0)
    out = tmp_path / "m.zarr"
    predict_volume(pixel_run, tmp_path / "v.tif", out, max_slices=2, backbone=PixelBackbone(), progress=False)
    _volume(tmp_path / "v.tif", 1)
    with pytest.raises(OutputExistsError, match="input_fingerprint"):
        predict_volume(pixel_run, tmp_path / "v.tif", out, backbone=PixelBackbone(), progress=False)
