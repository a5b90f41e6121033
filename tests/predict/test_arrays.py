"""emfm.predict.arrays: an array in memory gets the masks ``emfm predict`` writes for the same array on disk."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.errors import ConfigError, DataError, RunDirError
from emfm.predict import PredictSettings, predict_array, predict_volume
from tests.predict.helpers import read_any, read_output, write_input


def _predicted_from_file(run, vol, tmp_path, backbone, settings):
    spec = write_input("tif", vol, tmp_path)
    out, prob = tmp_path / "mask.zarr", tmp_path / "p.zarr"
    predict_volume(run, spec, out, settings, probabilities=prob, progress=False, backbone=backbone)
    return read_output(out), read_any(prob)


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_an_array_gets_the_masks_and_probabilities_predict_volume_writes(pixel_run, volume, tmp_path, mode):
    from tests.predict.helpers import PixelBackbone

    settings = PredictSettings(mode=mode, tile=16, halo=2, scale=1.0, batch_size=2, device="cpu")
    want_masks, want_p = _predicted_from_file(pixel_run, volume, tmp_path, PixelBackbone(), settings)
    masks, p = predict_array(pixel_run, volume, settings, probability=True, backbone=PixelBackbone())
    assert masks.dtype == np.uint8 and p.dtype == np.float16
    np.testing.assert_array_equal(masks, want_masks)
    np.testing.assert_array_equal(p, want_p)
    assert 0 < masks.mean() < 1  # the model finds some foreground and some background


def test_a_slice_range_and_a_2d_array(pixel_run, volume, backbone):
    settings = PredictSettings(device="cpu", batch_size=1)
    whole, _ = predict_array(pixel_run, volume, settings, backbone=backbone)
    part, none = predict_array(pixel_run, volume, settings, slices=(1, 3), backbone=backbone)
    assert none is None and part.shape == (2, *volume.shape[1:])
    np.testing.assert_array_equal(part, whole[1:3])
    one, _ = predict_array(pixel_run, volume[2], settings, backbone=backbone)
    assert one.shape == volume.shape[1:]
    np.testing.assert_array_equal(one, whole[2])


def test_bad_arrays_runs_and_ranges_are_one_line_errors(pixel_run, volume, backbone, tmp_path):
    with pytest.raises(DataError, match="pixel type float32 is not supported"):
        predict_array(pixel_run, volume.astype(np.float32), backbone=backbone)
    with pytest.raises(ConfigError, match="not within the stack's 0 to 4"):
        predict_array(pixel_run, volume, slices=(3, 9), backbone=backbone)
    with pytest.raises(RunDirError, match="has no checkpoint"):
        predict_array(tmp_path, volume)


def test_a_runs_input_standardisation_takes_the_whole_arrays_statistics(tmp_path, volume):
    """A slice range is standardised with the statistics of the whole array, as emfm predict's volume is."""
    from dataclasses import replace

    from emfm.align import create_alignment
    from emfm.models.checkpoint import CHECKPOINT_NAME, load_checkpoint, read_info, save_checkpoint
    from emfm.models.segmenter import Segmenter
    from tests.predict.helpers import PixelBackbone, make_pixel_run, synthetic_volume

    run = make_pixel_run(tmp_path / "matched", resolution=32)
    method = create_alignment("histogram-match")
    state = method.fit_inputs({"bright": list(synthetic_volume(n=6, seed=5))})
    segmenter, _ = load_checkpoint(run / CHECKPOINT_NAME, backbone=PixelBackbone())
    info = replace(read_info(run / CHECKPOINT_NAME), align="histogram-match", align_settings=method.settings_dict(),
                   align_state=state)
    save_checkpoint(run / CHECKPOINT_NAME, Segmenter(segmenter.head), info)
    dark = (synthetic_volume(n=8).astype(float) * 0.35).astype(np.uint8)
    settings = PredictSettings(device="cpu", batch_size=1)
    want, _ = _predicted_from_file(run, dark, tmp_path, PixelBackbone(), settings)
    part, _ = predict_array(run, dark, settings, slices=(5, 8), backbone=PixelBackbone())
    np.testing.assert_array_equal(part, want[5:8])
    alone, _ = predict_array(run, dark[5:8], settings, backbone=PixelBackbone())
    assert not np.array_equal(alone, part)  # those slices' own statistics would give other masks
    raw, _ = predict_array(make_pixel_run(tmp_path / "raw", resolution=32), dark, settings, backbone=PixelBackbone())
    assert not np.array_equal(want, raw)  # the standardisation changed the masks
