"""A run with an input-side alignment predicts a long, lazily read volume on its standardised slices, with the
volume's statistics from the same evenly spaced sample that evaluation takes, whichever slices a job computes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from emfm.align import create_alignment
from emfm.align.inputs import volume_sample
from emfm.models.checkpoint import CHECKPOINT_NAME, read_info, save_checkpoint
from emfm.models.segmenter import Segmenter
from emfm.predict import PredictSettings, predict_volume, predict_volume_dask
from emfm.predict.standardise import VolumeStandardisation
from tests.predict.helpers import (
    PixelBackbone,
    make_pixel_run,
    read_output,
    reference_masks,
    synthetic_volume,
    write_input,
)


def dark_volume(n: int = 40) -> np.ndarray:
    """Longer than the 32-slice sample, and dark: the pixel model (foreground = bright) finds little in it raw."""
    return (synthetic_volume(n=n).astype(float) * 0.35).astype(np.uint8)


@pytest.fixture
def matched_run(tmp_path):
    """The pixel-wise run, re-saved as if trained with histogram-match onto a bright reference."""
    run = make_pixel_run(tmp_path / "matched", resolution=32)
    info = read_info(run / CHECKPOINT_NAME)
    method = create_alignment("histogram-match")
    state = method.fit_inputs({"bright": list(synthetic_volume(n=6, seed=5))})
    from emfm.models.checkpoint import load_checkpoint

    segmenter, _ = load_checkpoint(run / CHECKPOINT_NAME, backbone=PixelBackbone())
    info = replace(info, align="histogram-match", align_settings=method.settings_dict(), align_state=state)
    save_checkpoint(run / CHECKPOINT_NAME, Segmenter(segmenter.head), info)
    return run, method, state


@pytest.mark.parametrize("kind", ["zarr", "tif"])
def test_prediction_standardises_the_volume_as_evaluation_does(tmp_path, matched_run, kind):
    run, method, state = matched_run
    vol = dark_volume()
    spec = write_input(kind, vol, tmp_path)
    standardised = np.stack(method.standardise(list(vol), state))  # what evaluation would score
    expected, _ = reference_masks(run, standardised)
    raw, _ = reference_masks(run, vol)
    assert expected.mean() > raw.mean() + 0.05  # the standardisation matters to the masks
    out = tmp_path / "pred.zarr"
    predict_volume(run, spec, out, PredictSettings(batch_size=3, device="cpu"), backbone=PixelBackbone(),
                   progress=False)
    np.testing.assert_array_equal(read_output(out), expected)
    dask_out = tmp_path / "dask.zarr"
    predict_volume_dask(run, spec, dask_out, PredictSettings(device="cpu"), block_slices=7, scheduler="synchronous",
                        backbone=PixelBackbone(), progress=False)
    np.testing.assert_array_equal(read_output(dask_out), expected)


def test_a_resumed_job_uses_the_whole_volumes_statistics(tmp_path, matched_run):
    run, method, state = matched_run
    vol = dark_volume()
    spec = write_input("tif", vol, tmp_path)
    expected, _ = reference_masks(run, np.stack(method.standardise(list(vol), state)))
    out = tmp_path / "pred.tif"
    settings = PredictSettings(batch_size=4, device="cpu")
    predict_volume(run, spec, out, settings, max_slices=5, backbone=PixelBackbone(), progress=False)
    predict_volume(run, spec, out, settings, backbone=PixelBackbone(), progress=False)
    np.testing.assert_array_equal(read_output(out), expected)


def test_the_plan_holds_the_samples_statistics_and_nothing_for_a_plain_run(tmp_path, matched_run, pixel_run):
    run, method, state = matched_run
    vol = dark_volume()
    spec = write_input("zarr", vol, tmp_path)
    plan = VolumeStandardisation.plan(read_info(run / CHECKPOINT_NAME), spec)
    assert plan.stats == method.volume_stats(volume_sample(list(vol))) and plan.state == state
    assert VolumeStandardisation(**plan.to_dict()) == plan  # plain data: a dask block carries it
    assert VolumeStandardisation.plan(read_info(pixel_run / CHECKPOINT_NAME), spec) is None
