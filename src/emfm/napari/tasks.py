"""The widget's work, as generators for napari's ``thread_worker``: no Qt here.

Each task yields a :class:`Progress` after planning, after loading the model and after every batch of
slices, so the worker can move a progress bar and stop at the next yield when the user cancels
(``GeneratorWorker.quit``); nothing is handed to the viewer unless the generator returns. A problem the
user can fix (an :class:`~emfm.errors.EmfmError`: no checkpoint, backbone weights missing offline, a
float image, a bad slice range) is *returned* as a :class:`Failure` holding its one-line message, so the
widget shows that line instead of napari's traceback notification, which a raised error would get.
Anything else is a bug and is raised.

Predictions are :func:`emfm.predict.iter_predict_array`'s, i.e. ``emfm predict``'s on the same array.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emfm.errors import EmfmError
from emfm.napari.compare import disagreeing_fraction, disagreement
from emfm.predict import PredictSettings, iter_predict_array, plan_array, slice_range
from emfm.predict.runner import load_model


@dataclass(frozen=True)
class Progress:
    """Where a task is: ``done`` of ``total`` slices, and what it is doing, for the progress bar."""

    done: int
    total: int
    message: str


@dataclass(frozen=True)
class Failure:
    """A task stopped by a problem the user can fix; ``message`` is one line saying what to do."""

    message: str


@dataclass
class Segmentation:
    """One run's prediction of slices ``start ..`` of an image: uint8 masks and encoded probabilities,
    2-D for a 2-D image, else ``(slices, Y, X)``."""

    name: str
    start: int
    masks: np.ndarray
    probability: np.ndarray | None


@dataclass
class Comparison:
    """Two runs on the same slices: their segmentations, the disagreement labels (1 = only A, 2 = only
    B) and the fraction of pixels that disagree."""

    a: Segmentation
    b: Segmentation
    disagreement: np.ndarray
    fraction: float


Steps = Generator[Progress, None, Any]


def run_name(path: str | Path) -> str:
    """What layers are named after: the run folder's name, or an exported model's file name without
    its suffix."""
    p = Path(path)
    return p.stem if p.is_file() else p.name


def segment(
    run: str | Path, image: Any, slices: tuple[int, int] | None = None,
    settings: PredictSettings | None = None, *, image_name: str = "image", probability: bool = True,
) -> Generator[Progress, None, Segmentation | Failure]:
    """Predict ``image`` (2-D, or slices ``[start, stop)`` of a 3-D stack; all when None) with ``run``."""
    try:
        return (yield from _segment(run, image, slices, settings, image_name, probability, 0, 1))
    except EmfmError as exc:
        return Failure(str(exc))


def compare(
    run_a: str | Path, run_b: str | Path, image: Any, slices: tuple[int, int] | None = None,
    settings: PredictSettings | None = None, *, image_name: str = "image",
) -> Generator[Progress, None, Comparison | Failure]:
    """Predict the same slices with two runs, one after the other, and where their masks disagree."""
    try:
        a = yield from _segment(run_a, image, slices, settings, image_name, False, 0, 2)
        b = yield from _segment(run_b, image, slices, settings, image_name, False, 1, 2)
    except EmfmError as exc:
        return Failure(str(exc))
    labels = disagreement(a.masks, b.masks)
    return Comparison(a, b, labels, disagreeing_fraction(labels))


def _segment(
    run: str | Path, image: Any, slices: tuple[int, int] | None, settings: PredictSettings | None,
    image_name: str, probability: bool, part: int, parts: int,
) -> Generator[Progress, None, Segmentation]:
    """One run over the slices; progress counts ``parts`` runs of the same slices, this one ``part``."""
    name = run_name(run)
    job = plan_array(run, image, settings or PredictSettings(), name=f"layer {image_name!r}")
    todo = slice_range(job, slices)
    n, total = len(todo), len(todo) * parts
    yield Progress(part * n, total, f"loading {name}")
    predictor = load_model(job.checkpoint, job.settings)
    _, y, x = job.shape
    masks = np.zeros((n, y, x), np.uint8)
    probs = np.zeros((n, y, x), np.dtype(job.settings.probability_dtype)) if probability else None
    done = 0
    yield Progress(part * n, total, f"{name}: 0 of {n} slices")
    for zs, results in iter_predict_array(job, predictor, todo, probability=probability):
        for z, (mask, p) in zip(zs, results):
            masks[z - todo.start] = mask
            if probs is not None:
                probs[z - todo.start] = p
        done += len(zs)
        yield Progress(part * n + done, total, f"{name}: {done} of {n} slices")
    if np.ndim(image) == 2:
        masks, probs = masks[0], (probs[0] if probs is not None else None)
    return Segmentation(name, todo.start, masks, probs)
