"""Meta's DINOv3 ViT release checkpoints (``dinov3_vit*16*_pretrain_*.pth``) -> transformers.

What the conversion has to respect (facebookresearch/dinov3, ``models/vision_transformer.py``):

- ``attn.qkv`` is a ``LinearKMaskedBias``: the forward pass multiplies the bias by the saved buffer
  ``bias_mask`` (ones for q and v, zeros for k), so the key bias stored in the file is never used. The mask
  is folded into the converted weights: with a zero key bias the transformers model has no key bias at all
  (``key_bias=False``), as in the hub conversion.
- Rotary position embedding periods are saved (``rope_embed.periods``, length head_dim / 4); they give the
  head dimension, hence the number of heads, and must equal ``rope_theta ** (4 i / head_dim)``, the only
  parametrisation transformers has.
- ``storage_tokens`` are transformers' ``register_tokens``; ``mask_token`` is (1, C) there and (1, 1, C) here.
- LayerNorm eps is 1e-5 (``layernormbf16``, used by every release); pass ``layer_norm_eps=`` otherwise.
- Layer scale ``ls1/ls2.gamma``; MLP ``fc1/fc2`` or SwiGLU ``w1`` (gate), ``w2`` (up), ``w3`` (down).
- ``local_cls_norm`` (ViT-7B) is used only for local crops in training and is dropped; an untied
  ``cls_norm`` has no transformers counterpart and is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emfm.backbones._official import (
    Converted,
    OfficialFormat,
    OfficialSource,
    apply_overrides,
    count_blocks,
    register_format,
    split_rows,
)
from emfm.errors import CheckpointFormatError, ConfigError

log = logging.getLogger(__name__)

LAYER_NORM_EPS = 1e-5
# Release names -> heads, used only if a file lacks rope_embed.periods.
_RELEASE_NAME = re.compile(r"dinov3_vit(7b|s|splus|b|l|lplus|hplus)16(?:plus)?_pretrain")
_RELEASE_HEADS = {"s": 6, "splus": 6, "b": 12, "l": 16, "lplus": 16, "hplus": 20, "7b": 32}


def matches(state_dict: Mapping[str, Any]) -> bool:
    keys = state_dict.keys()
    return "cls_token" in keys and "blocks.0.attn.qkv.weight" in keys and (
        "rope_embed.periods" in keys or "storage_tokens" in keys
    )


def _heads_and_theta(state_dict: Mapping[str, Any], source: OfficialSource, embed_dim: int) -> tuple[int, float]:
    import torch

    periods = state_dict.get("rope_embed.periods")
    if periods is None:
        name = source.weights.name.replace("16plus", "plus16")
        match = _RELEASE_NAME.search(name)
        heads = source.num_heads or (_RELEASE_HEADS[match.group(1)] if match else None)
        if heads is None:
            raise CheckpointFormatError(
                f"{source.weights.name} has no rope_embed.periods and is not a release name, so its number of "
                "attention heads is unknown; pass num_heads= (create_backbone(path, num_heads=N))"
            )
        return heads, 100.0
    quarter = int(periods.numel())
    head_dim = 4 * quarter
    if embed_dim % head_dim:
        raise CheckpointFormatError(
            f"{source.weights.name}: {quarter} rope periods mean head dimension {head_dim}, which does not divide "
            f"the width {embed_dim}"
        )
    heads = embed_dim // head_dim
    if source.num_heads is not None and source.num_heads != heads:
        raise ConfigError(
            f"num_heads={source.num_heads} contradicts {source.weights.name}, whose rope periods give "
            f"{heads} heads of dimension {head_dim}; leave num_heads out"
        )
    # periods[i] = theta ** (4 i / head_dim); a single period (head_dim 4) carries no base: the releases use 100
    theta = float(periods[1]) ** (head_dim / 4) if quarter > 1 else 100.0
    expected = theta ** (torch.arange(quarter, dtype=torch.float64) * 4 / head_dim)
    if not torch.allclose(periods.double(), expected, rtol=1e-4):
        raise CheckpointFormatError(
            f"{source.weights.name}: rope periods {periods.tolist()} are not base ** (4 i / head_dim) for any "
            "base (min/max-period RoPE); transformers' DINOv3 cannot represent them"
        )
    return heads, round(theta, 4)


@dataclass(frozen=True)
class _Architecture:
    """What the tensors say about the model (the heads and rope base from the rope periods)."""

    embed_dim: int
    patch_size: int
    depth: int
    storage: int  # storage tokens, transformers' register tokens
    heads: int
    rope_theta: float
    gated: bool
    hidden: int


def convert(state_dict: Mapping[str, Any], source: OfficialSource) -> Converted:
    """A DINOv3 ViT release state dict as a transformers ``DINOv3ViT`` model.

    The key-bias mask is folded in before the config is built, because whether the model has a key bias at
    all depends on it; every check on the file runs before anything is built.
    """
    sd = _drop_training_only_norms(state_dict, source.weights.name)
    arch = _read_architecture(sd, source)
    biases = _masked_qkv_biases(sd, arch.depth, source.weights.name)
    has_qkv_bias = bool(biases)
    key_bias = has_qkv_bias and any(bool(parts[1].abs().max() > 0) for parts in biases.values())
    config = _build_config(sd, arch, has_qkv_bias, key_bias, source)
    return Converted(family="dinov3", config=config, state_dict=_map_tensors(sd, arch, biases, key_bias))


def _drop_training_only_norms(state_dict: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A copy without ``local_cls_norm`` (local crops in training only); an untied ``cls_norm`` is refused."""
    sd = dict(state_dict)
    if any(key.startswith("cls_norm.") for key in sd):
        raise CheckpointFormatError(
            f"{name} has a separate cls_norm (untie_cls_and_patch_norms), which transformers' DINOv3 lacks"
        )
    dropped = [key for key in sd if key.startswith("local_cls_norm.")]
    for key in dropped:
        del sd[key]
    if dropped:
        log.info("%s: dropped local_cls_norm (used only for local crops in training)", name)
    return sd


def _read_architecture(sd: Mapping[str, Any], source: OfficialSource) -> _Architecture:
    """The architecture from the tensor shapes; heads and rope base from the periods (or the release name)."""
    embed_dim = int(sd["cls_token"].shape[-1])
    patch_size = int(sd["patch_embed.proj.weight"].shape[-1])
    depth = count_blocks(sd, "blocks.")
    storage = int(sd["storage_tokens"].shape[1]) if "storage_tokens" in sd else 0
    heads, theta = _heads_and_theta(sd, source, embed_dim)
    gated = "blocks.0.mlp.w1.weight" in sd
    hidden = int(sd["blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"].shape[0])
    return _Architecture(
        embed_dim=embed_dim,
        patch_size=patch_size,
        depth=depth,
        storage=storage,
        heads=heads,
        rope_theta=theta,
        gated=gated,
        hidden=hidden,
    )


def _masked_qkv_biases(sd: Mapping[str, Any], depth: int, name: str) -> dict[int, list[Any]]:
    """Per block with a qkv bias, its q, k, v biases with ``bias_mask`` folded in (the forward pass applies it)."""
    import torch

    biases: dict[int, list[Any]] = {}
    for i in range(depth):
        bias = sd.get(f"blocks.{i}.attn.qkv.bias")
        if bias is None:
            continue
        mask = sd.get(f"blocks.{i}.attn.qkv.bias_mask")
        if mask is not None:
            if not torch.isfinite(mask).all():
                raise CheckpointFormatError(f"{name}: blocks.{i}.attn.qkv.bias_mask holds non-finite values")
            bias = bias * mask
        biases[i] = split_rows(bias, 3, f"blocks.{i}.attn.qkv.bias")
    return biases


def _build_config(
    sd: Mapping[str, Any], arch: _Architecture, has_qkv_bias: bool, key_bias: bool, source: OfficialSource
) -> Any:
    """The transformers config; a zero (masked) key bias becomes ``key_bias=False``, as in the hub conversion."""
    from transformers import DINOv3ViTConfig

    config = DINOv3ViTConfig(
        hidden_size=arch.embed_dim,
        intermediate_size=arch.hidden,
        num_hidden_layers=arch.depth,
        num_attention_heads=arch.heads,
        patch_size=arch.patch_size,
        image_size=224,
        rope_theta=arch.rope_theta,
        layer_norm_eps=LAYER_NORM_EPS,
        query_bias=has_qkv_bias,
        key_bias=key_bias,
        value_bias=has_qkv_bias,
        proj_bias="blocks.0.attn.proj.bias" in sd,
        mlp_bias=("blocks.0.mlp.w1.bias" if arch.gated else "blocks.0.mlp.fc1.bias") in sd,
        use_gated_mlp=arch.gated,
        num_register_tokens=arch.storage,
        pos_embed_rescale=2.0,  # rope coordinate rescaling the releases train with (training mode only)
    )
    apply_overrides(config, source.overrides)
    return config


def _map_tensors(
    sd: Mapping[str, Any], arch: _Architecture, biases: dict[int, list[Any]], key_bias: bool
) -> dict[str, Any]:
    """The transformers state dict: embeddings (mask token reshaped to (1, 1, C)) and final norm, then each block."""
    import torch

    embed_dim = arch.embed_dim
    out: dict[str, Any] = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd.get("mask_token", torch.zeros(1, embed_dim)).reshape(1, 1, embed_dim),
        "embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
    }
    out["embeddings.register_tokens"] = sd["storage_tokens"] if arch.storage else torch.zeros(1, 0, embed_dim)
    ones = torch.ones(embed_dim)
    for i in range(arch.depth):
        out.update(_map_block(sd, i, biases.get(i), key_bias, arch.gated, ones))
    return out


def _map_block(
    sd: Mapping[str, Any], i: int, bias: list[Any] | None, key_bias: bool, gated: bool, ones: Any
) -> dict[str, Any]:
    """Block ``i``: qkv split into q, k, v (the masked biases from ``bias``), layer scale, MLP renamed."""
    src, dst = f"blocks.{i}.", f"model.layer.{i}."
    out: dict[str, Any] = {}
    for norm in ("norm1", "norm2"):
        out[f"{dst}{norm}.weight"] = sd[f"{src}{norm}.weight"]
        out[f"{dst}{norm}.bias"] = sd[f"{src}{norm}.bias"]
    q, k, v = split_rows(sd[f"{src}attn.qkv.weight"], 3, f"blocks.{i}.attn.qkv.weight")
    out[f"{dst}attention.q_proj.weight"] = q
    out[f"{dst}attention.k_proj.weight"] = k
    out[f"{dst}attention.v_proj.weight"] = v
    if bias is not None:
        qb, kb, vb = bias
        out[f"{dst}attention.q_proj.bias"] = qb
        out[f"{dst}attention.v_proj.bias"] = vb
        if key_bias:
            out[f"{dst}attention.k_proj.bias"] = kb
    out[f"{dst}attention.o_proj.weight"] = sd[f"{src}attn.proj.weight"]
    if f"{src}attn.proj.bias" in sd:
        out[f"{dst}attention.o_proj.bias"] = sd[f"{src}attn.proj.bias"]
    out[f"{dst}layer_scale1.lambda1"] = sd.get(f"{src}ls1.gamma", ones)
    out[f"{dst}layer_scale2.lambda1"] = sd.get(f"{src}ls2.gamma", ones)
    pairs = (("w1", "gate_proj"), ("w2", "up_proj"), ("w3", "down_proj")) if gated else (
        ("fc1", "up_proj"),
        ("fc2", "down_proj"),
    )
    for old, new in pairs:
        for kind in ("weight", "bias"):
            if f"{src}mlp.{old}.{kind}" in sd:
                out[f"{dst}mlp.{new}.{kind}"] = sd[f"{src}mlp.{old}.{kind}"]
    return out


FORMAT = register_format(
    OfficialFormat(
        name="dinov3",
        description="Meta's DINOv3 ViT .pth (storage_tokens, rope_embed.periods, blocks.N.attn.qkv.bias_mask)",
        matches=matches,
        convert=convert,
    )
)
