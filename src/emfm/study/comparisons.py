"""Paired comparisons, with the sentences a report may say about them.

The study's conclusions are comparisons: joint training against training on one set, LoRA against the frozen
backbone. Two cells' means with overlapping spreads do not say whether one beat the other; their paired
difference does, computed on what the two share:

- with two or more shared seeds (and folds), the per-seed differences and a Student-t interval over them
  (:func:`emfm.stats.paired_t`): the seeds are independent repeats of the whole run, each seed's draw of
  initialisation and batches paired;
- with one shared seed, the difference of the two runs' pooled IoUs and a paired moving-block bootstrap of the
  slices they were both scored on (:func:`emfm.stats.paired_ratio_difference_interval`): how much the
  difference would move with other slices like these, not with another seed, and said so.

A sentence says "costs" or "gains" only where the interval excludes zero; elsewhere it says the data cannot
tell the two apart. The README's findings are worded from these sentences.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from emfm.stats import BlockBootstrap, excludes_zero, paired_ratio_difference_interval, paired_t

#: What makes two runs comparable, beside the axis the comparison varies.
_MODEL = ("backbone", "head", "resolution", "pairing", "balance", "ablation", "label_budget")


def _value(row: dict[str, Any]) -> float | None:
    value = row.get("fg_iou")
    if value in (None, ""):
        return None
    value = float(value)
    return None if value != value else value


def _unit(row: dict[str, Any]) -> tuple[int, str]:
    """A run's repeat: its seed and (cross-validated runs) fold; paired runs share it."""
    return int(row["seed"]), str(row.get("cv_fold") if row.get("cv_folds") not in (None, "") else "")


def _adapter(row: dict[str, Any]) -> str:
    return f"{row['adapter']} ({row['lora_layout']})" if row.get("lora_layout") else str(row["adapter"])


def _pair(
    kind: str, what: str, a_label: str, b_label: str, test_set: str, a: dict, b: dict, level: float
) -> dict[str, Any] | None:
    """The paired difference a - b over the units (seed, fold) both have, or None when they share none."""
    units = sorted(set(a) & set(b))
    if not units:
        return None
    diffs = [_value(a[u]) - _value(b[u]) for u in units]  # type: ignore[operator]
    record: dict[str, Any] = {
        "kind": kind, "what": what, "a": a_label, "b": b_label, "test_set": test_set, "n": len(units),
        "mean": statistics.fmean(diffs), "differences": diffs,
    }
    if len(units) > 1:
        low, high = paired_t(diffs, level)["interval"]
        # a difference of two IoUs lies in [-1, 1], wherever a t interval of few seeds reaches
        record.update(interval=(max(-1.0, low), min(1.0, high)), over=f"t interval over {len(units)} paired seeds")
    else:
        (u,) = units
        counts_a, counts_b = a[u].get("_slice_counts"), b[u].get("_slice_counts")
        interval = None
        if counts_a and counts_b and len(counts_a) == len(counts_b):
            boot = paired_ratio_difference_interval(counts_a, counts_b, BlockBootstrap(level=level))
            interval = (boot["low"], boot["high"]) if boot else None
        record.update(interval=interval, over="one seed: paired block bootstrap over the test slices"
                      if interval else "one seed, no interval")
    record["excludes_zero"] = excludes_zero(record["interval"])
    return record


def _runs(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[tuple[int, str], dict[str, Any]]]:
    """Rows with an IoU, by (model, adapter, align, train sets, test set) and then by unit."""
    by: dict[tuple, dict[tuple[int, str], dict[str, Any]]] = {}
    for row in rows:
        if _value(row) is None or row["test_set"] == "pooled":
            continue
        key = (tuple(str(row.get(k) or "") for k in _MODEL), _adapter(row), str(row.get("align") or "none"),
               str(row["train_sets"]), str(row["test_set"]))
        by.setdefault(key, {})[_unit(row)] = row
    return by


def _model_text(model: tuple[str, ...], adapter: str | None = None) -> str:
    backbone, head, resolution = model[0], model[1], model[2]
    size = f"{resolution} px" if resolution.isdigit() else resolution
    variant = ", ".join(v for v in model[5:6] if v)
    parts = [backbone, *([adapter] if adapter else []), head, size]
    return " ".join(parts) + (f", {variant}" if variant else "")


def paired_comparisons(rows: Sequence[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Every joint-vs-single and LoRA-vs-frozen pair the rows hold (a - b: joint - single, LoRA - frozen).

    Joint against single: a run trained on several sets (no alignment method) and a run trained on the test
    set alone, same model and adapter, scored on that set. LoRA against frozen: the same model, training
    sets and test set, one adapted by LoRA and one frozen.
    """
    by = _runs(rows)
    out = []
    for (model, adapter, align, train, test), runs in by.items():
        sets = train.split("+")
        if align == "none" and len(sets) > 1 and test in sets:
            single = by.get((model, adapter, "none", test, test))
            if single:
                pair = _pair("joint-vs-single", _model_text(model, adapter), f"trained on {train.replace('+', ' + ')}",
                             f"trained on {test} alone", test, runs, single, level)
                if pair:
                    out.append(pair)
        if adapter.startswith("lora"):
            frozen = by.get((model, "frozen", align, train, test))
            if frozen:
                what = _model_text(model) + f", trained on {train.replace('+', ' + ')}"
                pair = _pair("lora-vs-frozen", what, adapter, "frozen", test, runs, frozen, level)
                if pair:
                    out.append(pair)
    return out


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def sentence(pair: dict[str, Any]) -> str:
    """One finding, worded for what its interval allows."""
    diff = _signed(pair["mean"])
    interval = pair["interval"]
    ci = f" [{_signed(interval[0])}, {_signed(interval[1])}]" if interval else ""
    evidence = f"{diff}{ci}, {pair['over']}"
    if pair["kind"] == "joint-vs-single":
        subject = f"On {pair['test_set']}, joint training ({pair['a']}) against training on {pair['test_set']} alone"
        verdict = ("costs accuracy" if pair["mean"] < 0 else "gains accuracy") if pair["excludes_zero"] else None
    else:
        subject = f"On {pair['test_set']}, {pair['a']} against the frozen backbone"
        verdict = ("beats it" if pair["mean"] > 0 else "falls behind it") if pair["excludes_zero"] else None
    if verdict:
        return f"{subject} {verdict}: {evidence} ({pair['what']})."
    if interval is None:
        return f"{subject}: {evidence}; too few runs to tell ({pair['what']})."
    return f"{subject}: no difference these runs can tell from zero, {evidence} ({pair['what']})."


def comparisons_text(rows: Sequence[dict[str, Any]]) -> str:
    """The report section ("" when the rows hold no pair)."""
    pairs = paired_comparisons(rows)
    if not pairs:
        return ""
    lines = [
        "Paired differences in foreground IoU (a - b), computed on what both runs share: with several seeds the "
        "per-seed differences and their 95% t interval; with one seed a paired moving-block bootstrap over the "
        "test slices (the same blocks drawn for both runs). * where the interval excludes 0. The sentences below "
        "the table are generated from it: a difference is called a cost or a gain only where its interval says "
        "so.",
        "",
        "| comparison | model | test set | a | b | a - b [95% CI] | over |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in pairs:
        ci = f" [{_signed(p['interval'][0])}, {_signed(p['interval'][1])}]" if p["interval"] else ""
        star = " *" if p["excludes_zero"] else ""
        lines.append(f"| {p['kind']} | {p['what']} | {p['test_set']} | {p['a']} | {p['b']} | "
                     f"{_signed(p['mean'])}{ci}{star} | {p['over']} |")
    lines += ["", *(f"- {sentence(p)}" for p in pairs)]
    return "\n".join(lines)
