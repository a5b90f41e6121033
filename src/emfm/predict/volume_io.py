"""Where predictions go: zarr, OME-Zarr or TIFF volumes, written slice by slice and resumable.

The output's format follows its extension:

- ``.zarr``: one zarr (v3) array ``(Z, Y, X)`` at the store's root.
- ``.ome.zarr``: an OME-Zarr image (NGFF 0.5): a group with ``multiscales`` metadata and one level,
  the array ``0``. Pixel sizes are copied from the input when it is an OME-Zarr image itself.
- ``.tif`` / ``.tiff``: a (Big)TIFF stack, one page per slice. A TIFF cannot be filled in place in
  any order, so slices first go to a zarr sidecar ``<output>.partial.zarr``; when every slice is
  there it is converted, page by page, into the TIFF (written atomically) and the sidecar is deleted.

Masks are uint8 0/1. Foreground probabilities are float16 in [0, 1], or uint8 ``round(255 * p)``.

Resuming: each store's attributes hold a record of the job (run checkpoint digest, input, mode and
settings) under ``emfm_predict``. Beside the data, a small uint8 array ``.emfm_done`` inside the mask
store (one chunk per slice, so independent writers never touch the same file) flags each slice once
its mask and probability are written. A rerun of the same job computes only unflagged slices; a
store holding anything else is refused unless the caller asks to overwrite it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emfm.errors import ConfigError
from emfm.predict.errors import DiskSpaceError, OutputExistsError

log = logging.getLogger(__name__)

OutputKind = Literal["zarr", "ome-zarr", "tif"]
RECORD_KEY = "emfm_predict"
DONE_NAME = ".emfm_done"
PARTIAL_SUFFIX = ".partial.zarr"
OME_VERSION = "0.5"
#: Largest chunk edge in Y and X: big slices are split so that one chunk stays a few MB.
CHUNK_EDGE = 1024
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def output_kind(path: str | Path) -> OutputKind:
    """The format an output path asks for, from its extension.

    Raises:
        ConfigError: the extension is none of ``.zarr``, ``.ome.zarr``, ``.tif``, ``.tiff``.
    """
    name = Path(path).name.lower().rstrip("/")
    if name.endswith(".ome.zarr"):
        return "ome-zarr"
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".tif", ".tiff")):
        return "tif"
    suffix = Path(name).suffix or "(none)"
    raise ConfigError(
        f"unknown output extension {suffix!r} in {path}; name the output .zarr, .ome.zarr, .tif or .tiff"
    )


def is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _ZARR_MARKERS)


def output_chunks(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """One slice per chunk in Z (slices are written one at a time), at most CHUNK_EDGE in Y and X."""
    return (1, min(shape[1], CHUNK_EDGE), min(shape[2], CHUNK_EDGE))


def ome_metadata(name: str, scale: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """NGFF 0.5 ``multiscales`` for one ``(z, y, x)`` level at path ``0``.

    ``scale`` (from :func:`input_pixel_scale`) gives each axis' pixel size and unit; 1.0 otherwise.
    """
    axes = []
    sizes = []
    for i, ax in enumerate(("z", "y", "x")):
        entry: dict[str, Any] = {"name": ax, "type": "space"}
        if scale and scale["units"][i]:
            entry["unit"] = scale["units"][i]
        axes.append(entry)
        sizes.append(float(scale["scale"][i]) if scale else 1.0)
    return {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": sizes}]}],
            }
        ],
    }


def input_pixel_scale(spec: str) -> dict[str, list] | None:
    """Pixel sizes and units of the last three axes of an OME-Zarr input, or None for anything else."""
    from emfm.data.readers import split_container

    file, _ = split_container(spec)
    if not is_zarr_store(file):
        return None
    try:
        import zarr

        attrs = dict(zarr.open_group(str(file), mode="r").attrs)
        ms = (attrs.get("ome") or attrs).get("multiscales")
        axes = ms[0]["axes"][-3:]
        transforms = ms[0]["datasets"][0]["coordinateTransformations"]
        scale = next(t["scale"] for t in transforms if t["type"] == "scale")[-3:]
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
        return {"scale": [float(s) for s in scale], "units": units}
    except Exception:  # not an OME image or incomplete metadata: sizes stay 1.0
        return None


class DoneFlags:
    """A uint8 zarr array with one flag per slice, each in its own uncompressed one-byte chunk.

    One chunk per slice means any number of processes can flag different slices at once, and a flag
    write is a single byte, so it is either there or not after a crash.
    """

    def __init__(self, store: Path) -> None:
        self.path = store / DONE_NAME

    def create(self, n: int) -> None:
        import zarr

        zarr.create_array(
            str(self.path), shape=(n,), chunks=(1,), dtype="uint8", fill_value=0, compressors=None, overwrite=True
        )

    def exists(self) -> bool:
        return is_zarr_store(self.path)

    def read(self) -> np.ndarray:
        import zarr

        return np.asarray(zarr.open_array(str(self.path), mode="r")[:]).astype(bool)

    def mark(self, z0: int, z1: int) -> None:
        import zarr

        zarr.open_array(str(self.path), mode="r+")[z0:z1] = 1

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class OutputTarget:
    """One output volume (mask or probability): its final path, format, and the zarr store written to."""

    def __init__(self, path: str | Path, role: Literal["mask", "probability"], dtype: np.dtype) -> None:
        self.path = Path(path)
        self.kind = output_kind(self.path)
        self.role = role
        self.dtype = np.dtype(dtype)
        self.store = self.path.with_name(self.path.name + PARTIAL_SUFFIX) if self.kind == "tif" else self.path
        self._array: Any = None

    def __repr__(self) -> str:
        return f"OutputTarget({str(self.path)!r}, {self.role}, {self.kind})"

    # -- reading what is there ----------------------------------------------------------------------

    def final_exists(self) -> bool:
        """For a TIFF, whether the finished file is there; for zarr, whether the store is."""
        return self.path.exists()

    def read_record(self) -> dict[str, Any] | None:
        """The ``emfm_predict`` record of the store, or None if the store is absent or not ours."""
        if not is_zarr_store(self.store):
            return None
        import zarr

        try:
            node = zarr.open(str(self.store), mode="r")
        except Exception:  # unreadable metadata: not a store we can resume
            return None
        record = dict(node.attrs).get(RECORD_KEY)
        return dict(record) if isinstance(record, Mapping) else None

    def array(self):
        """The level-0 zarr array of the store, opened for writing."""
        if self._array is None:
            import zarr

            node = zarr.open(str(self.store), mode="r+")
            self._array = node["0"] if self.kind == "ome-zarr" else node
        return self._array

    # -- writing --------------------------------------------------------------------------------------

    def remove(self) -> None:
        """Delete the output and its sidecar; only zarr stores and files, never an arbitrary folder."""
        for p in {self.path, self.store}:
            if p.is_dir():
                if not is_zarr_store(p):
                    raise OutputExistsError(
                        f"{p} is a folder but not a zarr store; refusing to delete it for --overwrite. "
                        "Choose another --output"
                    )
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def create(self, shape: tuple[int, int, int], record: dict[str, Any], ome_scale: Mapping | None) -> None:
        import zarr

        attrs = {RECORD_KEY: record}
        chunks = output_chunks(shape)
        self.store.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "ome-zarr":
            group = zarr.open_group(str(self.store), mode="w")
            self._array = group.create_array(
                "0", shape=shape, chunks=chunks, dtype=self.dtype, fill_value=0, dimension_names=("z", "y", "x")
            )
            group.attrs.update({"ome": ome_metadata(f"{self.path.stem} ({self.role})", ome_scale), **attrs})
        else:
            self._array = zarr.create_array(
                str(self.store), shape=shape, chunks=chunks, dtype=self.dtype, fill_value=0,
                dimension_names=("z", "y", "x"), attributes=attrs, overwrite=True,
            )

    def set_record(self, record: dict[str, Any]) -> None:
        import zarr

        node = zarr.open(str(self.store), mode="r+")
        node.attrs.update({RECORD_KEY: record})

    def write(self, z: int, data: np.ndarray) -> None:
        self.array()[z] = data

    def finish(self, progress: bool = False) -> None:
        """Mark the store complete; for a TIFF, convert the sidecar into the final file and delete it."""
        record = self.read_record() or {}
        if self.kind != "tif":
            self.set_record({**record, "complete": True})
            return
        zarr_to_tiff(self.array(), self.path, progress=progress, description=f"writing {self.path.name}")
        self._array = None
        shutil.rmtree(self.store)


def zarr_to_tiff(array, path: Path, *, progress: bool = False, description: str = "writing tif") -> None:
    """Stream a (Z, Y, X) array into a zlib-compressed TIFF, one page at a time, atomically.

    tifffile takes an iterator of pages when shape and dtype are given, so at most one slice is in
    memory; BigTIFF is used when the uncompressed data would not fit a classic TIFF's 4 GB offsets.
    """
    import tifffile
    from tqdm.auto import tqdm

    from emfm._io import atomic_path

    shape = tuple(int(s) for s in array.shape)
    dtype = np.dtype(array.dtype)

    def pages() -> Iterator[np.ndarray]:
        for z in tqdm(range(shape[0]), desc=description, unit="slice", disable=not progress, leave=False):
            yield np.asarray(array[z])

    bigtiff = int(np.prod(shape)) * dtype.itemsize > 2**31
    with atomic_path(path, suffix=path.suffix) as tmp:
        tifffile.imwrite(
            tmp, pages(), shape=shape, dtype=dtype, compression="zlib", bigtiff=bigtiff,
            metadata={"axes": "ZYX"}, photometric="minisblack",
        )


def check_disk_space(targets: list[OutputTarget], shape: tuple[int, int, int], n_slices: int) -> int:
    """Refuse to start when the output's file system may run out of space; return the bytes needed.

    The estimate is the uncompressed size of the ``n_slices`` slices still to write (twice for a
    TIFF, which exists both as the zarr sidecar and as the final file at the end). Compression
    usually makes the real output much smaller, so this errs on the safe side.

    Raises:
        DiskSpaceError: the free space is less than the estimate.
    """
    per_slice = shape[1] * shape[2]
    by_fs: dict[Path, int] = {}
    for t in targets:
        need = n_slices * per_slice * t.dtype.itemsize * (2 if t.kind == "tif" else 1)
        where = t.path.parent.resolve()
        while not where.exists():
            where = where.parent
        by_fs[where] = by_fs.get(where, 0) + need
    total = 0
    for where, need in by_fs.items():
        free = shutil.disk_usage(where).free
        total += need
        if need > free:
            raise DiskSpaceError(
                f"not enough disk space for the output at {where}: it may need {_gb(need)} (uncompressed) "
                f"but only {_gb(free)} is free; free some space or choose another --output"
            )
    return total


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def record_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Which job fields differ between a stored record and this job, as ``key: old != new``."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} != {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class PredictionOutputs:
    """The mask output (and optionally the probability output) of one prediction job.

    Use :meth:`inspect` first (read-only: which slices are done, or why the outputs cannot be used),
    then :meth:`open` (create or reopen), :meth:`write` each slice, :meth:`mark_done`, and
    :meth:`finish` when every slice is flagged.
    """

    def __init__(
        self,
        mask: str | Path,
        shape: tuple[int, int, int],
        job: dict[str, Any],
        *,
        probability: str | Path | None = None,
        probability_dtype: str = "float16",
        ome_scale: Mapping | None = None,
    ) -> None:
        self.mask = OutputTarget(mask, "mask", np.uint8)
        self.probability = (
            OutputTarget(probability, "probability", np.dtype(probability_dtype)) if probability else None
        )
        if self.probability is not None and self.probability.store.resolve() == self.mask.store.resolve():
            raise ConfigError(f"--probabilities {probability} is the same path as --output; give it its own path")
        self.shape = tuple(int(s) for s in shape)
        self.job = dict(job)
        self.ome_scale = ome_scale
        self.done_flags = DoneFlags(self.mask.store)
        self._resume = False

    @property
    def targets(self) -> list[OutputTarget]:
        return [self.mask] + ([self.probability] if self.probability is not None else [])

    def _record(self, target: OutputTarget) -> dict[str, Any]:
        extra: dict[str, Any] = {"role": target.role, "complete": False, "shape": list(self.shape)}
        if target.role == "probability":
            extra["encoding"] = (
                "float16 P(foreground) in [0, 1]" if target.dtype == np.float16 else "uint8 round(255 * P(foreground))"
            )
        else:
            extra["encoding"] = "uint8 mask, 1 = foreground"
        return {"job": self.job, **extra}

    def inspect(self, overwrite: bool = False) -> np.ndarray:
        """Flags of the slices already done (all False for a fresh start), without changing anything.

        Raises:
            OutputExistsError: an output exists and is not a partial prediction of this same job (and
                ``overwrite`` is off), or a partial prediction lacks part of its outputs.
        """
        n = self.shape[0]
        self._resume = False
        if overwrite:
            for t in self.targets:
                if t.path.is_dir() and not is_zarr_store(t.path):
                    raise OutputExistsError(
                        f"{t.path} is a folder but not a zarr store; refusing to delete it for --overwrite. "
                        "Choose another path"
                    )
            return np.zeros(n, dtype=bool)
        records = {}
        for t in self.targets:
            if t.kind == "tif" and t.final_exists():
                raise OutputExistsError(
                    f"{t.path} already exists; pass --overwrite to replace it, or choose another path"
                )
            if not t.store.exists():
                continue
            record = t.read_record()
            if record is None:
                raise OutputExistsError(
                    f"{t.store} already exists and is not an emfm prediction; pass --overwrite to replace it, "
                    "or choose another path"
                )
            if record.get("complete"):
                raise OutputExistsError(
                    f"{t.store} already holds a complete prediction; pass --overwrite to recompute it, "
                    "or choose another path"
                )
            diff = record_differences(record.get("job", {}), self.job)
            if diff:
                raise OutputExistsError(
                    f"{t.store} holds a partial prediction of another job ({'; '.join(diff[:3])}); "
                    "pass --overwrite to start again, or choose another path"
                )
            records[t.role] = record
        if not records:
            return np.zeros(n, dtype=bool)
        missing = [t.store for t in self.targets if t.role not in records]
        if missing or not self.done_flags.exists():
            what = ", ".join(str(m) for m in missing) or str(self.done_flags.path)
            raise OutputExistsError(
                f"{self.mask.store} holds a partial prediction but {what} is missing, so it cannot be resumed; "
                "pass --overwrite to start again"
            )
        self._resume = True
        done = self.done_flags.read()
        if done.shape != (n,):
            raise OutputExistsError(
                f"{self.done_flags.path} flags {done.shape[0]} slices but the input has {n}; pass --overwrite"
            )
        return done

    @property
    def resumed(self) -> bool:
        return self._resume

    def open(self, overwrite: bool = False) -> None:
        """Create the stores (replacing old ones when ``overwrite``), or reopen them to resume."""
        if self._resume:
            return
        for t in self.targets:
            if overwrite:
                t.remove()
            t.create(self.shape, self._record(t), self.ome_scale)
        self.done_flags.create(self.shape[0])

    def write(self, z: int, mask: np.ndarray, probability: np.ndarray | None = None) -> None:
        self.mask.write(z, mask)
        if self.probability is not None:
            if probability is None:
                raise ValueError("this job writes probabilities; pass one for every slice")
            self.probability.write(z, probability)

    def mark_done(self, z0: int, z1: int | None = None) -> None:
        """Flag slices ``z0 .. z1-1`` as written; call only after their data are stored."""
        self.done_flags.mark(z0, z0 + 1 if z1 is None else z1)

    def done(self) -> np.ndarray:
        return self.done_flags.read()

    def finish(self, progress: bool = False) -> None:
        """Every slice is done: finalise each output (TIFF conversion) and drop the done flags."""
        if self.probability is not None:
            self.probability.finish(progress)
        self.mask.finish(progress)
        if self.mask.kind != "tif":
            self.done_flags.remove()
