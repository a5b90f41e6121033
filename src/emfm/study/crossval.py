"""The report's cross-validation section: the spread over folds beside the spread over seeds.

VNC has 20 labelled slices and its published split tests 3 of them, so one split's IoU says little about the
next. A study with ``cv_folds: K`` runs every cell on K folds of each training set's labelled slices
(:func:`emfm.data.splits.make_fold_split`) as well as on its seeds. Per cell this section shows each fold's
IoU (mean over seeds), the mean and SD over folds (how much the number depends on which slices are tested)
and the SD over seeds (mean over folds first: how much it depends on the training run). Only rows scored on
their own fold's test part count; a set a run did not train on is scored on its published test split, the
same slices in every fold, and is left to the results table.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from emfm.study.aggregate import CELL


def _sd(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def crossval_cells(rows: Sequence[dict[str, Any]], metric: str = "fg_iou") -> list[dict[str, Any]]:
    """Per cell and test set of the cross-validated rows: ``folds`` {fold: mean over seeds}, ``mean``,
    ``sd_folds``, ``sd_seeds`` and the counts of folds and seeds."""
    cells: dict[tuple, dict[tuple[int, int], float]] = {}
    for row in rows:
        if row.get("cv_folds") in ("", None) or row["test_set"] not in str(row["train_sets"]).split("+"):
            continue
        value = row.get(metric)
        if value is None or value != value:  # NaN: no foreground anywhere in the fold
            continue
        cells.setdefault(tuple(row[k] for k in CELL), {})[(int(row["cv_fold"]), int(row["seed"]))] = float(value)
    out = []
    for key, values in cells.items():
        folds = sorted({f for f, _ in values})
        seeds = sorted({s for _, s in values})
        per_fold = {f: statistics.fmean([v for (g, _), v in values.items() if g == f]) for f in folds}
        per_seed = [statistics.fmean([v for (_, t), v in values.items() if t == s]) for s in seeds]
        out.append({
            **dict(zip(CELL, key)), "folds": per_fold, "mean": statistics.fmean(per_fold.values()),
            "sd_folds": _sd(list(per_fold.values())), "sd_seeds": _sd(per_seed), "n_folds": len(folds),
            "n_seeds": len(seeds),
        })
    return out


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def crossval_text(rows: Sequence[dict[str, Any]]) -> str:
    """The section's body, or "" when the study has no cross-validated rows."""
    cells = crossval_cells(rows)
    if not cells:
        return ""
    k = max(len(c["folds"]) for c in cells)
    header = ["backbone", "adapter", "head", "trained on", "test set", *(f"fold {i + 1}" for i in range(k)),
              "mean", "SD over folds", "SD over seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for c in cells:
        folds = [_num(c["folds"].get(i)) for i in range(k)]
        lines.append("| " + " | ".join([
            str(c["backbone"]), str(c["adapter"]), str(c["head"]), str(c["train_sets"]), str(c["test_set"]), *folds,
            _num(c["mean"]), _num(c["sd_folds"]), _num(c["sd_seeds"]),
        ]) + " |")
    return (
        f"Each cell trained and scored on {k} folds of its training set's labelled slices (contiguous test blocks, "
        "so neighbouring slices never sit on both sides), each fold with every seed. Fold columns: foreground "
        "IoU on that fold's test slices, mean over seeds. SD over folds: of those fold means (which slices are "
        "tested); SD over seeds: of the per-seed means over folds (which training run). Where the first is "
        "the larger, a single split's number is mostly the split.\n\n" + "\n".join(lines)
    )
