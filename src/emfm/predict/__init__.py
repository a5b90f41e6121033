"""Segment EM volumes of any size with a trained run: ``emfm predict``.

Public API::

    PredictSettings(mode="resize", tile=None, halo=None, scale=None, batch_size=4,
                    probability_dtype="float16", bf16=False, device=None)
    predict_volume(run_dir, input, output, settings=PredictSettings(), *, probabilities=None,
                   overwrite=False, max_slices=None, progress=True) -> dict
    predict_volume_dask(run_dir, input, output, settings=PredictSettings(), *, probabilities=None,
                        overwrite=False, block_slices=8, scheduler="threads", ...) -> dict
    predict_dask_array(run_dir, input, settings=PredictSettings(), *, block_slices=8) -> dask.array.Array
    predict_array(run_dir, array, settings=PredictSettings(), *, slices=None, probability=False)
        -> (masks, probabilities | None)     # an array in memory (a napari layer), no files
    plan_array / iter_predict_array: the same, checked first and a batch at a time (progress, cancel)

Inputs: a 3-D TIFF, a folder of 2-D slices, ``store.zarr[:array]`` (OME-Zarr too), ``file.h5:dataset``.
Outputs by extension: ``.zarr``, ``.ome.zarr`` (NGFF 0.5, one level) or ``.tif``; uint8 0/1 masks of
the input's shape, and optionally the foreground probability (float16, or uint8 = round(255 p)).
Reruns resume a partial output of the same job (see :mod:`emfm.predict.volume_io`).
A run trained with an input-side alignment (``--align volume-norm|histogram-match|fda``) standardises the
volume as evaluation does, its statistics from up to 32 evenly spaced slices (:mod:`emfm.predict.standardise`).
"""

from __future__ import annotations

from emfm.predict.arrays import ArrayJob, iter_predict_array, plan_array, predict_array, slice_range
from emfm.predict.distributed import predict_dask_array, predict_volume_dask
from emfm.predict.errors import DiskSpaceError, OutputExistsError
from emfm.predict.runner import SlicePredictor, plan_prediction, predict_volume
from emfm.predict.settings import PredictSettings

__all__ = [
    "ArrayJob",
    "DiskSpaceError",
    "OutputExistsError",
    "PredictSettings",
    "SlicePredictor",
    "iter_predict_array",
    "plan_array",
    "plan_prediction",
    "predict_array",
    "predict_dask_array",
    "predict_volume",
    "predict_volume_dask",
    "slice_range",
]
