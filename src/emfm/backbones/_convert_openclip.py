"""OpenCLIP checkpoints (``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin`` with
``open_clip_config.json``, as open_clip's ``push_to_hf_hub`` writes them) -> transformers ``CLIPVisionModel``.

Only the visual tower is converted: ``visual.conv1`` (no bias), ``class_embedding``, a learned
``positional_embedding``, ``ln_pre``, pre-norm blocks with ``nn.MultiheadAttention`` (fused ``in_proj``
rows in q, k, v order), ``ln_post`` and the projection ``proj`` (applied as ``pooled @ proj``, kept beside
the model as an extra). The number of heads and the activation are not in the tensors; they come from
``open_clip_config.json`` (``width / head_width``; ``quick_gelu``). Vision options transformers' CLIP cannot
express (layer scale, attentional pooling, no ``ln_pre``, other pooling) are refused rather than dropped.
"""

from __future__ import annotations

import json
import math
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

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
LAYER_NORM_EPS = 1e-5
# vision_cfg keys transformers' CLIP represents (any value) and keys it only represents at open_clip's default
_FREE = {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio", "patch_dropout", "output_tokens"}
_DEFAULTS: dict[str, Any] = {
    "ls_init_value": None,
    "attentional_pool": False,
    "no_ln_pre": False,
    "pos_embed_type": "learnable",
    "final_ln_after_pool": False,
    "pool_type": "tok",
    "global_average_pool": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "timm_model_name": None,
    "input_patchnorm": False,
}
_PREFIX = "visual.transformer.resblocks."


def matches(state_dict: Mapping[str, Any]) -> bool:
    return {"visual.conv1.weight", f"{_PREFIX}0.attn.in_proj_weight"} <= state_dict.keys()


def _read_config(source: OfficialSource) -> dict[str, Any]:
    if source.config is None or not source.config.is_file():
        raise CheckpointFormatError(
            f"{source.weights.name} is an OpenCLIP checkpoint but no {CONFIG_NAME} lies beside it; its number "
            f"of heads and activation are only recorded there. Put the model's {CONFIG_NAME} (from its hub "
            "repository) in the same directory"
        )
    try:
        return json.loads(source.config.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read {source.config}: {exc}") from None


@dataclass(frozen=True)
class _Architecture:
    """What the tensors and ``vision_cfg`` say about the visual tower."""

    width: int
    patch: int
    depth: int
    image_size: int
    heads: int


def convert(state_dict: Mapping[str, Any], source: OfficialSource) -> Converted:
    """An OpenCLIP checkpoint's visual tower as a transformers ``CLIPVisionModel``, with its projection and
    normalisation beside it.

    ``open_clip_config.json`` is read and checked first: it holds what the tensors do not (heads, activation)
    and the options transformers' CLIP cannot express, which are refused rather than silently dropped.
    """
    full = _read_config(source)
    model_cfg = full.get("model_cfg", full)
    vision = _supported_vision_cfg(model_cfg, source)
    arch = _read_architecture(state_dict, vision, source)
    config = _build_config(state_dict, model_cfg, arch, source)
    tensors = _map_tensors(state_dict, arch.depth)
    extras = {}
    if "visual.proj" in state_dict:
        extras["visual_projection.weight"] = state_dict["visual.proj"].t().contiguous()
    preprocess = full.get("preprocess_cfg", {})
    mean, std = preprocess.get("mean"), preprocess.get("std")
    return Converted(
        family="openclip",
        config=config,
        state_dict=tensors,
        extras=extras,
        mean=tuple(float(m) for m in mean) if mean else None,  # type: ignore[arg-type]
        std=tuple(float(s) for s in std) if std else None,  # type: ignore[arg-type]
    )


def _supported_vision_cfg(model_cfg: Mapping[str, Any], source: OfficialSource) -> dict[str, Any]:
    """``vision_cfg``, refused if it sets an option transformers' CLIP cannot represent."""
    vision = dict(model_cfg.get("vision_cfg", {}))
    for key, value in vision.items():
        if key in _FREE:
            continue
        if key in _DEFAULTS and value == _DEFAULTS[key]:
            continue
        raise CheckpointFormatError(
            f"{source.config}: vision_cfg option {key}={value!r} has no counterpart in transformers' CLIP vision "
            "model, so this OpenCLIP model cannot be converted"
        )
    return vision


def _read_architecture(sd: Mapping[str, Any], vision: Mapping[str, Any], source: OfficialSource) -> _Architecture:
    """Width, patch and depth from the tensors; image size checked against the position table; heads from
    ``width / head_width``, which the tensors do not record."""
    conv = sd["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    if "visual.conv1.bias" in sd:
        raise CheckpointFormatError(
            f"{source.weights.name}: visual.conv1 has a bias, which CLIP's patch embedding lacks"
        )
    depth = count_blocks(sd, _PREFIX)
    positions = int(sd["visual.positional_embedding"].shape[0]) - 1
    side = math.isqrt(positions)
    if side * side != positions:
        raise CheckpointFormatError(f"{source.weights.name}: {positions} position embeddings are not a square grid")
    image_size = vision.get("image_size", side * patch)
    if not isinstance(image_size, int) or image_size != side * patch:
        raise CheckpointFormatError(
            f"{source.config}: image_size {image_size!r} does not match the {side}x{side} position table of "
            f"patch {patch} in {source.weights.name}"
        )
    head_width = int(vision.get("head_width", 64))
    if width % head_width:
        raise CheckpointFormatError(f"{source.config}: head_width {head_width} does not divide width {width}")
    heads = width // head_width
    if source.num_heads is not None and source.num_heads != heads:
        raise ConfigError(
            f"num_heads={source.num_heads} contradicts {source.config.name}, which gives {heads} heads "
            f"(width {width} / head_width {head_width}); leave num_heads out"
        )
    return _Architecture(width=width, patch=patch, depth=depth, image_size=image_size, heads=heads)


def _build_config(
    sd: Mapping[str, Any], model_cfg: Mapping[str, Any], arch: _Architecture, source: OfficialSource
) -> Any:
    """The transformers config; the activation comes from the model config (``quick_gelu``)."""
    from transformers import CLIPVisionConfig

    config = CLIPVisionConfig(
        hidden_size=arch.width,
        intermediate_size=int(sd[f"{_PREFIX}0.mlp.c_fc.weight"].shape[0]),
        num_hidden_layers=arch.depth,
        num_attention_heads=arch.heads,
        image_size=arch.image_size,
        patch_size=arch.patch,
        hidden_act="quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu",
        layer_norm_eps=LAYER_NORM_EPS,
        projection_dim=int(sd["visual.proj"].shape[1]) if "visual.proj" in sd else 512,
    )
    apply_overrides(config, source.overrides)
    return config


def _map_tensors(sd: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """The vision model's state dict: embeddings and the pre/post norms, then each block."""
    out: dict[str, Any] = {
        "embeddings.class_embedding": sd["visual.class_embedding"],
        "embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "post_layernorm.weight": sd["visual.ln_post.weight"],
        "post_layernorm.bias": sd["visual.ln_post.bias"],
    }
    for i in range(depth):
        out.update(_map_block(sd, i))
    return out


def _map_block(sd: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Residual block ``i``: ``nn.MultiheadAttention``'s fused ``in_proj`` split into q, k, v; the rest renamed."""
    src, dst = f"{_PREFIX}{i}.", f"encoder.layers.{i}."
    out: dict[str, Any] = {}
    q, k, v = split_rows(sd[f"{src}attn.in_proj_weight"], 3, f"{src}attn.in_proj_weight")
    qb, kb, vb = split_rows(sd[f"{src}attn.in_proj_bias"], 3, f"{src}attn.in_proj_bias")
    for proj, weight, bias in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
        out[f"{dst}self_attn.{proj}.weight"] = weight
        out[f"{dst}self_attn.{proj}.bias"] = bias
    pairs = (
        ("attn.out_proj", "self_attn.out_proj"),
        ("ln_1", "layer_norm1"),
        ("ln_2", "layer_norm2"),
        ("mlp.c_fc", "mlp.fc1"),
        ("mlp.c_proj", "mlp.fc2"),
    )
    for old, new in pairs:
        out[f"{dst}{new}.weight"] = sd[f"{src}{old}.weight"]
        out[f"{dst}{new}.bias"] = sd[f"{src}{old}.bias"]
    return out


FORMAT = register_format(
    OfficialFormat(
        name="openclip",
        description=f"OpenCLIP weights (visual.conv1.weight, visual.transformer.resblocks.N) with {CONFIG_NAME}",
        matches=matches,
        convert=convert,
    )
)
