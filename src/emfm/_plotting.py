"""Figures without pyplot: no global backend switch, no interactive state, atomic PNG writes.

emfm is called from notebooks and from long study runs; building ``matplotlib.figure.Figure``
objects directly and rendering them with the Agg canvas leaves the user's pyplot untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emfm._io import atomic_path


def new_figure(**kwargs: Any):
    """A ``matplotlib.figure.Figure`` (``figsize``, ``dpi``...), not registered with pyplot."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: str | Path, *, dpi: int | None = None, tight: bool = True) -> Path:
    """Render ``fig`` with Agg and write it atomically (a reader never sees half a PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None, format=path.suffix.lstrip(".") or "png")
    return path
