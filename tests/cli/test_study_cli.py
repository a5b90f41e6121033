"""`emfm study` and `emfm evaluate` on what an earlier run left: resume that verifies what it resumes,
the shared report, file modes, progress, and a backbone that moved.

One tiny study (one run and one analysis) is run once, under a group-friendly umask; each test works
on a copy of it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from emfm.cli import main
from tests.helpers import write_folder_dataset

DESCRIPTION = (
    "Mitochondria <script>alert('x')</script> on <b>two</b> stacks. "
    "![secret](/etc/emfm-secret.png) ![up](../outside.png) [click](javascript:alert(1))"
)


def write_study(path: Path, base: Path, **changes) -> Path:
    a, b = f"folder:{base / 'a'}", f"folder:{base / 'b'}"
    cfg = {
        "name": "tiny", "description": DESCRIPTION, "backbones": [str(base / "bb")], "train_sets": [a],
        "test_sets": [a], "seeds": [0],
        "defaults": {"epochs": 3, "resolution": 56, "lr": 1e-3, "cache_dir": str(base / "cache"), "min_steps": 0},
        "analysis": {"datasets": [a, b], "resolution": 56, "n_boot": 4, "layers": [-1], "baseline_repeats": 3},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_backbone_dir) -> dict:
    base = tmp_path_factory.mktemp("study")
    write_folder_dataset(base / "a", n_train=6, n_test=2, shape=(40, 56), seed=1)
    write_folder_dataset(base / "b", n_train=6, n_test=2, shape=(48, 48), seed=2)
    shutil.copytree(tiny_backbone_dir, base / "bb")  # a backbone of the study's own, so that it can move
    cfg = write_study(base / "tiny.yaml", base)
    stderr = io.StringIO()
    old = os.umask(0o002)  # a group's shared storage: group-writable, world-readable
    try:
        with contextlib.redirect_stderr(stderr):
            code = main(["study", str(cfg), "--out", str(base / "out")])
    finally:
        os.umask(old)
    assert code == 0, stderr.getvalue()[-2000:]
    return {"base": base, "cfg": cfg, "out": base / "out", "stderr": stderr.getvalue()}


@pytest.fixture
def copy(study, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(study["out"], out)
    return out


def run_dir(out: Path) -> Path:
    (d,) = (out / "runs").iterdir()
    return d


def last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def csv_rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as fh:
        return list(csv.DictReader(fh))


# -- the shared report and file modes -------------------------------------------------------------------------


def test_report_html_escapes_config_html_and_embeds_only_the_studys_figures(study):
    page = (study["out"] / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert" in page and "&lt;b&gt;two&lt;/b&gt;" in page
    assert "<span>click</span>" in page and "javascript:" not in page  # the link is text, not an href
    assert "[secret: image not embedded]" in page and "[up: image not embedded]" in page
    assert "/etc/emfm-secret.png" not in page and "../outside.png" not in page
    embedded = page.count("data:image/png;base64,")
    assert embedded == len(list((study["out"] / "figures").glob("*.png"))) and embedded >= 2
    assert 'src="figures/' not in page


def test_written_files_follow_the_umask(study):
    out = study["out"]
    files = [out / "study.yaml", out / "results.csv", out / "report.html", out / "report.md",
             *(out / "figures").glob("*.png"), *(run_dir(out)).glob("*.*"), *(out / "analysis").rglob("*.json"),
             *(study["base"] / "cache").rglob("*.safetensors")]
    assert len(files) > 10
    modes = {str(p.relative_to(study["base"])): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o664"}, modes
    assert oct(stat.S_IMODE(run_dir(out).stat().st_mode)) == "0o775"


def test_the_study_bar_shows_the_runs_epoch_and_time_left(study):
    err = study["stderr"]
    assert "epoch 1/3" in err and "epoch 3/3" in err
    assert "run <= " in err and "study ~ " in err


# -- resume verifies what it resumes -----------------------------------------------------------------------


def test_a_damaged_metrics_json_is_redone_not_read(study, copy, capsys):
    metrics = run_dir(copy) / "metrics.json"
    good = json.loads(metrics.read_text())
    metrics.write_text('{"run": {"seed": 0')  # cut short
    assert main(["study", str(study["cfg"]), "--out", str(copy), "--aggregate-only"]) == 1  # 1 run pending
    assert csv_rows(copy) == []
    assert "1 pending" in capsys.readouterr().out
    assert main(["study", str(study["cfg"]), "--out", str(copy)]) == 0
    again = json.loads(metrics.read_text())
    assert again["test"] == good["test"] and len(csv_rows(copy)) == 1


def test_metrics_of_another_config_are_not_counted(study, copy, capsys):
    metrics = run_dir(copy) / "metrics.json"
    other = json.loads(metrics.read_text())
    other["run"]["seed"] = 7
    metrics.write_text(json.dumps(other))
    assert main(["study", str(study["cfg"]), "--out", str(copy), "--dry-run"]) == 0
    assert "1 runs, 0 complete, 1 to run" in capsys.readouterr().out


def test_an_out_of_another_study_is_refused_unless_told(study, copy, tmp_path, capsys):
    report = (copy / "report.md").read_text()
    other = write_study(tmp_path / "other.yaml", study["base"], name="other", seeds=[1])
    assert main(["study", str(other), "--out", str(copy)]) == 2
    line = last_line(capsys)
    assert f"{copy} holds another study, 'tiny', not 'other'" in line and "--overwrite" in line
    assert yaml.safe_load((copy / "study.yaml").read_text())["name"] == "tiny"
    assert (copy / "report.md").read_text() == report
    assert main(["study", str(other), "--out", str(copy), "--overwrite", "--aggregate-only"]) == 1
    assert yaml.safe_load((copy / "study.yaml").read_text())["name"] == "other"
    assert run_dir(copy).is_dir()  # the other study's runs are kept


def test_the_analysis_is_redone_when_its_settings_change(study, copy, tmp_path):
    (analysis,) = (copy / "analysis").iterdir()
    before = (analysis / "analysis.json").stat().st_mtime_ns
    assert main(["study", str(study["cfg"]), "--out", str(copy)]) == 0
    assert (analysis / "analysis.json").stat().st_mtime_ns == before  # same settings: reused
    changed = write_study(tmp_path / "tiny.yaml", study["base"], analysis={"n_boot": 5})
    assert main(["study", str(changed), "--out", str(copy)]) == 0
    result = json.loads((analysis / "analysis.json").read_text())
    assert result["protocol"]["n_boot"] == 5
    assert yaml.safe_load((analysis / "config.yaml").read_text())["n_boot"] == 5


def test_runs_of_an_older_emfm_are_resumed_not_redone(study, copy, capsys):
    """A run written by another emfm version, before later settings existed, keeps its id and counts as done."""
    cfg_path = run_dir(copy) / "config.yaml"
    saved = yaml.safe_load(cfg_path.read_text())
    saved["emfm_version"] = "0.0.1"
    for later in ("align", "align_settings", "label_budget", "label_pick", "max_minutes", "cv_folds", "cv_fold",
                  "devices", "num_nodes", "strategy", "grad_checkpointing"):
        saved.pop(later, None)
    cfg_path.write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["study", str(study["cfg"]), "--out", str(copy), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"done  {run_dir(copy).name}" in printed and "1 runs, 1 complete, 0 to run" in printed


def test_run_ids_do_not_hash_the_emfm_version(study):
    from emfm.study.config import StudyConfig
    from emfm.study.grid import _run_id, expand_grid

    (spec,) = expand_grid(StudyConfig.from_yaml(study["cfg"]))
    assert _run_id(spec.config.replace(emfm_version="9.9.9"), "") == spec.run_id
    assert _run_id(spec.config.replace(epochs=4), "") != spec.run_id
    assert spec.run_id == run_dir(study["out"]).name


# -- evaluate: a backbone that moved, a checkpoint from a newer emfm ---------------------------------------------


def test_evaluate_follows_a_backbone_that_moved(study, copy, tmp_path, capsys):
    from emfm.backbones._testing import write_random_checkpoint

    run = run_dir(copy)
    bb, moved = study["base"] / "bb", study["base"] / "bb-moved"
    bb.rename(moved)
    try:
        assert main(["evaluate", "--run", str(run), "--no-progress"]) == 2
        line = last_line(capsys)
        assert f"no file or directory at {bb}" in line and "pass --backbone PATH" in line
        assert not (run / "evaluation.json").exists()
        other = write_random_checkpoint("dinov2", tmp_path / "other", hidden_size=32, num_layers=2, num_heads=2,
                                        seed=5)
        assert main(["evaluate", "--run", str(run), "--backbone", str(other), "--no-progress"]) == 2
        assert f"but --backbone {other} has" in last_line(capsys) and not (run / "evaluation.json").exists()
        assert main(["evaluate", "--run", str(run), "--backbone", str(moved), "--no-progress"]) == 0
    finally:
        moved.rename(bb)
    evaluation = json.loads((run / "evaluation.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert evaluation["backbone_source"] == str(moved)
    def ious(m: dict) -> dict:
        return {k: v["fg_iou"] for k, v in m["test"].items()}

    assert ious(evaluation) == ious(metrics)


def test_predict_follows_a_backbone_that_moved(study, copy, tmp_path, capsys):
    import numpy as np
    import tifffile

    from emfm.backbones._testing import write_random_checkpoint

    run = run_dir(copy)
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, np.random.default_rng(0).integers(0, 255, (2, 40, 56), dtype=np.uint8),
                     photometric="minisblack")
    bb, moved = study["base"] / "bb", study["base"] / "bb-moved"
    bb.rename(moved)
    try:
        base = ["predict", "--run", str(run), "--input", str(volume), "--no-progress"]
        assert main([*base, "--output", str(tmp_path / "a.tif")]) == 2
        assert "pass --backbone PATH" in last_line(capsys) and not (tmp_path / "a.tif").exists()
        other = write_random_checkpoint("dinov2", tmp_path / "other", hidden_size=32, num_layers=2, num_heads=2,
                                        seed=5)
        assert main([*base, "--output", str(tmp_path / "b.tif"), "--backbone", str(other)]) == 2
        assert "weights" in last_line(capsys) and not (tmp_path / "b.tif").exists()
        assert main([*base, "--output", str(tmp_path / "c.tif"), "--backbone", str(moved)]) == 0
    finally:
        moved.rename(bb)
    assert tifffile.imread(tmp_path / "c.tif").shape == (2, 40, 56)


def test_a_checkpoint_of_a_newer_emfm_is_refused_in_one_line(copy, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = run_dir(copy)
    ckpt = run / "checkpoint.safetensors"
    with safe_open(str(ckpt), "pt") as fh:
        meta = json.loads(fh.metadata()["emfm"])
    save_file(load_file(str(ckpt)), str(ckpt), metadata={"emfm": json.dumps({**meta, "temperature": 0.7})})
    assert main(["evaluate", "--run", str(run), "--no-progress"]) == 2
    line = last_line(capsys)
    assert "was written by a newer emfm: its metadata has temperature" in line and "upgrade emfm" in line
    assert not (run / "evaluation.json").exists()
