"""Bilinear resizing of logits and feature maps whose backward pass costs what a matmul costs.

Training scores every step at full resolution: a head's logits on a 37 x 27 grid are resized to the
518 x 389 slice and the Dice loss is taken there. On a CPU, torch's bilinear ``interpolate`` runs its
backward pass as a scattered accumulation, one output pixel at a time: about 4x slower for two 518 px
Lucchi++ slices than the same resize written as two small matmuls (``python benchmarks/resize.py``), and
that backward pass was most of a cache-only training step. Bilinear resizing with ``align_corners=False``
is separable, so it is ``A @ x @ B.T`` with ``A`` (H x h) and ``B`` (W x w) holding each output pixel's
two taps. The taps are torch's own: the matrices are ``interpolate`` applied to an identity, so the
result equals ``F.interpolate(x, size, mode="bilinear", align_corners=False)`` up to float rounding
(summation order; a test bounds the difference).

The matmul form is used only where a gradient will flow (training); evaluation, prediction and the
exported graphs keep ``interpolate``, so their outputs are unchanged to the bit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=64)
def bilinear_taps(n_in: int, n_out: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The (n_out, n_in) matrix that resizes one axis from ``n_in`` to ``n_out`` samples as torch does.

    Cached: a run meets a handful of sizes, and a step should not rebuild them.
    """
    eye = torch.eye(n_in, dtype=torch.float32).unsqueeze(0)  # (1, n_in channels, n_in samples)
    taps = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T  # (n_out, n_in)
    return taps.to(dtype=dtype, device=device).contiguous()


def bilinear_resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize (B, C, h, w) to ``size`` bilinearly (``align_corners=False``); ``x`` itself if already that size.

    As two matmuls when ``x`` carries a gradient (see the module's docstring), else ``F.interpolate``.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if not (x.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling():
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    device = str(x.device)
    rows = bilinear_taps(x.shape[-2], size[0], x.dtype, device)
    cols = bilinear_taps(x.shape[-1], size[1], x.dtype, device)
    # In x's own precision: under a bf16 autocast the matmuls would otherwise round the logits to bf16,
    # where interpolate keeps their dtype.
    with torch.autocast(device_type=x.device.type, enabled=False):
        return rows @ x @ cols.T
