"""Expanding a study into runs, each with a stable id and its own directory."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emfm import rundir
from emfm._io import safe_name
from emfm.baselines import SCRATCH_MODELS, is_scratch_model
from emfm.config import TrainConfig
from emfm.study.config import OWN_TEST_SETS, StudyConfig


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: its id (also its directory name), its config and its ablation label."""

    run_id: str
    config: TrainConfig
    ablation: str = ""

    def directory(self, study_dir: str | Path) -> Path:
        return Path(study_dir) / "runs" / self.run_id

    def metrics(self, study_dir: str | Path) -> dict[str, Any] | None:
        """The run's metrics if it is complete: they parse and are those of this spec's config. A
        damaged ``metrics.json``, or one of another config, leaves the run pending
        (:func:`emfm.rundir.complete_metrics`), so a rerun redoes it and no table reads it."""
        return rundir.complete_metrics(self.directory(study_dir), self.config.to_yaml(), load=TrainConfig.from_dict)


def analysis_dir(study_dir: str | Path, backbone: str) -> Path:
    """Where a study keeps a backbone's representation analysis."""
    return Path(study_dir) / "analysis" / safe_name(Path(backbone).name)


# Settings added after studies were first run: left out of the digest while at their defaults, so the
# runs of an existing study keep their ids (and are resumed, not redone) under a newer emfm.
_LATER_SETTINGS = {"label_budget": None, "label_pick": "random", "max_minutes": None, "align": "none",
                   "align_settings": {}, "cv_folds": None, "cv_fold": 0, "devices": 1, "num_nodes": 1,
                   "strategy": "auto", "grad_checkpointing": False, "lr_schedule": "constant"}
# The same for an adapter's own settings: LoRA's layout was added with every earlier run at ``separate``, so a
# separate run keeps its id while a ``fused-qkv`` one (the published preset's) gets another and is never
# taken for it.
_LATER_ADAPTER_SETTINGS = {"lora": {"layout": "separate"}}


# The digest used to take in the emfm version with the settings, so that an upgrade renamed, and so reran,
# every run of a grid whose results it would not change. The version is pinned to the one every existing id
# was made with: those ids stay, and no later release changes them. A change that does alter results
# belongs in the settings (a new setting, or a new default), which the digest sees.
_ID_VERSION = "0.1.0"


def _run_id(config: TrainConfig, ablation: str) -> str:
    settings = {**config.to_dict(), "emfm_version": _ID_VERSION}
    for key, default in _LATER_SETTINGS.items():
        if settings.get(key) == default:
            settings.pop(key, None)
    adapter_settings = dict(settings.get("adapter_settings") or {})
    for key, default in _LATER_ADAPTER_SETTINGS.get(config.adapter, {}).items():
        if adapter_settings.get(key) == default:
            adapter_settings.pop(key, None)
    settings["adapter_settings"] = adapter_settings
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    backbone = Path(config.backbone).name
    parts = [backbone, config.adapter, config.head, "+".join(config.train), f"s{config.seed}"]
    if config.label_budget is not None:
        parts.insert(4, f"n{config.label_budget}")
    if config.cv_folds:
        parts.insert(4, f"fold{config.cv_fold}of{config.cv_folds}")
    if config.align != "none":
        parts.insert(4, f"align-{config.align}")
    if ablation:
        parts.insert(4, ablation)
    return safe_name("-".join(parts)) + f"-{digest}"


def _tests(study: StudyConfig, train: tuple[str, ...]) -> tuple[str, ...]:
    """The sets a run is scored on: the study's ``test_sets``, or with ``own`` its own training sets."""
    return tuple(train) if study.test_sets == (OWN_TEST_SETS,) else study.test_sets


def expand_grid(study: StudyConfig) -> list[RunSpec]:
    """Every run of the study, main grid first, then the ablations, in a stable order.

    The id ends in a digest of the run's whole config, so changing any setting makes a new run
    instead of silently reusing an old one.
    """
    specs: list[RunSpec] = []
    seen: set[str] = set()

    def add(backbone: str, adapter: str, head: str, train: tuple[str, ...], seed: int, budget: int | None,
            align: str, extra: dict, label: str) -> None:
        for fold in range(study.cv_folds) if study.cv_folds else (None,):
            add_fold(backbone, adapter, head, train, seed, budget, align, extra, label, fold)

    def add_fold(backbone: str, adapter: str, head: str, train: tuple[str, ...], seed: int, budget: int | None,
                 align: str, extra: dict, label: str, fold: int | None) -> None:
        if is_scratch_model(backbone):  # a U-Net has no adapter or head: one cell, whatever the lists say
            adapter, head = "scratch", SCRATCH_MODELS[backbone].head
        settings = {**study.defaults, **study.adapter_overrides.get(adapter, {}), **extra}
        if budget is not None:
            settings["label_budget"] = budget
        if fold is not None:
            settings.update(cv_folds=study.cv_folds, cv_fold=fold)
        if align != "none" and len(train) > 1:  # alignment is about several training sets; single-set runs once
            settings["align"] = align
        if is_scratch_model(backbone):
            settings.pop("layers", None)
        grid_cell = {"backbone": backbone, "adapter": adapter, "head": head, "train": train,
                     "test": _tests(study, train), "seed": seed}
        config = TrainConfig.from_dict({**settings, **grid_cell})
        run_id = _run_id(config, label)
        if run_id not in seen:
            seen.add(run_id)
            specs.append(RunSpec(run_id, config, label))

    budgets, aligns = study.label_budgets, study.aligns
    for backbone, adapter, head, train, align, budget, seed in itertools.product(
        study.backbones, study.adapters, study.heads, study.train_sets, aligns, budgets, study.seeds
    ):
        add(backbone, adapter, head, train, seed, budget, align, {}, "")
    for ab in study.ablations:
        for backbone, adapter, head, train, align, budget, seed in itertools.product(
            ab.backbones or study.backbones, ab.adapters or study.adapters, ab.heads or study.heads,
            ab.train_sets or study.train_sets, aligns, budgets, ab.seeds or study.seeds,
        ):
            add(backbone, adapter, head, train, seed, budget, align, dict(ab.settings), safe_name(ab.name))
    return specs
