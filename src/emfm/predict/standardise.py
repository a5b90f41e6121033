"""A run's input-side alignment (:mod:`emfm.align.inputs`) applied to a volume that is predicted in batches.

Training and evaluation standardise a stack held in memory, from statistics of up to
:data:`~emfm.align.inputs.SAMPLE_SLICES` evenly spaced slices (:func:`~emfm.align.inputs.volume_sample`).
Prediction reads a volume a batch at a time, possibly lazily (zarr, HDF5) and in dask blocks on other
machines, so the statistics are taken once when the job is planned, from that same sample of the whole
volume (a few slices read, whatever its size), and every batch is transformed with them. The same volume
is therefore standardised exactly as ``emfm evaluate`` standardises it, whichever slices a resumed or
distributed job computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VolumeStandardisation:
    """What the slices of one input volume go through before the model: the run's method, its fitted
    state and the volume's statistics (plain data, so a dask block can carry it)."""

    align: str
    settings: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def plan(cls, info: Any, spec: str) -> VolumeStandardisation | None:
        """The standardisation of volume ``spec`` for the run ``info`` (a ModelInfo); None if the run
        has no input-side alignment."""
        from emfm.data import open_volume

        if not info.make_alignment().input_side:
            return None
        with open_volume(spec) as volume:
            return cls.of_volume(info, volume)

    @classmethod
    def of_volume(cls, info: Any, volume: Any) -> VolumeStandardisation | None:
        """:meth:`plan` for a volume already open (an :class:`~emfm.data.readers.ArrayVolume` over an
        array in memory too), from the same evenly spaced sample of its slices."""
        from emfm.align.inputs import volume_sample

        alignment = info.make_alignment()
        if not alignment.input_side:
            return None
        stats = alignment.volume_stats(volume_sample(volume))
        return cls(info.align, dict(info.align_settings), dict(info.align_state), stats)

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        from emfm.align import create_alignment

        return create_alignment(self.align, self.settings).transform(list(images), self.state, self.stats)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def standardiser(fields: dict[str, Any] | None):
    """The callable a dask block applies to its slices: a VolumeStandardisation, or the identity."""
    return VolumeStandardisation(**fields) if fields else list
