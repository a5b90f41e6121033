"""LoRA on a backbone's attention projections (Hu et al. 2021, arXiv:2106.09685; the study's protocol:
rank 16, alpha 32, no dropout), in one of two layouts (``lora_layout``):

``fused-qkv`` (the study's, the published preset's)
    The study adapts timm/official ViTs, whose attention packs q, k and v into one Linear ``attn.qkv``
    (W_qkv = [W_q; W_k; W_v]), and puts one LoRA on it and one on ``attn.proj``. The transformers models
    emfm loads keep q, k and v as three Linear layers, so the same update is rebuilt here: per attention
    block one A (r x d_in) shared by q, k and v and one B (3 d_out x r) whose three row blocks update q, k
    and v; delta W_qkv = (alpha / r) B A exactly, and the output projection has its own ordinary LoRA.
    peft cannot tie one A across three modules, so this layout is written by hand in
    :mod:`emfm.adapters.fused_qkv` (imported only when used, so the CLI's parser never imports torch), with
    peft's initialisation. Per block:
    r (d_in + 3 d_out) + r (d + d) parameters; ViT-L (d 1024, 24 blocks, r 16):
    24 x 16 x (4096 + 2048) = 2,359,296 (2.36 M).
``separate`` (what every emfm run before this setting used; :class:`~emfm.config.TrainConfig`'s default)
    One peft LoRA on each of the q, k, v and output projections: four independent A matrices, a combined
    q/k/v update of rank up to 3 r; ViT-L: 24 x 4 x 16 x (1024 + 1024) = 3,145,728 (3.15 M).

peft's ``inject_adapter_in_model`` adds the separate adapters in place and the fused ones replace the
Linear layers in place too, so the backbone wrapper's ``encode`` keeps working; A is Kaiming-initialised
and B zero (peft's default), as in the study.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from emfm._settings import Settings, check_choice, check_number
from emfm.adapters._base import Adapter, register_adapter
from emfm.errors import CheckpointFormatError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from emfm.backbones._base import Backbone

log = logging.getLogger(__name__)

Layout = Literal["fused-qkv", "separate"]
LAYOUTS: tuple[str, ...] = ("fused-qkv", "separate")



@dataclass(frozen=True)
class LoraSettings(Settings):
    """LoRA hyper-parameters; the one definition (config keys ``lora_rank``, ``lora_alpha``, ``lora_dropout``,
    ``lora_layout``).

    ``layout`` defaults to ``separate``, the layout of every LoRA run emfm made before it was a setting: a
    saved config or checkpoint without it is read as what it was trained with, never as ``fused-qkv``.
    ``configs/study.yaml`` (the published protocol) sets ``fused-qkv``.
    """

    what = "LoRA setting"

    rank: int = 16
    alpha: float = 32
    dropout: float = 0.0
    # Checked below (not typed as Literal) so that a wrong value is named by its config key, lora_layout;
    # the CLI offers the choices.
    layout: str = field(default="separate", metadata={"choices": LAYOUTS})

    def __post_init__(self) -> None:
        check_number("lora_rank", self.rank, minimum=1, integer=True)
        check_number("lora_alpha", self.alpha, minimum=0, exclusive_minimum=True)
        check_number("lora_dropout", self.dropout, minimum=0, maximum=0.99)
        check_choice("lora_layout", self.layout, LAYOUTS,
                     "; fused-qkv is the study's (one A over the packed q/k/v), separate one LoRA per projection")


def apply_lora(backbone: Backbone, settings: LoraSettings, target_modules: Sequence[str] | None = None) -> int:
    """Freeze ``backbone`` and add trainable LoRA adapters to ``backbone.model`` in ``settings.layout``.

    Returns:
        The number of trainable LoRA parameters.

    Raises:
        ConfigError: ``fused-qkv`` on a backbone whose attention has no separate q, k and v projections.
    """
    targets = list(target_modules or backbone.lora_target_modules)
    for p in backbone.parameters():
        p.requires_grad_(False)
    if settings.layout == "fused-qkv":
        from emfm.adapters.fused_qkv import add_fused_qkv_lora

        add_fused_qkv_lora(backbone.model, targets, settings, name=getattr(backbone, "name", ""))
    else:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
            bias="none",
        )
        inject_adapter_in_model(config, backbone.model)
    n = sum(p.numel() for name, p in backbone.named_parameters() if "lora_" in name)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    log.info("LoRA %s r=%d alpha=%s on %s: %d trainable parameters", settings.layout, settings.rank, settings.alpha,
             targets, n)
    return n


def lora_param_count(depth: int, width: int, rank: int, layout: Layout) -> int:
    """LoRA parameters of a ViT with ``depth`` blocks of ``width`` on q, k, v and the output projection.

    ``fused-qkv``: r (d + 3 d) for the packed q/k/v plus r (d + d) for the output, per block; ``separate``:
    4 r (d + d). ViT-L (d 1024, 24 blocks) at rank 16: 2,359,296 fused against 3,145,728 separate
    (tests/adapters/test_lora_layout.py counts both on the real DINOv2-L architecture too).
    """
    per_block = rank * (width + 3 * width) + rank * 2 * width if layout == "fused-qkv" else 4 * rank * 2 * width
    return depth * per_block


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, keyed as in ``model`` (peft's keys for the separate layout)."""
    from emfm.adapters.fused_qkv import grouped_lora_state_dict

    grouped = grouped_lora_state_dict(model)
    if grouped:
        return grouped
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
    summary = "LoRA adapters on the attention projections (fused-qkv: one over q/k/v, the study's; or separate), " \
              "trained with the head"
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
        """Load the adapter's tensors, refusing a checkpoint whose tensors are of the other layout."""
        from emfm.adapters.fused_qkv import load_grouped_lora_state_dict, stored_layout

        layout = self.settings.layout  # type: ignore[attr-defined]
        stored = stored_layout(tensors)
        if stored is not None and stored != layout:
            raise CheckpointFormatError(
                f"the checkpoint's LoRA weights are of the {stored} layout but its settings say lora_layout {layout}; "
                f"the checkpoint is inconsistent: retrain the run"
            )
        if layout == "fused-qkv":
            load_grouped_lora_state_dict(backbone.model, tensors)
        else:
            load_lora_state_dict(backbone.model, tensors)
