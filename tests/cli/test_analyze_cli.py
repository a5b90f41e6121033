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
    text = (out / "config.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["datasets"] == [a, b] and config["layers"] == [0, -1] and config["n_boot"] == 5
    assert config["seed"] == 1 and config["cache_dir"] == str(base / "cache") and config["resolution"] == 112
    assert config["backbone"] == str(base / "bb") and config["baseline_repeats"] == 3
    assert text.startswith("# emfm ") and "emfm analyze --config config.yaml" in text
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
        (["--datasets", "lucchi_pp,vnc", "--max-images", "2"], "max_images must be >= 4, got 2"),
        (["--datasets", "lucchi_pp,vnc", "--set", "n_bot=10"],
         "unknown analysis key 'n_bot' (did you mean 'n_boot'?); valid keys: "),
        (["--datasets", "lucchi_pp,vnc", "--set", "level=2"], "level must be > 0 and < 1"),
        (["--datasets", "lucchi_pp,vnc", "--set", "oops"], "not of the form key=value"),
        (["--datasets", "lucchi_pp,vnc", "--layers", "x"], "block indices"),
        (["--datasets", "lucchi_pp,nope"], "nope"),
        (["--datasets", "lucchi_pp,lucchi_pp"], "more than once"),
    ],
)
def test_errors_are_one_line(setup, tmp_path, capsys, extra, message):
    """Each a ConfigError (or a data-layer error) that main turns into one line, exit 2, no traceback."""
    base, _, _ = setup
    code = main(["analyze", "--backbone", str(base / "bb"), "--out", str(tmp_path / "o"), "--data-root",
                 str(tmp_path / "nodata"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("emfm: error:") and message in err and "\n" not in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "analysis.json").exists() and not (tmp_path / "o" / "config.yaml").exists()


def _args(argv: list[str]):
    from emfm.cli import build_parser

    return build_parser().parse_args(["analyze", *argv])


def test_config_file_then_flags_then_set(tmp_path):
    from emfm.cli.analyze import build_config

    (tmp_path / "a.yaml").write_text(yaml.safe_dump({
        "backbone": "dinov2-s", "datasets": ["lucchi_pp", "vnc"], "n_boot": 50, "seed": 3, "layers": [2],
        "data_root": "data", "crop_size": 4,
    }))
    config = build_config(_args(["--config", str(tmp_path / "a.yaml"), "--bootstrap", "20", "--layers", "none",
                                 "--no-cache", "--set", "seed=7", "--set", "probe_patches=100"]))
    assert config.backbone == "dinov2-s" and config.datasets == ("lucchi_pp", "vnc")
    assert config.n_boot == 20 and config.layers == () and not config.use_cache  # flags win over the file
    assert config.seed == 7 and config.probe_patches == 100 and config.crop_size == 4  # --set wins over both
    assert config.data_root == str(Path("data").resolve())  # relative paths made absolute
    untouched = build_config(_args(["--config", str(tmp_path / "a.yaml")]))
    assert untouched.n_boot == 50 and untouched.layers == (2,) and untouched.use_cache and untouched.resolution == 518


def test_a_config_yaml_reruns_as_it_was(setup, tmp_path):
    from emfm.cli.analyze import build_config

    base, a, b = setup
    first = build_config(_args(["--backbone", str(base / "bb"), "--datasets", f"{a},{b}", "--seed", "4",
                                "--cache-dir", str(tmp_path / "cache")]))
    (tmp_path / "config.yaml").write_text(first.to_yaml())
    assert build_config(_args(["--config", str(tmp_path / "config.yaml")])) == first


def test_missing_backbone_is_one_line(tmp_path, capsys):
    code = main(["analyze", "--datasets", "lucchi_pp,vnc", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "emfm: error: missing --backbone (or give backbone in --config)"
