"""Every shipped preset parses into the config it is for, so a typo in one fails here, not in a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest

from emfm.config import TrainConfig, load_yaml
from emfm.study.config import StudyConfig
from emfm.study.grid import expand_grid

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["quick.yaml", "study.yaml", "heads_quick.yaml", "label_efficiency.yaml",
                                  "label_efficiency_quick.yaml", "align_quick.yaml", "vnc_cv_quick.yaml"])
def test_study_presets_expand(name, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    study = StudyConfig.from_yaml(CONFIGS / name)
    assert expand_grid(study)


def test_best_is_a_training_config_that_takes_train_and_test(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    data = {**load_yaml(CONFIGS / "best.yaml"), "train": "lucchi_pp", "test": "lucchi_pp"}
    config = TrainConfig.from_dict(data)
    assert config.head == "fusion" and config.crop == 224 and config.adapter == "frozen"


def test_heads_quick_compares_every_head_at_both_scales(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    specs = expand_grid(StudyConfig.from_yaml(CONFIGS / "heads_quick.yaml"))
    cells = {(s.config.head, s.config.scale) for s in specs}
    assert cells == {(h, s) for h in ("linear", "multilinear", "dpt", "fusion") for s in (None, 1.0)}
    assert len(specs) == 16 and {s.config.seed for s in specs} == {0, 1}  # every cell on two seeds


def test_label_efficiency_crosses_methods_budgets_and_datasets(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    specs = expand_grid(StudyConfig.from_yaml(CONFIGS / "label_efficiency.yaml"))
    methods = {(s.config.backbone.split("/")[-1], s.config.adapter, s.config.head) for s in specs}
    assert methods == {("unet", "scratch", "unet"), ("dinov2-vits14-imgfocus", "frozen", "linear"),
                       ("dinov2-vits14-imgfocus", "frozen", "fusion"), ("dinov2-vits14-imgfocus", "lora", "fusion")}
    assert {s.config.label_budget for s in specs} == {1, 2, 4, 8, 16, None}
    assert len(specs) == 4 * 6 * 2 * 3 and all(s.config.test == s.config.train for s in specs)
    quick = expand_grid(StudyConfig.from_yaml(CONFIGS / "label_efficiency_quick.yaml"))
    assert len(quick) == 3 * 3 * 2 and {s.config.backbone for s in quick if s.config.adapter == "scratch"} == {
        "unet-small"}


def test_align_quick_trains_each_method_jointly_and_each_set_alone_once(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    study = StudyConfig.from_yaml(CONFIGS / "align_quick.yaml")
    specs = expand_grid(study)
    joint = [s for s in specs if len(s.config.train) == 2]
    single = [s for s in specs if len(s.config.train) == 1]
    assert {s.config.align for s in joint} == set(study.aligns) and len(joint) == len(study.aligns) * 2
    assert {s.config.align for s in single} == {"none"} and len(single) == 2 * 2
    assert all(s.config.test == ("lucchi_pp", "vnc") for s in specs)


def test_vnc_cv_quick_runs_every_head_on_every_fold_and_seed(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    specs = expand_grid(StudyConfig.from_yaml(CONFIGS / "vnc_cv_quick.yaml"))
    assert sorted((s.config.head, s.config.cv_fold, s.config.seed) for s in specs) == sorted(
        (h, f, s) for h in ("linear", "multilinear") for f in range(5) for s in (0, 1))
    assert all(s.config.cv_folds == 5 and s.config.test == ("vnc",) for s in specs)
