"""Per-checkpoint facts as data: the registered backbone names and the families that load them.

Three small registries, each filled by decorators or calls in the public family modules
(:mod:`~emfm.backbones.dinov2`, :mod:`~emfm.backbones.dinov3`, :mod:`~emfm.backbones.openclip`), so adding a
checkpoint or a family adds a record or a module, never a branch:

- :data:`BACKBONES`: registered name (``dinov2-l``) -> :class:`BackboneRecord`, one frozen record per released
  checkpoint, like timm's ``PretrainedCfg`` table.
- :data:`FAMILIES`: family name (``dinov2``) -> the :class:`~emfm.backbones._base.Backbone` subclass that wraps
  that family's transformers model; it also says which ``config.json`` ``model_type`` values it loads.
- :data:`OFFICIAL_FORMATS`: converters for the official release formats (Meta's ``.pth``, open_clip's files).

Nothing here imports torch, so ``emfm backbones list`` can read the table cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from emfm._registry import Registry

Family = Literal["dinov2", "dinov2_reg", "dinov3", "openclip"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenAI CLIP's normalisation, which OpenCLIP's LAION models keep (open_clip constants OPENAI_DATASET_MEAN/STD).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class BackboneRecord:
    """What is known about one released checkpoint before downloading it.

    Attributes:
        name: the emfm name (``dinov2-l``).
        family: ``dinov2``, ``dinov2_reg``, ``dinov3`` or ``openclip``.
        hub_id: the Hugging Face hub repository in transformers format.
        revision: pinned hub revision, or None for the repository's ``main``.
        patch_size, embed_dim, depth, num_heads: architecture.
        num_register_tokens: register (DINOv2) or storage (DINOv3) tokens, dropped from the outputs.
        image_size: the side its position table (or training) was made for.
        mean, std: RGB normalisation the model was trained with.
        license: licence of the weights.
        gated: whether the hub asks users to accept a licence before download.
        lora_target_modules: module-name suffixes (attention projections only) inside the transformers model.
        num_params: parameters of the transformers vision model this checkpoint loads into (vision tower only
            for OpenCLIP), counted from the architecture.
        paper: the paper to cite.
        official_file: the official release's file name, where it has one (for the gated-weights message).
        official_url: where the official release files are requested or downloaded, if not from the hub.
    """

    name: str
    family: Family
    hub_id: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    num_register_tokens: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    license: str
    gated: bool
    lora_target_modules: tuple[str, ...]
    num_params: int
    paper: str
    revision: str | None = None
    official_file: str | None = None
    official_url: str | None = None


BACKBONES: Registry[BackboneRecord] = Registry("backbone")
FAMILIES: Registry[Any] = Registry("backbone family")
OFFICIAL_FORMATS: Registry[Any] = Registry("official checkpoint format")


def register_backbone(record: BackboneRecord) -> BackboneRecord:
    """Add a record under its own name; a duplicate name raises at import time."""
    return BACKBONES.register(record.name, record)


def register_family(cls: Any) -> Any:
    """Class decorator: register a Backbone subclass under its ``family`` attribute."""
    return FAMILIES.register(cls.family, cls)


def family_for_model_type(model_type: str) -> Any | None:
    """The registered family class whose ``model_types`` include ``model_type``, or None."""
    for _, cls in FAMILIES.items():
        if model_type in cls.model_types:
            return cls
    return None


def supported_model_types() -> list[str]:
    return [t for _, cls in FAMILIES.items() for t in cls.model_types]
