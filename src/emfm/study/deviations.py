"""Where a study's runs differ from the published protocol, generated from their configs, never written by hand.

The published protocol (Fuster-Barceló and Uhlmann 2026, ``../shared/docs/protocol.md``; the preset
``configs/study.yaml``, which a test keeps equal to :data:`PROTOCOL`) is one set of training settings. The
report's "Deviations from the published protocol" section lists every setting on which some run of the
study differs, with the values the runs used and how many runs used each, so a reader sees at once what a
number is and is not comparable with. Settings where emfm departs from the study on purpose (pairing by slice
number, IoU at native resolution) are listed too, marked as corrections, because they also change the numbers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emfm.config import TrainConfig

#: The study's training settings, as ``configs/study.yaml`` sets them (protocol.md, "Training" and "Input").
PROTOCOL: dict[str, Any] = {
    "resolution": 1022,
    "input": "whole slice",
    "head": "deconv",
    "epochs": 1000,
    "patience": 20,
    "min_steps": 0,
    "lr": 5e-5,
    "weight_decay": 1e-4,
    "batch_size": 2,
    "grad_clip": 1.0,
    "loss": "dice",
    "training data": "whole slices, no augmentation",
    "precision": "32",
    "normalisation": "imagenet",
    "sampling": "training sets concatenated",
    "align": "none",
}
#: The study's LoRA (LoRA runs only).
PROTOCOL_LORA: dict[str, Any] = {"lora_layout": "fused-qkv", "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.0}
#: The study's seeds per cell.
PROTOCOL_SEEDS = 5


@dataclass(frozen=True)
class Deviation:
    """One setting on which runs differ from the protocol: the protocol's value, the runs' values with their
    run counts (most used first), and a note (a correction emfm makes on purpose, or what it means)."""

    setting: str
    protocol: Any
    here: tuple[tuple[Any, int], ...]
    note: str = ""


def _input(cfg: TrainConfig) -> str:
    if cfg.scale is not None:
        return f"native-scale tiles (scale {cfg.scale:g}, {cfg.tile} px, overlap {cfg.tile_overlap})"
    return "whole slice"


def _training_data(cfg: TrainConfig) -> str:
    per = " per training set" if cfg.crops_per_set else ""
    parts = [f"random {cfg.crop} px crops ({cfg.crops_per_epoch} an epoch{per})" if cfg.crop else "whole slices"]
    parts.append(f"augmentation {'+'.join(cfg.augment)}" if cfg.augment else "no augmentation")
    if cfg.intensity_augment:
        parts.append("intensity jitter")
    return ", ".join(parts)


def _sampling(cfg: TrainConfig) -> str:
    return "balanced (weighted, with replacement)" if cfg.balance else "training sets concatenated"


def run_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The protocol's settings as one run has them (LoRA's only for LoRA runs)."""
    out = {
        "resolution": cfg.resolution, "input": _input(cfg), "head": cfg.head, "epochs": cfg.epochs,
        "patience": cfg.patience, "min_steps": cfg.min_steps, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size, "grad_clip": cfg.grad_clip, "loss": cfg.loss,
        "training data": _training_data(cfg), "precision": cfg.precision, "normalisation": cfg.normalisation,
        "sampling": _sampling(cfg), "align": cfg.align,
    }
    if cfg.adapter == "lora":
        settings = cfg.make_adapter().settings
        out.update({"lora_layout": settings.layout, "lora_rank": settings.rank, "lora_alpha": settings.alpha,
                    "lora_dropout": settings.dropout})
    return out


def _is_openclip(backbone: str) -> bool:
    """Whether ``backbone`` (a registered name or a local checkpoint folder) is an OpenCLIP/CLIP model."""
    from emfm.backbones import BACKBONES

    if backbone in BACKBONES:
        return BACKBONES.get(backbone).family == "openclip"
    config = Path(backbone).expanduser() / "config.json"
    try:
        model_type = str(json.loads(config.read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return False
    return "clip" in model_type.lower()


def deviations(configs: Sequence[TrainConfig], seeds: Sequence[int]) -> list[Deviation]:
    """Every protocol setting on which some of ``configs`` differ, in :data:`PROTOCOL` order, then LoRA's,
    seeds, pairing, metric resolution and (where it applies) OpenCLIP's normalisation."""
    out: list[Deviation] = []
    per_run = [run_settings(c) for c in configs]
    for setting, expected in {**PROTOCOL, **PROTOCOL_LORA}.items():
        values = Counter(s[setting] for s in per_run if setting in s)
        if values and set(values) != {expected}:
            note = ("the head's own default (see the heads' docs)" if setting == "lr" and None in values else "")
            shown = tuple((("head default" if v is None else v), n) for v, n in values.most_common())
            out.append(Deviation(setting, expected, shown, note))
    if len(seeds) != PROTOCOL_SEEDS:
        out.append(Deviation("seeds", PROTOCOL_SEEDS, ((len(seeds), len(configs)),),
                             "the spread over seeds rests on this many runs per cell"))
    pairings = Counter(c.pairing for c in configs)
    out.append(Deviation(
        "pairing", "text-sorted names (its compose script: 2 of 165 Lucchi++ slices meet their own mask)",
        tuple(pairings.most_common()), "correction: by-number pairs every slice with its own mask; the other "
        "values are labelled ablations"))
    out.append(Deviation(
        "metric resolution", "resized (the network's input size)", (("native (each mask's own size)", len(configs)),),
        "correction: the study's resized-resolution IoU is in results.csv as fg_iou_resized"))
    clip = [c for c in configs if _is_openclip(c.backbone) and c.normalisation == "imagenet"]
    if clip:
        out.append(Deviation(
            "OpenCLIP normalisation", "ImageNet mean and std", (("ImageNet mean and std", len(clip)),),
            "as the study did, although OpenCLIP was trained with CLIP's statistics (normalisation: backbone "
            "feeds those)"))
    return out


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def deviations_text(configs: Sequence[TrainConfig], seeds: Sequence[int]) -> str:
    """The report section's body: a table of :func:`deviations`, one row per setting."""
    if not configs:
        return "No run in this study."
    rows = []
    for d in deviations(configs, seeds):
        here = "; ".join(f"{_value(v)} ({n} run{'s' if n != 1 else ''})" for v, n in d.here)
        rows.append(f"| {d.setting} | {_value(d.protocol)} | {here} | {d.note} |")
    return (
        "Generated from the runs' configs against the published protocol (`configs/study.yaml`; "
        "`../shared/docs/protocol.md`). Only the settings on which some run differs are listed; the two "
        "corrections emfm always makes are listed too, because they change the numbers.\n\n"
        "| setting | published protocol | this study | note |\n| --- | --- | --- | --- |\n" + "\n".join(rows)
    )
