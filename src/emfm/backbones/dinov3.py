"""DINOv3 ViTs: the registered checkpoints (all gated) and the family wrapper.

Paper: Siméoni et al., "DINOv3", arXiv:2508.10104 (2025). Weights: DINOv3 License (Meta's own licence, not
an open-source one); on the hub as ``facebook/dinov3-vit*16*-pretrain-lvd1689m``, gated: each user must
accept the licence on the model page before downloading. The official ``.pth`` files load too
(see :mod:`emfm.backbones._convert_dinov3`).

Position is encoded by axial RoPE on patch tokens only, computed for whatever grid comes in, so any size
that is a multiple of 16 works without interpolating a table. The four storage (register) tokens sit between
the class token and the patch tokens and are dropped from the outputs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from emfm.backbones import _convert_dinov3  # noqa: F401  (registers the official DINOv3 format)
from emfm.backbones._registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneRecord,
    register_backbone,
    register_family,
)
from emfm.backbones._vit import TransformersViT

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention only; the MLP is up/down(/gate)_proj
PAPER = "Siméoni et al., DINOv3, arXiv:2508.10104, 2025"
LICENSE = "DINOv3 License"
OFFICIAL_URL = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"  # request form for the .pth

# name suffix -> (hub arch, official file, width, depth, heads, params); architectures from
# facebookresearch/dinov3 hub/backbones.py, parameter counts of the transformers models they convert to.
_SIZES = {
    "s": ("vits16", "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", 384, 12, 6, 21_596_544),
    "s+": ("vits16plus", "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth", 384, 12, 6, 28_692_864),
    "b": ("vitb16", "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth", 768, 12, 12, 85_660_416),
    "l": ("vitl16", "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth", 1024, 24, 16, 303_129_600),
    "h+": ("vith16plus", "dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth", 1280, 32, 20, 840_592_640),
    "7b": ("vit7b16", "dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth", 4096, 40, 32, 6_716_035_072),
}
for _suffix, (_arch, _file, _width, _depth, _heads, _params) in _SIZES.items():
    register_backbone(
        BackboneRecord(
            name=f"dinov3-{_suffix}",
            family="dinov3",
            hub_id=f"facebook/dinov3-{_arch}-pretrain-lvd1689m",
            patch_size=16,
            embed_dim=_width,
            depth=_depth,
            num_heads=_heads,
            num_register_tokens=4,
            image_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            license=LICENSE,
            gated=True,
            lora_target_modules=LORA_TARGETS,
            num_params=_params,
            paper=PAPER,
            official_file=_file,
            official_url=OFFICIAL_URL,
        )
    )


@register_family
class Dinov3Backbone(TransformersViT):
    """A transformers ``DINOv3ViTModel`` (RoPE, layer scale, storage tokens, no key bias)."""

    family: ClassVar[str] = "dinov3"
    title: ClassVar[str] = "DINOv3"
    model_types: ClassVar[tuple[str, ...]] = ("dinov3_vit",)
    model_class: ClassVar[str] = "DINOv3ViTModel"
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD
    default_lora_target_modules = LORA_TARGETS

    def blocks(self) -> nn.ModuleList:
        return self.model.model.layer

    def final_norm(self) -> nn.Module:
        return self.model.norm

    def _normed_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        # transformers' DINOv3 applies the final norm to every token of last_hidden_state
        return self.model(pixel_values=pixels).last_hidden_state
