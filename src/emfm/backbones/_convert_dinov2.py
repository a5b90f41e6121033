"""Meta's DINOv2 release checkpoints (``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``) -> transformers.

The released files are flat state dicts of ``DinoVisionTransformer`` (facebookresearch/dinov2): fused
``attn.qkv`` rows in q, k, v order, layer-scale ``ls1/ls2.gamma``, an MLP (``fc1``/``fc2``) or, for ViT-g, a
SwiGLU (``w12`` = gate and up halves, ``w3`` = down), optional ``register_tokens``, and a ``pos_embed`` for
the 518 px grid. Everything but the number of attention heads can be read from the tensors; the heads come
from the release file name (S 6, B 12, L 16, g 24: 64 channels per head) or from the user.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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

# Release names: dinov2_vits14_pretrain.pth, dinov2_vitg14_reg4_pretrain.pth, ... -> (width, heads)
_RELEASE_NAME = re.compile(r"dinov2_vit([sblg])14(?:_reg\d+)?_pretrain")
_RELEASES = {"s": (384, 6), "b": (768, 12), "l": (1024, 16), "g": (1536, 24)}
LAYER_NORM_EPS = 1e-6  # DinoVisionTransformer builds every LayerNorm with eps 1e-6


def matches(state_dict: Mapping[str, Any]) -> bool:
    return {"pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"} <= state_dict.keys()


def infer_num_heads(path: Path, embed_dim: int, given: int | None) -> int:
    """Heads from the user, else from an official release file name; never a silent guess.

    Raises:
        ConfigError: ``given`` does not divide the width.
        CheckpointFormatError: no ``given`` and the file name is not a release name matching the width.
    """
    if given is not None:
        if given <= 0 or embed_dim % given:
            raise ConfigError(f"num_heads={given} does not divide the width {embed_dim} of {path.name}")
        return given
    match = _RELEASE_NAME.search(path.name)
    if match:
        width, heads = _RELEASES[match.group(1)]
        if width == embed_dim:
            log.info(
                "%s: %d attention heads, read from the official release name (DINOv2 ViT-%s/14); "
                "pass num_heads= to override",
                path.name,
                heads,
                match.group(1).upper(),
            )
            return heads
        raise CheckpointFormatError(
            f"{path.name} is named like the DINOv2 ViT-{match.group(1).upper()}/14 release (width {width}) "
            f"but its tensors have width {embed_dim}, so its number of attention heads is unknown; "
            "pass num_heads= (create_backbone(path, num_heads=N), or --num-heads N)"
        )
    raise CheckpointFormatError(
        f"{path.name} is not an official DINOv2 release name (dinov2_vits14_pretrain.pth, "
        "dinov2_vitb14_reg4_pretrain.pth, ...) and DINOv2 checkpoints do not record their number of attention "
        f"heads; pass num_heads= (create_backbone(path, num_heads=N), or --num-heads N). The releases use 64 "
        f"channels per head (width {embed_dim} would be {embed_dim // 64 or 1}), but custom models differ"
    )


@dataclass(frozen=True)
class _Architecture:
    """What the tensors (and, for the heads, the release name) say about the model: all the config needs."""

    embed_dim: int
    patch_size: int
    depth: int
    registers: int
    swiglu: bool
    grid_side: int  # side of the square position table the release was trained with
    heads: int
    mlp_ratio: int
    qkv_bias: bool


def convert(state_dict: Mapping[str, Any], source: OfficialSource) -> Converted:
    """A DINOv2 release state dict as a transformers ``Dinov2`` (or ``Dinov2WithRegisters``) model.

    Every check on the file runs before anything is built, so a file transformers cannot represent is
    refused with its reason instead of failing later in a strict ``load_state_dict``.
    """
    arch = _read_architecture(state_dict, source)
    config, family = _build_config(arch, source)
    return Converted(family=family, config=config, state_dict=_map_tensors(state_dict, arch))


def _read_architecture(sd: Mapping[str, Any], source: OfficialSource) -> _Architecture:
    """The architecture from the tensor shapes; the heads from the user or the release name."""
    embed_dim = int(sd["cls_token"].shape[-1])
    patch_size = int(sd["patch_embed.proj.weight"].shape[-1])
    depth = count_blocks(sd, "blocks.")
    registers = int(sd["register_tokens"].shape[1]) if "register_tokens" in sd else 0
    swiglu = "blocks.0.mlp.w12.weight" in sd
    positions = int(sd["pos_embed"].shape[1]) - 1
    side = math.isqrt(positions)
    if side * side != positions:
        raise CheckpointFormatError(f"{source.weights.name}: pos_embed has {positions} patch positions, not a square")
    heads = infer_num_heads(source.weights, embed_dim, source.num_heads)
    mlp_ratio = _mlp_ratio(sd, source, embed_dim, swiglu)
    return _Architecture(
        embed_dim=embed_dim,
        patch_size=patch_size,
        depth=depth,
        registers=registers,
        swiglu=swiglu,
        grid_side=side,
        heads=heads,
        mlp_ratio=mlp_ratio,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
    )


def _mlp_ratio(sd: Mapping[str, Any], source: OfficialSource, embed_dim: int, swiglu: bool) -> int:
    """transformers' Dinov2 knows the MLP width only as a whole ``mlp_ratio``: refuse widths it cannot express.

    For SwiGLU it derives the hidden width from ``mlp_ratio`` 4 exactly as dinov2 does, so that width must match.
    """
    if swiglu:
        hidden = int(sd["blocks.0.mlp.w3.weight"].shape[1])
        mlp_ratio = 4  # transformers derives the SwiGLU width from mlp_ratio as dinov2 does
        derived = (int(embed_dim * mlp_ratio * 2 / 3) + 7) // 8 * 8
        if derived != hidden:
            raise CheckpointFormatError(
                f"{source.weights.name}: SwiGLU hidden width {hidden} is not what mlp_ratio 4 gives ({derived}); "
                "transformers' Dinov2 cannot represent it"
            )
        return mlp_ratio
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    if hidden % embed_dim:
        raise CheckpointFormatError(
            f"{source.weights.name}: MLP width {hidden} is not a whole multiple of the width {embed_dim}"
        )
    return hidden // embed_dim


def _build_config(arch: _Architecture, source: OfficialSource) -> tuple[Any, str]:
    """The transformers config and emfm family: register tokens need the ``WithRegisters`` model."""
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    common = dict(
        hidden_size=arch.embed_dim,
        num_hidden_layers=arch.depth,
        num_attention_heads=arch.heads,
        mlp_ratio=arch.mlp_ratio,
        image_size=arch.grid_side * arch.patch_size,
        patch_size=arch.patch_size,
        layer_norm_eps=LAYER_NORM_EPS,
        qkv_bias=arch.qkv_bias,
        use_swiglu_ffn=arch.swiglu,
    )
    if arch.registers:
        config = Dinov2WithRegistersConfig(num_register_tokens=arch.registers, **common)
        family = "dinov2_reg"
    else:
        config = Dinov2Config(**common)
        family = "dinov2"
    apply_overrides(config, source.overrides)
    return config, family


def _map_tensors(sd: Mapping[str, Any], arch: _Architecture) -> dict[str, Any]:
    """The transformers state dict: embeddings and final norm, then each block (same tensors, new names)."""
    import torch

    out: dict[str, Any] = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        # the mask token only serves masked pre-training; a file without one gets zeros
        "embeddings.mask_token": sd.get("mask_token", torch.zeros(1, arch.embed_dim)),
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    if arch.registers:
        out["embeddings.register_tokens"] = sd["register_tokens"]
    ones = torch.ones(arch.embed_dim)
    for i in range(arch.depth):
        out.update(_map_block(sd, i, arch.swiglu, ones))
    return out


def _map_block(sd: Mapping[str, Any], i: int, swiglu: bool, ones: Any) -> dict[str, Any]:
    """Block ``i``: the fused qkv split into q, k, v and SwiGLU's ``w12`` into gate and up halves."""
    src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
    out: dict[str, Any] = {}
    for norm in ("norm1", "norm2"):
        out[f"{dst}{norm}.weight"] = sd[f"{src}{norm}.weight"]
        out[f"{dst}{norm}.bias"] = sd[f"{src}{norm}.bias"]
    for kind in ("weight", "bias"):
        if f"{src}attn.qkv.{kind}" in sd:
            q, k, v = split_rows(sd[f"{src}attn.qkv.{kind}"], 3, f"blocks.{i}.attn.qkv.{kind}")
            out[f"{dst}attention.q_proj.{kind}"] = q
            out[f"{dst}attention.k_proj.{kind}"] = k
            out[f"{dst}attention.v_proj.{kind}"] = v
        out[f"{dst}attention.o_proj.{kind}"] = sd[f"{src}attn.proj.{kind}"]
    # a model built without layer scale (init_values=None) multiplies by one
    out[f"{dst}layer_scale1.lambda1"] = sd.get(f"{src}ls1.gamma", ones)
    out[f"{dst}layer_scale2.lambda1"] = sd.get(f"{src}ls2.gamma", ones)
    for kind in ("weight", "bias"):
        if swiglu:
            gate, up = split_rows(sd[f"{src}mlp.w12.{kind}"], 2, f"blocks.{i}.mlp.w12.{kind}")
            out[f"{dst}mlp.gate_proj.{kind}"] = gate
            out[f"{dst}mlp.up_proj.{kind}"] = up
            out[f"{dst}mlp.down_proj.{kind}"] = sd[f"{src}mlp.w3.{kind}"]
        else:
            out[f"{dst}mlp.fc1.{kind}"] = sd[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.fc2.{kind}"] = sd[f"{src}mlp.fc2.{kind}"]
    return out


FORMAT = register_format(
    OfficialFormat(
        name="dinov2",
        description="Meta's DINOv2 .pth (pos_embed, blocks.N.attn.qkv.weight, optional register_tokens)",
        matches=matches,
        convert=convert,
    )
)
