"""Figures of the representation analysis, drawn with matplotlib's Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` objects rather than through pyplot, so nothing here
touches pyplot's global state or the user's interactive backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emfm._plotting import save_figure


def _save(fig: Any, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=120)


def plot_pca_scatter(
    coords: Mapping[str, np.ndarray],
    explained: Sequence[float],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """Scatter of the first two principal components, one colour per dataset.

    Args:
        coords: dataset name -> (n, 2) coordinates on PC1 and PC2.
        explained: explained-variance ratios of PC1 and PC2 (shown in the axis labels, in %).
        path: where to write the PNG.
        title: figure title (name the backbone and the embedding).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    markers = "os^Dvx"
    for i, (name, xy) in enumerate(coords.items()):
        xy = np.asarray(xy)
        label = f"{name} (n={len(xy)})"
        ax.scatter(xy[:, 0], xy[:, 1], s=22, alpha=0.75, marker=markers[i % len(markers)], label=label)
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.1f}% of variance)" if len(explained) > 1 else "PC2")
    ax.set_title(title, fontsize=10)
    ax.legend(title="dataset")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_pca_rgb(panels: Sequence[Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Per dataset, one slice beside RGB pictures of its patch features' first three components.

    Args:
        panels: per dataset ``{"dataset", "slice_id", "image" (2-D), "views": [{"label", "rgb" (h, w, 3)
            in [0, 1], "explained" (3 ratios)}, ...]}``, one view per set of tokens (final, a block...).
        path: where to write the PNG.
        title: figure title.
    """
    from matplotlib.figure import Figure

    n_cols = 1 + max(len(p["views"]) for p in panels)
    fig = Figure(figsize=(4.4 * n_cols, 3.8 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), n_cols, squeeze=False)
    for row, panel in zip(axes, panels):
        image = np.asarray(panel["image"])
        h, w = image.shape
        row[0].imshow(image, cmap="gray")
        row[0].set_title(f"{panel['dataset']}, slice {panel['slice_id']}", fontsize=10)
        for ax, view in zip(row[1:], panel["views"]):
            # The patch grid covers the whole slice: draw it over the same extent.
            ax.imshow(view["rgb"], interpolation="nearest", extent=(0, w, h, 0))
            ev = ", ".join(f"{100 * r:.1f}" for r in view["explained"])
            ax.set_title(f"{view['label']}: PC1-3 as RGB\n({ev}% of variance)", fontsize=9)
        for ax in row[1 + len(panel["views"]) :]:
            ax.set_axis_off()
        for ax in row[: 1 + len(panel["views"])]:
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_probe_curve(curves: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Patch-probe foreground IoU per layer, one line per dataset, with the all-foreground floor.

    Args:
        curves: dataset name -> ``{"layers": [...], "iou": [...], "trivial_iou": float}``.
        path: where to write the PNG.
        title: figure title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for name, curve in curves.items():
        iou = [np.nan if v is None else v for v in curve["iou"]]
        line = ax.plot(curve["layers"], iou, marker="o", label=f"{name} (test patches: {curve['n_test_patches']})")[0]
        if curve.get("trivial_iou") is not None:
            ax.axhline(curve["trivial_iou"], color=line.get_color(), ls=":", lw=1, label=f"{name}: all-foreground IoU")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block (0-based; the last is the final output)")
    ax.set_ylabel("foreground IoU of patches (test split)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_distances(panels: Sequence[Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Each estimator's between-dataset distance with its interval, above the within-dataset baselines.

    Args:
        panels: per estimator ``{"title": str, "rows": [(label, value, low, high), ...]}``; the first row
            is the between-dataset distance (drawn in red), the others the split-half baselines.
        path: where to write the PNG.
        title: figure title.
    """
    from matplotlib.figure import Figure

    n_rows = max(len(p["rows"]) for p in panels)
    fig = Figure(figsize=(8, (0.35 * n_rows + 0.9) * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        rows = panel["rows"]
        ypos = np.arange(len(rows))[::-1]
        for i, (y, (_, value, low, high)) in enumerate(zip(ypos, rows)):
            # Not an error bar: a small-sample bias can put the value outside its percentile interval.
            color = "C3" if i == 0 else "C0"
            ax.plot([low, high], [y, y], color=color, marker="|", markersize=12)
            ax.plot([value], [y], "o", color=color)
        ax.set_yticks(ypos, [r[0] for r in rows], fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.grid(alpha=0.3, axis="x")
    axes[-1].set_xlabel("distance")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
