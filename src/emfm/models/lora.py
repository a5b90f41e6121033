"""LoRA on a backbone's attention projections, through peft.

peft's ``inject_adapter_in_model`` adds the adapters in place, so the backbone wrapper's ``encode``
keeps working; A is Kaiming-initialised and B zero (peft's default), as in the study's protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (protocol: rank 16, alpha 32, no dropout)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0


def apply_lora(backbone: nn.Module, settings: LoraSettings, target_modules: Sequence[str] | None = None) -> int:
    """Freeze ``backbone`` and inject trainable LoRA adapters into ``backbone.model``.

    Args:
        backbone: an emfm Backbone; its ``lora_target_modules`` are used unless ``target_modules`` is given.
        settings: rank, alpha and dropout.
        target_modules: module-name suffixes to adapt.

    Returns:
        The number of trainable LoRA parameters.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(target_modules or backbone.lora_target_modules)
    for p in backbone.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets, bias="none"
    )
    inject_adapter_in_model(config, backbone.model)
    n = sum(p.numel() for name, p in backbone.named_parameters() if "lora_" in name)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    log.info("LoRA r=%d alpha=%d on %s: %d trainable parameters", settings.rank, settings.alpha, targets, n)
    return n


def lora_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, keyed as in ``backbone.model``."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(backbone.model)


def load_lora_state_dict(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(backbone.model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA weights do not fit this backbone: unexpected keys {unexpected[:3]}")
