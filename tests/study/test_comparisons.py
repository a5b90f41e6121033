"""Paired comparisons: joint against single and LoRA against frozen, on hand-built rows with hand-computed
differences and intervals, and sentences worded for what the interval allows."""

from __future__ import annotations

import pytest

from emfm.stats import BlockBootstrap, paired_ratio_difference_interval
from emfm.study.comparisons import comparisons_text, paired_comparisons, sentence

T_975_1 = 12.706204736174705  # Student's t, 97.5% quantile, 1 degree of freedom
T_975_2 = 4.302652729749464


def row(train: str, test: str, seed: int, iou: float, adapter: str = "frozen", **kw) -> dict:
    return {"backbone": "bb", "adapter": adapter, "lora_layout": "fused-qkv" if adapter == "lora" else "",
            "head": "linear", "resolution": 518, "pairing": "by-number", "balance": False, "ablation": "",
            "label_budget": "", "align": "none", "train_sets": train, "test_set": test, "seed": seed,
            "fg_iou": iou, "cv_folds": "", "cv_fold": "", **kw}


def test_joint_against_single_over_two_seeds_is_a_paired_t_interval():
    rows = [row("v", "v", 0, 0.50), row("v", "v", 1, 0.60), row("l+v", "v", 0, 0.30), row("l+v", "v", 1, 0.50),
            row("l+v", "l", 0, 0.70), row("l+v", "l", 1, 0.70)]  # no single-set l model: no pair for l
    (pair,) = paired_comparisons(rows)
    assert pair["kind"] == "joint-vs-single" and pair["test_set"] == "v" and pair["n"] == 2
    assert pair["differences"] == pytest.approx([-0.20, -0.10]) and pair["mean"] == pytest.approx(-0.15)
    half = T_975_1 * 0.0707106781 / 2 ** 0.5  # sd of (-0.20, -0.10) is 0.0707: half-width 0.635
    assert pair["interval"] == pytest.approx((-0.15 - half, -0.15 + half), abs=1e-6)
    assert pair["excludes_zero"] is False
    assert "no difference these runs can tell from zero" in sentence(pair)


def test_a_clear_cost_over_three_seeds_is_called_a_cost():
    rows = [*(row("v", "v", s, v) for s, v in enumerate([0.55, 0.56, 0.54])),
            *(row("l+v", "v", s, v) for s, v in enumerate([0.27, 0.30, 0.26]))]
    (pair,) = paired_comparisons(rows)
    assert pair["mean"] == pytest.approx(-0.2733333, abs=1e-6)
    sd = 0.0115470054  # of (-0.28, -0.26, -0.28)
    assert pair["interval"][1] == pytest.approx(-0.2733333 + T_975_2 * sd / 3 ** 0.5, abs=1e-6)
    assert pair["excludes_zero"] is True
    assert "costs accuracy" in sentence(pair) and "t interval over 3 paired seeds" in sentence(pair)


def test_only_shared_seeds_are_paired_and_aligned_runs_are_not_joint_baselines():
    rows = [row("v", "v", 0, 0.5), row("v", "v", 1, 0.6), row("l+v", "v", 1, 0.4), row("l+v", "v", 2, 0.1),
            row("l+v", "v", 1, 0.9, align="mmd")]
    (pair,) = paired_comparisons(rows)
    assert pair["n"] == 1 and pair["differences"] == pytest.approx([-0.2])
    assert pair["interval"] is None and "too few runs to tell" in sentence(pair)


def test_one_seed_with_slice_counts_uses_the_paired_slice_bootstrap():
    lora_counts = [([5, 6, 7, 8, 5, 6], [10, 10, 10, 10, 10, 10])]
    frozen_counts = [([2, 3, 2, 3, 2, 3], [10, 10, 10, 10, 10, 10])]
    rows = [row("l", "l", 0, 37 / 60, adapter="lora", _slice_counts=lora_counts),
            row("l", "l", 0, 15 / 60, _slice_counts=frozen_counts)]
    (pair,) = paired_comparisons(rows)
    assert pair["kind"] == "lora-vs-frozen" and pair["a"] == "lora (fused-qkv)"
    boot = paired_ratio_difference_interval(lora_counts, frozen_counts, BlockBootstrap())
    assert pair["interval"] == (boot["low"], boot["high"]) and pair["excludes_zero"] is True
    assert "beats it" in sentence(pair) and "block bootstrap over the test slices" in sentence(pair)


def test_the_section_lists_every_pair_and_is_empty_without_one():
    assert comparisons_text([row("v", "v", 0, 0.5)]) == ""
    rows = [row("v", "v", s, 0.5 + s / 10) for s in (0, 1)] + [row("l+v", "v", s, 0.2) for s in (0, 1)]
    rows += [row("v", "v", s, 0.4, adapter="lora") for s in (0, 1)]
    text = comparisons_text(rows)
    assert text.count("| joint-vs-single |") == 1 and text.count("| lora-vs-frozen |") == 1
    assert text.count("\n- On v") == 2


def test_a_wide_t_interval_is_cut_to_what_a_difference_of_ious_can_be():
    rows = [row("v", "v", 0, 0.2), row("v", "v", 1, 0.6), row("l+v", "v", 0, 0.7), row("l+v", "v", 1, 0.3)]
    (pair,) = paired_comparisons(rows)  # differences +0.5 and -0.3: a t half-width of about 5
    assert pair["interval"] == (-1.0, 1.0) and pair["excludes_zero"] is False
