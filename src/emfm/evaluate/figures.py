"""Figures a run writes: its loss curves and a few test slices with truth and prediction overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emfm._plotting import new_figure, save_figure


def plot_curves(history: Sequence[dict], path: str | Path, *, best_epoch: int | None = None, title: str = "") -> None:
    """Train and validation Dice loss per epoch, with the restored (best) epoch marked."""
    fig = new_figure(figsize=(6, 4), dpi=110)
    ax = fig.subplots()
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, ms=3, label=label)
    if best_epoch is not None and best_epoch >= 0:
        ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Dice loss")
    ax.set_title(title or "training curve")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, tight=False)


def _overlay(image: np.ndarray, mask: np.ndarray, color: tuple[float, float, float]) -> np.ndarray:
    grey = image.astype(np.float32)
    grey = (grey - grey.min()) / max(float(grey.max() - grey.min()), 1e-6)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    m = mask.astype(bool)
    rgb[m] = 0.55 * rgb[m] + 0.45 * np.asarray(color)
    return rgb


def plot_examples(
    panels: Sequence[tuple[str, str, np.ndarray, np.ndarray, np.ndarray, float | None]], path: str | Path
) -> None:
    """One row per slice: image, truth (green), prediction (magenta); titles carry the slice's IoU.

    Args:
        panels: (dataset, slice id, image, truth, prediction, IoU) per row.
    """
    rows = max(len(panels), 1)
    fig = new_figure(figsize=(10, 3.2 * rows), dpi=100)
    axes = fig.subplots(rows, 3, squeeze=False)
    for row, (name, sid, image, truth, pred, iou) in zip(axes, panels):
        row[0].imshow(image, cmap="gray")
        row[0].set_title(f"{name} slice {sid}")
        row[1].imshow(_overlay(image, truth, (0.1, 0.9, 0.2)))
        row[1].set_title("truth")
        row[2].imshow(_overlay(image, pred, (0.95, 0.1, 0.8)))
        row[2].set_title("prediction" + (f" (IoU {iou:.3f})" if iou is not None else ""))
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, tight=False)
