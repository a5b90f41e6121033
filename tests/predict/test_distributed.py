"""The dask path: same masks as the sequential runner, any in-process scheduler, resumable by block."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.predict import PredictSettings, predict_dask_array, predict_volume, predict_volume_dask
from tests.predict.helpers import PixelBackbone, read_any, read_output, synthetic_volume, write_input


@pytest.fixture
def vol7():
    return synthetic_volume(n=7)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_dask_matches_sequential(tmp_path, pixel_run, vol7, scheduler):
    spec = write_input("zarr", vol7, tmp_path)
    predict_volume(pixel_run, spec, tmp_path / "seq.zarr", probabilities=tmp_path / "pseq.zarr",
                   backbone=PixelBackbone(), progress=False)
    result = predict_volume_dask(pixel_run, spec, tmp_path / "dask.ome.zarr", probabilities=tmp_path / "pd.zarr",
                                 block_slices=3, scheduler=scheduler, num_workers=2, backbone=PixelBackbone(),
                                 progress=False)
    assert result["complete"] and result["computed_slices"] == list(range(7))
    np.testing.assert_array_equal(read_output(tmp_path / "dask.ome.zarr"), read_output(tmp_path / "seq.zarr"))
    np.testing.assert_array_equal(read_any(tmp_path / "pd.zarr"), read_any(tmp_path / "pseq.zarr"))


def test_dask_loads_the_run_itself_in_workers(tmp_path, vit_run, vol7):
    """Without a backbone object, each process loads the run's backbone from the checkpoint's record."""
    from emfm.predict.distributed import clear_model_cache

    spec = write_input("h5", vol7, tmp_path)
    clear_model_cache()
    predict_volume(vit_run, spec, tmp_path / "seq.zarr", progress=False)
    predict_volume_dask(vit_run, spec, tmp_path / "d.zarr", block_slices=4, scheduler="synchronous", progress=False)
    np.testing.assert_array_equal(read_output(tmp_path / "d.zarr"), read_output(tmp_path / "seq.zarr"))
    clear_model_cache()


@pytest.mark.parametrize("pdtype", ["uint8", "float16"])
def test_dask_resumes_a_partial_sequential_output(tmp_path, pixel_run, vol7, pdtype):
    spec = write_input("tif", vol7, tmp_path)
    out, prob = tmp_path / "o.tif", tmp_path / "p.zarr"
    settings = PredictSettings(probability_dtype=pdtype)
    kw = dict(probabilities=prob, progress=False)
    predict_volume(pixel_run, spec, out, settings, max_slices=3, backbone=PixelBackbone(), **kw)
    bb = PixelBackbone()
    result = predict_volume_dask(pixel_run, spec, out, settings, block_slices=2, scheduler="synchronous", backbone=bb,
                                 **kw)
    # Slices 0-2 are done: block [0, 2) is skipped; block [2, 4) is stored whole, with slice 2 read
    # back from the output and only slice 3 predicted.
    assert result["computed_slices"] == [3, 4, 5, 6] and bb.images_seen == 4 and result["skipped"] == 3
    predict_volume(pixel_run, spec, tmp_path / "ref.tif", settings, backbone=PixelBackbone(),
                   **{**kw, "probabilities": tmp_path / "pref.zarr"})
    np.testing.assert_array_equal(read_any(out), read_any(tmp_path / "ref.tif"))
    np.testing.assert_array_equal(read_any(prob), read_any(tmp_path / "pref.zarr"))


class _FailingBackbone(PixelBackbone):
    """Breaks down after a number of slices, like a job killed mid-way."""

    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after = fail_after

    def encode(self, pixels, layers=None):
        if self.images_seen + pixels.shape[0] > self.fail_after:
            raise RuntimeError("simulated crash")
        return super().encode(pixels, layers)


def test_interrupted_dask_run_resumes_with_the_missing_blocks_only(tmp_path, pixel_run, vol7):
    spec = write_input("zarr", vol7, tmp_path)
    out = tmp_path / "o.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_volume_dask(pixel_run, spec, out, PredictSettings(batch_size=2), block_slices=2,
                            scheduler="synchronous", backbone=_FailingBackbone(fail_after=4), progress=False)
    from emfm.predict.volume_io import DoneFlags

    done = DoneFlags(out).read()
    # dask picks the block order; the blocks that finished before the crash are flagged, whole.
    assert 0 < done.sum() < 7 and done.sum() <= 4
    missing = np.flatnonzero(~done).tolist()
    bb = PixelBackbone()
    result = predict_volume_dask(pixel_run, spec, out, PredictSettings(batch_size=2), block_slices=2,
                                 scheduler="synchronous", backbone=bb, progress=False)
    assert result["resumed"] and result["computed_slices"] == missing and bb.images_seen == len(missing)
    predict_volume(pixel_run, spec, tmp_path / "ref.zarr", backbone=PixelBackbone(), progress=False)
    np.testing.assert_array_equal(read_output(out), read_output(tmp_path / "ref.zarr"))


def test_lazy_array_writes_with_to_zarr(tmp_path, pixel_run, vol7):
    spec = write_input("zarr", vol7, tmp_path)
    arr = predict_dask_array(pixel_run, spec, block_slices=3, backbone=PixelBackbone())
    assert arr.shape == vol7.shape and arr.dtype == np.uint8 and arr.chunks[0] == (3, 3, 1)
    import dask

    with dask.config.set(scheduler="threads"):
        arr.to_zarr(str(tmp_path / "lazy.zarr"))
    predict_volume(pixel_run, spec, tmp_path / "ref.zarr", backbone=PixelBackbone(), progress=False)
    np.testing.assert_array_equal(read_any(tmp_path / "lazy.zarr"), read_output(tmp_path / "ref.zarr"))
