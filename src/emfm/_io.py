"""Atomic writes: a reader never sees a half-written file, even after SIGKILL.

Write to a temporary file in the same directory, flush and fsync, then ``os.replace``. The standard
library has the pieces but no single call for it, hence these few lines. ``tempfile`` makes its files
private (mode 0600); the file is given the mode any other program's output gets (0666 less the user's
umask) before it takes its place, so a run or report on a group's shared storage is readable by the
group as the user's umask intends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: The modes ``open()`` and ``mkdir()`` ask for, before the umask takes its part.
FILE_MODE, DIR_MODE = 0o666, 0o777
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's
    ``/proc/self/status``); elsewhere set and restored under a lock, briefly to the strict 0o077."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        # After the writer: some (safetensors) write a file of their own in the temporary's place.
        os.chmod(tmp_path, FILE_MODE & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[Any]], None], mode: str = "w") -> None:
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        writer(fh)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def safe_name(name: str) -> str:
    """A dataset name usable as a file name (``folder:/a/b`` -> ``folder_a_b``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


def finite_json(obj: Any) -> Any:
    """JSON has no NaN: undefined values (an IoU with an empty union) become null."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (hashlib.file_digest needs Python 3.11; emfm supports 3.10)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
