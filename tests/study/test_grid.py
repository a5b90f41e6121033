import pytest

from emfm.errors import ConfigError
from emfm.study.config import StudyConfig
from emfm.study.grid import expand_grid

BASE = {
    "name": "t", "backbones": ["bb"], "adapters": ["frozen", "lora"], "heads": ["linear"],
    "train_sets": ["lucchi_pp", "vnc", "lucchi_pp,vnc"], "test_sets": ["lucchi_pp", "vnc"], "seeds": [0, 1],
    "defaults": {"epochs": 3}, "adapter_overrides": {"lora": {"resolution": 224}},
    "ablations": [{"name": "text-sorted", "pairing": "text-sorted", "adapters": ["frozen"],
                   "train_sets": ["lucchi_pp,vnc"]},
                  {"name": "hi-res", "resolution": 518, "adapters": ["frozen"], "seeds": [0]}],
}


def test_grid_has_every_cell_once_plus_labelled_ablations():
    specs = expand_grid(StudyConfig.from_dict(BASE))
    assert len(specs) == 2 * 3 * 2 + 2 + 3
    assert len({s.run_id for s in specs}) == len(specs)
    lora = [s for s in specs if s.config.adapter == "lora"]
    assert all(s.config.resolution == 224 for s in lora)
    hires = [s for s in specs if s.ablation == "hi-res"]
    assert [s.config.seed for s in hires] == [0, 0, 0] and all(s.config.resolution == 518 for s in hires)
    abl = [s for s in specs if s.ablation == "text-sorted"]
    assert [s.config.pairing for s in abl] == ["text-sorted"] * 2
    assert all(s.config.train == ("lucchi_pp", "vnc") and "text-sorted" in s.run_id for s in abl)
    assert all(s.config.test == ("lucchi_pp", "vnc") for s in specs)


def test_run_ids_are_stable_and_change_with_any_setting():
    a = expand_grid(StudyConfig.from_dict(BASE))
    b = expand_grid(StudyConfig.from_dict(BASE))
    c = expand_grid(StudyConfig.from_dict({**BASE, "defaults": {"epochs": 4}}))
    assert [s.run_id for s in a] == [s.run_id for s in b]
    assert not {s.run_id for s in a} & {s.run_id for s in c}


@pytest.mark.parametrize(
    "change,match",
    [({"defaults": {"epoch": 3}}, "unknown run setting"), ({"seeds": []}, "seeds is empty"),
     ({"adapters": ["full"]}, "unknown adapter"), ({"defaults": {"seed": 1}}, "belong in the grid lists"),
     ({"bogus": 1}, "unknown study key")],
)
def test_bad_study_configs(change, match):
    with pytest.raises(ConfigError, match=match):
        StudyConfig.from_dict({**BASE, **change})
