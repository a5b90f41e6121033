"""The same prediction as :func:`~emfm.predict.runner.predict_volume`, as a dask graph.

Each block of the graph is a run of whole slices (Z-chunk): :func:`predict_dask_array` builds the
lazy mask volume with ``dask.array.map_blocks`` (write it wherever dask writes, e.g.
``.to_zarr(url)``), and :func:`predict_volume_dask` writes it into the same resumable outputs as the
sequential runner with ``dask.array.store`` and flags each block's slices done once its data are
stored. Any dask scheduler runs it: ``synchronous``, ``threads``, ``processes``, or a
``distributed.Client`` connected to a cluster (workers then need the run, the input and the output
on a shared file system).

Workers load the model once per process and keep it (:data:`_PREDICTORS`), keyed by the run's
checkpoint digest and the prediction settings, so a block costs only its slices.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from emfm._settings import check_number
from emfm.errors import ConfigError
from emfm.predict.runner import (
    PredictJob,
    SlicePredictor,
    encode_probability,
    finish_job,
    load_predictor,
    plan_prediction,
)
from emfm.predict.settings import DEFAULT_SETTINGS, PredictSettings
from emfm.predict.standardise import standardiser

log = logging.getLogger(__name__)

#: Loaded predictors of this process, by (checkpoint digest, settings); filled on first use.
_PREDICTORS: dict[tuple, SlicePredictor] = {}
_LOCK = threading.Lock()

#: Scheduler names under which tasks run in this process, so they can share the driver's model.
IN_PROCESS_SCHEDULERS = ("synchronous", "sync", "single-threaded", "threads", "threading")


def _key(job: PredictJob, in_memory: object | None = None) -> tuple:
    """The model cache's key: the run's checkpoint and digest, the settings that change the model's
    output, and the backbone object passed in memory, if any."""
    settings = job.settings.model_key()
    return (str(job.checkpoint.resolve()), job.checkpoint_sha256, settings, id(in_memory) if in_memory else None)


def _predictor(key: tuple, job_fields: dict[str, Any]) -> SlicePredictor:
    """This process's predictor for ``key``, loading the run's model the first time."""
    with _LOCK:
        found = _PREDICTORS.get(key)
        if found is None:
            if key[3] is not None:
                raise ConfigError(
                    "a backbone passed in memory is only known to the process that created it; use an "
                    "in-process scheduler ('synchronous' or 'threads'), or let workers load the run's own backbone"
                )
            from emfm.models.checkpoint import load_checkpoint

            settings = PredictSettings.from_dict(job_fields["settings"])
            segmenter, info = load_checkpoint(job_fields["checkpoint"])
            segmenter.to(settings.device).eval()
            found = SlicePredictor(segmenter, info, settings)
            _PREDICTORS[key] = found
        return found


def _open_level0(store: str, ome: bool):
    import zarr

    node = zarr.open(store, mode="r")
    return node["0"] if ome else node


def _block_dtype(probability_dtype: str | None) -> np.dtype:
    """uint8 masks, or a record of (mask, encoded probability): 2 or 3 bytes a pixel, not 8."""
    if probability_dtype is None:
        return np.dtype(np.uint8)
    return np.dtype([("mask", np.uint8), ("probability", np.dtype(probability_dtype))])


def _predict_block(*, key: tuple, job_fields: dict[str, Any], block_info=None) -> np.ndarray:
    """One Z-block (b, Y, X): uint8 masks, or records of (mask, encoded P(foreground)).

    Slices that an earlier (interrupted) job already wrote are read back from the output instead
    of being predicted again; the block is stored whole either way.
    """
    import zarr

    from emfm.data import open_volume

    z0, z1 = block_info[None]["array-location"][0]
    pdtype = job_fields["probability_dtype"]
    reuse = job_fields.get("reuse")
    _, y, x = job_fields["shape"]
    out = np.empty((z1 - z0, y, x), dtype=_block_dtype(pdtype))
    masks = out if pdtype is None else out["mask"]
    done = np.zeros(z1 - z0, dtype=bool)
    if reuse:
        done = np.asarray(zarr.open_array(reuse["done"], mode="r")[z0:z1]).astype(bool)
        if done.any():
            mask_arr = _open_level0(*reuse["mask"])
            prob_arr = _open_level0(*reuse["probability"]) if pdtype else None
            for i in np.flatnonzero(done):
                masks[i] = mask_arr[z0 + i]
                if pdtype:
                    out["probability"][i] = prob_arr[z0 + i]
    todo = [int(i) for i in np.flatnonzero(~done)]
    if todo:
        predictor = _predictor(key, job_fields)
        with open_volume(job_fields["input"]) as volume:
            images = standardiser(job_fields.get("standardisation"))([volume[z0 + i] for i in todo])
        for i, (mask, p) in zip(todo, predictor.predict(images, probability=pdtype is not None)):
            masks[i] = mask
            if pdtype:
                out["probability"][i] = encode_probability(p, pdtype)
    return out


def _mark_block(*stored: np.ndarray, done_path: str, offset: int, block_info=None) -> np.ndarray:
    """After a block's data are stored: flag its slices done and return their indices."""
    import zarr

    z0, z1 = block_info[0]["array-location"][0]
    zarr.open_array(done_path, mode="r+")[offset + z0 : offset + z1] = 1
    return np.arange(offset + z0, offset + z1, dtype=np.int64)


def _graph(job: PredictJob, block_slices: int, key: tuple, probability: bool, reuse: bool = False):
    """The lazy prediction of the whole volume: masks, or (mask, probability) records.

    With ``reuse``, slices the job's outputs flag as done are read back rather than predicted.
    """
    import dask.array as da
    from dask.base import tokenize

    z, y, x = job.shape
    pdtype = job.settings.probability_dtype if probability else None
    fields: dict[str, Any] = {
        "checkpoint": str(job.checkpoint),
        "input": job.input,
        "shape": job.shape,
        "settings": job.settings.to_dict(),
        "probability_dtype": pdtype,
        "standardisation": job.standardisation.to_dict() if job.standardisation is not None else None,
    }
    if reuse and job.outputs is not None:
        outs = job.outputs
        fields["reuse"] = {
            "done": str(outs.done_flags.path),
            "mask": (str(outs.mask.store), outs.mask.kind == "ome-zarr"),
            "probability": (str(outs.probability.store), outs.probability.kind == "ome-zarr")
            if outs.probability is not None else None,
        }
    zchunks = tuple(min(block_slices, z - s) for s in range(0, z, block_slices))
    name = f"emfm-predict-{tokenize(key, fields, zchunks)}"
    dtype = _block_dtype(pdtype)
    return da.map_blocks(
        _predict_block, chunks=(zchunks, (y,), (x,)), dtype=dtype, meta=np.empty((0, 0, 0), dtype), name=name,
        key=key, job_fields=fields,
    )


def predict_dask_array(
    run_dir: str | Path,
    input: str | Path,
    settings: PredictSettings = DEFAULT_SETTINGS,
    *,
    block_slices: int = 8,
    backbone=None,
):
    """The predicted mask volume as a lazy dask array (uint8, the input's shape), one block per Z-run.

    Nothing is computed until asked; write it with ``arr.to_zarr(url)`` or ``dask.array.store``.
    ``settings`` are those of :func:`~emfm.predict.runner.predict_volume` (``probability_dtype`` does
    not apply: the array holds masks only). A ``backbone`` object stays in this process, so it needs
    an in-process scheduler.
    """
    block_slices = _positive(block_slices)
    job = plan_prediction(run_dir, input, None, settings)
    key = _key(job, backbone)
    if backbone is not None:
        with _LOCK:
            _PREDICTORS[key] = load_predictor(job, backbone)
    return _graph(job, block_slices, key, probability=False)


def _positive(block_slices: int) -> int:
    check_number("block_slices", block_slices, minimum=1, integer=True)
    return int(block_slices)


def _runs(done: np.ndarray, block_slices: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of the blocks that still miss at least one slice."""
    z = len(done)
    runs: list[tuple[int, int]] = []
    for s in range(0, z, block_slices):
        e = min(s + block_slices, z)
        if done[s:e].all():
            continue
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    return runs


def predict_volume_dask(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path,
    settings: PredictSettings = DEFAULT_SETTINGS,
    *,
    probabilities: str | Path | None = None,
    overwrite: bool = False,
    block_slices: int = 8,
    scheduler: Any = "threads",
    num_workers: int | None = None,
    progress: bool = True,
    backbone=None,
) -> dict[str, Any]:
    """:func:`~emfm.predict.runner.predict_volume` through dask: same outputs, same resume record.

    Args:
        run_dir, input, output, settings, probabilities, overwrite: as for ``predict_volume``.
        block_slices: slices per dask block (one task reads, predicts and stores them).
        scheduler: any dask scheduler: ``"synchronous"``, ``"threads"``, ``"processes"`` or a
            ``distributed.Client``.
        num_workers: threads or processes for the local schedulers (default: dask's).
        progress: a tqdm progress bar over tasks (local schedulers).
        backbone: a backbone object for in-process schedulers (tests); workers otherwise load the run's.

    Returns:
        The same summary as ``predict_volume``. A block with any slice missing is stored whole, its
        finished slices read back from the output rather than predicted again.
    """
    started = time.perf_counter()
    block_slices = _positive(block_slices)
    if num_workers is not None:
        check_number("num_workers", num_workers, minimum=1, integer=True)
    job = plan_prediction(run_dir, input, output, settings, probabilities=probabilities, overwrite=overwrite)
    key = _key(job, backbone)
    runs = _runs(job.done, block_slices)
    in_process = isinstance(scheduler, str) and scheduler in IN_PROCESS_SCHEDULERS
    if runs and (backbone is not None or in_process):
        with _LOCK:  # in-process schedulers share the driver's model
            if key not in _PREDICTORS:
                _PREDICTORS[key] = load_predictor(job, backbone)
    job.outputs.open(overwrite=overwrite)
    loop_started = time.perf_counter()
    computed: list[int] = []
    try:
        if runs:
            marks = _store_runs(job, runs, block_slices, key)
            stored = _compute(marks, scheduler, num_workers, progress=progress and in_process)
            computed = [z for z in sorted(stored) if not job.done[z]]
    finally:
        if backbone is not None:
            with _LOCK:
                _PREDICTORS.pop(key, None)
    return finish_job(job, computed, started, time.perf_counter() - loop_started, progress)


def _store_runs(job: PredictJob, runs: list[tuple[int, int]], block_slices: int, key: tuple) -> list:
    """Per run of unfinished blocks: a lazy array that stores its blocks into the job's outputs and
    then flags them done, yielding the indices of the slices it stored."""
    import dask.array as da

    outputs = job.outputs
    want_p = outputs.probability is not None
    full = _graph(job, block_slices, key, probability=want_p, reuse=bool(job.done.any()))
    marks = []
    for s, e in runs:
        region = (slice(s, e), slice(None), slice(None))
        part = full[s:e]
        if want_p:
            sources = [part["mask"], part["probability"]]
            targets = [outputs.mask.array(), outputs.probability.array()]
        else:
            sources, targets = [part], [outputs.mask.array()]
        stored = da.store(
            sources, targets, regions=[region] * len(sources), lock=False, compute=False, return_stored=True
        )
        stored = stored if isinstance(stored, tuple) else (stored,)
        marks.append(da.map_blocks(
            _mark_block, *stored, done_path=str(outputs.done_flags.path), offset=s, drop_axis=(1, 2),
            dtype=np.int64, meta=np.empty((0,), np.int64),
        ))
    return marks


def _compute(marks: list, scheduler: Any, num_workers: int | None, *, progress: bool) -> set[int]:
    """Run the graph on ``scheduler``; the indices of every slice stored."""
    import dask

    kwargs: dict[str, Any] = {"scheduler": scheduler}
    if num_workers:
        kwargs["num_workers"] = num_workers
    bar = nullcontext()
    if progress:
        from tqdm.dask import TqdmCallback

        bar = TqdmCallback(desc="predicting (dask tasks)")
    with bar:
        results = dask.compute(*marks, **kwargs)
    return {int(v) for r in results for v in np.asarray(r)}


def clear_model_cache() -> None:
    """Forget the models this process has loaded for dask blocks (frees their memory)."""
    with _LOCK:
        _PREDICTORS.clear()
