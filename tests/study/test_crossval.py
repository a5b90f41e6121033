"""The study's fold axis and the report's spread over folds beside the spread over seeds."""

from __future__ import annotations

import pytest

from emfm.study.config import StudyConfig
from emfm.study.crossval import crossval_cells, crossval_text
from emfm.study.grid import expand_grid

BASE = {"name": "cv", "backbones": ["bb"], "adapters": ["frozen"], "heads": ["linear"], "train_sets": ["vnc"],
        "test_sets": ["vnc", "lucchi_pp"], "seeds": [0, 1]}


def test_cv_folds_runs_every_cell_once_per_fold_and_seed():
    plain = expand_grid(StudyConfig.from_dict(BASE))
    folded = expand_grid(StudyConfig.from_dict({**BASE, "cv_folds": 3}))
    assert len(folded) == 3 * len(plain) and len({s.run_id for s in folded}) == len(folded)
    assert sorted((s.config.cv_fold, s.config.seed) for s in folded) == [(f, s) for f in range(3) for s in (0, 1)]
    assert all("fold" in s.run_id for s in folded) and not any("fold" in s.run_id for s in plain)
    assert plain[0].run_id == expand_grid(StudyConfig.from_dict(BASE))[0].run_id


@pytest.mark.parametrize("bad", [{"cv_folds": 1}, {"defaults": {"cv_fold": 1}}])
def test_a_fold_axis_that_cannot_run_is_refused(bad):
    from emfm.errors import ConfigError

    with pytest.raises(ConfigError, match="cv_fold"):
        StudyConfig.from_dict({**BASE, **bad})


def row(fold: int, seed: int, iou: float, test: str = "vnc") -> dict:
    return {"backbone": "bb", "adapter": "frozen", "lora_layout": "", "head": "linear", "resolution": 518,
            "train_sets": "vnc", "pairing": "by-number", "balance": False, "ablation": "", "label_budget": "",
            "align": "none", "test_set": test, "seed": seed, "cv_folds": 2, "cv_fold": fold, "fg_iou": iou}


def test_spread_over_folds_and_over_seeds_by_hand():
    rows = [row(0, 0, 0.50), row(0, 1, 0.60), row(1, 0, 0.70), row(1, 1, 0.80), row(0, 0, 0.1, test="lucchi_pp")]
    (cell,) = crossval_cells(rows)  # lucchi_pp is not a training set: its published split, not a fold
    assert cell["folds"] == pytest.approx({0: 0.55, 1: 0.75})
    assert cell["mean"] == pytest.approx(0.65)
    assert cell["sd_folds"] == pytest.approx(0.2 / 2 ** 0.5)  # SD of 0.55 and 0.75
    assert cell["sd_seeds"] == pytest.approx(0.1 / 2 ** 0.5)  # SD of seed means 0.60 and 0.70
    text = crossval_text(rows)
    assert "| bb | frozen | linear | vnc | vnc | 0.550 | 0.750 | 0.650 | 0.141 | 0.071 |" in text


def test_no_section_without_folds():
    plain = {**row(0, 0, 0.5), "cv_folds": "", "cv_fold": ""}
    assert crossval_text([plain]) == ""
