"""Tiny RANDOM backbones for tests. Never use these for results: they have learnt nothing.

Other parts of emfm (training, analysis, prediction) need a backbone in their tests that loads in
milliseconds without network or real weights:

>>> from emfm.backbones import create_backbone
>>> from emfm.backbones._testing import write_random_checkpoint
>>> backbone = create_backbone(str(write_random_checkpoint("dinov2", tmp_path)))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

TestFamily = Literal["dinov2", "dinov2_reg", "dinov3", "openclip"]


def write_random_checkpoint(
    family: TestFamily,
    directory: str | os.PathLike[str],
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    patch_size: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny, randomly initialised transformers model directory, for tests only.

    The weights are random (transformers' own initialisation, from ``seed``): the features mean nothing. The
    directory holds ``config.json`` and ``model.safetensors`` exactly as a hub checkpoint of the family would,
    so it exercises the real loading path. The global random state is left untouched.

    Args:
        family: ``dinov2``, ``dinov2_reg`` (4 registers), ``dinov3`` (4 storage tokens) or ``openclip``
            (a CLIP vision tower).
        directory: where to write (created if missing).
        hidden_size, num_layers, num_heads: size of the model; the head dimension must be a multiple of 4 for
            ``dinov3`` (rotary embeddings).
        patch_size: defaults to 16 for ``dinov3`` and 14 otherwise.
        image_size: side of the position table (ignored by DINOv3's RoPE); defaults to 4 patches.
        seed: seed of the random weights.

    Returns:
        The directory, to pass to :func:`~emfm.backbones.create_backbone`.
    """
    import torch
    import transformers

    patch = patch_size or (16 if family == "dinov3" else 14)
    size = image_size or 4 * patch
    common = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        patch_size=patch,
        image_size=size,
    )
    builders = {
        "dinov2": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**common)),
        "dinov2_reg": lambda: transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **common)
        ),
        "dinov3": lambda: transformers.DINOv3ViTModel(
            transformers.DINOv3ViTConfig(intermediate_size=4 * hidden_size, num_register_tokens=4, **common)
        ),
        "openclip": lambda: transformers.CLIPVisionModel(
            transformers.CLIPVisionConfig(intermediate_size=4 * hidden_size, hidden_act="gelu", **common)
        ),
    }
    if family not in builders:
        raise ValueError(f"family must be one of {', '.join(builders)}, got {family!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builders[family]()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return out
