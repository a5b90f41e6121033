"""t intervals over seeds, paired t comparisons, and block-bootstrap intervals of pooled ratios over slices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emfm.errors import ConfigError, DataError
from emfm.stats import (
    N_BOOT,
    BlockBootstrap,
    excludes_zero,
    moving_block_indices,
    paired_ratio_difference_interval,
    paired_t,
    pooled_ratio_interval,
    t_interval,
)

T_975_1 = 12.706204736174694  # t_{0.975, 1}
T_975_2 = 4.302652729749462  # t_{0.975, 2}
T_95_1 = 6.313751514675037  # t_{0.95, 1}


def test_t_interval_of_two_values_by_hand():
    # mean 0.6, sd sqrt(2 * 0.1^2 / 1) = 0.1414..., half-width t * sd / sqrt(2) = t * 0.1
    sd = math.sqrt((0.1**2 + 0.1**2) / 1)
    half = T_975_1 * sd / math.sqrt(2)
    low, high = t_interval([0.5, 0.7])
    assert low == pytest.approx(0.6 - half, abs=1e-9) and high == pytest.approx(0.6 + half, abs=1e-9)
    assert half == pytest.approx(1.2706204736, abs=1e-9)
    low, high = t_interval([0.5, 0.7], level=0.9)
    assert (low, high) == pytest.approx((0.6 - T_95_1 * 0.1, 0.6 + T_95_1 * 0.1), abs=1e-9)


def test_t_interval_of_three_values_by_hand():
    # mean 2, sd sqrt((1 + 0 + 1) / 2) = 1, half-width t_{0.975, 2} / sqrt(3) = 2.48414...
    low, high = t_interval([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-9)
    assert half == pytest.approx(2.484138, abs=1e-6)
    assert t_interval(np.array([4.0, 4.0, 4.0])) == pytest.approx((4.0, 4.0))


def test_t_interval_needs_two_values():
    assert t_interval([0.3]) is None
    assert t_interval([]) is None


@pytest.mark.parametrize("level", [0.0, 1.0, 95, -0.5])
def test_t_interval_rejects_a_level_outside_zero_and_one(level):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        t_interval([0.5, 0.7], level=level)


@pytest.mark.parametrize(("interval", "expected"), [
    ((0.1, 0.2), True), ((-0.2, -0.1), True), ((-0.1, 0.1), False), ((0.0, 0.1), False), ((-0.1, 0.0), False),
    (None, None),
])
def test_excludes_zero(interval, expected):
    assert excludes_zero(interval) is expected


def test_paired_t_of_two_differences_that_straddle_zero():
    result = paired_t([0.1, 0.3])
    half = T_975_1 * 0.1  # sd 0.1414..., / sqrt(2)
    assert result["mean"] == pytest.approx(0.2)
    assert result["interval"] == pytest.approx((0.2 - half, 0.2 + half), abs=1e-9)
    assert result["excludes_zero"] is False
    assert result["n"] == 2 and result["level"] == 0.95 and result["differences"] == [0.1, 0.3]
    assert result["method"] == "t over 2 paired seeds"


def test_paired_t_of_three_differences_that_exclude_zero():
    result = paired_t([1.0, 1.1, 1.2])
    half = T_975_2 * 0.1 / math.sqrt(3)  # sd 0.1
    assert result["mean"] == pytest.approx(1.1)
    assert result["interval"] == pytest.approx((1.1 - half, 1.1 + half), abs=1e-9)
    assert result["excludes_zero"] is True and result["n"] == 3


def test_paired_t_of_one_pair_has_no_interval_and_of_none_is_an_error():
    result = paired_t([0.25])
    assert result["mean"] == 0.25 and result["interval"] is None and result["excludes_zero"] is None
    assert result["method"] == "one pair, no interval"
    with pytest.raises(DataError, match="at least one pair"):
        paired_t([])


@pytest.mark.parametrize("kwargs", [{"n_boot": 1}, {"n_boot": 0}, {"n_boot": True}, {"n_boot": 2.5},
                                    {"level": 0.0}, {"level": 1.5}, {"level": 1.0},
                                    {"block_length": 0}, {"block_length": -2}, {"block_length": 1.5}])
def test_block_bootstrap_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        BlockBootstrap(**kwargs)


def test_block_bootstrap_defaults():
    settings = BlockBootstrap()
    assert (settings.block_length, settings.n_boot, settings.level, settings.seed) == (None, N_BOOT, 0.95, 0)
    assert BlockBootstrap(block_length=1, n_boot=2).n_boot == 2


def _random_stack(n: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    union = rng.integers(50, 200, size=n)
    inter = (union * rng.uniform(0.3, 0.9, size=n)).astype(int)
    return inter.tolist(), union.tolist()


def test_pooled_ratio_with_one_block_of_the_whole_stack_collapses_to_the_pooled_ratio():
    inter, union = [3, 0, 5, 7, 2], [4, 1, 10, 8, 2]  # pooled 17 / 25
    record = pooled_ratio_interval([(inter, union)], BlockBootstrap(block_length=5, n_boot=50))
    assert record["low"] == record["high"] == 17 / 25
    assert record["block_length"] == 5 and record["n_undefined"] == 0
    assert record["n_boot"] == 50 and record["seed"] == 0 and record["level"] == 0.95
    assert "moving blocks of 5 adjacent slices" in record["method"]


def test_pooled_ratio_interval_is_none_when_every_denominator_is_zero():
    assert pooled_ratio_interval([([0, 0, 0], [0, 0, 0])], BlockBootstrap(n_boot=10)) is None
    assert pooled_ratio_interval([([0, 0], [0, 0]), ([0], [0])], BlockBootstrap(n_boot=10)) is None


def test_replicates_without_any_denominator_are_counted_as_undefined_and_left_out():
    # only slice 9 has a union: a replicate is 0 / 0 when it misses slice 9 (with L = 1, chance 0.9^10 = 0.35),
    # and 3k / 4k = 0.75 when it draws slice 9 k times
    inter, union = [0] * 9 + [3], [0] * 9 + [4]
    settings = BlockBootstrap(block_length=1, n_boot=400, seed=7)
    record = pooled_ratio_interval([(inter, union)], settings)
    assert record["low"] == record["high"] == 0.75
    assert 0.2 * 400 < record["n_undefined"] < 0.5 * 400
    rows = moving_block_indices(10, 1, 400, np.random.default_rng(7))
    assert record["n_undefined"] == int((~(rows == 9).any(axis=1)).sum())


def test_pooled_ratio_interval_contains_the_pooled_ratio_of_a_random_stack():
    inter, union = _random_stack(40, seed=1)
    estimate = sum(inter) / sum(union)
    record = pooled_ratio_interval([(inter, union)], BlockBootstrap(n_boot=500, seed=2))
    assert record["low"] < estimate < record["high"]
    assert record["high"] - record["low"] < 0.2
    assert record["block_length"] == 4  # ceil(40^(1/3))
    assert record["low"] > 0 and record["high"] < 1


def test_a_wider_level_gives_a_wider_interval():
    stack = _random_stack(30, seed=3)
    narrow = pooled_ratio_interval([stack], BlockBootstrap(level=0.5, n_boot=400))
    wide = pooled_ratio_interval([stack], BlockBootstrap(level=0.99, n_boot=400))
    assert wide["low"] < narrow["low"] < narrow["high"] < wide["high"]


def test_stratified_blocks_never_straddle_two_stacks():
    # Stack A: every slice 1 / 1; stack B: every slice 0 / 1. Drawn within each stack, every replicate keeps
    # four A slices and four B slices, so its ratio is 4 / 8 exactly. One stack of the eight slices, whose
    # blocks could straddle the boundary, draws replicates with more A than B slices or fewer.
    a, b = ([1, 1, 1, 1], [1, 1, 1, 1]), ([0, 0, 0, 0], [1, 1, 1, 1])
    settings = BlockBootstrap(block_length=2, n_boot=300)
    stratified = pooled_ratio_interval([a, b], settings)
    assert stratified["low"] == stratified["high"] == 0.5
    assert stratified["block_length"] == [2, 2] and stratified["n_undefined"] == 0
    one_stack = pooled_ratio_interval([(a[0] + b[0], a[1] + b[1])], settings)
    assert one_stack["low"] < 0.5 < one_stack["high"]


def test_stratified_blocks_as_long_as_each_stack_collapse_to_the_ratio_pooled_over_both():
    a, b = ([1, 2, 3], [2, 4, 5]), ([4, 0, 1, 1, 6], [8, 1, 1, 2, 8])  # (6 + 12) / (11 + 20)
    record = pooled_ratio_interval([a, b], BlockBootstrap(block_length=5, n_boot=40))
    assert record["low"] == record["high"] == pytest.approx(18 / 31, abs=1e-15)
    assert record["block_length"] == [3, 5]
    assert "moving blocks of 3/5 adjacent slices" in record["method"]


def test_pooled_ratio_interval_rejects_unequal_or_empty_counts():
    with pytest.raises(DataError, match="equal, non-empty"):
        pooled_ratio_interval([([1, 2], [2])])
    with pytest.raises(DataError, match="equal, non-empty"):
        pooled_ratio_interval([([], [])])


def test_two_identical_runs_differ_by_exactly_zero():
    stack = _random_stack(25, seed=4)
    record = paired_ratio_difference_interval([stack], [stack], BlockBootstrap(n_boot=300))
    assert (record["low"], record["high"]) == (0.0, 0.0)
    assert record["n_undefined"] == 0 and record["block_length"] == 3
    assert "paired" in record["method"]


def test_paired_difference_with_blocks_of_the_whole_stack_is_the_difference_of_the_pooled_ratios():
    a = ([3, 4, 5, 1], [4, 5, 8, 3])  # 13 / 20
    b = ([1, 4, 2, 1], [4, 6, 8, 2])  # 8 / 20
    record = paired_ratio_difference_interval([a], [b], BlockBootstrap(block_length=4, n_boot=30))
    assert record["low"] == record["high"] == pytest.approx(13 / 20 - 8 / 20, abs=1e-15)
    assert record["block_length"] == 4


def test_paired_difference_draws_the_same_slices_for_both_runs():
    # run b is run a with every intersection one pixel higher on slices whose union is 10: the difference of
    # the two ratios is then -k / (10 k) = -0.1 on every replicate, which only a paired draw gives
    union = [10] * 12
    inter_a = [2, 5, 7, 3, 9, 1, 4, 6, 8, 2, 5, 3]
    inter_b = [i + 1 for i in inter_a]
    record = paired_ratio_difference_interval([(inter_a, union)], [(inter_b, union)], BlockBootstrap(n_boot=200))
    assert record["low"] == pytest.approx(-0.1) and record["high"] == pytest.approx(-0.1)


def test_paired_difference_needs_the_same_slices_in_both_runs():
    a = ([1, 2, 3], [2, 3, 4])
    with pytest.raises(DataError, match="same slices"):
        paired_ratio_difference_interval([a], [([1, 2], [2, 3])])
    with pytest.raises(DataError, match="same slices"):
        paired_ratio_difference_interval([a], [a, a])


def test_paired_difference_is_none_when_either_run_has_no_denominator():
    a, empty = ([1, 2], [2, 3]), ([0, 0], [0, 0])
    assert paired_ratio_difference_interval([a], [empty], BlockBootstrap(n_boot=10)) is None
    assert paired_ratio_difference_interval([empty], [a], BlockBootstrap(n_boot=10)) is None


def test_intervals_are_seeded():
    stack = _random_stack(30, seed=5)
    first = pooled_ratio_interval([stack], BlockBootstrap(n_boot=200, seed=1))
    assert first == pooled_ratio_interval([stack], BlockBootstrap(n_boot=200, seed=1))
    assert first != pooled_ratio_interval([stack], BlockBootstrap(n_boot=200, seed=2))
