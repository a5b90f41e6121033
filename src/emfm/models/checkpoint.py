"""Save and load a trained segmenter: the head and the adapters only, never the backbone.

The checkpoint is one safetensors file whose metadata names the backbone it needs (as given and its
weights digest), the head, the adapter settings and the preprocessing, so that ``emfm evaluate`` and
``emfm predict`` can rebuild the exact model from it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from emfm._io import atomic_path
from emfm.errors import RunDirError
from emfm.models.heads import create_head
from emfm.models.lora import LoraSettings, apply_lora, load_lora_state_dict, lora_state_dict
from emfm.models.segmenter import Segmenter

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint needs to be rebuilt."""

    backbone: str
    backbone_name: str
    weights_id: str
    head: str
    in_channels: int
    adapter: str
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    intensity: str = "dtype"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    patch_size: int = 14


def save_checkpoint(path: str | Path, segmenter: Segmenter, info: ModelInfo) -> None:
    from safetensors.torch import save_file

    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in segmenter.head.state_dict().items()}
    if info.adapter == "lora":
        if segmenter.backbone is None:
            raise ValueError("a LoRA checkpoint needs the segmenter's backbone to read its adapters")
        tensors.update({f"lora.{k}": v.detach().cpu().contiguous() for k, v in lora_state_dict(segmenter.backbone).items()})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"emfm": json.dumps(asdict(info))})


def read_info(path: str | Path) -> ModelInfo:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"no checkpoint at {path}; train a run first with `emfm train --out {path.parent}`")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["emfm"])
    except Exception as exc:
        raise RunDirError(f"{path} is not an emfm checkpoint ({exc}); retrain the run") from None
    meta["mean"] = tuple(meta["mean"])
    meta["std"] = tuple(meta["std"])
    return ModelInfo(**meta)


def load_checkpoint(path: str | Path, backbone=None) -> tuple[Segmenter, ModelInfo]:
    """Rebuild the segmenter of a checkpoint, with its backbone (loaded unless one is given)."""
    from safetensors.torch import load_file

    info = read_info(path)
    if backbone is None:
        from emfm.backbones import create_backbone

        backbone = create_backbone(info.backbone)
    if backbone.weights_id != info.weights_id:
        raise RunDirError(
            f"the checkpoint {path} was trained on backbone weights {info.weights_id[:12]} "
            f"({info.backbone_name}) but {backbone.name} has {backbone.weights_id[:12]}; load the same weights"
        )
    tensors = load_file(str(path))
    head = create_head(info.head, info.in_channels)
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    if info.adapter == "lora":
        apply_lora(backbone, LoraSettings(info.lora_rank, info.lora_alpha, info.lora_dropout))
        load_lora_state_dict(backbone, {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")})
    segmenter = Segmenter(head, backbone).eval()
    for p in segmenter.parameters():
        p.requires_grad_(False)
    return segmenter, info
