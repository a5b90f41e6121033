"""OpenCLIP (LAION-2B) vision towers: the registered checkpoints and the family wrapper.

Paper: Cherti et al., "Reproducible scaling laws for contrastive language-image learning", CVPR 2023
(arXiv:2212.07143); data: LAION-5B (Schuhmann et al., NeurIPS 2022). Weights: MIT, on the hub as
``laion/CLIP-ViT-*-laion2B-*`` in transformers format (plus open_clip's own files, which load too, see
:mod:`emfm.backbones._convert_openclip`). The study's OpenCLIP is ViT-L/14 laion2b_s32b_b82k (``openclip-l14``).

The patch grid is ``ln_post`` applied to every token of the last block, as open_clip's
``visual(x, output_tokens=True)`` returns it; transformers' ``CLIPVisionModel`` leaves its
``last_hidden_state`` before ``post_layernorm`` (= ``ln_post``), so the wrapper applies it. open_clip itself
runs only at the trained size; at other sizes the table is resized with transformers'
``interpolate_pos_encoding`` (bicubic to the output size).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from emfm.backbones import _convert_openclip  # noqa: F401  (registers the open_clip format)
from emfm.backbones._registry import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    BackboneRecord,
    register_backbone,
    register_family,
)
from emfm.backbones._vit import TransformersViT
from emfm.errors import ConfigError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # attention only; the MLP is fc1/fc2
PAPER = (
    "Cherti et al., Reproducible scaling laws for contrastive language-image learning, CVPR 2023, "
    "arXiv:2212.07143"
)
PROJECTION_KEY = "visual_projection.weight"

# name -> (hub id, patch, width, depth, heads, vision-tower params); architectures of open_clip's ViT-B-32,
# ViT-B-16, ViT-L-14 and ViT-H-14 configs, parameter counts of transformers' CLIPVisionModel (no projection).
_MODELS = {
    "openclip-b32": ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", 32, 768, 12, 12, 87_456_000),
    "openclip-b16": ("laion/CLIP-ViT-B-16-laion2B-s34B-b88K", 16, 768, 12, 12, 85_799_424),
    "openclip-l14": ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", 14, 1024, 24, 16, 303_179_776),
    "openclip-h14": ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", 14, 1280, 32, 16, 630_766_080),
}
for _name, (_hub, _patch, _width, _depth, _heads, _params) in _MODELS.items():
    register_backbone(
        BackboneRecord(
            name=_name,
            family="openclip",
            hub_id=_hub,
            patch_size=_patch,
            embed_dim=_width,
            depth=_depth,
            num_heads=_heads,
            num_register_tokens=0,
            image_size=224,
            mean=OPENAI_CLIP_MEAN,
            std=OPENAI_CLIP_STD,
            license="MIT",
            gated=False,
            lora_target_modules=LORA_TARGETS,
            num_params=_params,
            paper=PAPER,
        )
    )


@register_family
class OpenClipBackbone(TransformersViT):
    """A transformers ``CLIPVisionModel`` with open_clip's token outputs and, when known, its projection.

    Attributes:
        projection: open_clip's ``visual.proj`` as a bias-free Linear (CLIP's ``visual_projection``), or None
            when the checkpoint has none; see :meth:`embed_image`.
    """

    family: ClassVar[str] = "openclip"
    title: ClassVar[str] = "OpenCLIP"
    model_types: ClassVar[tuple[str, ...]] = ("clip", "clip_vision_model")
    model_class: ClassVar[str] = "CLIPVisionModel"
    default_mean = OPENAI_CLIP_MEAN
    default_std = OPENAI_CLIP_STD
    default_lora_target_modules = LORA_TARGETS

    def __init__(self, model: nn.Module, *, extras: Mapping[str, torch.Tensor] | None = None, **kwargs: Any) -> None:
        extras = dict(extras or {})
        weight = extras.pop(PROJECTION_KEY, None)
        super().__init__(model, extras=extras, **kwargs)
        self.projection: nn.Linear | None = None
        if weight is not None:
            self.projection = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            self.projection.weight.data.copy_(weight)
            self.projection.requires_grad_(False)

    @classmethod
    def read_extras(cls, weight_files: list[Path]) -> dict[str, torch.Tensor]:
        """CLIP's ``visual_projection`` from a full ``CLIPModel`` checkpoint, if it is one."""
        for path in weight_files:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as handle:
                    if PROJECTION_KEY in set(handle.keys()):  # a safe_open handle has keys(), not `in`
                        return {PROJECTION_KEY: handle.get_tensor(PROJECTION_KEY).float()}
            elif path.suffix == ".bin":
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
                if PROJECTION_KEY in state:
                    return {PROJECTION_KEY: state[PROJECTION_KEY].float()}
        return {}

    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def final_norm(self) -> nn.Module:
        return self.model.post_layernorm

    def _normed_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        return self.model.post_layernorm(hidden)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """open_clip's ``encode_image`` (unnormalised): the class token after ``ln_post``, projected.

        Raises:
            ConfigError: the checkpoint carried no projection (a bare ``CLIPVisionModel``).
        """
        if self.projection is None:
            raise ConfigError(
                f"backbone {self.name!r} has no visual projection (its checkpoint is a vision tower only); "
                "use encode(...).cls, or load the full CLIP / open_clip checkpoint"
            )
        return self.projection(self.encode(pixels).cls)
