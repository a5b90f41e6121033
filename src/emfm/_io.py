"""Atomic writes: a reader never sees a half-written file, even after SIGKILL.

Write to a temporary file in the same directory, flush and fsync, then ``os.replace``. The standard
library has the pieces but no single call for it, hence these few lines.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


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
