"""One model for several EM sets: the domain-alignment section of a study report.

A study with ``aligns`` trains each joint cell once per method; its single-set runs are trained once. Here
every test set that was also a training set gets, per method, the joint model's foreground IoU with a 95%
t interval over seeds and its paired difference from the single-set model (same seeds, so the seed's
slice draw and initialisation cancel), beside the single-set model itself and the model trained on the
other set only (the set unseen: what transfer without alignment gives). The head-feature shift between the
test sets (Fréchet distance, domain-probe AUC; :mod:`emfm.evaluate.feature_shift`) says whether a method
brought the sets together where the head reads them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emfm._plotting import new_figure, save_figure
from emfm.stats import t_interval

SINGLE = "single set (trained on this set only)"
UNSEEN = "other set only (this set unseen)"


def _finite(value: Any) -> float | None:
    if value in (None, ""):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def method_of(row: dict[str, Any]) -> str | None:
    """The row's method for this section, or None for rows it leaves out (pooled scores, a test set that no
    training set of the study shares)."""
    trained = str(row["train_sets"]).split("+")
    if row["test_set"] == "pooled":
        return None
    if len(trained) > 1:
        return f"joint: {row.get('align') or 'none'}" if row["test_set"] in trained else None
    return SINGLE if row["test_set"] == trained[0] else UNSEEN


def _cell_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["backbone"], row["adapter"], row["head"], row["resolution"], row.get("label_budget") or "")


def alignment_points(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model cell, test set, method): IoU per seed, mean, 95% t interval, the paired difference from the
    single-set model, and the mean head-feature shift of the method's runs."""
    by: dict[tuple[Any, ...], dict[int, dict[str, Any]]] = {}
    for r in rows:
        method = method_of(r)
        iou = _finite(r.get("fg_iou"))
        if method is None or iou is None:
            continue
        by.setdefault((*_cell_key(r), r["test_set"], method), {})[int(r["seed"])] = r
    points = []
    for key, seeds in sorted(by.items(), key=lambda kv: (kv[0][:-1], _order(kv[0][-1]))):
        *cell, test_set, method = key
        values = [float(seeds[s]["fg_iou"]) for s in sorted(seeds)]
        point: dict[str, Any] = {
            "cell": tuple(cell), "test_set": test_set, "method": method, "seeds": sorted(seeds),
            "values": values, "mean": statistics.fmean(values), "interval": t_interval(values),
        }
        single = by.get((*cell, test_set, SINGLE), {})
        common = sorted(set(seeds) & set(single))
        if method != SINGLE and common:
            diffs = [float(seeds[s]["fg_iou"]) - float(single[s]["fg_iou"]) for s in common]
            point["difference"] = {"mean": statistics.fmean(diffs), "interval": t_interval(diffs), "n": len(diffs)}
        for column in ("feature_frechet", "feature_probe_auc"):
            found = [v for v in (_finite(seeds[s].get(column)) for s in seeds) if v is not None]
            point[column] = statistics.fmean(found) if found else None
        points.append(point)
    return points


def _order(method: str) -> tuple[int, str]:
    return (0 if method == SINGLE else 1 if method == UNSEEN else 2 if method == "joint: none" else 3, method)


def _fmt_interval(mean: float, interval: tuple[float, float] | None, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    text = fmt.format(mean)
    return text + (f" [{fmt.format(interval[0])}, {fmt.format(interval[1])}]" if interval else "")


def plot_alignment(points: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One panel per test set: each method's IoU (mean, 95% t interval, seeds as dots); the single-set model
    as a dashed line."""
    sets = list(dict.fromkeys(p["test_set"] for p in points))
    methods = sorted({p["method"] for p in points}, key=_order)
    fig = new_figure(figsize=(5.0 * max(1, len(sets)), 0.42 * len(methods) + 1.6), dpi=110)
    axes = fig.subplots(1, max(1, len(sets)), squeeze=False, sharey=True)[0]
    for ax, test_set in zip(axes, sets):
        mine = {p["method"]: p for p in points if p["test_set"] == test_set}
        for y, method in enumerate(methods):
            p = mine.get(method)
            if p is None:
                continue
            color = "0.35" if method in (SINGLE, UNSEEN) else "C0"
            if p["interval"]:
                low, high = p["interval"]
                ax.plot([max(0.0, low), min(1.0, high)], [y, y], color=color, lw=2, alpha=0.6)
            ax.scatter(p["values"], [y] * len(p["values"]), s=12, color=color, alpha=0.7)
            ax.scatter([p["mean"]], [y], marker="D", s=30, color=color, zorder=3)
        if SINGLE in mine:
            ax.axvline(mine[SINGLE]["mean"], color="0.35", ls="--", lw=1)
        ax.set_yticks(range(len(methods)), methods)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("foreground IoU (pooled, native resolution)")
        ax.set_title(f"tested on {test_set}")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def alignment_text(rows: Sequence[dict[str, Any]], figures: Path) -> str:
    """The report section ("" when the study compares no alignment method)."""
    if not any((r.get("align") or "none") != "none" for r in rows):
        return ""
    points = alignment_points(rows)
    if not points:
        return "No run trained on several sets has finished yet."
    plot_alignment(points, figures / "alignment.png")
    lines = [
        "Foreground IoU on each test set for the single-set model, the model trained on the other set only, and "
        "the joint model under each alignment method: mean over seeds with its 95% t interval (over seeds; with "
        "two seeds the interval is wide), and the paired difference from the single-set model on the same "
        "seeds. A difference whose interval excludes 0 is marked *. Head-feature shift: Fréchet distance and "
        "domain-probe AUC between the run's test sets in the input of the head's last layer (mean over the "
        "method's runs; AUC 0.5 means the sets cannot be told apart).",
        "",
        "![alignment](figures/alignment.png)",
        "",
        "| model | test set | method | IoU [95% CI] | vs single set [95% CI] | seeds | head-feature FD | probe AUC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        cell = " ".join(str(c) for c in p["cell"] if c not in ("", None))
        diff = p.get("difference")
        if diff:
            excl = diff["interval"] is not None and (diff["interval"][0] > 0 or diff["interval"][1] < 0)
            diff_text = _fmt_interval(diff["mean"], diff["interval"], signed=True) + (" *" if excl else "")
        else:
            diff_text = "–"
        fd = f"{p['feature_frechet']:.3g}" if p["feature_frechet"] is not None else "–"
        auc = f"{p['feature_probe_auc']:.3f}" if p["feature_probe_auc"] is not None else "–"
        lines.append(f"| {cell} | {p['test_set']} | {p['method']} | {_fmt_interval(p['mean'], p['interval'])} | "
                     f"{diff_text} | {len(p['seeds'])} | {fd} | {auc} |")
    return "\n".join(lines)
