"""Models with no pretrained backbone: the from-scratch baselines a foundation model must beat.

A microscopist choosing a foundation model needs it side by side with a U-Net trained on the same
slices. Such a baseline is selected wherever a backbone is (``--backbone unet``), so that training,
studies, checkpoints and prediction need no second code path: :class:`ScratchBackbone` stands in for
the backbone, encodes nothing and holds no weights, the whole network is the head (``emfm.models.heads``,
its pixel-reading ``unet`` heads) and the ``scratch`` adapter trains it on pixels. Its checkpoint is
self-contained: there are no backbone weights to name or to download.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emfm.backbones._base import Backbone, BackboneOutput
from emfm.baselines import NO_WEIGHTS, SCRATCH_MODELS


class ScratchBackbone(Backbone):
    """The empty backbone of a from-scratch model: no weights, and an empty (B, 0, H/m, W/m) grid.

    ``patch_size`` is the model's size multiple, so the shared preprocessing sizes slices for it.
    """

    family = "scratch"
    embed_dim = 0
    num_layers = 1
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    weights_id = NO_WEIGHTS
    num_register_tokens = 0

    def __init__(self, name: str) -> None:
        super().__init__()
        record = SCRATCH_MODELS[name]
        self.name = record.name
        self.record = record
        self.patch_size = record.multiple
        self.lora_target_modules = []
        self.model = nn.Identity()
        self.source = record.summary

    def encode(self, pixels: torch.Tensor, layers: Sequence[int] | None = None) -> BackboneOutput:
        b, _, h, w = pixels.shape
        m = self.patch_size
        grid = pixels.new_zeros((b, 0, h // m, w // m))
        return BackboneOutput(patch_grid=grid, cls=pixels.new_zeros((b, 0)))
