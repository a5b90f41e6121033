"""`emfm data list|check|fetch`: output, exit codes, --json, --root/--data-root."""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))  # the synthetic-data builders
from synth_data import index_image, index_mask, make_lucchi, save_grey  # noqa: E402

from emfm.cli import main  # noqa: E402


def make_user_folder(root: Path, n: int = 4) -> Path:
    for i in range(n):
        save_grey(root / "images" / f"s{i}.png", index_image(i))
        save_grey(root / "masks" / f"s{i}.png", index_mask(i) * 255)
    return root


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "lucchi_pp: Lucchi++" in out and "vnc: VNC" in out and "folder:PATH" in out
    assert "http://www.casser.io/files/lucchi_pp.zip" in out


def test_check_folder_ok_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_user_folder(tmp_path / "mine")
    report = tmp_path / "out" / "report.json"
    assert main(["data", "check", "--no-progress", f"folder:{root}", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "shape        4 x 6 x 8" in out and "pairing      by-number" in out and "is usable" in out
    data = json.loads(report.read_text())
    assert data["usable"] is True and data["stacks"][0]["n_slices"] == 4
    expected = hashlib.sha256(np.stack([index_image(i) for i in range(4)]).tobytes()).hexdigest()[:16]
    assert data["stacks"][0]["raw_sha256_16"] == expected and expected in out


def test_check_unusable_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_user_folder(tmp_path / "bad")
    save_grey(root / "masks" / "s2.png", np.full((6, 8), 128, np.uint8))
    assert main(["data", "check", "--no-progress", f"folder:{root}"]) == 1
    out = capsys.readouterr().out
    assert "ERROR: trainval slice s2:" in out and "mask has values {128}" in out and "NOT usable" in out


def test_check_lucchi_with_root_and_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_lucchi(tmp_path / "data" / "lucchi_pp", n=3)
    # synthetic slices: pairs fine, but they are not the published data -> MISMATCH, exit 1
    assert main(["data", "check", "--no-progress", "--root", str(tmp_path / "data" / "lucchi_pp"), "lucchi_pp"]) == 1
    out = capsys.readouterr().out
    assert "Train (Train_In/maskNNNN + Train_Out/N.png)" in out and "expected 45d77f092b5c6fba   MISMATCH" in out
    assert main(["data", "check", "--no-progress", "--data-root", str(tmp_path / "data"), "lucchi_pp"]) == 1
    assert "expected 908b416bde9a726e   MISMATCH" in capsys.readouterr().out


def test_check_missing_root_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", "--data-root", str(tmp_path), "vnc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("emfm: error: vnc: no dataset at")
    assert "Run `emfm data fetch vnc`" in err


def test_check_unknown_name_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", "lucci_pp"]) == 2
    assert "Did you mean 'lucchi_pp'" in capsys.readouterr().err


def test_fetch_prints_where_it_went(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_lucchi(tmp_path / "src", n=2)
    zpath = tmp_path / "lucchi_pp.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, f"Lucchi++/{p.relative_to(src)}")
    sha = hashlib.sha256(zpath.read_bytes()).hexdigest()
    from emfm.data import get_dataset

    monkeypatch.setattr(get_dataset("lucchi_pp"), "archive_sha256", sha)
    dest = tmp_path / "data"
    assert main(["data", "fetch", "--no-progress", "--data-root", str(dest), "--url", zpath.as_uri(), "lucchi_pp"]) == 0
    assert capsys.readouterr().out.strip() == f"lucchi_pp is at {dest / 'lucchi_pp'}"
    assert (dest / "lucchi_pp" / "Train_Out" / "1.png").is_file()


def test_fetch_offline_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:9/lucchi_pp.zip"
    assert main(["data", "fetch", "--no-progress", "--root", str(tmp_path / "l"), "--url", url, "lucchi_pp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"could not download {url}" in err and "by hand" in err


def test_check_data_root_that_is_the_dataset_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_lucchi(tmp_path / "lucchi_pp", n=2)
    # --data-root pointing at the dataset's own folder still finds it (mismatching synthetic data: exit 1)
    assert main(["data", "check", "--no-progress", "--data-root", str(tmp_path / "lucchi_pp"), "lucchi_pp"]) == 1
    assert "slices       2" in capsys.readouterr().out
