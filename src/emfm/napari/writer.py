"""Save a Labels layer (a mask, a disagreement map, a corrected mask) as a TIFF or a zarr array.

Both are formats ``emfm`` reads back (:mod:`emfm.napari.reader`; ``open_volume`` for uint8/uint16):
a zlib-compressed TIFF stack written atomically, or a zarr (v3) array at the store's root whose
attributes keep the layer's name, scale and translation under :data:`ATTRS_KEY`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emfm.errors import ConfigError

#: zarr attribute under which a saved layer keeps its name and placement.
ATTRS_KEY = "emfm_napari"


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """napari's writer hook for one Labels layer: write ``data`` to ``path`` (.tif, .tiff or .zarr).

    Raises:
        ConfigError: another extension (OME-Zarr included: save as .zarr or .tif), or a folder there
            that is not a zarr store (it is not replaced).
    """
    from emfm.predict.volume_io import output_kind

    kind = output_kind(path)
    array = np.asarray(data)
    if kind == "tif":
        _write_tif(Path(path), array)
    elif kind == "zarr":
        _write_zarr(Path(path), array, meta)
    else:
        raise ConfigError(f"{path}: labels are saved as .tif or .zarr (not OME-Zarr); choose one of those")
    return [str(path)]


def _write_tif(path: Path, array: np.ndarray) -> None:
    import tifffile

    from emfm._io import atomic_path

    axes = "ZYX"[-array.ndim:] if array.ndim <= 3 else None
    with atomic_path(path, suffix=path.suffix) as tmp:
        tifffile.imwrite(tmp, array, compression="zlib", photometric="minisblack",
                         metadata={"axes": axes} if axes else {})


def _write_zarr(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    import zarr

    from emfm.predict.volume_io import is_zarr_store, output_chunks

    if path.exists() and not is_zarr_store(path):
        raise ConfigError(f"{path} exists and is not a zarr store; refusing to replace it, choose another name")
    attrs = {ATTRS_KEY: {
        "name": meta.get("name"),
        "scale": [float(s) for s in meta.get("scale", [])],
        "translate": [float(t) for t in meta.get("translate", [])],
    }}
    chunks = output_chunks(array.shape) if array.ndim == 3 else "auto"
    zarr.create_array(str(path), data=array, chunks=chunks, attributes=attrs, overwrite=True)
