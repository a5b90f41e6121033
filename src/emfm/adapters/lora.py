"""LoRA on a backbone's attention projections, through peft (Hu et al. 2021; the study's protocol:
rank 16, alpha 32, no dropout).

peft's ``inject_adapter_in_model`` adds the adapters in place, so the backbone wrapper's ``encode``
keeps working; A is Kaiming-initialised and B zero (peft's default), as in the study.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emfm._settings import Settings, check_number
from emfm.adapters._base import Adapter, register_adapter
from emfm.errors import CheckpointFormatError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from emfm.backbones._base import Backbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings(Settings):
    """LoRA hyper-parameters; the one definition (config keys ``lora_rank``, ``lora_alpha``, ``lora_dropout``)."""

    what = "LoRA setting"

    rank: int = 16
    alpha: float = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_number("lora_rank", self.rank, minimum=1, integer=True)
        check_number("lora_alpha", self.alpha, minimum=0, exclusive_minimum=True)
        check_number("lora_dropout", self.dropout, minimum=0, maximum=0.99)


def apply_lora(backbone: Backbone, settings: LoraSettings, target_modules: Sequence[str] | None = None) -> int:
    """Freeze ``backbone`` and inject trainable LoRA adapters into ``backbone.model``.

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
    log.info("LoRA r=%d alpha=%s on %s: %d trainable parameters", settings.rank, settings.alpha, targets, n)
    return n


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, keyed as in ``model``."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load adapter weights; keys that fit no adapter of ``model`` are a user error, not a traceback."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, dict(state))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointFormatError(
            f"the checkpoint's LoRA weights do not fit this backbone (unexpected keys {unexpected[:3]}); "
            f"use the backbone the run was trained with"
        )


@register_adapter
class Lora(Adapter):
    """Low-rank adapters on the attention projections; the backbone runs on every training step."""

    name = "lora"
    summary = "LoRA adapters on the attention projections (peft), trained with the head"
    settings_type = LoraSettings
    trains_on = "pixels"

    def prepare(self, backbone: Backbone) -> int:
        n = apply_lora(backbone, self.settings)  # type: ignore[arg-type]
        # Backbones load in eval mode; LoRA trains them, so they train in train mode, as in the study
        # (no dropout is active in these models; DINOv3 applies its RoPE jitter only in train mode).
        backbone.train()
        return n

    def state(self, backbone: Backbone) -> dict[str, torch.Tensor]:
        return lora_state_dict(backbone.model)

    def load_state(self, backbone: Backbone, tensors: Mapping[str, torch.Tensor]) -> None:
        load_lora_state_dict(backbone.model, tensors)
