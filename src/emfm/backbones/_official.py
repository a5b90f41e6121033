"""Reading official release checkpoints and choosing the converter that fits their keys.

A converter (one module per family, ``_convert_*.py``) turns an official state dict into a transformers
config and state dict; the factory builds the transformers model from those, so a converted checkpoint is
afterwards indistinguishable from one loaded from the hub. Files are read with safetensors or with
``torch.load(weights_only=True)``, never unpickled freely; float16 / bfloat16 tensors are upcast to float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emfm.backbones._registry import OFFICIAL_FORMATS
from emfm.errors import CheckpointFormatError, ConfigError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


@dataclass
class OfficialSource:
    """One official checkpoint as found on disk, with the settings the user gave for it.

    Attributes:
        weights: the weight file.
        config: a side-car config the release ships (open_clip's ``open_clip_config.json``), if any.
        num_heads: attention heads given by the user (the files of some releases do not record them).
        overrides: other transformers config values given by the user.
    """

    weights: Path
    config: Path | None = None
    num_heads: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Converted:
    """An official checkpoint in transformers form.

    Attributes:
        family: the emfm family whose wrapper loads it.
        config: the transformers config to build the model from.
        state_dict: the model's complete state dict (loaded strictly).
        extras: tensors that belong to the checkpoint but not to the vision model (OpenCLIP's projection).
        mean, std: normalisation recorded by the release, when it records one.
    """

    family: str
    config: Any
    state_dict: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class OfficialFormat:
    """A release format: how to recognise its keys and how to convert it.

    Attributes:
        name: short name (``dinov2``).
        description: what its files look like, for the error that lists the known formats.
        matches: whether a state dict's keys are this format's.
        convert: the converter.
    """

    name: str
    description: str
    matches: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], OfficialSource], Converted]


def register_format(fmt: OfficialFormat) -> OfficialFormat:
    return OFFICIAL_FORMATS.register(fmt.name, fmt)


def read_state_dict(path: Path) -> dict[str, Any]:
    """Load a flat state dict from a safetensors or torch file, floats upcast to float32."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path), device="cpu")
        else:
            tensors = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, not a checkpoint at all
        raise CheckpointFormatError(
            f"cannot read {path} as a checkpoint ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "expected a safetensors file or a torch.save'd state dict of tensors"
        ) from None
    if not isinstance(tensors, Mapping) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise CheckpointFormatError(
            f"{path} does not hold a flat state dict of tensors (got {type(tensors).__name__}); "
            "pass the backbone's released weight file, not a training checkpoint"
        )
    return {
        key: value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
        for key, value in tensors.items()
    }


def detect(state_dict: Mapping[str, Any], path: Path) -> OfficialFormat:
    """The registered format whose keys fit, or a CheckpointFormatError naming what was expected."""
    for _, fmt in OFFICIAL_FORMATS.items():
        if fmt.matches(state_dict):
            return fmt
    sample = ", ".join(list(state_dict)[:5]) or "none"
    known = "; ".join(f"{fmt.name}: {fmt.description}" for _, fmt in OFFICIAL_FORMATS.items())
    raise CheckpointFormatError(
        f"the keys of {path} fit no known backbone format (first keys: {sample}). Known formats - {known}; "
        "or a transformers model directory with config.json"
    )


def split_rows(tensor: Any, parts: int, what: str) -> list[Any]:
    """Split a fused projection (e.g. qkv) into equal row blocks."""
    if tensor.shape[0] % parts:
        raise CheckpointFormatError(f"{what} has {tensor.shape[0]} rows, not divisible into {parts} parts")
    return list(tensor.chunk(parts, dim=0))


def count_blocks(state_dict: Mapping[str, Any], prefix: str) -> int:
    """Number of consecutive ``{prefix}N.`` blocks in a state dict."""
    indices = {int(key[len(prefix) :].split(".", 1)[0]) for key in state_dict if key.startswith(prefix)}
    if indices != set(range(len(indices))):
        raise CheckpointFormatError(f"blocks {sorted(indices)} under {prefix!r} are not numbered 0..N-1")
    return len(indices)


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """Set user-given config values, refusing names the config does not have."""
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ConfigError(
                f"unknown backbone setting {key}={value!r} for {type(config).__name__}; valid settings are "
                f"the transformers config attributes, e.g. {', '.join(sorted(config.to_dict())[:12])}"
            )
        setattr(config, key, value)
    return config
