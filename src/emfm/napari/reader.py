"""Open emfm's outputs in napari: masks as Labels, probabilities as an Image.

What is recognised (anything else is left to napari's own readers: :func:`get_reader` returns None):

- a zarr or OME-Zarr store written by ``emfm predict`` (its attributes hold the ``emfm_predict``
  record, which says whether it is the mask or the probability; a partial one opens too, named so);
- a zarr array saved by this plugin's writer (:mod:`emfm.napari.writer`), with its name and placement;
- a TIFF that holds labels: unsigned integers whose first slice has at most :data:`MAX_LABEL_VALUES`
  distinct values. ``emfm predict --output x.tif`` masks and a run's ``predictions/*.tif`` are 0/1, a
  saved disagreement map 0/1/2, while an EM image has hundreds of grey values; a float16 TIFF is an
  ``emfm predict --probabilities`` output. Only the first slice is decoded to decide.

A store or file larger than :data:`LAZY_BYTES` is handed to napari unread (zarr) or memory-mapped
where tifffile can, so opening a big volume does not load it whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emfm.napari.writer import ATTRS_KEY

MAX_LABEL_VALUES = 16
LAZY_BYTES = 1 << 30

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: :func:`read` if ``path`` is an emfm output, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        found = _describe(Path(path))
    except Exception:  # unreadable or not ours: let napari's other readers try
        return None
    return read if found is not None else None


def read(path: str | list[str]) -> list[LayerData]:
    """The layer (one) that ``path`` holds; see the module docstring for what is recognised."""
    p = Path(path[0] if isinstance(path, list) else path)
    found = _describe(p)
    if found is None:
        raise ValueError(f"{p} is not an emfm mask, probability or saved labels")
    return [found()]


def _describe(path: Path) -> Callable[[], LayerData] | None:
    """A loader for ``path`` if it is ours, else None (reads metadata and at most one slice)."""
    from emfm.predict.volume_io import is_zarr_store

    name = path.name.lower().rstrip("/")
    if name.endswith(".zarr") and is_zarr_store(path):
        return _describe_zarr(path)
    if name.endswith((".tif", ".tiff")) and path.is_file():
        return _describe_tif(path)
    return None


def _layer_name(path: Path) -> str:
    """``mito`` for ``mito.ome.zarr``; ``<run> <set>`` for a run's ``predictions/<set>.tif``."""
    stem = path.name
    for suffix in (".ome.zarr", ".zarr", ".tiff", ".tif"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if path.parent.name == "predictions" and path.parent.parent.name:
        return f"{path.parent.parent.name} {stem}"
    return stem


def _describe_zarr(path: Path) -> Callable[[], LayerData] | None:
    import zarr

    from emfm.predict.volume_io import RECORD_KEY

    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    if RECORD_KEY in attrs:
        record = dict(attrs[RECORD_KEY])
        array = node["0"] if isinstance(node, zarr.Group) else node
        role = record.get("role", "mask")
        name = _layer_name(path) + ("" if record.get("complete") else " (partial)")
        if role == "probability":
            limits = (0, 255) if np.dtype(array.dtype) == np.uint8 else (0.0, 1.0)
            return lambda: (_load(array), {"name": name, "colormap": "magma", "contrast_limits": limits}, "image")
        return lambda: (_load(array), {"name": name}, "labels")
    if ATTRS_KEY in attrs and isinstance(node, zarr.Array):
        saved = dict(attrs[ATTRS_KEY])
        meta: dict[str, Any] = {"name": saved.get("name") or _layer_name(path)}
        for key in ("scale", "translate"):
            if saved.get(key):
                meta[key] = tuple(saved[key])
        return lambda: (_load(node), meta, "labels")
    return None


def _describe_tif(path: Path) -> Callable[[], LayerData] | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        dtype = np.dtype(series.dtype)
        first = tif.pages[0].asarray() if dtype.kind == "u" else None
    name = _layer_name(path)
    if dtype == np.float16:
        return lambda: (_read_tif(path), {"name": name, "colormap": "magma", "contrast_limits": (0.0, 1.0)}, "image")
    if first is not None and np.unique(first).size <= MAX_LABEL_VALUES:
        return lambda: (_read_tif(path), {"name": name}, "labels")
    return None


def _read_tif(path: Path) -> np.ndarray:
    import tifffile

    if path.stat().st_size > LAZY_BYTES:
        try:
            return tifffile.memmap(path, mode="r")
        except ValueError:  # compressed: decode it
            pass
    return tifffile.imread(path)


def _load(array: Any) -> Any:
    """Small arrays into memory (editable Labels); large ones stay lazy zarr arrays."""
    nbytes = int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize
    return array if nbytes > LAZY_BYTES else np.asarray(array[...])
