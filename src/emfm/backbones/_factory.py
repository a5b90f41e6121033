"""The one entry point: a name, hub id or path -> a ready :class:`~emfm.backbones._base.Backbone`.

Resolution order: a registered name (through the hub cache), an existing local path (a transformers model
directory, an official checkpoint file, or a directory holding one), then anything shaped ``org/name`` as a
hub id. The family comes from the registry record, from ``config.json``'s ``model_type``, or from an official
checkpoint's keys - never from a guess on the name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from emfm.backbones import _hub
from emfm.backbones._base import Backbone
from emfm.backbones._official import (
    CHECKPOINT_SUFFIXES,
    OfficialSource,
    apply_overrides,
    detect,
    read_state_dict,
)
from emfm.backbones._registry import BACKBONES, FAMILIES, BackboneRecord, family_for_model_type, supported_model_types
from emfm.backbones.scratch import ScratchBackbone
from emfm.baselines import is_scratch_model
from emfm.errors import CheckpointFormatError, ConfigError, UnknownNameError, WeightsNotFoundError

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_OPEN_CLIP_CONFIG = "open_clip_config.json"
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: The attention kernel every transformers backbone is loaded with (see :func:`create_backbone`).
ATTENTION = "sdpa"


def create_backbone(
    name_or_path: str,
    *,
    num_heads: int | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    **overrides: Any,
) -> Backbone:
    """Load a backbone by registered name, hub id or local path, in eval mode and float32, with PyTorch's
    fused attention (``attn_implementation="sdpa"``: the same results as the eager softmax(QK^T)V in far
    less memory and time, and the transformers default, made explicit so no saved config can turn it off).

    Args:
        name_or_path: a registered name (``dinov2-l``, see :func:`~emfm.backbones.list_backbones`), a Hugging
            Face hub id (``facebook/dinov2-large``), a transformers model directory, an official checkpoint
            file (Meta's DINOv2 / DINOv3 ``.pth``, open_clip's weights beside ``open_clip_config.json``), or a
            directory holding one such file.
        num_heads: attention heads, for official checkpoints whose files do not record them (DINOv2, when the
            file does not carry its release name). Elsewhere it is checked against the checkpoint.
        revision: hub revision (branch, tag or commit) for names and hub ids; defaults to the record's pin or
            ``main``.
        cache_dir: hub cache to search and fill (default: ``HF_HUB_CACHE``); unused for local paths.
        **overrides: transformers config attributes to change (e.g. ``drop_path_rate=0.1`` for LoRA training,
            ``layer_norm_eps=1e-6`` for a DINOv3 file built with plain LayerNorm); unknown names raise. They
            become part of :attr:`~emfm.backbones.Backbone.weights_id`.

    Returns:
        The family's :class:`Backbone`, with ``model`` the transformers module.

    Raises:
        UnknownNameError: not a registered name, an existing path, nor a hub id (nearest names suggested).
        WeightsNotFoundError: a hub id whose weights are not cached while offline, or a missing path.
        GatedWeightsError: gated weights (DINOv3) that are not available.
        CheckpointFormatError: files that fit no known format, or settings the files cannot support.
        ConfigError: a setting that contradicts the checkpoint or an unknown override.
    """
    if is_scratch_model(name_or_path):
        if num_heads is not None or revision is not None or overrides:
            raise ConfigError(f"{name_or_path} is trained from scratch: it takes no num_heads, revision or overrides")
        return ScratchBackbone(name_or_path)
    if name_or_path in BACKBONES:
        record = BACKBONES.get(name_or_path)
        if num_heads is not None and num_heads != record.num_heads:
            raise ConfigError(f"{record.name} has {record.num_heads} attention heads, not num_heads={num_heads}")
        directory, files = _hub.resolve(
            record.hub_id,
            revision=revision or record.revision,
            cache_dir=cache_dir,
            display_name=record.name,
            gated=record.gated,
            official_file=record.official_file,
            official_url=record.official_url,
        )
        where = f"hub {record.hub_id}@{revision or record.revision or 'main'}, cached in {directory}"
        return _load_model_dir(directory, files, name=record.name, record=record, source=where,
                               num_heads=None, overrides=overrides)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if revision is not None:
            raise ConfigError(f"revision={revision!r} applies to hub ids, but {name_or_path!r} is a local path")
        return _load_local(path, num_heads=num_heads, overrides=overrides)
    if _HUB_ID.match(name_or_path) and not name_or_path.startswith("."):
        directory, files = _hub.resolve(name_or_path, revision=revision, cache_dir=cache_dir)
        where = f"hub {name_or_path}@{revision or 'main'}, cached in {directory}"
        return _load_model_dir(directory, files, name=name_or_path, record=None, source=where,
                               num_heads=num_heads, overrides=overrides)
    if os.sep in name_or_path or name_or_path.startswith((".", "~")):
        raise WeightsNotFoundError(
            f"no file or directory at {path} (given {name_or_path!r}); pass an existing model directory or "
            "checkpoint file, a registered name or a hub id"
        )
    raise UnknownNameError(
        BACKBONES.unknown_message(name_or_path)
        + " Any Hugging Face hub id (org/name) or local model directory / checkpoint file works too."
    )


def _load_local(path: Path, *, num_heads: int | None, overrides: dict[str, Any]) -> Backbone:
    path = path.resolve()
    if path.is_dir():
        if (path / "config.json").is_file():
            files = _model_dir_weights(path)
            return _load_model_dir(path, files, name=path.name, record=None, source=f"local directory {path}",
                                   num_heads=num_heads, overrides=overrides)
        if (path / _OPEN_CLIP_CONFIG).is_file():
            weights = next((path / n for n in _OPEN_CLIP_WEIGHTS if (path / n).is_file()), None)
            if weights is None:
                raise WeightsNotFoundError(
                    f"{path} has {_OPEN_CLIP_CONFIG} but neither of {', '.join(_OPEN_CLIP_WEIGHTS)}"
                )
            return _load_official(weights, name=path.name, num_heads=num_heads, overrides=overrides)
        candidates = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "no checkpoint files"
            raise CheckpointFormatError(
                f"{path} is neither a transformers model directory (no config.json) nor a directory with one "
                f"official checkpoint file (found: {found}); pass the file itself"
            )
        return _load_official(candidates[0], name=candidates[0].stem, num_heads=num_heads, overrides=overrides)
    if path.name.startswith("model") and (path.parent / "config.json").is_file():
        return _load_local(path.parent, num_heads=num_heads, overrides=overrides)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointFormatError(
            f"{path} is not a checkpoint file (expected one of {', '.join(CHECKPOINT_SUFFIXES)}) or a model directory"
        )
    name = path.parent.name if path.name in _OPEN_CLIP_WEIGHTS else path.stem
    return _load_official(path, name=name, num_heads=num_heads, overrides=overrides)


def _model_dir_weights(directory: Path) -> list[Path]:
    for name in _hub.WEIGHT_FILES:
        candidate = directory / name
        if not candidate.is_file():
            continue
        if name.endswith(".index.json"):
            shards = json.loads(candidate.read_text())["weight_map"].values()
            return [directory / shard for shard in sorted(set(shards))]
        return [candidate]
    raise WeightsNotFoundError(
        f"{directory} has a config.json but no weights ({', '.join(_hub.WEIGHT_FILES)}); copy the weight "
        "files beside it"
    )


def _load_model_dir(
    directory: Path,
    files: list[Path],
    *,
    name: str,
    record: BackboneRecord | None,
    source: str,
    num_heads: int | None,
    overrides: dict[str, Any],
) -> Backbone:
    import torch
    import transformers

    try:
        model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read {directory / 'config.json'}: {exc}") from None
    family = family_for_model_type(model_type)
    if family is None:
        raise CheckpointFormatError(
            f"{directory} holds a transformers model of type {model_type!r}; emfm loads "
            f"{', '.join(supported_model_types())}"
        )
    model_class = getattr(transformers, family.model_class)
    config = model_class.config_class.from_pretrained(directory)
    if num_heads is not None and num_heads != config.num_attention_heads:
        raise ConfigError(
            f"num_heads={num_heads} contradicts {directory / 'config.json'}, which has "
            f"{config.num_attention_heads} attention heads; leave num_heads out"
        )
    apply_overrides(config, overrides)
    from safetensors import SafetensorError

    try:
        model, info = model_class.from_pretrained(
            directory, config=config, dtype=torch.float32, local_files_only=True, output_loading_info=True,
            attn_implementation=ATTENTION,
        )
    except SafetensorError as exc:  # a weight file cut short (an interrupted download or copy) or damaged
        raise CheckpointFormatError(
            f"the weights in {directory} ({', '.join(f.name for f in files)}) are damaged or cut short "
            f"({' '.join(str(exc).split())[:200]}); copy or download them again"
        ) from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointFormatError(
            f"transformers could not load {directory} as {family.model_class}: {' '.join(str(exc).split())[:300]}"
        ) from None
    if info.get("missing_keys") or info.get("mismatched_keys"):
        missing = sorted(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
        raise CheckpointFormatError(
            f"{directory} lacks weights {missing[:5]}{' ...' if len(missing) > 5 else ''} of {family.model_class}; "
            "the checkpoint is incomplete or of another architecture"
        )
    dtype_note = _stored_dtype(directory)
    return family(
        model,
        name=name,
        weights_id=_weights_id(files, num_heads=None, overrides=overrides),
        source=f"{source} (transformers {family.model_class}{dtype_note})",
        mean=record.mean if record else None,
        std=record.std if record else None,
        lora_target_modules=record.lora_target_modules if record else None,
        extras=family.read_extras(files),
    )


def _load_official(path: Path, *, name: str, num_heads: int | None, overrides: dict[str, Any]) -> Backbone:
    import transformers

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights

    config_path = path.parent / _OPEN_CLIP_CONFIG
    source = OfficialSource(
        weights=path,
        config=config_path if config_path.is_file() else None,
        num_heads=num_heads,
        overrides=dict(overrides),
    )
    state_dict = read_state_dict(path)
    fmt = detect(state_dict, path)
    converted = fmt.convert(state_dict, source)
    family = FAMILIES.get(converted.family)
    model_class = getattr(transformers, family.model_class)
    log.info("converting %s (official %s format) to transformers %s", path, fmt.name, family.model_class)
    # the weights are loaded strictly just below, so skipping random initialisation loses nothing
    with no_init_weights():
        model = model_class(converted.config)
    result = model.load_state_dict(converted.state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointFormatError(
            f"converting {path.name} ({fmt.name} format) left missing {result.missing_keys[:5]} and unexpected "
            f"{result.unexpected_keys[:5]} weights; the file is not a complete {fmt.name} backbone"
        )
    model.set_attn_implementation(ATTENTION)
    model.float().eval()
    return family(
        model,
        name=name,
        weights_id=_weights_id([path], num_heads=num_heads, overrides=overrides),
        source=f"official {fmt.name} checkpoint {path}, converted to transformers {family.model_class}",
        mean=converted.mean,
        std=converted.std,
        extras=converted.extras,
    )


def _weights_id(files: list[Path], *, num_heads: int | None, overrides: dict[str, Any]) -> str:
    """The weight files' digest, combined with any setting the user gave that the files do not hold.

    A feature cache keyed by this never mixes outputs of one file loaded with different settings.
    """
    digest = _hub.digest(files)
    settings = {**({"num_heads": num_heads} if num_heads is not None else {}), **overrides}
    if not settings:
        return digest
    blob = json.dumps({"weights": digest, "settings": settings}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


def _stored_dtype(directory: Path) -> str:
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    stored = config.get("dtype") or config.get("torch_dtype")
    return f", stored as {stored}, upcast to float32" if stored and stored != "float32" else ""
