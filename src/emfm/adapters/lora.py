"""LoRA on a backbone's attention projections (Hu et al. 2021, arXiv:2106.09685; the study's protocol:
rank 16, alpha 32, no dropout), in one of two layouts (``lora_layout``):

``fused-qkv`` (the study's, the published preset's)
    The study adapts timm/official ViTs, whose attention packs q, k and v into one Linear ``attn.qkv``
    (W_qkv = [W_q; W_k; W_v]), and puts one LoRA on it and one on ``attn.proj``. The transformers models
    emfm loads keep q, k and v as three Linear layers, so the same update is rebuilt here: per attention
    block one A (r x d_in) shared by q, k and v and one B (3 d_out x r) whose three row blocks update q, k
    and v; delta W_qkv = (alpha / r) B A exactly, and the output projection has its own ordinary LoRA.
    peft cannot tie one A across three modules, so this layout is written by hand
    (:class:`LowRankUpdate`, :class:`GroupedLoraLinear`), with peft's initialisation. Per block:
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
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from emfm._settings import Settings, check_choice, check_number
from emfm.adapters._base import Adapter, register_adapter
from emfm.errors import CheckpointFormatError, ConfigError

if TYPE_CHECKING:
    from emfm.backbones._base import Backbone

log = logging.getLogger(__name__)

Layout = Literal["fused-qkv", "separate"]
LAYOUTS: tuple[str, ...] = ("fused-qkv", "separate")

# The q, k and v projections by the names transformers gives them: q_proj/k_proj/v_proj in DINOv2, DINOv3 and
# CLIP (transformers >= 5), query/key/value in DINOv2 before it. Any other LoRA target is an output projection.
_QKV_NAMES = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"))
# The update module of a block's packed q/k/v, registered on the attention module (state keys
# ``...attention.lora_qkv.lora_A.weight``); an output projection's is ``lora_<its name>``.
_QKV_UPDATE = "lora_qkv"


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


class LowRankUpdate(nn.Module):
    """One LoRA update ``(alpha / r) B A`` over a Linear layer that several Linear layers make up together.

    The members (q, k and v of one attention block: ``out_features`` 3 x d) read the same input; member ``i``
    adds the ``i``-th row block of ``B A``. With one member this is ordinary LoRA. Initialised as peft
    initialises LoRA (``reset_lora_parameters``: A Kaiming-uniform with a = sqrt(5), B zero).
    """

    def __init__(self, in_features: int, out_features: Sequence[int], rank: int, alpha: float, dropout: float,
                 *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.out_features = tuple(int(n) for n in out_features)
        self.lora_A = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(rank, sum(self.out_features), bias=False, device=device, dtype=dtype)
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / rank
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self._last: tuple[weakref.ref, torch.Tensor] | None = None

    def rows(self, index: int) -> slice:
        start = sum(self.out_features[:index])
        return slice(start, start + self.out_features[index])

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """``A(dropout(x))``. With dropout active, the members must see one dropout mask, as the packed
        layer would: the first member's result is kept (weakly keyed on its input) for the others."""
        if not (self.training and isinstance(self.lora_dropout, nn.Dropout)):
            return self.lora_A(self.lora_dropout(x))
        if self._last is not None and self._last[0]() is x:
            return self._last[1]
        h = self.lora_A(self.lora_dropout(x))
        self._last = (weakref.ref(x), h)
        return h

    def delta(self, index: int) -> torch.Tensor:
        """Member ``index``'s weight update, (out_i, in): what merging adds to its weight."""
        return self.scaling * self.lora_B.weight[self.rows(index)] @ self.lora_A.weight


class GroupedLoraLinear(nn.Module):
    """A Linear layer plus its share of a :class:`LowRankUpdate`: ``base(x) + s B_i A dropout(x)``.

    The update is registered once, on the attention module, not here (the tuple keeps it out of this
    module's children), so its tensors have one name in the state dict.
    """

    def __init__(self, base_layer: nn.Linear, update: LowRankUpdate, index: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self._update = (update,)
        self.index = index

    @property
    def update(self) -> LowRankUpdate:
        return self._update[0]

    @property
    def weight(self) -> torch.Tensor:  # code that reads q_proj.weight (dtype, device) still finds it
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        update = self.update
        h = update.down(x.to(update.lora_A.weight.dtype))
        low_rank = nn.functional.linear(h, update.lora_B.weight[update.rows(self.index)]) * update.scaling
        return result + low_rank.to(result.dtype)


def _linear_named(parent: nn.Module, names: Sequence[str]) -> str | None:
    return next((n for n in names if isinstance(getattr(parent, n, None), nn.Linear)), None)


def qkv_groups(model: nn.Module, targets: Sequence[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The fused layout's module groups, derived from the names: ``([(attention, [q, k, v])...], [output...])``.

    An attention module is the parent of a q projection among ``targets`` (``q_proj`` or ``query``); its k and
    v are its children named as in :data:`_QKV_NAMES`. Every other target names output projections. A q
    projection without k and v beside it gives no groups at all (the caller refuses the backbone).
    """
    q_names, k_names, v_names = ([n for n in names if n in targets] for names in _QKV_NAMES)
    qkv_targets = {*q_names, *k_names, *v_names}
    groups: list[tuple[str, list[str]]] = []
    outputs: list[str] = []
    for name, module in model.named_modules():
        parent, _, child = name.rpartition(".")
        if not isinstance(module, nn.Linear):
            continue
        if child in q_names:
            owner = model.get_submodule(parent) if parent else model
            k, v = _linear_named(owner, k_names), _linear_named(owner, v_names)
            if k is None or v is None:  # one block without them: no packed q/k/v to adapt there
                return [], []
            groups.append((parent, [child, k, v]))
        elif child in targets and child not in qkv_targets:
            outputs.append(name)
    return groups, outputs


def add_fused_qkv_lora(model: nn.Module, targets: Sequence[str], settings: LoraSettings, *, name: str = "") -> int:
    """Replace each attention block's q, k and v Linear layers by :class:`GroupedLoraLinear` sharing one
    :class:`LowRankUpdate` (LoRA on the packed ``W_qkv``), and each output projection by one with its own;
    returns how many attention blocks were adapted.

    Raises:
        ConfigError: no attention block with q, k and v projections among ``targets``.
    """
    groups, outputs = qkv_groups(model, targets)
    if not groups:
        raise ConfigError(
            f"backbone {name or type(model).__name__!r} has no separate q, k and v projections among its LoRA "
            f"targets {list(targets)}, which lora_layout fused-qkv adapts as one; use --lora-layout separate"
        )
    r, alpha, dropout = settings.rank, settings.alpha, settings.dropout
    for parent_name, children in groups:
        parent = model.get_submodule(parent_name) if parent_name else model
        bases = [getattr(parent, c) for c in children]
        if len({b.in_features for b in bases}) != 1:
            raise ConfigError(f"{parent_name}: q, k and v read inputs of different widths; use --lora-layout separate")
        w = bases[0].weight
        update = LowRankUpdate(bases[0].in_features, [b.out_features for b in bases], r, alpha, dropout,
                               device=w.device, dtype=w.dtype)
        parent.add_module(_QKV_UPDATE, update)
        for index, (child, base) in enumerate(zip(children, bases)):
            setattr(parent, child, GroupedLoraLinear(base, update, index))
    for full in outputs:
        parent_name, _, child = full.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        update = LowRankUpdate(base.in_features, [base.out_features], r, alpha, dropout,
                               device=base.weight.device, dtype=base.weight.dtype)
        parent.add_module(f"lora_{child}", update)
        setattr(parent, child, GroupedLoraLinear(base, update, 0))
    return len(groups)


def merge_grouped_lora(model: nn.Module) -> int:
    """Merge every :class:`GroupedLoraLinear` of ``model`` into its base layer (``W_i += s B_i A``), put the
    base layer in its place and drop the updates; returns how many layers were merged (0 if none)."""
    merged = 0
    with torch.no_grad():
        for name, module in list(model.named_modules()):
            if isinstance(module, GroupedLoraLinear):
                base = module.base_layer
                base.weight += module.update.delta(module.index).to(base.weight.dtype)
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
                merged += 1
        for name, module in list(model.named_modules()):
            if isinstance(module, LowRankUpdate):
                parent_name, _, child = name.rpartition(".")
                delattr(model.get_submodule(parent_name) if parent_name else model, child)
    return merged


def grouped_lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The fused layout's adapter weights, keyed as in ``model`` (``...attention.lora_qkv.lora_A.weight``)."""
    return {f"{name}.{key}": tensor for name, module in model.named_modules() if isinstance(module, LowRankUpdate)
            for key, tensor in module.state_dict().items()}


def stored_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which layout a checkpoint's LoRA tensors are of: ``fused-qkv``, ``separate``, or None when it has none."""
    if not state:
        return None
    return "fused-qkv" if any(f".{_QKV_UPDATE}." in k or k.startswith(f"{_QKV_UPDATE}.") for k in state) else "separate"


def load_grouped_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load the fused layout's weights; a key set or shape that does not fit is a user error, not a traceback."""
    own = grouped_lora_state_dict(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        what = (f"missing keys {missing[:3]}" if missing else f"unexpected keys {unexpected[:3]}" if unexpected
                else f"shapes of {wrong[:3]} differ")
        raise CheckpointFormatError(
            f"the checkpoint's LoRA weights do not fit this backbone ({what}); "
            f"use the backbone the run was trained with"
        )
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state[key])


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, keyed as in ``model`` (peft's keys for the separate layout)."""
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
