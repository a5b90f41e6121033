"""A study's ``analysis:`` block: checked when the study is read, saved and read back unchanged, and
completed per backbone with the study's data root and feature cache."""

from __future__ import annotations

import pytest

from emfm.analysis import AnalysisConfig
from emfm.errors import ConfigError
from emfm.study.config import StudyConfig


def _study(analysis, **extra) -> dict:
    return {
        "name": "s", "backbones": ["dinov2-s", "dinov2-b"], "train_sets": ["lucchi_pp"], "test_sets": ["vnc"],
        "defaults": {"data_root": "/data", "cache_dir": "/cache"}, "analysis": analysis, **extra,
    }


def test_a_typo_in_the_analysis_block_fails_when_the_study_is_read():
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(_study({"n_bot": 10, "datasets": ["lucchi_pp", "vnc"]}))
    message = str(err.value)
    assert "'n_bot'" in message and "did you mean 'n_boot'?" in message and "\n" not in message


def test_a_bad_value_fails_when_the_study_is_read():
    with pytest.raises(ConfigError, match="level must be > 0 and < 1"):
        StudyConfig.from_dict(_study({"datasets": ["lucchi_pp", "vnc"], "level": 95}))
    with pytest.raises(ConfigError, match="at least two"):
        StudyConfig.from_dict(_study({"datasets": ["lucchi_pp"]}))


@pytest.mark.parametrize("key", ["backbone", "data_root", "cache_dir"])
def test_what_the_study_fills_in_is_not_an_analysis_key(key):
    with pytest.raises(ConfigError, match=f"study analysis: remove '{key}'"):
        StudyConfig.from_dict(_study({"datasets": ["lucchi_pp", "vnc"], key: "x"}))


def test_the_block_becomes_a_config_and_round_trips_through_study_yaml():
    import yaml

    study = StudyConfig.from_dict(_study({"datasets": ["lucchi_pp", "vnc"], "layers": [2, 5], "n_boot": 20}))
    assert study.analysis == AnalysisConfig(datasets=("lucchi_pp", "vnc"), layers=(2, 5), n_boot=20)
    saved = yaml.safe_load(study.to_yaml())
    assert saved["analysis"]["layers"] == [2, 5] and "backbone" not in saved["analysis"]
    assert StudyConfig.from_dict(saved) == study
    assert StudyConfig.from_dict(_study(None)).analysis is None and StudyConfig.from_dict(_study({})).analysis is None
    assert StudyConfig.from_dict(yaml.safe_load(StudyConfig.from_dict(_study(None)).to_yaml())).analysis is None


def test_a_set_override_reaches_the_block(tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_study({"datasets": ["lucchi_pp", "vnc"]})))
    assert StudyConfig.from_yaml(tmp_path / "s.yaml", ["analysis.n_boot=30"]).analysis.n_boot == 30
    with pytest.raises(ConfigError, match="did you mean 'n_boot'"):
        StudyConfig.from_yaml(tmp_path / "s.yaml", ["analysis.nboot=30"])


def test_run_analyses_completes_the_config_per_backbone_and_reuses_analysis_json(tmp_path, monkeypatch):
    import json

    import emfm.analysis
    from emfm.study.runner import analysis_dir, run_analyses

    calls = []

    def fake_run_analysis(config, out, **kwargs):
        calls.append((config, out))
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config.to_yaml())  # as run_analysis records its settings
        (out / "analysis.json").write_text(json.dumps({"backbone": {"name": config.backbone}, "n_boot": config.n_boot}))
        return {}

    monkeypatch.setattr(emfm.analysis, "run_analysis", fake_run_analysis)
    study = StudyConfig.from_dict(_study({"datasets": ["lucchi_pp", "vnc"], "seed": 2}))
    results = run_analyses(study, tmp_path)
    assert [c.backbone for c, _ in calls] == ["dinov2-s", "dinov2-b"]
    assert all(c.data_root == "/data" and c.cache_dir == "/cache" and c.seed == 2 for c, _ in calls)
    assert calls[0][1] == analysis_dir(tmp_path, "dinov2-s")
    assert results["dinov2-b"] == {"backbone": {"name": "dinov2-b"}, "n_boot": 200}
    assert run_analyses(study, tmp_path) == results and len(calls) == 2  # done with these settings: not rerun
    changed = StudyConfig.from_dict(_study({"datasets": ["lucchi_pp", "vnc"], "seed": 2, "n_boot": 50}))
    again = run_analyses(changed, tmp_path)
    assert len(calls) == 4 and again["dinov2-s"]["n_boot"] == 50  # other settings: done again
