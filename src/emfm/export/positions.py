"""DINOv2's position-table interpolation written so that it traces for any input size.

:func:`emfm.backbones.dinov2.official_position_embeddings` resizes the table with
``F.interpolate(scale_factor=(grid + 0.1) / M)`` and returns it untouched at its own square size. Both
are decisions on the input's size made in Python, so ``torch.export`` fixes them at the example's size,
and the exported graph then only runs at that one size. Here the same resize is a product of two
interpolation matrices, ``W_h @ table @ W_w.T``, whose weights are computed from the grid with tensor
operations (PyTorch's own cubic kernels: ``A = -0.75`` with clamped borders, or the antialiased
``A = -0.5`` filter of the register models), and the "own size" case is a ``torch.where``: the graph
holds every case and ONNX gets dynamic height and width. The result equals the official resize to float
rounding (PyTorch's float32 kernel differs from float64 by as much); tests check it.

:func:`traceable_positions` swaps this in on a loaded backbone while it is traced, and back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with parameter ``a`` (what PyTorch's bicubic modes use)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def interpolation_matrix(size: int | torch.SymInt, table_side: int, *, offset: float, antialias: bool) -> torch.Tensor:
    """(size, table_side) weights that resize a table side to ``size`` as the official code does.

    ``offset`` non-zero: ``scale_factor = (size + offset) / table_side`` (plain DINOv2, bicubic, clamped
    borders); zero: resize to ``size`` (the register models), antialiased if ``antialias`` (PIL's filter,
    which PyTorch's antialiased bicubic follows: support widened when shrinking, weights normalised).
    """
    out = torch.arange(size, dtype=torch.float32)
    n = out[-1:].double() + 1  # ``size`` as a tensor, so nothing below is decided in Python
    # PyTorch's kernels take 1 / scale_factor in double and then work in float32
    scale = (table_side / (n + offset)).float()
    if not antialias:
        real = scale * (out + 0.5) - 0.5
        base = torch.floor(real)
        t = real - base
        taps = (_cubic(t + 1, -0.75), _cubic(t, -0.75), _cubic(1 - t, -0.75), _cubic(2 - t, -0.75))
        weights = torch.zeros(out.shape[0], table_side)
        for k, tap in zip(range(-1, 3), taps):
            index = (base + k).clamp(0, table_side - 1).long()
            weights = weights + nn.functional.one_hot(index, table_side).float() * tap[:, None]
        return weights
    src = torch.arange(table_side, dtype=torch.float32)[None, :]
    support = torch.where(scale >= 1, 2 * scale, torch.full_like(scale, 2.0))
    inverse = torch.where(scale >= 1, 1 / scale, torch.ones_like(scale))
    centre = (scale * (out + 0.5))[:, None]
    inside = (src >= torch.floor(centre - support + 0.5)) & (src < torch.floor(centre + support + 0.5))
    weights = _cubic((src - centre + 0.5) * inverse, -0.5) * inside
    return weights / weights.sum(1, keepdim=True)


def traceable_position_embeddings(
    table: torch.Tensor, grid_h: int | torch.SymInt, grid_w: int | torch.SymInt, *, offset: float, antialias: bool
) -> torch.Tensor:
    """:func:`~emfm.backbones.dinov2.official_position_embeddings` as tensor operations only."""
    import math

    side = math.isqrt(table.shape[1] - 1)
    w_h = interpolation_matrix(grid_h, side, offset=offset, antialias=antialias)
    w_w = interpolation_matrix(grid_w, side, offset=offset, antialias=antialias)
    # the official code returns its own square table untouched: identity weights at that size
    own = (torch.arange(grid_h)[-1:] == side - 1) & (torch.arange(grid_w)[-1:] == side - 1)
    eye_h = (torch.arange(grid_h)[:, None] == torch.arange(side)[None, :]).float()
    eye_w = (torch.arange(grid_w)[:, None] == torch.arange(side)[None, :]).float()
    w_h, w_w = torch.where(own, eye_h, w_h), torch.where(own, eye_w, w_w)
    patch = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = (w_h @ patch @ w_w.T).permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
    return torch.cat((table[:, :1].float(), patch), dim=1).to(table.dtype)


@contextmanager
def traceable_positions(backbone: nn.Module) -> Iterator[None]:
    """While inside, a DINOv2 backbone interpolates its position table with tensor operations only.

    Other families are left alone (they either trace as they are or are exported at a fixed size).
    """
    from emfm.backbones.dinov2 import Dinov2Backbone

    if not isinstance(backbone, Dinov2Backbone):
        yield
        return
    embeddings = backbone.model.embeddings
    official = embeddings.__dict__.get("interpolate_pos_encoding")
    patch = backbone.patch_size

    def interpolate(_embeddings: torch.Tensor, height, width) -> torch.Tensor:
        return traceable_position_embeddings(
            embeddings.position_embeddings, height // patch, width // patch,
            offset=backbone.interpolate_offset, antialias=backbone.interpolate_antialias,
        )

    embeddings.interpolate_pos_encoding = interpolate
    try:
        yield
    finally:
        if official is None:
            del embeddings.interpolate_pos_encoding
        else:
            embeddings.interpolate_pos_encoding = official
