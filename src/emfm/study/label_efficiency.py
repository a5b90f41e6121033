"""How few labelled slices each method needs: the label-efficiency figure and tables of a study.

A study with ``label_budgets`` trains every method on N labelled slices of each training set; here its
in-domain rows (tested on the set it was trained on) become one curve per method of foreground IoU
against the slices it was given, with the spread over seeds (which redraw the slices as well as the
initialisation), a table of the smallest N at which each method reaches 90% of its own full-data score,
and each method's training time and peak memory beside its score at every N: the budget a user has.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emfm._plotting import new_figure, save_figure

#: A method "has learned the task" at the smallest N where its mean reaches this share of its full-data mean.
TARGET_SHARE = 0.9


def method_label(row: dict[str, Any], many_backbones: bool) -> str:
    """``unet (from scratch)``, ``frozen + fusion``, ``lora + fusion`` (with the backbone when several)."""
    if row["adapter"] == "scratch":
        return f"{row['backbone']} (from scratch)"
    label = f"{row['adapter']} + {row['head']}"
    if row.get("ablation") and row["ablation"] != row["adapter"]:
        label += f" ({row['ablation']})"
    return f"{label} [{row['backbone']}]" if many_backbones else label


def _finite(values: Sequence[Any]) -> list[float]:
    out = []
    for v in values:
        if v not in (None, "") and not (isinstance(v, float) and math.isnan(v)):
            out.append(float(v))
    return out


def efficiency_points(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (dataset, method, labelled slices): IoU mean, sd, seeds, and mean time and memory.

    Only in-domain rows count (a run trained on one set, scored on that set); ``slices`` is the number a run
    was actually given, so ``all`` sits at the training split's size.
    """
    many = len({r["backbone"] for r in rows if r["adapter"] != "scratch"}) > 1
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        trained = str(r["train_sets"]).split("+")
        if len(trained) != 1 or r["test_set"] != trained[0] or r.get("train_slices") in (None, ""):
            continue
        groups.setdefault((r["test_set"], method_label(r, many), int(r["train_slices"])), []).append(r)
    points = []
    for (dataset, method, slices), group in sorted(groups.items()):
        ious = _finite([g["fg_iou"] for g in group])
        if not ious:
            continue
        seconds = _finite([g.get("train_seconds") for g in group])
        memory = _finite([g.get("peak_memory_mb") for g in group])
        points.append({
            "dataset": dataset, "method": method, "slices": slices,
            "budget": group[0].get("label_budget") or "all",
            "mean": statistics.fmean(ious), "sd": statistics.stdev(ious) if len(ious) > 1 else None,
            "n": len(ious), "values": ious,
            "train_seconds": statistics.fmean(seconds) if seconds else None,
            "peak_memory_mb": max(memory) if memory else None,
        })
    return points


def smallest_budgets(points: Sequence[dict[str, Any]], share: float = TARGET_SHARE) -> list[dict[str, Any]]:
    """Per (dataset, method): its full-data score (the most slices it was given) and the smallest N whose
    mean reaches ``share`` of it."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in points:
        by.setdefault((p["dataset"], p["method"]), []).append(p)
    out = []
    for (dataset, method), pts in by.items():
        pts = sorted(pts, key=lambda p: p["slices"])
        full = pts[-1]
        reached = next((p for p in pts if p["mean"] >= share * full["mean"]), full)
        out.append({"dataset": dataset, "method": method, "full_slices": full["slices"], "full_mean": full["mean"],
                    "smallest": reached["slices"], "smallest_mean": reached["mean"]})
    return out


def plot_label_efficiency(points: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One panel per dataset: IoU against labelled slices (log axis), a line per method, seeds as dots and
    the sd as a band."""
    datasets = list(dict.fromkeys(p["dataset"] for p in points))
    methods = list(dict.fromkeys(p["method"] for p in points))
    fig = new_figure(figsize=(5.2 * max(1, len(datasets)), 4.3), dpi=110)
    axes = fig.subplots(1, max(1, len(datasets)), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        for k, method in enumerate(methods):
            pts = sorted((p for p in points if p["dataset"] == dataset and p["method"] == method),
                         key=lambda p: p["slices"])
            if not pts:
                continue
            xs, ys = [p["slices"] for p in pts], [p["mean"] for p in pts]
            sd = [p["sd"] or 0.0 for p in pts]
            color = f"C{k % 10}"
            ax.plot(xs, ys, marker="o", color=color, label=method)
            low, high = [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)]
            ax.fill_between(xs, low, high, color=color, alpha=0.15)
            for p in pts:
                ax.scatter([p["slices"]] * len(p["values"]), p["values"], s=9, color=color, alpha=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("labelled training slices (log scale)")
        ax.set_ylabel("foreground IoU (pooled, native resolution)")
        ax.set_title(f"trained and tested on {dataset}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    # Two legend entries per panel's width fit; more go on further rows.
    fig.legend(handles, labels, loc="upper center", ncol=max(1, min(len(labels), 2 * len(datasets))), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.84))
    save_figure(fig, path, tight=False)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def label_efficiency_text(rows: Sequence[dict[str, Any]], figures: Path) -> str:
    """The report section: figure, the 90% table and the score / time / memory table ("" without budgets)."""
    if not any(r.get("label_budget") for r in rows):
        return ""
    points = efficiency_points(rows)
    if not points:
        return "No in-domain run (trained and tested on the same set) has finished yet."
    plot_label_efficiency(points, figures / "label_efficiency.png")
    lines = [
        "Foreground IoU on the test set of the set each run was trained on, against the labelled training slices "
        "it was given (spread through the stack; seeds redraw them). Lines are means over seeds, bands ± sd, "
        "dots single runs.",
        "",
        "![label efficiency](figures/label_efficiency.png)",
        "",
        f"Smallest number of labelled slices at which each method reaches {TARGET_SHARE:.0%} of its own "
        "full-data score:",
        "",
        "| dataset | method | full data (slices) | IoU | reaches 90% at | IoU there |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in smallest_budgets(points):
        lines.append(f"| {s['dataset']} | {s['method']} | {s['full_slices']} | {s['full_mean']:.3f} | "
                     f"{s['smallest']} | {s['smallest_mean']:.3f} |")
    lines += ["", "Score beside the budget: mean training time and peak resident memory during training "
              "(the whole process: data, cached features and model) per run.", "",
              "| dataset | method | labelled slices | IoU | seeds | train time | peak memory |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in points:
        iou = f"{p['mean']:.3f}" + (f" ± {p['sd']:.3f}" if p["sd"] is not None else "")
        mem = f"{p['peak_memory_mb'] / 1024:.1f} GiB" if p["peak_memory_mb"] else "–"
        lines.append(f"| {p['dataset']} | {p['method']} | {p['slices']} | {iou} | {p['n']} | "
                     f"{_fmt_time(p['train_seconds'])} | {mem} |")
    return "\n".join(lines)
