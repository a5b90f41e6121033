"""``emfm predict`` on an array held in memory: a napari layer, a notebook's stack.

:func:`~emfm.predict.runner.predict_volume` reads a file and writes one; a viewer already holds the
image and wants the masks back. This module is the same prediction without the files: the run is
checked as :func:`~emfm.predict.runner.plan_prediction` checks it (same functions), the array is
wrapped in the :class:`~emfm.data.readers.ArrayVolume` that file inputs are read through (so a float
or colour array gets the same one-line :class:`~emfm.errors.DataError`), the run's input-side
standardisation takes its statistics from the whole array (not only the slices asked for), and the
slices go through :func:`~emfm.predict.runner.predict_batches`, the loop ``predict_volume`` drives.
The masks are therefore those ``emfm predict`` writes for the same array saved to a file.

A 2-D array is one slice; a 3-D array is a stack ``(Z, Y, X)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emfm.errors import DataError
from emfm.predict.runner import (
    SlicePredictor,
    checkpoint_path,
    encode_probability,
    load_model,
    predict_batches,
    resolve_device,
    resolve_tiling,
)
from emfm.predict.settings import DEFAULT_SETTINGS, PredictSettings
from emfm.predict.standardise import VolumeStandardisation


@dataclass(frozen=True)
class ArrayJob:
    """A checked in-memory prediction: the model file, the run's info, resolved settings, the volume."""

    run_dir: Path
    checkpoint: Path
    info: Any
    settings: PredictSettings
    volume: Any  # an ArrayVolume over the caller's array
    standardisation: VolumeStandardisation | None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape


def plan_array(
    run_dir: str | Path, array: Any, settings: PredictSettings = DEFAULT_SETTINGS, *, name: str = "array"
) -> ArrayJob:
    """Check a run and an array before the model is loaded (fast: reads the checkpoint's header only).

    Args:
        run_dir: a run directory of ``emfm train``, or a model file of ``emfm export``.
        array: 2-D ``(Y, X)`` or 3-D ``(Z, Y, X)``, uint8 or uint16, anything indexable like numpy.
        settings: as for ``emfm predict``.
        name: what messages call the array (e.g. ``napari layer 'EM'``).

    Raises:
        RunDirError: no run or no checkpoint there.
        DataError: the array is not a grey uint8/uint16 2-D or 3-D image, or is empty.
        ConfigError: settings that do not fit the run or this machine.
    """
    from emfm.data.readers import ArrayVolume
    from emfm.export import exported_info, is_exported_model
    from emfm.models.checkpoint import read_info

    ckpt = checkpoint_path(run_dir)
    info = exported_info(ckpt) if is_exported_model(ckpt) else read_info(ckpt)
    volume = ArrayVolume(array, name)
    if min(volume.shape) < 1:
        raise DataError(f"{name}: image of shape {tuple(array.shape)} is empty; expected at least one pixel")
    if settings.mode == "resize":
        info.preprocessing.network_size(volume.shape[1:])  # a slice too small for the run's resolution raises
    settings = resolve_device(resolve_tiling(settings, info, run_dir))
    return ArrayJob(
        run_dir=Path(run_dir), checkpoint=ckpt, info=info, settings=settings, volume=volume,
        standardisation=VolumeStandardisation.of_volume(info, volume),
    )


def slice_range(job: ArrayJob, slices: tuple[int, int] | None) -> range:
    """The slices ``[start, stop)`` to predict (all when None), checked against the array.

    Raises:
        ConfigError: an empty range or one outside the stack.
    """
    from emfm.errors import ConfigError

    n = job.shape[0]
    if slices is None:
        return range(n)
    start, stop = (int(s) for s in slices)
    if start >= stop:
        raise ConfigError(f"the first slice {start} comes after the last {stop - 1}; pick a first slice before it")
    if not 0 <= start < stop <= n:
        raise ConfigError(f"slices {start} to {stop - 1} are not within the stack's 0 to {n - 1}; pick slices in it")
    return range(start, stop)


def iter_predict_array(
    job: ArrayJob, predictor: SlicePredictor, todo: Sequence[int], *, probability: bool = True
) -> Iterator[tuple[Sequence[int], list[tuple[np.ndarray, np.ndarray | None]]]]:
    """``(slice indices, [(mask, p), ...])`` a batch at a time, so a caller can report progress and stop.

    ``p`` is encoded as ``settings.probability_dtype`` (float16 or uint8), as ``emfm predict`` stores it.
    """
    pdtype = job.settings.probability_dtype
    batches = predict_batches(
        job.volume, predictor, list(todo), job.settings.batch_size, standardise=job.standardisation,
        probability=probability,
    )
    for zs, results in batches:
        yield zs, [(m, encode_probability(p, pdtype) if probability else None) for m, p in results]


def predict_array(
    run_dir: str | Path,
    array: Any,
    settings: PredictSettings = DEFAULT_SETTINGS,
    *,
    slices: tuple[int, int] | None = None,
    probability: bool = False,
    backbone=None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Masks (uint8 0/1) and, if asked, probabilities of ``array``'s slices ``[start, stop)`` (all by default).

    The result has the array's dimensionality for a 2-D array, else ``(stop - start, Y, X)``. Raises
    what :func:`plan_array` and :func:`slice_range` raise, and what loading the run raises (e.g.
    :class:`~emfm.errors.WeightsNotFoundError` for backbone weights that are not here).
    """
    job = plan_array(run_dir, array, settings)
    todo = slice_range(job, slices)
    predictor = load_model(job.checkpoint, job.settings, backbone)
    _, y, x = job.shape
    masks = np.zeros((len(todo), y, x), np.uint8)
    probs = np.zeros((len(todo), y, x), np.dtype(job.settings.probability_dtype)) if probability else None
    for zs, results in iter_predict_array(job, predictor, todo, probability=probability):
        for z, (mask, p) in zip(zs, results):
            masks[z - todo.start] = mask
            if probs is not None:
                probs[z - todo.start] = p
    if np.ndim(array) == 2:
        return masks[0], probs[0] if probs is not None else None
    return masks, probs
