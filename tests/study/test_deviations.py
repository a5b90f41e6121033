"""The report's deviations section is generated from the runs' configs against the published protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from emfm.study.config import StudyConfig
from emfm.study.deviations import PROTOCOL, PROTOCOL_LORA, PROTOCOL_SEEDS, deviations, deviations_text
from emfm.study.grid import expand_grid

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALWAYS = ["pairing", "metric resolution"]  # the corrections emfm makes in every run


def specs_of(name: str, overrides=()):
    study = StudyConfig.from_yaml(CONFIGS / name, overrides)
    return study, expand_grid(study)


def test_the_protocol_constant_is_the_published_preset():
    study, specs = specs_of("study.yaml")
    d = study.defaults
    assert {k: d[k] for k in ("resolution", "epochs", "patience", "min_steps", "batch_size", "weight_decay",
                              "grad_clip", "normalisation")} == {k: PROTOCOL[k] for k in (
        "resolution", "epochs", "patience", "min_steps", "batch_size", "weight_decay", "grad_clip", "normalisation")}
    assert d["lr"] == PROTOCOL["lr"] and list(study.heads) == [PROTOCOL["head"]]
    assert {k: d[k] for k in PROTOCOL_LORA} == PROTOCOL_LORA and len(study.seeds) == PROTOCOL_SEEDS


def test_the_published_preset_deviates_only_by_the_corrections_and_its_ablations():
    study, specs = specs_of("study.yaml")
    main = [s.config for s in specs if not s.ablation]
    found = [d.setting for d in deviations(main, study.seeds)]
    assert found == [*ALWAYS, "OpenCLIP normalisation"]  # the grid has openclip-l14, fed ImageNet's statistics
    pairing = next(d for d in deviations([s.config for s in specs], study.seeds) if d.setting == "pairing")
    assert {v for v, _ in pairing.here} == {"by-number", "text-sorted", "study-compose"}
    sampling = next(d for d in deviations([s.config for s in specs], study.seeds) if d.setting == "sampling")
    assert dict(sampling.here)["balanced (weighted, with replacement)"] == sum(s.config.balance for s in specs) > 0


def test_the_quick_preset_lists_exactly_the_settings_it_changes():
    study, specs = specs_of("quick.yaml")
    found = {d.setting: d for d in deviations([s.config for s in specs], study.seeds)}
    changed = {"resolution", "head", "epochs", "patience", "lr", "seeds", "lora_layout", *ALWAYS}
    assert set(found) == changed
    assert dict(found["resolution"].here) == {224: sum(s.config.resolution == 224 for s in specs),
                                               518: sum(s.config.resolution == 518 for s in specs)}
    assert found["lora_layout"].here == (("separate", sum(s.config.adapter == "lora" for s in specs)),)
    assert found["seeds"].here[0][0] == 2


def test_one_changed_setting_is_one_row(tmp_path):
    study, specs = specs_of("study.yaml")
    frozen = [s.config for s in specs if not s.ablation and s.config.adapter == "frozen"
              and s.config.backbone != "openclip-l14"]
    tiled = [c.replace(scale=1.0, crop=224) for c in frozen]
    assert [d.setting for d in deviations(frozen, study.seeds)] == ALWAYS
    assert [d.setting for d in deviations(tiled, study.seeds)] == ["input", "training data", *ALWAYS]
    text = deviations_text(tiled, study.seeds)
    assert "| input | whole slice | native-scale tiles (scale 1, 518 px, overlap 70)" in text
    assert text.count("\n| ") == 2 + 4  # the header, its separator, and one row per deviation


@pytest.mark.parametrize("name", ["quick.yaml", "study.yaml"])
def test_the_section_is_in_every_report(name):
    from emfm.study.report import deviations_section

    study, specs = specs_of(name)
    assert deviations_section(study, specs).startswith("## Deviations from the published protocol")
