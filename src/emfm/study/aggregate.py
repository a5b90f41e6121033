"""From run directories to ``results.csv`` and per-cell summaries (mean and spread over seeds)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emfm._io import atomic_write_text
from emfm.study.grid import RunSpec

COLUMNS = [
    "run_id", "backbone", "weights_id", "adapter", "head", "train_sets", "test_set", "seed", "resolution",
    "pairing", "balance", "ablation", "fg_iou", "dice", "fg_iou_resized", "n_slices", "epochs_run",
    "best_epoch", "trainable_params", "wall_seconds", "label_budget", "train_slices", "train_seconds",
    "peak_memory_mb", "align", "feature_frechet", "feature_probe_auc", "lora_layout", "adapter_params",
    "cv_folds", "cv_fold", "fg_iou_low", "fg_iou_high", "interval", "empty_slices",
]
#: How ``fg_iou_low`` / ``fg_iou_high`` of a run's row were computed (the ``interval`` column).
SLICE_INTERVAL = "95% block bootstrap over slices"
CELL = (
    "backbone", "adapter", "lora_layout", "head", "resolution", "train_sets", "pairing", "balance", "ablation",
    "label_budget", "align", "test_set",
)


def _short_id(weights_id: str) -> str:
    """A weights digest cut to 12 characters; words (a from-scratch model's "none ...") kept whole."""
    return weights_id[:12] if all(c in "0123456789abcdef" for c in weights_id) else weights_id


def _size(run: dict[str, Any]) -> int | str:
    """The table's px column: the whole-slice resize, or the pixel scale (tiles or a U-Net's whole slice)."""
    scale = run.get("scale")
    return run["resolution"] if scale is None else ("native" if float(scale) == 1.0 else f"scale {float(scale):g}")


def _feature_shift(metrics: dict[str, Any]) -> tuple[float | None, float | None]:
    """The run's head-feature Fréchet distance and probe AUC between its test sets, when it has one pair."""
    pairs = [p for p in (metrics.get("feature_shift") or {}).values() if "frechet" in p]
    if len(pairs) != 1:
        return None, None
    return pairs[0]["frechet"]["value"], pairs[0]["probe_auc"]


def _lora_layout(run: dict[str, Any]) -> str:
    """A LoRA run's layout (``fused-qkv`` or ``separate``; runs from before it was recorded were
    ``separate``, see :class:`emfm.adapters.lora.LoraSettings`); empty for other adapters."""
    if run.get("adapter") != "lora":
        return ""
    return run.get("lora_layout") or (run.get("adapter_settings") or {}).get("layout") or "separate"


def rows_for(spec: RunSpec, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    run = metrics["run"]
    frechet, probe_auc = _feature_shift(metrics)
    tests = dict(metrics["test"])
    if "test_pooled" in metrics:
        tests["pooled"] = metrics["test_pooled"]
    rows = []
    for test_set, m in tests.items():
        rows.append({
            "run_id": spec.run_id, "backbone": run["backbone"], "weights_id": _short_id(run["weights_id"]),
            "adapter": run["adapter"], "head": run["head"], "train_sets": "+".join(run["train_sets"]),
            "test_set": test_set, "seed": run["seed"], "resolution": _size(run),
            "pairing": run["pairing"], "balance": run["balance"], "ablation": spec.ablation,
            "fg_iou": m["fg_iou"], "dice": m["dice"], "fg_iou_resized": m.get("fg_iou_resized"),
            "n_slices": m["n_slices"], "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
            "trainable_params": metrics["trainable_params"]["total"], "wall_seconds": metrics["wall_seconds"],
            # Runs written before label budgets and memory were recorded lack these: left empty.
            "label_budget": run.get("label_budget") or "",
            "train_slices": sum(metrics.get("train_slices", {}).values()) or "",
            "train_seconds": metrics.get("train_seconds"),
            "peak_memory_mb": (metrics.get("train_memory") or {}).get("peak_resident_mb"),
            "align": run.get("align", "none"),
            "feature_frechet": frechet, "feature_probe_auc": probe_auc,
            "lora_layout": _lora_layout(run), "adapter_params": metrics["trainable_params"].get("adapter"),
            # the published split: empty; else fold cv_fold (0-based) of cv_folds
            **_fold(spec, run),
            **_slice_interval(m),
            "empty_slices": m.get("empty_slices", _empty_slices(m)),
            # per-slice (intersections, unions) per stack, for paired bootstraps (emfm.study.comparisons); not a column
            "_slice_counts": _slice_counts(m, metrics, test_set),
        })
    return rows


def _stack_counts(m: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """A test set's per-slice (intersections, unions), or None for runs from before they were recorded."""
    per_slice = m.get("per_slice") or []
    if not per_slice or any("union" not in s for s in per_slice):
        return None
    return [int(s["intersection"]) for s in per_slice], [int(s["union"]) for s in per_slice]


def _slice_counts(m: dict[str, Any], metrics: dict[str, Any], test_set: str) -> list | None:
    """Per-slice counts of each stack behind a row: one stack, or each of the pooled ones."""
    if test_set != "pooled":
        counts = _stack_counts(m)
        return [counts] if counts else None
    stacks = [_stack_counts(metrics["test"][name]) for name in m.get("datasets", metrics["test"])]
    return stacks if stacks and all(stacks) else None


def _slice_interval(m: dict[str, Any]) -> dict[str, Any]:
    """The run's 95% interval of a test set's IoU over its slices, as evaluation recorded it."""
    interval = m.get("fg_iou_interval")
    if not interval:
        return {"fg_iou_low": None, "fg_iou_high": None, "interval": ""}
    return {"fg_iou_low": interval["low"], "fg_iou_high": interval["high"], "interval": SLICE_INTERVAL}


def _empty_slices(m: dict[str, Any]) -> int | None:
    """Slices without foreground in truth or prediction (IoU undefined), counted from per-slice IoUs."""
    per_slice = m.get("per_slice")
    return sum(1 for s in per_slice if s.get("fg_iou") is None) if per_slice else None


def _fold(spec: RunSpec, run: dict[str, Any]) -> dict[str, Any]:
    """The run's cross-validation fold: as its metrics record it, else (runs from before they did) as its
    spec's config says; empty for the published split."""
    folds = run.get("cv_folds") if "cv_folds" in run else getattr(spec.config, "cv_folds", None)
    fold = run.get("cv_fold") if "cv_fold" in run else getattr(spec.config, "cv_fold", 0)
    return {"cv_folds": folds or "", "cv_fold": fold if folds else ""}


def collect_rows(specs: Sequence[RunSpec], study_dir: str | Path) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        metrics = spec.metrics(study_dir)
        if metrics is not None:
            rows.extend(rows_for(spec, metrics))
    return rows


def write_results(specs: Sequence[RunSpec], study_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``results.csv`` (one row per run and test set, atomically) and return the rows."""
    rows = collect_rows(specs, study_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in COLUMNS})
    atomic_write_text(Path(study_dir) / "results.csv", buf.getvalue())
    return rows


def summarise_cells(rows: Sequence[dict[str, Any]], metric: str = "fg_iou") -> list[dict[str, Any]]:
    """Mean, sample standard deviation, 95% t interval (None for one seed) and count over seeds for each cell
    of the grid; with one seed, ``slice_interval`` is that run's interval over its slices (or None)."""
    from emfm.stats import t_interval

    slice_intervals: dict[tuple, tuple[float, float] | None] = {}
    cells: dict[tuple, list[float]] = {}
    for row in rows:
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        key = tuple(row[k] for k in CELL)
        cells.setdefault(key, []).append(float(value))
        low, high = row.get("fg_iou_low"), row.get("fg_iou_high")
        slice_intervals[key] = (float(low), float(high)) if metric == "fg_iou" and low not in (None, "") else None
    out = []
    for key, values in cells.items():
        out.append({
            **dict(zip(CELL, key)),
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "interval": t_interval(values),
            "slice_interval": slice_intervals[key] if len(values) == 1 else None,
            "n": len(values),
            "values": values,
        })
    return out
