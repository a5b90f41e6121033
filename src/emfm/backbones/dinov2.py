"""DINOv2 and DINOv2 with registers: the registered checkpoints and the family wrappers.

Papers: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024
(arXiv:2304.07193); Darcet et al., "Vision Transformers Need Registers", ICLR 2024 (arXiv:2309.16588).
Weights: Apache-2.0, on the hub as ``facebook/dinov2-*`` and ``facebook/dinov2-with-registers-*``.

Position embeddings are interpolated exactly as the official ``DinoVisionTransformer`` does, because
transformers' own Dinov2 does not: for the plain models the official code resizes the 37 x 37 table by the
scale factor ``(grid + 0.1) / 37`` (bicubic, no antialiasing), transformers to the output size, which moves
every sample point at any size other than 518 px. The register models use ``size`` with antialiasing in both.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import torch
from torch import nn

from emfm.backbones import _convert_dinov2  # noqa: F401  (registers the official DINOv2 format)
from emfm.backbones._registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneRecord,
    register_backbone,
    register_family,
)
from emfm.backbones._vit import TransformersViT

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention only; the MLP is fc1/fc2 or gate/up/down
PAPER = "Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR 2024, arXiv:2304.07193"
PAPER_REG = "Darcet et al., Vision Transformers Need Registers, ICLR 2024, arXiv:2309.16588"

# size letter -> (hub suffix, width, depth, heads, params plain, params with registers); parameter counts of
# the transformers models built from the hub configs (518 px position table, mask token included).
_SIZES = {
    "s": ("small", 384, 12, 6, 22_056_576, 22_058_112),
    "b": ("base", 768, 12, 12, 86_580_480, 86_583_552),
    "l": ("large", 1024, 24, 16, 304_368_640, 304_372_736),
    "g": ("giant", 1536, 40, 24, 1_136_480_768, 1_136_486_912),
}
for _registers in (0, 4):
    for _letter, (_suffix, _width, _depth, _heads, _params, _params_reg) in _SIZES.items():
        register_backbone(
            BackboneRecord(
                name=f"dinov2-reg-{_letter}" if _registers else f"dinov2-{_letter}",
                family="dinov2_reg" if _registers else "dinov2",
                hub_id=f"facebook/dinov2-with-registers-{_suffix}" if _registers else f"facebook/dinov2-{_suffix}",
                patch_size=14,
                embed_dim=_width,
                depth=_depth,
                num_heads=_heads,
                num_register_tokens=_registers,
                image_size=518,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                license="Apache-2.0",
                gated=False,
                lora_target_modules=LORA_TARGETS,
                num_params=_params_reg if _registers else _params,
                paper=PAPER_REG if _registers else PAPER,
                official_file=f"dinov2_vit{_letter}14{'_reg4' if _registers else ''}_pretrain.pth",
            )
        )


def official_position_embeddings(
    table: torch.Tensor, grid_h: int, grid_w: int, *, offset: float, antialias: bool
) -> torch.Tensor:
    """Resize a (1, 1 + M*M, C) position table to a grid_h x grid_w patch grid as official DINOv2 does.

    The official ``interpolate_pos_encoding`` (facebookresearch/dinov2) returns the table untouched for its own
    square grid; otherwise it resizes the M x M patch part bicubically in float32, by the scale factor
    ``(grid + offset) / M`` when ``offset`` is non-zero (the plain releases use 0.1) or to the output size when
    it is zero (the register releases), with or without antialiasing.
    """
    positions = table.shape[1] - 1
    if positions == grid_h * grid_w and grid_h == grid_w:
        return table
    side = math.isqrt(positions)
    patch = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if offset:
        resize = {"scale_factor": ((grid_h + offset) / side, (grid_w + offset) / side)}
    else:
        resize = {"size": (grid_h, grid_w)}
    patch = nn.functional.interpolate(patch, mode="bicubic", antialias=antialias, **resize)
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
    return torch.cat((table[:, :1].float(), patch), dim=1).to(table.dtype)


def _interpolate(
    embeddings_module: nn.Module,
    embeddings: torch.Tensor,
    height: int,
    width: int,
    *,
    offset: float,
    antialias: bool,
) -> torch.Tensor:
    patch = embeddings_module.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    return official_position_embeddings(
        embeddings_module.position_embeddings, height // patch_h, width // patch_w, offset=offset, antialias=antialias
    )


@register_family
class Dinov2Backbone(TransformersViT):
    """A transformers ``Dinov2Model`` with the official position-embedding interpolation.

    The interpolation is installed on the model's embeddings module itself (an instance attribute that
    shadows transformers' method), so :attr:`model` run on its own gives the official outputs too.
    """

    family: ClassVar[str] = "dinov2"
    title: ClassVar[str] = "DINOv2"
    model_types: ClassVar[tuple[str, ...]] = ("dinov2",)
    model_class: ClassVar[str] = "Dinov2Model"
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD
    default_lora_target_modules = LORA_TARGETS
    interpolate_offset: ClassVar[float] = 0.1
    interpolate_antialias: ClassVar[bool] = False

    def __init__(self, model: nn.Module, **kwargs: object) -> None:
        super().__init__(model, **kwargs)  # type: ignore[arg-type]
        embeddings = self.model.embeddings
        embeddings.interpolate_pos_encoding = functools.partial(
            _interpolate, embeddings, offset=self.interpolate_offset, antialias=self.interpolate_antialias
        )

    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def final_norm(self) -> nn.Module:
        return self.model.layernorm

    def _normed_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        # transformers' Dinov2 applies the final layernorm to every token of last_hidden_state
        return self.model(pixel_values=pixels).last_hidden_state


@register_family
class Dinov2RegBackbone(Dinov2Backbone):
    """A transformers ``Dinov2WithRegistersModel``; registers sit between the class and patch tokens."""

    family: ClassVar[str] = "dinov2_reg"
    title: ClassVar[str] = "DINOv2 with registers"
    model_types: ClassVar[tuple[str, ...]] = ("dinov2_with_registers",)
    model_class: ClassVar[str] = "Dinov2WithRegistersModel"
    interpolate_offset: ClassVar[float] = 0.0
    interpolate_antialias: ClassVar[bool] = True
