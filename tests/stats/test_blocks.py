"""Moving-block resampling: the default block length, its checks, the block indices and their prefix-sum sums."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.errors import ConfigError, DataError
from emfm.stats import block_resampled_sums, default_block_length, moving_block_indices, resolve_block_length


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (2, 2), (8, 2), (9, 3), (20, 3), (27, 3), (28, 4), (64, 4),
                                             (125, 5), (165, 6), (1000, 10)])
def test_default_block_length_is_the_ceiling_of_the_cube_root(n, expected):
    assert default_block_length(n) == expected


@pytest.mark.parametrize("n", [0, -1])
def test_default_block_length_needs_at_least_one_unit(n):
    with pytest.raises(DataError, match="at least one unit"):
        default_block_length(n)


def test_resolve_block_length_takes_the_default_keeps_a_valid_length_and_cuts_it_to_n():
    assert resolve_block_length(165, None) == 6
    assert resolve_block_length(20, 5) == 5
    assert resolve_block_length(20, np.int64(4)) == 4
    assert resolve_block_length(4, 10) == 4
    assert resolve_block_length(1, 3) == 1
    assert type(resolve_block_length(4, np.int64(10))) is int


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, False, "3"])
def test_resolve_block_length_rejects_what_is_not_a_whole_number_of_at_least_one(bad):
    with pytest.raises(ConfigError, match="block_length"):
        resolve_block_length(10, bad)


def _assert_rows_are_moving_blocks(rows: np.ndarray, n: int, length: int) -> None:
    """Each row: runs of ``length`` consecutive indices starting in 0..n - length, the last run cut to fit n."""
    assert rows.shape[1] == n
    for row in rows:
        for first in range(0, n, length):
            block = row[first:first + length]
            assert 0 <= block[0] <= n - length
            np.testing.assert_array_equal(block, block[0] + np.arange(len(block)))


@pytest.mark.parametrize(("n", "length"), [(10, 3), (12, 4), (7, 2), (5, 5), (6, 1)])
def test_moving_block_rows_are_runs_of_adjacent_indices_that_start_inside_the_stack(n, length):
    rows = moving_block_indices(n, length, 50, np.random.default_rng(0))
    assert rows.shape == (50, n)
    assert rows.dtype.kind == "i"
    assert rows.min() >= 0 and rows.max() <= n - 1
    _assert_rows_are_moving_blocks(rows, n, length)


def test_every_start_from_zero_to_n_minus_l_is_drawn_and_no_other():
    n, length = 10, 3
    rows = moving_block_indices(n, length, 400, np.random.default_rng(1))
    starts = rows[:, ::length]
    assert set(np.unique(starts)) == set(range(n - length + 1))
    # a block never wraps around from the last slice to the first (moving, not circular, blocks)
    assert not np.any((rows[:, :-1] == n - 1) & (rows[:, 1:] == 0) & (np.arange(1, n) % length != 0))


def test_the_default_block_length_is_used_when_none_is_given():
    rows = moving_block_indices(27, None, 40, np.random.default_rng(2))
    assert rows.shape == (40, 27)
    _assert_rows_are_moving_blocks(rows, 27, 3)


@pytest.mark.parametrize("length", [6, 100])
def test_a_block_as_long_as_the_stack_gives_the_stack_in_order(length):
    rows = moving_block_indices(6, length, 20, np.random.default_rng(3))
    np.testing.assert_array_equal(rows, np.tile(np.arange(6), (20, 1)))


def test_blocks_of_one_are_an_ordinary_bootstrap():
    rows = moving_block_indices(8, 1, 300, np.random.default_rng(4))
    assert rows.shape == (300, 8)
    assert rows.min() == 0 and rows.max() == 7
    # independent draws with replacement: some rows repeat a slice, and rows differ
    assert any(len(set(row)) < 8 for row in rows)
    assert len({tuple(row) for row in rows}) > 1


def test_moving_block_indices_rejects_fewer_than_one_replicate_and_a_bad_block_length():
    with pytest.raises(ConfigError, match="at least 1 replicate"):
        moving_block_indices(5, 2, 0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="block_length"):
        moving_block_indices(5, 0, 3, np.random.default_rng(0))


@pytest.mark.parametrize(("n", "length"), [(10, 3), (10, 4), (11, 2), (10, 5), (10, 1), (9, None), (10, 10), (7, 20)])
def test_block_resampled_sums_equal_the_sums_of_the_indexed_rows(n, length):
    values = np.random.default_rng(10).normal(size=(n, 3))
    sums = block_resampled_sums(values, length, 64, np.random.default_rng(5))
    rows = moving_block_indices(n, length, 64, np.random.default_rng(5))
    assert sums.shape == (64, 3)
    np.testing.assert_allclose(sums, values[rows].sum(axis=1), rtol=1e-12, atol=1e-12)


def test_the_cut_last_block_keeps_only_its_first_units():
    # n = 5, L = 3: two blocks, the second cut to 2 units. Units are powers of two, so a sum names its units.
    values = (2.0 ** np.arange(5))[:, None]
    sums = block_resampled_sums(values, 3, 200, np.random.default_rng(6))[:, 0]
    possible = {2**s + 2**(s + 1) + 2**(s + 2) + 2**t + 2**(t + 1) for s in range(3) for t in range(3)}
    assert set(sums.astype(int)) <= possible
    assert len(set(sums.astype(int))) > 3


def test_block_resampled_sums_of_the_whole_stack_are_its_total():
    values = np.stack([np.arange(7.0), np.ones(7)], axis=1)
    sums = block_resampled_sums(values, 7, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(sums, np.tile([21.0, 7.0], (5, 1)))


@pytest.mark.parametrize("values", [np.zeros(4), np.zeros((0, 2)), np.zeros((2, 2, 2))])
def test_block_resampled_sums_needs_a_non_empty_two_dimensional_array(values):
    with pytest.raises(DataError, match=r"\(n, c\)"):
        block_resampled_sums(values, 2, 3, np.random.default_rng(0))


def test_no_units_is_a_data_error_whatever_the_block_length():
    with pytest.raises(DataError, match="at least one unit"):
        moving_block_indices(0, 3, 2, np.random.default_rng(0))
