"""``emfm analyze``: arguments, config.yaml, analysis.json, the printed summary and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from emfm.cli import main
from emfm.cli.analyze import parse_layers
from emfm.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from test_run import _write_folder  # noqa: E402  (the synthetic folder datasets of the library test)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from emfm.backbones._testing import write_random_checkpoint

    base = tmp_path_factory.mktemp("cli")
    a = _write_folder(base / "a", 0, 8, 2, background=80, texture=5)
    b = _write_folder(base / "b", 1, 5, 2, background=120, texture=40)
    write_random_checkpoint("dinov2", base / "bb", image_size=112)
    return base, f"folder:{a}", f"folder:{b}"


def test_parse_layers():
    assert parse_layers("all") is None and parse_layers("none") == [] and parse_layers("3,6,-1") == [3, 6, -1]
    with pytest.raises(ConfigError, match="expected 'all', 'none' or block indices"):
        parse_layers("six")


def test_analyze_writes_config_json_figures_and_prints_a_summary(setup, capsys):
    base, a, b = setup
    out = base / "out"
    code = main([
        "analyze", "--backbone", str(base / "bb"), "--datasets", f"{a},{b}", "--out", str(out),
        "--resolution", "112", "--bootstrap", "5", "--baseline-repeats", "3", "--layers", "0,-1", "--seed", "1",
        "--cache-dir", str(base / "cache"), "--no-progress",
    ])
    assert code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["datasets"] == [a, b] and config["layers"] == [0, -1] and config["n_boot"] == 5
    assert config["seed"] == 1 and config["cache_dir"] == str(base / "cache") and config["emfm_version"]
    result = json.loads((out / "analysis.json").read_text())
    assert result["protocol"]["probe_layers"] == [0, 1] and result["protocol"]["seed"] == 1
    assert (out / "pca.png").is_file() and (out / "pca_rgb.png").is_file() and (out / "probe_layers.png").is_file()
    printed = capsys.readouterr().out
    assert f"{a} vs {b}" in printed and "FD full" in printed and "KID" in printed and "domain probe" in printed
    assert "mitochondria patch probe" in printed and "singular" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--datasets", "lucchi_pp"], "at least two"),
        (["--datasets", "lucchi_pp,vnc", "--max-images", "2"], "too few"),
        (["--datasets", "lucchi_pp,vnc", "--layers", "x"], "block indices"),
        (["--datasets", "lucchi_pp,nope"], "nope"),
        (["--datasets", "lucchi_pp,lucchi_pp"], "more than once"),
    ],
)
def test_errors_are_one_line(setup, tmp_path, capsys, extra, message):
    base, _, _ = setup
    code = main(["analyze", "--backbone", str(base / "bb"), "--out", str(tmp_path / "o"), "--data-root",
                 str(tmp_path / "nodata"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("emfm: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o" / "analysis.json").exists()
