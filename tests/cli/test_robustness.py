"""Bad and unusual input through the CLI: every failure is one line on stderr and a non-zero exit, and
nothing half-made is left on disk.

Covers the classes of failure that used to end in a traceback or pass silently: OS errors on writing,
config values of the wrong type or out of range, damaged files (weights, checkpoints), torch's shape
errors, file names a strict terminal cannot print, and a genuine internal error.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from emfm.cli import main
from tests.helpers import write_folder_dataset


def one_line_error(capsys, prefix: str = "emfm: error: ") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    last = err[-1]
    assert last.startswith(prefix), last
    assert not any("Traceback" in line for line in err)
    return last


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return write_folder_dataset(tmp_path_factory.mktemp("d") / "a", n_train=6, n_test=2, shape=(40, 56), seed=3)


def train_argv(backbone: Path, data: str, out: Path, tmp: Path, *extra: str) -> list[str]:
    return ["train", "--backbone", str(backbone), "--train", data, "--resolution", "56", "--epochs", "1",
            "--cache-dir", str(tmp / "cache"), "--out", str(out), "--no-progress", *extra]


# -- OS errors ------------------------------------------------------------------------------------------


def test_writing_under_a_regular_file_is_one_line(folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["data", "check", folder, "--json", str(blocker / "report.json"), "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert f"{blocker}" in line and "a file is in the way of a folder" in line
    assert blocker.read_text() == "not a folder"  # untouched, and no stray temporary beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_out_that_is_a_file_or_under_one(tiny_backbone_dir, folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(train_argv(tiny_backbone_dir, folder, blocker, tmp_path)) == 2
    assert "is a file, not a run directory; choose another --out" in one_line_error(capsys)
    assert main(train_argv(tiny_backbone_dir, folder, blocker / "run", tmp_path)) == 2
    assert "Not a directory (a part of the path is a file, not a folder)" in one_line_error(capsys)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"backbones": ["b"], "train_sets": ["vnc"], "test_sets": ["vnc"]}))
    assert main(["study", str(cfg), "--out", str(blocker)]) == 2
    assert "--out" in one_line_error(capsys) and blocker.read_text() == "x"


# -- config values of the wrong type, or out of range -------------------------------------------------------


@pytest.mark.parametrize(
    "extra,message",
    [(["--set", "epochs=ten"], "epochs must be an integer, got 'ten'"),
     (["--set", "lr=fast"], "lr must be a number, got 'fast'"),
     (["--set", "balance=maybe"], "balance must be true or false, got 'maybe'"),
     (["--set", "layers=[a]"], "layers (each) must be an integer, got 'a'"),
     (["--set", "head=[linear]"], "head must be a string, got ['linear']"),
     (["--weight-decay", "-1"], "weight_decay must be >= 0, got -1.0"),
     (["--set", "grad_clip=-1"], "grad_clip must be >= 0, got -1"),
     (["--max-train-slices", "-1"], "max_train_slices must be >= 1, got -1"),
     (["--max-train-slices", "0"], "max_train_slices must be >= 1, got 0"),
     (["--adapter", "lora", "--lora-dropout", "2"], "lora_dropout must be >= 0 and <= 0.99, got 2.0")],
)
def test_train_settings_are_checked_before_anything_runs(extra, message, tiny_backbone_dir, folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tiny_backbone_dir, folder, out, tmp_path, *extra)) == 2
    assert message in one_line_error(capsys)
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "change,message",
    [({"seeds": ["a"]}, "study seeds holds 'a'; give whole numbers 0 or more"),
     ({"seeds": [-1]}, "study seeds holds -1"),
     ({"backbones": [3]}, "study backbones holds 3"),
     ({"defaults": ["epochs", 2]}, "study defaults must be a mapping"),
     ({"defaults": {"epochs": "ten"}}, "epochs must be an integer, got 'ten'"),
     ({"analysis": {"datasets": ["a", "b"], "n_boot": "many"}}, "n_boot must be an integer, got 'many'"),
     ({"description": ["x"]}, "description must be a string")],
)
def test_study_settings_are_checked_before_anything_runs(change, message, tiny_backbone_dir, folder, tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    study = {"backbones": [str(tiny_backbone_dir)], "train_sets": [folder], "test_sets": "own", "seeds": [0],
             "defaults": {"epochs": 1}}
    cfg.write_text(yaml.safe_dump({**study, **change}))
    out = tmp_path / "study"
    assert main(["study", str(cfg), "--out", str(out)]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_analysis_settings_are_checked(tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "--backbone", "b", "--datasets", "a,b", "--out", str(out), "--set", "level=high"]) == 2
    assert "level must be a number, got 'high'" in one_line_error(capsys)
    assert not out.exists()


def test_batchnorm_on_a_one_patch_grid_says_which_setting_to_change(tiny_backbone_dir, folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_argv(tiny_backbone_dir, folder, out, tmp_path, "--head", "dpt", "--resolution", "28",
                      "--batch-size", "1")
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "BatchNorm" in line and "raise --resolution (now 28)" in line and "--batch-size (now 1)" in line
    assert not (out / "metrics.json").exists() and not (out / "checkpoint.safetensors").exists()


# -- damaged files ---------------------------------------------------------------------------------------------


def test_truncated_backbone_weights(tiny_backbone_dir, folder, tmp_path, capsys):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_backbone_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["backbones", "info", str(damaged)]) == 2
    assert "are damaged or cut short" in one_line_error(capsys)
    out = tmp_path / "run"
    assert main(train_argv(damaged, folder, out, tmp_path)) == 2
    assert "model.safetensors) are damaged or cut short" in one_line_error(capsys)
    assert not out.exists()


# -- printing -----------------------------------------------------------------------------------------------------


def test_file_names_that_are_not_utf8_print_on_a_strict_terminal(folder, tmp_path, monkeypatch, capsys):
    import shutil

    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))  # Latin-1 bytes: not UTF-8
    shutil.copytree(folder.removeprefix("folder:"), odd)
    strict = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", strict)
    assert main(["data", "check", f"folder:{odd}", "--no-progress"]) == 0
    strict.flush()
    printed = strict.buffer.getvalue().decode("ascii")
    assert "caf\\udce9" in printed and "is usable" in printed


# -- internal errors --------------------------------------------------------------------------------------------


def test_an_internal_error_is_one_line_saying_how_to_get_the_traceback(monkeypatch, capsys):
    import emfm.cli.data

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(emfm.cli.data, "run_list", broken)
    monkeypatch.delenv("EMFM_DEBUG", raising=False)
    assert main(["data", "list"]) == 1
    line = one_line_error(capsys, "emfm: internal error: ")
    assert "ZeroDivisionError: division by zero" in line and "-v (or EMFM_DEBUG=1)" in line
    monkeypatch.setenv("EMFM_DEBUG", "1")
    assert main(["data", "list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.strip().splitlines()[-1].startswith("emfm: internal error: ZeroDivisionError")


def test_a_damaged_json_report_target_does_not_survive_as_garbage(folder, tmp_path, capsys):
    """The --json report is written atomically: a good run replaces it whole."""
    target = tmp_path / "r.json"
    target.write_text("{garbage")
    assert main(["data", "check", folder, "--json", str(target), "--no-progress"]) == 0
    assert json.loads(target.read_text())["usable"] is True
