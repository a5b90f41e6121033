"""Save and load a trained segmenter: the head and the adapters only, never the backbone.

The checkpoint is one safetensors file whose metadata names the backbone it needs (as given and its
weights digest), the head, the adapter and its settings, and the preprocessing, so that
``emfm evaluate`` and ``emfm predict`` can rebuild the exact model from it. What the adapter keeps of
the backbone (LoRA's low-rank matrices, say) is the adapter's business: tensors under ``adapter.``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from emfm._io import atomic_path
from emfm.errors import CheckpointFormatError, RunDirError
from emfm.models.heads import create_head
from emfm.models.segmenter import Segmenter

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.safetensors"
# Checkpoints written before adapters were registered objects kept LoRA weights under "lora."
# and its settings as flat lora_* fields; both are still read.
_LEGACY_PREFIXES = ("adapter.", "lora.")


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
    patch_size: int = 14
    adapter_settings: Mapping[str, Any] = field(default_factory=dict)
    layers: tuple[int, ...] = ()
    scale: float | None = None
    tile: int | None = None
    overlap: int | None = None
    align: str = "none"
    align_settings: Mapping[str, Any] = field(default_factory=dict)
    domains: tuple[str, ...] = ()
    align_state: Mapping[str, Any] = field(default_factory=dict)  # what an input-side method fitted

    @property
    def preprocessing(self):
        """The run's :class:`~emfm.transforms.Preprocessing`: what every slice goes through before the model."""
        from emfm.transforms import Preprocessing

        return Preprocessing(
            self.resolution, self.patch_size, self.mean, self.std, self.intensity,  # type: ignore[arg-type]
            scale=self.scale, tile=self.tile, overlap=self.overlap,
        )

    def make_alignment(self):
        """The :class:`~emfm.align.Alignment` the run was trained with (``none`` for older checkpoints)."""
        from emfm.align import create_alignment

        return create_alignment(self.align, self.align_settings)

    def make_adapter(self):
        """The :class:`~emfm.adapters.Adapter` the run was trained with, with its settings."""
        from emfm.adapters import create_adapter

        return create_adapter(self.adapter, self.adapter_settings)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> ModelInfo:
        """Read the metadata dict, including checkpoints that stored adapter settings as flat keys."""
        from emfm.config import fold_adapter_keys

        meta = fold_adapter_keys(meta)
        meta["mean"], meta["std"] = tuple(meta["mean"]), tuple(meta["std"])
        meta["layers"] = tuple(meta.get("layers") or ())
        meta["domains"] = tuple(meta.get("domains") or ())
        return cls(**meta)


def save_checkpoint(
    path: str | Path, segmenter: Segmenter, info: ModelInfo, adapter_state: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Write the head's weights and the adapter's backbone-side tensors (``adapter_state``, from
    :meth:`~emfm.adapters.Adapter.state`; none for a frozen backbone)."""
    from safetensors.torch import save_file

    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in segmenter.head.state_dict().items()}
    tensors.update({f"adapter.{k}": v.detach().cpu().contiguous() for k, v in (adapter_state or {}).items()})
    meta = {**asdict(info), "adapter_settings": dict(info.adapter_settings), "layers": list(info.layers),
            "align_settings": dict(info.align_settings), "domains": list(info.domains),
            "align_state": dict(info.align_state)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"emfm": json.dumps(meta)})


def read_info(path: str | Path) -> ModelInfo:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"no checkpoint at {path}; train a run first with `emfm train --out {path.parent}`")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["emfm"])
    except Exception as exc:  # safetensors raises several types for damaged files
        raise RunDirError(f"{path} is not an emfm checkpoint ({exc}); retrain the run") from None
    from emfm.adapters import flat_setting_keys  # the flat lora_* keys of older checkpoints

    unknown = sorted(set(meta) - {f.name for f in fields(ModelInfo)} - set(flat_setting_keys()))
    if unknown:  # a newer emfm recorded something this one cannot honour: using the model regardless would lie
        raise CheckpointFormatError(
            f"{path} was written by a newer emfm: its metadata has {', '.join(unknown)}, which this emfm does not "
            f"know; upgrade emfm (pip install -U emfm) to use this run"
        )
    try:
        return ModelInfo.from_metadata(meta)
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointFormatError(
            f"{path}: checkpoint metadata does not fit this emfm ({type(exc).__name__}: {exc}); retrain the run"
        ) from None


def run_backbone(info: ModelInfo, backbone_path: str | Path | None = None):
    """The backbone a checkpoint needs: from ``backbone_path`` where given (the run's weights have moved:
    ``--backbone PATH``), else from where the run found it. :func:`load_checkpoint` checks its weights
    digest against the checkpoint's, so a wrong file is refused, not used."""
    from emfm.backbones import create_backbone
    from emfm.errors import WeightsNotFoundError

    if backbone_path is not None:
        return create_backbone(str(backbone_path))
    try:
        return create_backbone(info.backbone)
    except WeightsNotFoundError as exc:
        raise type(exc)(
            f"{exc}. The run was trained on {info.backbone_name} from {info.backbone}; if those weights have "
            f"moved, pass --backbone PATH (their new place)"
        ) from None


def load_checkpoint(
    path: str | Path, backbone=None, *, backbone_path: str | Path | None = None
) -> tuple[Segmenter, ModelInfo]:
    """Rebuild the segmenter of a checkpoint, with its backbone: ``backbone`` if given, else loaded from
    ``backbone_path`` (weights that have moved) or from where the run found it (:func:`run_backbone`).

    Raises:
        RunDirError: the backbone's weights are not those the run was trained on (their digest differs).
    """
    from safetensors.torch import load_file

    info = read_info(path)
    if backbone is None:
        backbone = run_backbone(info, backbone_path)
    if backbone.weights_id != info.weights_id:
        given = f"--backbone {backbone_path}" if backbone_path is not None else backbone.name
        raise RunDirError(
            f"the checkpoint {path} was trained on backbone weights {info.weights_id[:12]} "
            f"({info.backbone_name}) but {given} has {backbone.weights_id[:12]}; load the same weights"
        )
    tensors = load_file(str(path))
    head = create_head(info.head, info.in_channels, num_layers=max(1, len(info.layers)), patch_size=info.patch_size)
    info.make_alignment().prepare_head(head, info.domains)  # e.g. per-domain BatchNorm, before its state loads
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    adapter = info.make_adapter()
    adapter.prepare(backbone)
    state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(_LEGACY_PREFIXES)}
    adapter.load_state(backbone, state)
    segmenter = Segmenter(head, backbone, layers=info.layers, preprocessing=info.preprocessing).eval()
    for p in segmenter.parameters():
        p.requires_grad_(False)
    return segmenter, info
