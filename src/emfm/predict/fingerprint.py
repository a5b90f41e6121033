"""A fingerprint of a prediction's input, so a resumed job never writes two inputs into one mask volume.

The job record already holds the input's path, shape and dtype; an input rewritten in place with the same
shape (a re-exported stack, a folder whose slices were replaced) would pass those. The fingerprint adds what
changes when the bytes do: the total size, the newest modification time, and a SHA-256 of samples of the
content (the first, middle and last 64 KiB of each of up to 16 files spread through the input). Reading the
whole input would cost as much as a pass over it; samples catch a rewrite at a cost of milliseconds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from emfm.data.readers import split_container

_SAMPLE = 64 * 1024
_MAX_FILES = 16


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def _sample(path: Path, size: int, digest: Any) -> None:
    with open(path, "rb") as fh:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            fh.seek(offset)
            digest.update(fh.read(_SAMPLE))


def input_fingerprint(spec: str) -> dict[str, Any]:
    """``{"files", "bytes", "mtime_ns", "sample_sha256"}`` of the input named by ``spec``."""
    path = split_container(str(Path(spec).expanduser()))[0]  # store.zarr:array and file.h5:key: the file
    files = _files(path)
    stats = [f.stat() for f in files]
    digest = hashlib.sha256()
    step = max(1, len(files) // _MAX_FILES)
    for f, st in list(zip(files, stats))[::step][:_MAX_FILES]:
        digest.update(os.fsencode(f.relative_to(path) if f != path else f.name))
        digest.update(str(st.st_size).encode())
        _sample(f, st.st_size, digest)
    return {
        "files": len(files),
        "bytes": sum(st.st_size for st in stats),
        "mtime_ns": max((st.st_mtime_ns for st in stats), default=0),
        "sample_sha256": digest.hexdigest(),
    }
