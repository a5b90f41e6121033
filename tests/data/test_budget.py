"""Label budgets spread through the stack: one slice from each equal part, seeded, never more than asked."""

from __future__ import annotations

import pytest

from emfm.data.budget import pick_indices


@pytest.mark.parametrize("how", ["random", "even", "first"])
@pytest.mark.parametrize("n,budget", [(165, 1), (165, 4), (165, 16), (15, 8), (10, 9)])
def test_a_budget_keeps_that_many_distinct_sorted_slices(n, budget, how):
    picks = pick_indices(n, budget, how, seed=3, salt="x")
    assert len(picks) == budget == len(set(picks)) and picks == sorted(picks) and 0 <= picks[0] <= picks[-1] < n


def test_random_and_even_take_one_slice_from_each_equal_part():
    for how in ("random", "even"):
        picks = pick_indices(160, 4, how, seed=7)
        assert [p // 40 for p in picks] == [0, 1, 2, 3]
    assert pick_indices(160, 4, "even") == [19, 59, 99, 139]
    assert pick_indices(160, 4, "first") == [0, 1, 2, 3]


def test_random_picks_repeat_for_a_seed_and_change_with_it_and_with_the_dataset():
    assert pick_indices(165, 8, seed=0, salt="lucchi_pp") == pick_indices(165, 8, seed=0, salt="lucchi_pp")
    assert pick_indices(165, 8, seed=0, salt="lucchi_pp") != pick_indices(165, 8, seed=1, salt="lucchi_pp")
    assert pick_indices(165, 8, seed=0, salt="lucchi_pp") != pick_indices(165, 8, seed=0, salt="vnc")


def test_a_budget_that_covers_the_stack_keeps_all_of_it_and_nonsense_is_refused():
    assert pick_indices(15, 16) == list(range(15))
    with pytest.raises(ValueError, match="at least one"):
        pick_indices(15, 0)
    with pytest.raises(ValueError, match="unknown label pick"):
        pick_indices(15, 3, "middle")
