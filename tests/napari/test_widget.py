"""The dock widget, driven as a user would: choose a run and a layer, press Run (or Compare), wait."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from emfm.napari.compare import disagreement  # noqa: E402
from tests.napari.helpers import predicted_by_cli_path, run_task  # noqa: E402


@pytest.fixture
def widget(viewer, qtbot):
    from emfm.napari.widget import EmfmWidget

    w = EmfmWidget(viewer)
    qtbot.addWidget(w)
    return w


def _choose(tab, viewer, run, image, name="EM", **layer_kwargs):
    layer = viewer.add_image(image, name=name, **layer_kwargs)
    tab.model.set_path(run)
    tab.image.reset_choices()
    tab.image.value = layer
    tab.settings.device.value = "cpu"
    return layer


def _names(viewer):
    return [layer.name for layer in viewer.layers]


def test_a_2d_layer_gets_the_mask_and_probability_emfm_predict_writes(widget, viewer, qtbot, run_a, stack, tmp_path):
    tab = widget.segment_tab
    _choose(tab, viewer, run_a, stack[0])
    assert not tab.slices.whole.enabled  # a 2-D image is one slice
    run_task(qtbot, tab)
    assert _names(viewer) == ["EM", "run_a probability", "run_a mask"], tab.task.message.value
    want_mask, want_p = predicted_by_cli_path(run_a, stack[0], tmp_path / "cli")
    mask, prob = viewer.layers["run_a mask"], viewer.layers["run_a probability"]
    assert type(mask).__name__ == "Labels" and type(prob).__name__ == "Image"
    np.testing.assert_array_equal(mask.data, want_mask)
    np.testing.assert_array_equal(prob.data, want_p)
    assert "added 'run_a mask'" in tab.task.message.value and tab.task.progress.value == tab.task.progress.max


def test_a_3d_stack_whole_and_a_slice_range(widget, viewer, qtbot, run_a, stack, tmp_path):
    tab = widget.segment_tab
    _choose(tab, viewer, run_a, stack, scale=(50.0, 5.0, 5.0), translate=(100.0, 0.0, 0.0))
    assert tab.slices.last.max == 5
    run_task(qtbot, tab)
    want_mask, _ = predicted_by_cli_path(run_a, stack, tmp_path / "whole")
    np.testing.assert_array_equal(viewer.layers["run_a mask"].data, want_mask)

    tab.settings.batch_size.value = 1  # batches then match emfm predict's over the whole stack exactly
    tab.slices.whole.value = False
    tab.slices.first.value, tab.slices.last.value = 2, 4
    run_task(qtbot, tab)
    part = viewer.layers[-1]
    assert part.data.shape == (3, *stack.shape[1:])
    want_mask, _ = predicted_by_cli_path(run_a, stack, tmp_path / "b1", batch_size=1)
    np.testing.assert_array_equal(part.data, want_mask[2:5])
    np.testing.assert_allclose(part.translate, (100.0 + 2 * 50.0, 0.0, 0.0))  # over slices 2-4 of the image
    np.testing.assert_allclose(part.scale, (50.0, 5.0, 5.0))


def test_cancel_stops_the_worker_between_batches_and_adds_nothing(widget, viewer, qtbot, run_a, stack, monkeypatch):
    from emfm.napari import tasks

    gate = threading.Event()  # holds the first batch until Cancel has been pressed
    real_load = tasks.load_model

    def gated_load(*args, **kwargs):
        predictor = real_load(*args, **kwargs)
        real_predict = predictor.predict
        predictor.predict = lambda *a, **k: (gate.wait(30), real_predict(*a, **k))[1]
        return predictor

    monkeypatch.setattr(tasks, "load_model", gated_load)
    tab = widget.segment_tab
    _choose(tab, viewer, run_a, stack)
    tab.settings.batch_size.value = 1
    aborted = []
    tab.task.run_button.native.click()
    tab.task.worker.aborted.connect(lambda: aborted.append(True))
    qtbot.waitUntil(lambda: "0 of 6 slices" in tab.task.message.value, timeout=30_000)
    tab.task.cancel_button.native.click()
    gate.set()
    qtbot.waitUntil(lambda: tab.task.run_button.enabled, timeout=30_000)
    assert aborted == [True]
    assert _names(viewer) == ["EM"]
    assert tab.task.message.value == "cancelled; nothing was added"
    assert tab.task.progress.value < tab.task.progress.max


def _last_error():
    from napari.utils.notifications import notification_manager

    return notification_manager.records[-1].message if notification_manager.records else ""


@pytest.mark.parametrize("problem", ["no checkpoint", "backbone gone"])
def test_a_run_that_cannot_load_says_why_in_one_line_and_adds_nothing(
    widget, viewer, qtbot, tmp_path, tiny_backbone_dir, stack, problem
):
    from tests.predict.helpers import make_vit_run

    if problem == "no checkpoint":
        run, expected = tmp_path / "unfinished", "has no checkpoint.safetensors"
        run.mkdir()
    else:
        backbone = shutil.copytree(tiny_backbone_dir, tmp_path / "moved_backbone")
        run, expected = make_vit_run(tmp_path / "orphan", backbone), "if those weights have moved"
        shutil.rmtree(backbone)
    tab = widget.segment_tab
    _choose(tab, viewer, run, stack[0])
    run_task(qtbot, tab)
    assert expected in tab.task.message.value
    assert "\n" not in tab.task.message.value and "Traceback" not in tab.task.message.value
    assert expected in _last_error()
    assert _names(viewer) == ["EM"]


def test_bad_input_is_refused_before_any_work(widget, viewer, qtbot, run_a, stack):
    tab = widget.segment_tab
    assert run_task(qtbot, tab) is None
    assert tab.task.message.value.startswith("choose the run first")
    tab.model.set_path(run_a)
    assert run_task(qtbot, tab) is None
    assert "no image layer to segment" in tab.task.message.value
    _choose(tab, viewer, run_a, stack[0].astype(np.float32), name="float")
    run_task(qtbot, tab)
    assert "layer 'float': pixel type float32 is not supported" in tab.task.message.value
    assert _names(viewer) == ["float"]


def test_compare_two_runs_adds_both_masks_and_their_disagreement(widget, viewer, qtbot, run_a, run_b, stack):
    from emfm.predict import PredictSettings, predict_array

    tab = widget.compare_tab
    layer = viewer.add_image(stack, name="EM")
    tab.model_a.set_path(run_a)
    tab.model_b.set_path(run_b)
    tab.image.reset_choices()
    tab.image.value = layer
    tab.settings.device.value = "cpu"
    run_task(qtbot, tab)
    assert _names(viewer) == ["EM", "run_a mask", "run_b mask", "run_a vs run_b disagreement"], tab.task.message.value
    settings = PredictSettings(device="cpu")
    a, _ = predict_array(run_a, stack, settings)
    b, _ = predict_array(run_b, stack, settings)
    want = disagreement(a, b)
    assert want.any()  # two random heads do disagree somewhere
    np.testing.assert_array_equal(viewer.layers["run_a vs run_b disagreement"].data, want)
    assert f"disagree on {100 * np.mean(a != b):.2f} % of pixels" in tab.fraction.value


def test_a_closed_widget_stops_listening_to_the_viewers_layers(viewer, qtbot):
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    from emfm.napari.widget import EmfmWidget

    before = len(viewer.layers.events.inserted.callbacks)
    w = EmfmWidget(viewer)
    assert len(viewer.layers.events.inserted.callbacks) == before + 2  # one layer choice per tab
    w.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert len(viewer.layers.events.inserted.callbacks) == before
    viewer.add_image(np.zeros((8, 8), np.uint8))  # no callback into a deleted widget
