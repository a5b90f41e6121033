"""The one interface every backbone family offers: pixels -> patch-token grid + CLS."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class BackboneOutput:
    """What :meth:`Backbone.encode` returns.

    Attributes:
        patch_grid: final normalised patch tokens as a grid, (B, C, H/p, W/p).
        cls: final normalised class token, (B, C).
        layers: for each requested block index (0-based; negative counts from the end), that block's
            patch tokens after the final norm, as a grid (B, C, H/p, W/p), like DINOv2's
            ``get_intermediate_layers(norm=True)``. Register / storage tokens are always dropped.
    """

    patch_grid: torch.Tensor
    cls: torch.Tensor
    layers: dict[int, torch.Tensor] = field(default_factory=dict)


class Backbone(nn.Module, abc.ABC):
    """A vision transformer wrapped so that every family looks the same to emfm.

    Attributes:
        name: the name the user should see (registry name, hub id, or the local directory's name).
        family: ``dinov2``, ``dinov2_reg``, ``dinov3`` or ``openclip``.
        patch_size, embed_dim, num_layers: architecture facts.
        mean, std: the family's normalisation constants (RGB).
        weights_id: a stable digest of the loaded weights, for cache keys.
        lora_target_modules: module-name suffixes inside :attr:`model` that LoRA adapts.
        model: the underlying transformers module (what peft wraps).
        num_register_tokens: register / storage tokens the model carries (never in the outputs).
        source: where the weights came from, for people (hub id and cache path, local path, converted file).
    """

    name: str
    family: str
    patch_size: int
    embed_dim: int
    num_layers: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_id: str
    lora_target_modules: list[str]
    model: nn.Module
    num_register_tokens: int = 0
    source: str = ""

    @property
    def config_id(self) -> str:
        """A digest of the model's architecture config (transformers ``config.json``), for cache keys.

        Two checkpoints with the same weight bytes but another config (a different layer-norm epsilon, say)
        give other features; the weights digest alone would not tell them apart. Keys that only name
        where the config came from (``_name_or_path``, the transformers version) are left out.
        """
        import hashlib
        import json

        config = getattr(getattr(self, "model", None), "config", None)
        if config is None or not hasattr(config, "to_dict"):
            return "none"
        fields = {k: v for k, v in config.to_dict().items()
                  if k not in ("_name_or_path", "transformers_version", "_commit_hash", "_attn_implementation")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=repr).encode()).hexdigest()[:16]

    @property
    def num_params(self) -> int:
        """Parameters of :attr:`model` (LoRA adapters included once injected)."""
        return sum(p.numel() for p in self.model.parameters())

    @abc.abstractmethod
    def encode(self, pixels: torch.Tensor, layers: Sequence[int] | None = None) -> BackboneOutput:
        """Encode ImageNet-style normalised pixels (B, 3, H, W); H and W multiples of the patch size."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode(pixels).patch_grid
