"""emfm.napari.tasks: the generators the widget's worker runs, driven here without Qt."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.napari.tasks import Comparison, Failure, Progress, Segmentation, compare, run_name, segment
from emfm.predict import PredictSettings, predict_array

SETTINGS = PredictSettings(device="cpu", batch_size=2)


def drive(steps):
    """All that a task yields, and what it returns."""
    yielded = []
    while True:
        try:
            yielded.append(next(steps))
        except StopIteration as stop:
            return yielded, stop.value


def test_segment_reports_progress_per_batch_and_returns_predict_arrays_masks(run_a, stack):
    yielded, seg = drive(segment(run_a, stack, (1, 6), SETTINGS))
    assert all(isinstance(p, Progress) for p in yielded)
    assert [p.done for p in yielded] == [0, 0, 2, 4, 5] and {p.total for p in yielded} == {5}
    assert isinstance(seg, Segmentation) and seg.name == "run_a" and seg.start == 1
    masks, p = predict_array(run_a, stack, SETTINGS, slices=(1, 6), probability=True)
    np.testing.assert_array_equal(seg.masks, masks)
    np.testing.assert_array_equal(seg.probability, p)


def test_compare_counts_both_runs_and_finds_where_they_differ(run_a, run_b, stack):
    yielded, out = drive(compare(run_a, run_b, stack[0], None, SETTINGS))
    assert yielded[-1].done == yielded[-1].total == 2
    assert isinstance(out, Comparison) and out.a.masks.shape == stack.shape[1:]
    a, _ = predict_array(run_a, stack[0], SETTINGS)
    b, _ = predict_array(run_b, stack[0], SETTINGS)
    assert out.fraction == pytest.approx(float(np.mean(a != b)))
    _, same = drive(compare(run_a, run_a, stack[0], None, SETTINGS))
    assert same.fraction == 0.0 and not same.disagreement.any()


def test_user_errors_are_returned_as_one_line_failures(tmp_path, run_a, stack):
    _, out = drive(segment(tmp_path, stack))
    assert isinstance(out, Failure) and "has no checkpoint.safetensors" in out.message
    _, out = drive(segment(run_a, stack.astype(np.float32), image_name="EM"))
    assert isinstance(out, Failure) and out.message.startswith("layer 'EM': pixel type float32")
    _, out = drive(segment(run_a, stack, (4, 2)))
    assert isinstance(out, Failure) and "first slice 4 comes after the last 1" in out.message


def test_run_name_is_the_folder_or_the_model_files_stem(tmp_path):
    (tmp_path / "mito.onnx").write_bytes(b"")
    assert run_name(tmp_path / "dinov2_lora") == "dinov2_lora"
    assert run_name(tmp_path / "mito.onnx") == "mito"
