"""What an export takes from the run's data: its first test slice, as the network and as a consumer see it.

A bioimage.io package carries a test input and the outputs the network must give for it; they are made
from the first slice of the run's own first test set, through the run's own preprocessing
(:class:`~emfm.transforms.Preprocessing`), so a consumer that reproduces them feeds the network exactly
what emfm would. The same slice is the example the ONNX graph is traced on and checked against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emfm.errors import ConfigError, DataError, EmfmError

#: The intensity rules' percentiles (:func:`emfm.transforms.to_unit_float`, ``minmax``).
MINMAX_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class TestSlice:
    """One slice of a run's test set: the image, where it came from, and the dataset's facts."""

    image: np.ndarray
    dataset: str
    slice_id: str


def run_config(run_dir: str | Path):
    """The run's resolved :class:`~emfm.config.TrainConfig` (its ``config.yaml``)."""
    from emfm import rundir
    from emfm.config import TrainConfig, load_yaml

    return TrainConfig.from_dict(load_yaml(Path(run_dir) / rundir.CONFIG_NAME))


def test_slices(config, split: str = "test", limit: int = 1) -> Iterator[TestSlice]:
    """The first ``limit`` slices of the run's first ``split`` set (``test``, or ``train``), in order.

    Raises:
        DataError: the data are gone or unreadable; the export needs one slice for its test tensors.
    """
    from emfm.data import read_image, resolve_dataset

    name = (config.test if split == "test" else config.train)[0]
    ds, root = resolve_dataset(name, config.data_root)
    stack, ids = ds.split_ids(root, split)
    if not ids:
        raise DataError(f"the {split} split of {name} is empty; the export needs one slice for its test tensors")
    by_id = {s.id: s for s in ds.list_slices(root, stack)}
    for slice_id in ids[:limit]:
        yield TestSlice(image=read_image(by_id[slice_id].image), dataset=name, slice_id=str(slice_id))


def first_slice(config, split: str = "test") -> TestSlice:
    """The first slice of the run's first ``split`` set."""
    return next(test_slices(config, split))


def pick_test_slice(
    config, module, preprocessing, *, max_side: int | None, limit: int = 8
) -> tuple[TestSlice, torch.Tensor, torch.Tensor]:
    """``(slice, unit, intensities)`` for the first of the run's test slices on which the network finds
    some foreground: bioimage.io refuses test outputs that are all zero (a mask of background only).

    Raises:
        DataError: the network finds no foreground on the first ``limit`` test slices.
    """
    for candidate in test_slices(config, "test", limit):
        unit, intensities = network_input(candidate.image, preprocessing, max_side=max_side)
        with torch.no_grad():
            if bool(module(unit)[1].any()):
                return candidate, unit, intensities
    raise DataError(
        f"the run finds no foreground on the first {limit} slices of its test set {config.test[0]}, and a "
        f"bioimage.io package needs test outputs that show some; check the run (its metrics.json) first"
    )


def training_scale(config, info) -> float | None:
    """Network pixels per input pixel at which the run was trained (for ``emfm predict --mode tile`` on
    the export), or None when the training data cannot tell (then ``--scale`` must be given)."""
    if info.scale is not None:
        return float(info.scale)
    try:
        return info.resolution / max(first_slice(config, "train").image.shape)
    except (EmfmError, OSError, StopIteration, IndexError):
        return None


def dtype_max(image: np.ndarray) -> float:
    """The value that the ``dtype`` intensity rule maps to 1 (255 for uint8, 65535 for uint16)."""
    if image.dtype not in (np.uint8, np.uint16):
        raise DataError(f"the run's test slice is {image.dtype}; emfm reads uint8 or uint16 slices")
    return float(np.iinfo(image.dtype).max)


def network_input(image: np.ndarray, preprocessing, *, max_side: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unit, intensities)``, both (1, 1, H, W) float32 at the network's size for ``image``.

    ``unit`` is what the network takes (the run's intensity rule, resized: ``Preprocessing.unit``);
    ``intensities`` is what a bioimage.io consumer feeds (the slice resized, on its dtype's scale), whose
    declared preprocessing turns it into ``unit``. A tiled run's network takes one tile: both are then
    cropped to at most ``max_side`` a side.
    """
    from emfm.transforms import unit_at_size

    size = preprocessing.network_size(image.shape)
    unit = preprocessing.unit(image, size)
    intensities = unit_at_size(image, size, "dtype") * dtype_max(image)
    if max_side is not None:
        unit, intensities = unit[:max_side, :max_side], intensities[:max_side, :max_side]
    return unit[None, None].contiguous(), intensities[None, None].contiguous()


def unit_from_intensities(intensities: torch.Tensor, intensity: str, scale: float) -> torch.Tensor:
    """What the package's declared preprocessing makes of ``intensities`` (the network's input).

    ``dtype``: ``x / scale`` clipped to [0, 1], which is the run's own rule up to float rounding. ``minmax``:
    the 0.5-99.5 percentile stretch over the network-sized slice (bioimage.io's ``scale_range``), where
    emfm stretches the stored slice before resizing it: the two differ slightly, and a package of a
    ``minmax`` run says so.
    """
    if intensity == "dtype":
        return (intensities / scale).clamp(0.0, 1.0)
    if intensity != "minmax":
        raise ConfigError(f"unknown intensity rule {intensity!r}; use 'dtype' or 'minmax'")
    lo, hi = np.percentile(intensities.numpy(), MINMAX_PERCENTILES)
    return ((intensities - float(lo)) / (float(hi - lo) + 1e-6)).clamp(0.0, 1.0)
