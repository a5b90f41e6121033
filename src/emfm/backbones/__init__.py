"""Vision foundation-model backbones behind one interface: pixels -> patch-token grid + CLS.

Families: DINOv2 (:mod:`~emfm.backbones.dinov2`, with and without registers), DINOv3
(:mod:`~emfm.backbones.dinov3`) and OpenCLIP (:mod:`~emfm.backbones.openclip`), all run through their
transformers models so that peft can put LoRA adapters on their attention projections.

>>> backbone = create_backbone("dinov2-reg-l")           # registered name, through the hub cache
>>> backbone = create_backbone("facebook/dinov2-large")   # any hub id
>>> backbone = create_backbone("/data/dinov2_vitl14_pretrain.pth")  # official release file, converted
>>> out = backbone.encode(pixels, layers=[6, -1])         # pixels (B, 3, H, W), normalised
>>> out.patch_grid.shape                                   # (B, C, H / 14, W / 14)

Offline first: names and hub ids resolve through the Hugging Face cache, and ``HF_HUB_OFFLINE=1`` means
nothing is fetched. :func:`is_cached` says whether a name could load offline without loading it.
"""

from __future__ import annotations

from emfm.backbones import _hub, dinov2, dinov3, openclip  # noqa: F401  (register names and families)
from emfm.backbones._base import Backbone, BackboneOutput
from emfm.backbones._factory import create_backbone
from emfm.backbones._registry import BACKBONES, BackboneRecord


def list_backbones() -> list[BackboneRecord]:
    """Every registered checkpoint's record, in registration order (DINOv2, DINOv3, OpenCLIP)."""
    return [record for _, record in BACKBONES.items()]


def get_backbone_info(name: str) -> BackboneRecord:
    """The record of a registered name.

    Raises:
        UnknownNameError: not registered; the message lists the nearest names.
    """
    return BACKBONES.get(name)


def is_cached(name_or_hub_id: str, *, revision: str | None = None, cache_dir: str | None = None) -> bool:
    """Whether a registered name's (or hub id's) config and weights are in the hub cache; no network."""
    if name_or_hub_id in BACKBONES:
        record = BACKBONES.get(name_or_hub_id)
        return _hub.is_cached(record.hub_id, revision=revision or record.revision, cache_dir=cache_dir)
    return _hub.is_cached(name_or_hub_id, revision=revision, cache_dir=cache_dir)


__all__ = [
    "Backbone",
    "BackboneOutput",
    "BackboneRecord",
    "create_backbone",
    "get_backbone_info",
    "is_cached",
    "list_backbones",
]
