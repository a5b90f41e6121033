"""Read EM slices and volumes from disk: one 2-D slice at a time, in the dtype it was stored in.

Two entry points:

- :func:`read_image` decodes one 2-D slice (PNG, WebP, JPEG, BMP through Pillow; TIFF through tifffile)
  into a ``(H, W)`` uint8 or uint16 array. Grey stored as RGB (as lossless WebP must be) becomes grey;
  1-bit (bilevel) PNGs and TIFFs, as masks are often saved, read as 0/255; real colour, float or signed
  data are refused with a :class:`~emfm.errors.DataError` that says what is supported, because a silent
  conversion would change the numbers a model sees.
- :func:`open_volume` opens a ``(Z, Y, X)`` volume lazily: a 3-D TIFF (memory-mapped, or through
  tifffile's zarr store when compressed or tiled; a 3- or 4-slice stack that tifffile saved, by its
  default, as planar RGB opens as those slices), a folder of 2-D slices (sorted by the number in the
  name, never as text, ``img.0001.png`` included), a zarr array or OME-Zarr image (its first,
  full-resolution level), or an HDF5 dataset. Slices are decoded only when indexed, so ``emfm predict``
  can stream volumes larger than memory.

Path syntax for containers: ``file.h5:group/dataset``, ``store.zarr`` or ``store.zarr:array/path``.

A corrupt or truncated file raises :class:`~emfm.errors.DataError` naming the file.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emfm.errors import DataError

logger = logging.getLogger(__name__)

#: File suffixes read as single 2-D slices.
PILLOW_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = PILLOW_SUFFIXES + TIFF_SUFFIXES
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
ZARR_SUFFIXES = (".zarr", ".ome.zarr")

SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_SUPPORTED_TEXT = "8-bit or 16-bit unsigned grey (uint8, uint16)"


def _check_dtype(dtype: np.dtype, where: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        return dtype.newbyteorder("=")
    raise DataError(
        f"{where}: pixel type {dtype.name} is not supported; emfm reads {_SUPPORTED_TEXT} images. "
        "Convert it first (e.g. rescale floats to uint16)."
    )


def _to_grey(arr: np.ndarray, where: str) -> np.ndarray:
    """(H, W, C) with C in {2, 3, 4} -> (H, W) when the colour channels are equal and alpha is opaque."""
    channels = arr.shape[-1]
    colour = arr[..., :3] if channels >= 3 else arr[..., :1]
    if channels in (2, 4):
        alpha = arr[..., -1]
        if not (alpha == np.iinfo(arr.dtype).max).all():
            raise DataError(
                f"{where}: has transparent pixels (alpha channel not fully opaque); emfm reads grey "
                "images (RGB or RGBA only when R = G = B and alpha is opaque). Save it as grey."
            )
    first = colour[..., 0]
    for c in range(1, colour.shape[-1]):
        if not np.array_equal(first, colour[..., c]):
            raise DataError(
                f"{where}: is a colour image (its channels differ); emfm reads grey images, and RGB only "
                "when R = G = B. Convert it to grey yourself if that is what you mean."
            )
    return np.ascontiguousarray(first)


def _normalise_2d(arr: np.ndarray, where: str) -> np.ndarray:
    """Bring a decoded (H, W) or channel-last (H, W, C) array to a supported (H, W), or explain why not."""
    if arr.ndim == 3:
        if arr.shape[-1] not in (2, 3, 4):
            raise DataError(f"{where}: has shape {arr.shape}, expected one 2-D slice (H, W) or grey stored as RGB(A).")
        _check_dtype(arr.dtype, where)
        arr = _to_grey(arr, where)
    if arr.ndim != 2:
        raise DataError(
            f"{where}: has shape {arr.shape}, expected one 2-D slice (H, W). "
            "For a 3-D stack use open_volume (or a folder of 2-D slices)."
        )
    dtype = _check_dtype(arr.dtype, where)
    if arr.dtype != dtype:  # big-endian 16-bit -> native
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


_PILLOW_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as opened:
        opened.load()
        img = opened
        if img.mode == "1":
            img = img.convert("L")  # bilevel -> 0/255
        elif img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode not in _PILLOW_MODES and not img.mode.startswith("I;16"):
            raise DataError(f"{path}: image mode {img.mode!r} is not supported; emfm reads {_SUPPORTED_TEXT} images.")
        arr = np.asarray(img)
        mode = img.mode
    if mode == "I":  # 32-bit integer (some 16-bit PNG writers); accept only if it fits uint16
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{path}: 32-bit integer values outside 0..65535; emfm reads {_SUPPORTED_TEXT}.")
        arr = arr.astype(np.uint16)
    return arr


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.series) == 0:
            raise DataError(f"{path}: TIFF holds no image data.")
        series = tif.series[0]
        arr, axes = series.asarray(), series.axes
    if arr.dtype == np.bool_:  # a 1-bit (bilevel) TIFF, as masks are often saved: 0/255, like a bilevel PNG
        arr = arr.view(np.uint8) * np.uint8(255)
    for i in reversed(range(len(axes))):  # drop length-1 axes other than Y, X and samples
        if axes[i] not in "YXS" and arr.shape[i] == 1:
            arr, axes = arr.squeeze(i), axes[:i] + axes[i + 1 :]
    if set(axes) - set("YXS"):
        raise DataError(
            f"{path}: is a stack of shape {arr.shape} (axes {axes}); read_image reads one 2-D slice. "
            "Use open_volume for stacks."
        )
    if axes == "SYX" and arr.shape[0] in (3, 4) and any(not np.array_equal(arr[0], a) for a in arr[1:]):
        raise DataError(
            f"{path}: holds {arr.shape[0]} different planes stored as planar RGB, which is how tifffile saves a "
            f"({arr.shape[0]}, Y, X) array by default; read_image reads one grey slice. If they are slices of a "
            "stack, open it as a volume, or save them with tifffile.imwrite(path, stack, photometric='minisblack')."
        )
    if "S" in axes:  # samples (colour) last, as Pillow gives them
        arr = np.moveaxis(arr, axes.index("S"), -1)
    return arr


def read_image(path: str | Path) -> np.ndarray:
    """Decode one 2-D slice, keeping its stored bit depth.

    Args:
        path: a PNG, WebP, JPEG, BMP or TIFF file holding one 2-D slice.

    Returns:
        A C-contiguous ``(H, W)`` array, ``uint8`` or ``uint16`` as stored. RGB(A) files whose colour
        channels are equal (and alpha opaque) are returned as grey.

    Raises:
        DataError: the file is missing, corrupt or truncated, holds colour (channels differ), more than
            one slice, or a pixel type other than uint8/uint16. The message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            f"{path}: unknown image type {suffix!r}; emfm reads {', '.join(IMAGE_SUFFIXES)} slices "
            "(and .h5/.zarr volumes through open_volume)."
        )
    try:
        arr = _read_tiff(path) if suffix in TIFF_SUFFIXES else _read_pillow(path)
        return _normalise_2d(arr, str(path))
    except DataError:
        raise
    except Exception as exc:  # any decoder failure is a problem with this file, so say which one
        raise DataError(f"{path}: cannot be decoded, the file is corrupt or truncated ({exc}).") from exc


# --------------------------------------------------------------------------------------------------
# Volumes
# --------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(\d+)")


def number_in_name(name: str) -> int | None:
    """The last run of digits in a file's name without its image suffix (``mask0007.png`` -> 7,
    ``img.0001.png`` -> 1, ``z12.ome.tif`` -> 12), or None if it has none."""
    base = Path(name).name
    lower = base.lower()
    for suffix in (".ome.tiff", ".ome.tif", *sorted(IMAGE_SUFFIXES, key=len, reverse=True)):
        if lower.endswith(suffix):
            base = base[: -len(suffix)]
            break
    found = _NUMBER.findall(base)
    return int(found[-1]) if found else None


class Volume(ABC):
    """A read-only, lazily decoded ``(Z, Y, X)`` stack; ``volume[z]`` decodes one slice.

    Use it as a context manager (or call :meth:`close`) to release file handles.
    """

    path: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        if not isinstance(z, (int, np.integer)):
            raise TypeError(f"{self.path}: index a volume with one slice number, got {z!r}")
        n = self.shape[0]
        if not -n <= z < n:
            raise IndexError(f"{self.path}: slice {z} is out of range for {n} slices")
        z = int(z) % n
        try:
            out = self._read(z)
        except DataError:
            raise
        except Exception as exc:  # decoder/storage failure: name the file and slice
            raise DataError(f"{self.path}: slice {z} cannot be read, the data are corrupt ({exc}).") from exc
        return np.ascontiguousarray(out)

    def __iter__(self) -> Iterator[np.ndarray]:
        for z in range(len(self)):
            yield self[z]

    @abstractmethod
    def _read(self, z: int) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 (an optional hook: most volumes hold no handle)
        """Release open file handles (no-op where there are none)."""

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        z, y, x = self.shape
        return f"{type(self).__name__}({self.path!r}, {z} x {y} x {x}, {self.dtype.name})"


class ArrayVolume(Volume):
    """A volume over anything indexable like a numpy array: memmap, zarr array or h5py dataset.

    Leading axes of length 1 (OME-Zarr's t and c) are dropped; a 2-D array is a one-slice volume.
    """

    def __init__(self, array: Any, path: str, chunks: tuple[int, ...] | None = None, closer: Any = None):
        shape = tuple(int(s) for s in array.shape)
        where = path
        self.dtype = _check_dtype(array.dtype, where)
        if len(shape) == 2:
            self._lead: tuple[int, ...] | None = None
            self.shape = (1, shape[0], shape[1])
        elif len(shape) >= 3 and all(s == 1 for s in shape[:-3]):
            self._lead = (0,) * (len(shape) - 3)
            self.shape = (shape[-3], shape[-2], shape[-1])
        else:
            raise DataError(
                f"{where}: array of shape {shape} is not a grey (Z, Y, X) volume; emfm reads 2-D or 3-D "
                "arrays (leading axes of length 1, such as OME-Zarr's t and c, are allowed)."
            )
        self.path = path
        self.chunks = chunks
        self._array = array
        self._closer = closer

    def _read(self, z: int) -> np.ndarray:
        out = np.asarray(self._array[...] if self._lead is None else self._array[self._lead + (z,)])
        return out.astype(self.dtype, copy=False)

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None


class FolderVolume(Volume):
    """A folder of 2-D slices, ordered by the number in each name (``z2`` before ``z10``)."""

    def __init__(self, folder: Path):
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        if not files:
            raise DataError(
                f"{folder}: holds no image slices ({', '.join(IMAGE_SUFFIXES)}); expected a folder of 2-D slices."
            )
        by_number: dict[int, list[Path]] = {}
        unnumbered = []
        for p in files:
            n = number_in_name(p.name)
            if n is None:
                unnumbered.append(p.name)
            else:
                by_number.setdefault(n, []).append(p)
        if unnumbered:
            raise DataError(
                f"{folder}: slices must carry their index in the name; these have no number: "
                f"{', '.join(sorted(unnumbered)[:5])}."
            )
        dup = {n: ps for n, ps in by_number.items() if len(ps) > 1}
        if dup:
            n, ps = sorted(dup.items())[0]
            raise DataError(
                f"{folder}: {len(dup)} slice numbers occur more than once, e.g. {n}: "
                f"{', '.join(sorted(p.name for p in ps))}. Keep one file per slice."
            )
        self.files = [by_number[n][0] for n in sorted(by_number)]
        first = read_image(self.files[0])
        self.path = str(folder)
        self.shape = (len(self.files), int(first.shape[0]), int(first.shape[1]))
        self.dtype = first.dtype
        self.chunks = (1, self.shape[1], self.shape[2])

    def _read(self, z: int) -> np.ndarray:
        img = read_image(self.files[z])
        if img.shape != self.shape[1:] or img.dtype != self.dtype:
            raise DataError(
                f"{self.files[z]}: is {img.shape[0]} x {img.shape[1]} {img.dtype.name}, but the first slice "
                f"of {self.path} is {self.shape[1]} x {self.shape[2]} {self.dtype.name}; all slices must match."
            )
        return img


def split_container(spec: str) -> tuple[Path, str | None]:
    """``file.h5:key`` -> (file.h5, key); a plain existing path -> (path, None)."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), None
    head, _, key = spec.rpartition(":")
    if head and Path(head).suffix.lower() in H5_SUFFIXES + (".zarr",):
        return Path(head), key.strip("/") or None
    return Path(spec), None


def _open_tiff(path: Path) -> Volume:
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        if len(tif.series) == 0:
            raise DataError(f"{path}: TIFF holds no image data.")
        series = tif.series[0]
        if series.axes == "SYX":  # tifffile's default for a (3, Y, X) or (4, Y, X) array: planes, not colour
            logger.warning(
                "%s: stored as %d planes of planar RGB (tifffile's default for a (%d, Y, X) array); "
                "reading them as %d grey slices", path, series.shape[0], series.shape[0], series.shape[0],
            )
        elif "S" in series.axes:
            raise DataError(
                f"{path}: is a colour TIFF (axes {series.axes}); open_volume reads grey stacks. If it holds grey "
                "slices, save them with tifffile.imwrite(path, stack, photometric='minisblack')."
            )
        try:
            array: Any = tifffile.memmap(path, mode="r", series=0)
            chunks = None
            tif.close()
            closer = None
        except ValueError:  # compressed or tiled: decode slice by slice through tifffile's zarr store
            import zarr

            array = zarr.open(series.aszarr(), mode="r")
            chunks = tuple(int(c) for c in array.chunks)
            closer = tif.close
        return ArrayVolume(array, str(path), chunks=chunks, closer=closer)
    except BaseException:
        tif.close()
        raise


def _ome_first_level(group: Any) -> str | None:
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        return None
    return str(multiscales[0]["datasets"][0]["path"])


def _open_zarr(path: Path, key: str | None) -> Volume:
    import zarr

    node = zarr.open(str(path), mode="r")
    where = f"{path}:{key}" if key else str(path)
    if key:
        if not isinstance(node, zarr.Group) or key not in node:
            raise DataError(f"{where}: no array {key!r} in this zarr store.")
        node = node[key]
    if isinstance(node, zarr.Group):
        level = _ome_first_level(node)
        if level is not None:
            node, where = node[level], f"{where}:{level}"
        else:
            arrays = [name for name, _ in node.arrays()]
            if len(arrays) != 1:
                raise DataError(
                    f"{where}: is a zarr group with {len(arrays)} arrays ({', '.join(sorted(arrays)) or 'none'}) "
                    "and no OME-Zarr multiscales; name one as STORE.zarr:ARRAY."
                )
            node, where = node[arrays[0]], f"{where}:{arrays[0]}"
    if isinstance(node, zarr.Group):
        raise DataError(f"{where}: is a zarr group, not an array; name an array as STORE.zarr:ARRAY.")
    return ArrayVolume(node, where, chunks=tuple(int(c) for c in node.chunks))


def _open_h5(path: Path, key: str | None) -> Volume:
    import h5py

    f = h5py.File(path, "r")
    try:
        if key is None:
            names: list[str] = []
            f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
            if len(names) != 1:
                raise DataError(
                    f"{path}: holds {len(names)} datasets ({', '.join(names[:8]) or 'none'}); "
                    "name one as FILE.h5:DATASET."
                )
            key = names[0]
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise DataError(f"{path}:{key}: no dataset {key!r} in this HDF5 file.")
        ds = f[key]
        return ArrayVolume(ds, f"{path}:{key}", chunks=ds.chunks, closer=f.close)
    except BaseException:
        f.close()
        raise


def open_volume(path: str | Path) -> Volume:
    """Open a ``(Z, Y, X)`` volume lazily, whatever it is stored in.

    Args:
        path: a 3-D (or 2-D) TIFF; a folder of 2-D slices; ``store.zarr`` or ``store.zarr:array/path``
            (an OME-Zarr image opens at its first multiscale level); ``file.h5:dataset/key``.

    Returns:
        A :class:`Volume`: ``len(v)``, ``v.shape``, ``v.dtype``, ``v.chunks`` (None when unchunked) and
        ``v[z]`` -> one decoded 2-D slice. Nothing is read until a slice is indexed.

    Raises:
        DataError: the path does not exist, is corrupt, or is not a grey uint8/uint16 volume.
    """
    spec = str(path)
    file, key = split_container(spec)
    if not file.exists():
        raise DataError(f"{spec}: no such file or folder.")
    suffix = file.suffix.lower()
    try:
        if suffix == ".zarr" or (
            file.is_dir() and any((file / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))
        ):
            return _open_zarr(file, key)
        if suffix in H5_SUFFIXES:
            return _open_h5(file, key)
        if key is not None:
            raise DataError(f"{spec}: a ':key' suffix only applies to .h5 and .zarr containers.")
        if file.is_dir():
            return FolderVolume(file)
        if suffix in TIFF_SUFFIXES:
            return _open_tiff(file)
        if suffix in PILLOW_SUFFIXES:
            img = read_image(file)
            return ArrayVolume(img, str(file), chunks=None)
    except DataError:
        raise
    except Exception as exc:  # a container library failed to parse it: name the file
        raise DataError(f"{spec}: cannot be opened as a volume, the file is corrupt or truncated ({exc}).") from exc
    raise DataError(
        f"{spec}: unknown volume type {suffix!r}; emfm opens .tif/.tiff stacks, folders of slices, "
        ".zarr stores (STORE.zarr[:ARRAY]) and HDF5 files (FILE.h5:DATASET)."
    )
