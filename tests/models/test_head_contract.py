"""What every registered head promises (see emfm.models.heads._base.Head), checked at tiny sizes."""

import pytest
import torch

from emfm.models.heads import HEADS
from emfm.models.heads.fusion import level_groups
from tests.models._heads import GRID, PATCH, build, inputs

ALL = HEADS.names()
MULTI_BLOCK = [n for n in ALL if len(HEADS.get(n).default_layers) > 1]


def test_the_new_heads_are_registered_with_their_facts():
    facts = {n: (HEADS.get(n).default_layers, HEADS.get(n).needs_pixels) for n in ALL}
    assert facts["linear"] == ((-1,), False) and facts["deconv"] == ((-1,), False)
    assert facts["multilinear"][1] is False and facts["multilinear"][0][-1] == 11
    assert facts["dpt"] == ((2, 5, 8, 11), False)
    assert facts["fusion"] == ((2, 5, 8, 11), True)


@pytest.mark.parametrize("name", ALL)
def test_output_has_two_channels_and_a_size(name):
    grids, pixels = inputs(name)
    out = build(name)(grids, pixels)
    assert out.ndim == 4 and out.shape[:2] == (2, 2)
    assert out.shape[-2] > 0 and out.shape[-1] > 0
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    head = build(name).train()
    grids, pixels = inputs(name)
    out = head(grids, pixels)
    # a random projection, not out.sum(): after BatchNorm a plain sum has zero gradient for the norm's weight
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    dead = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("name", ALL)
def test_a_saved_state_dict_reproduces_the_outputs(name):
    head = build(name, seed=0).train()
    for seed in range(3):  # move the BatchNorm running statistics away from their initial values
        head(*inputs(name, seed=seed))
    fresh = build(name, seed=123)
    fresh.load_state_dict(head.state_dict())
    grids, pixels = inputs(name, seed=7)
    head.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(head(grids, pixels), fresh(grids, pixels))
        assert not torch.equal(build(name, seed=123).eval()(grids, pixels), head(grids, pixels))


@pytest.mark.parametrize("name", MULTI_BLOCK)
def test_multi_block_heads_use_every_block(name):
    head = build(name).train()
    with torch.no_grad():  # BatchNorm running statistics of a head that has seen data, then eval
        for seed in range(10, 13):
            head(*inputs(name, seed=seed))
    head.eval()
    grids, pixels = inputs(name)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        base = head(grids, pixels)
        for i in range(len(grids)):
            changed = [g + torch.randn(g.shape, generator=gen) if j == i else g for j, g in enumerate(grids)]
            # an ignored block leaves the output bit-identical; a used one moves it far beyond float noise
            assert (head(changed, pixels) - base).abs().max() > 1e-6, f"block {i} is ignored"


def test_fusion_answers_at_the_pixel_size_and_reads_the_pixels_where_they_change():
    head = build("fusion").eval()
    grids, pixels = inputs("fusion")
    assert pixels is not None
    with torch.no_grad():
        base = head(grids, pixels)
        assert base.shape[-2:] == pixels.shape[-2:] == (GRID[0] * PATCH, GRID[1] * PATCH)
        changed = pixels.clone()
        changed[:, :, 4:12, 4:12] += 3.0
        diff = (head(grids, changed) - base).abs()
    assert diff[..., 4:12, 4:12].mean() > 1e-3
    # the grids are unchanged and convolutions are local: a corner some 50 px away barely moves
    assert diff[..., -8:, -8:].mean() < 0.1 * diff[..., 4:12, 4:12].mean()


@pytest.mark.parametrize(("num_layers", "patch", "grid"), [(1, 14, (3, 3)), (2, 16, (3, 5)), (6, 14, (5, 7))])
def test_fusion_works_for_any_block_count_and_odd_sizes(num_layers, patch, grid):
    head = build("fusion", num_layers=num_layers, patch=patch).eval()
    grids, pixels = inputs("fusion", num_layers=num_layers, patch=patch, grid=grid)
    with torch.no_grad():
        assert head(grids, pixels).shape == (2, 2, grid[0] * patch, grid[1] * patch)


def test_fusion_spreads_blocks_over_its_levels_final_block_coarsest():
    assert level_groups(4) == ((3,), (2,), (1,), (0,))
    assert level_groups(1) == ((0,), (), (), ())
    assert level_groups(2) == ((1,), (), (0,), ())
    assert sorted(i for g in level_groups(7) for i in g) == list(range(7))
    assert level_groups(7)[0][-1] == 6


@pytest.mark.parametrize("grid", [(5, 7), (37, 37)])
def test_dpt_handles_odd_grids(grid):
    head = build("dpt").eval()
    grids, _ = inputs("dpt", batch=1, grid=grid)
    with torch.no_grad():
        assert head(grids).shape == (1, 2, 8 * grid[0], 8 * grid[1])
