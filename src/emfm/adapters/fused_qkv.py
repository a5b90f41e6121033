"""The fused-qkv LoRA layout's modules: one low-rank update over the q, k and v projections of an attention block.

Kept apart from :mod:`emfm.adapters.lora` so that importing the adapter registry (which the CLI does to build its
parser) never imports torch; :mod:`emfm.adapters.lora` imports this module only when a layout is applied,
saved or loaded. peft cannot tie one A across three modules, which is why this is written by hand.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from emfm.errors import CheckpointFormatError, ConfigError

if TYPE_CHECKING:
    from emfm.adapters.lora import LoraSettings

# The q, k and v projections by the names transformers gives them: q_proj/k_proj/v_proj in DINOv2, DINOv3 and
# CLIP (transformers >= 5), query/key/value in DINOv2 before it. Any other LoRA target is an output projection.
_QKV_NAMES = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"))
# The update module of a block's packed q/k/v, registered on the attention module (state keys
# ``...attention.lora_qkv.lora_A.weight``); an output projection's is ``lora_<its name>``.
_QKV_UPDATE = "lora_qkv"

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
