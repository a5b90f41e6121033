"""How ``emfm predict`` runs the model over a volume: one typed, self-checking settings object.

:func:`~emfm.predict.runner.plan_prediction`, :func:`~emfm.predict.runner.predict_volume`,
:func:`~emfm.predict.distributed.predict_volume_dask` and :func:`~emfm.predict.distributed.predict_dask_array`
all take a :class:`PredictSettings`, built once at the edge (the CLI's flags, ``--config`` and ``--set``,
or a caller's code), so a setting is named, defaulted and checked in one place.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Literal

from emfm._settings import Settings, check_choice, check_number
from emfm.errors import ConfigError

Mode = Literal["resize", "tile"]
ProbabilityDtype = Literal["float16", "uint8"]
MODES = ("resize", "tile")
PROBABILITY_DTYPES = ("float16", "uint8")

#: The settings that change what the model computes (the dask workers' model cache is keyed by them).
MODEL_FIELDS = ("mode", "tile", "halo", "scale", "batch_size", "bf16", "device")


@dataclass(frozen=True)
class PredictSettings(Settings):
    """How a volume is predicted: the same object for the sequential and the dask runner.

    Attributes:
        mode: ``resize`` (the whole slice at the run's resolution, as in training and evaluation) or
            ``tile`` (overlapping tiles at the pixel size the run was trained at).
        tile: tile mode: tile edge in network pixels, a multiple of the run's patch size (default:
            the run's resolution floored to one).
        halo: tile mode: fading border of each tile in network pixels (default ``tile // 8``).
        scale: tile mode: network pixels per input pixel (default: the scale the run was trained at).
        batch_size: slices (resize) or tiles (tile) per model call; also slices read at a time. ``1``
            reproduces ``emfm evaluate`` bit for bit; larger batches can flip the odd near-tied pixel,
            because batched matrix products round differently (2 of 130 M pixels on the Lucchi++ test
            volume at 4, a change of 1e-7 in its IoU).
        probability_dtype: how probabilities are stored when they are written: ``float16`` (P in
            [0, 1]) or ``uint8`` (``round(255 * P)``).
        bf16: run the model under bfloat16 autocast (faster on recent hardware; masks may then differ
            from evaluation at a few near-tied pixels).
        device: ``cpu``, ``cuda``, ``cuda:1``...; ``None`` picks CUDA when available.

    What is *not* here, and why: the input and output paths (``output``, ``probabilities``) say what
    a job reads and writes, not how it predicts, so one settings object (one ``--config`` file) serves
    many volumes; ``overwrite`` is a decision about files already on disk, and ``max_slices`` a time
    budget for one call (which the dask runner does not have), so neither is part of the job that a
    partial output records and a rerun must match. They stay arguments of the functions that use them.

    Checks that need the run or the input (a tile that is a multiple of the patch size, a halo that
    leaves a stride, the scale the run was trained at, a slice large enough for the resolution, bf16
    support on the GPU) are made when the job is planned
    (:func:`~emfm.predict.runner.plan_prediction`).
    """

    what = "predict"

    mode: Mode = "resize"
    tile: int | None = None
    halo: int | None = None
    scale: float | None = None
    batch_size: int = 4
    probability_dtype: ProbabilityDtype = "float16"
    bf16: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        self.coerce_floats()
        self._coerce_numbers()
        check_choice("mode", self.mode, MODES, "; 'resize' predicts as in training, 'tile' at the training pixel size")
        check_choice("probability_dtype", self.probability_dtype, PROBABILITY_DTYPES)
        check_number("batch_size", self.batch_size, minimum=1, integer=True)
        if self.tile is not None:
            check_number("tile", self.tile, minimum=1, integer=True)
        if self.halo is not None:
            check_number("halo", self.halo, minimum=0, integer=True)
        if self.scale is not None:
            check_number("scale", self.scale, minimum=0, exclusive_minimum=True)
        if not isinstance(self.bf16, bool):
            raise ConfigError(f"bf16 must be true or false, got {self.bf16!r}")
        if self.device is not None and (not isinstance(self.device, str) or not self.device.strip()):
            raise ConfigError(f"device must be a name such as 'cpu', 'cuda' or 'cuda:1', got {self.device!r}")

    def _coerce_numbers(self) -> None:
        """numpy integers and floats (a caller's ``np.int64(8)``) become Python ones, so the checks
        and the job record see plain numbers; bools, strings and the like are left to the checks."""
        for name in ("tile", "halo", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        if isinstance(self.scale, numbers.Real) and not isinstance(self.scale, bool):
            object.__setattr__(self, "scale", float(self.scale))

    def model_key(self) -> tuple[tuple[str, Any], ...]:
        """The settings that change the model's output, as a hashable key."""
        return tuple((name, getattr(self, name)) for name in MODEL_FIELDS)


#: ``PredictSettings()``: the default of every function that takes settings (one immutable instance).
DEFAULT_SETTINGS = PredictSettings()
