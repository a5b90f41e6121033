"""Each head can fit a tiny problem: two 56x70 images whose label is a disc seen in the pixels and grids."""

import pytest
import torch
import torch.nn.functional as F

from emfm.models.heads import HEADS
from tests.models._heads import CHANNELS, GRID, PATCH, build, default_num_layers

STEPS = 100


def _problem(num_layers: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Grids, pixels and labels: discs at two places; grids carry each patch's disc fraction."""
    gen = torch.Generator().manual_seed(0)
    h, w = GRID[0] * PATCH, GRID[1] * PATCH
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    labels = torch.stack([(yy - cy) ** 2 + (xx - cx) ** 2 < r**2 for cy, cx, r in ((20, 25, 14), (36, 48, 12))])
    mask = labels.float()[:, None]
    pixels = mask.expand(-1, 3, -1, -1) + 0.3 * torch.randn(2, 3, h, w, generator=gen)
    fraction = F.avg_pool2d(mask, PATCH)  # (2, 1, *GRID)
    grids = [
        fraction * torch.randn(1, CHANNELS, 1, 1, generator=gen) + 0.1 * torch.randn(2, CHANNELS, *GRID, generator=gen)
        for _ in range(num_layers)
    ]
    return grids, pixels, labels.long()


@pytest.mark.parametrize("name", HEADS.names())
def test_each_head_overfits_a_tiny_problem(name):
    head = build(name).train()
    grids, pixels, labels = _problem(default_num_layers(name))
    given = pixels if HEADS.get(name).needs_pixels else None
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    # A head that ignores its input can do no better than the label prior's entropy (about 0.4 nats
    # here); a quarter of it needs the disc located and outlined. Stop there: big heads get there fast.
    foreground = labels.float().mean()
    target = 0.25 * float(-(foreground * foreground.log() + (1 - foreground) * (1 - foreground).log()))
    losses: list[float] = []
    while len(losses) < STEPS and (not losses or losses[-1] >= target):
        logits = F.interpolate(head(grids, given), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    summary = f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps (target {target:.3f})"
    assert losses[-1] < target and losses[-1] < 0.5 * losses[0], summary
