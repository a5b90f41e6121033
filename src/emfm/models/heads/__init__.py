"""Heads that turn backbone patch grids (and, for some, the input pixels) into two-class logits.

Every head follows :class:`~emfm.models.heads._base.Head`: ``head(grids, pixels=None)`` with one grid per
block in ``num_layers``, final block last. Importing this package registers them all in :data:`HEADS`.

- ``linear``: DINOv2's linear head (Oquab et al. 2023) on the final block.
- ``deconv``: the study's deconvolution head (protocol.md, "Heads") on the final block.
- ``multilinear``: DINOv2's "+ms" linear head over several blocks (default 2, 5, 8, 11).
- ``dpt``: a DPT decoder (Ranftl et al. 2021) as Depth Anything puts it on DINOv2 (blocks 2, 5, 8, 11).
- ``fusion``: a UNETR-style decoder (Hatamizadeh et al. 2022) over blocks 2, 5, 8, 11 and a light CNN on
  the pixels (``needs_pixels``); needs MONAI, imported only when one is built.
- ``unet``, ``unet-small``: the from-scratch baseline, MONAI's U-Net on the pixels alone
  (``--backbone unet``, :mod:`emfm.backbones.scratch`).
"""

from __future__ import annotations

from emfm.models.heads._base import (
    HEADS,
    Head,
    create_head,
    feature_module,
    head_default_lr,
    head_layers,
    head_names,
    resize_to,
)
from emfm.models.heads.basic import DeconvHead, LinearHead, MultiLinearHead
from emfm.models.heads.dpt import DPTHead
from emfm.models.heads.fusion import FusionHead
from emfm.models.heads.unet import SmallUNetHead, UNetHead

__all__ = [
    "HEADS",
    "DPTHead",
    "DeconvHead",
    "FusionHead",
    "Head",
    "LinearHead",
    "MultiLinearHead",
    "SmallUNetHead",
    "UNetHead",
    "create_head",
    "feature_module",
    "head_default_lr",
    "head_layers",
    "head_names",
    "resize_to",
]
