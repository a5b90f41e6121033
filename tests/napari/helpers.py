"""Helpers of the napari plugin's tests: drive a tab as a user would, and what `emfm predict` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run_task(qtbot, tab, timeout: int = 60_000):
    """Press the tab's Run (or Compare) button and wait until its worker has finished; the worker, or
    None when the tab refused the input (and said why in its message line)."""
    before = tab.task.worker
    tab.task.run_button.native.click()
    worker = tab.task.worker
    if worker is before:  # the input was refused: no worker started
        return None
    # Run is enabled again once the worker's `finished` signal has reached the widget.
    qtbot.waitUntil(lambda: tab.task.run_button.enabled, timeout=timeout)
    return worker


def predicted_by_cli_path(run: Path, image: np.ndarray, tmp: Path, batch_size: int = 4):
    """The mask and float16 probability that ``emfm predict`` writes for ``image`` saved as a TIFF."""
    import tifffile

    from emfm.predict import PredictSettings, predict_volume
    from tests.predict.helpers import read_any, read_output

    tmp.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(tmp / "in.tif", image, photometric="minisblack")
    settings = PredictSettings(batch_size=batch_size, device="cpu")
    predict_volume(run, tmp / "in.tif", tmp / "mask.zarr", settings, probabilities=tmp / "p.zarr", progress=False)
    mask, p = read_output(tmp / "mask.zarr"), read_any(tmp / "p.zarr")
    return (mask[0], p[0]) if image.ndim == 2 else (mask, p)
