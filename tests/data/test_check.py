"""check_dataset: decoded checksums as defined in shared/README.md, OK/MISMATCH, warnings and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emfm.data import check_dataset, get_dataset
from emfm.errors import DataError
from tests.data.synth_data import expected_lucchi, index_image, index_mask, make_vnc, save_grey, sha16


def test_checksums_follow_the_readme_definition(lucchi_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = {s: expected_lucchi(s) for s in ("Train", "Test")}
    monkeypatch.setattr(get_dataset("lucchi_pp"), "reference", ref)
    report = check_dataset("lucchi_pp", lucchi_root, progress=False)
    assert report.usable, report.errors
    for s in report.stacks:
        assert s.n_slices == 12 and s.shape == "12 x 6 x 8" and s.dtype == "uint8" and s.pairing == "by-number"
        assert (s.raw_sha256_16, s.mask_sha256_16, s.foreground) == (
            ref[s.stack].raw,
            ref[s.stack].mask,
            ref[s.stack].foreground,
        )
        assert s.status == {"foreground": "OK", "raw": "OK", "mask": "OK", "shape": "OK"}
    text = "\n".join(report.lines())
    assert f"raw sha256   {ref['Train'].raw}   expected {ref['Train'].raw}   OK" in text
    assert "lucchi_pp is usable" in text


def test_other_data_is_a_mismatch(lucchi_root: Path) -> None:
    report = check_dataset("lucchi_pp", lucchi_root, progress=False)  # synthetic data, real references
    assert not report.usable
    assert report.stacks[0].status["raw"] == "MISMATCH"
    assert any("differ from the reference data" in e for e in report.errors)
    assert "MISMATCH" in "\n".join(report.lines()) and "NOT usable" in report.lines()[-1]


def test_bad_slices_are_reported_and_the_check_goes_on(lucchi_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_dataset("lucchi_pp"), "reference", {})
    save_grey(lucchi_root / "Train_Out" / "4.png", np.zeros((3, 3), np.uint8))
    m = index_mask(5) * 255
    m[2, 2] = 128
    save_grey(lucchi_root / "Train_Out" / "5.png", m)
    (lucchi_root / "Test_Out" / "11.png").unlink()
    report = check_dataset("lucchi_pp", lucchi_root, progress=False)
    assert not report.usable
    errors = "\n".join(report.errors)
    assert "Train slice 0004" in errors and "mask is 3 x 3 but its image mask0004.png is 6 x 8" in errors
    assert "Train slice 0005" in errors and "mask has values {0, 128, 255}" in errors
    assert "Test: " in errors and "1 image(s) with no mask (e.g. mask0011.png)" in errors
    assert report.stacks[0].raw_sha256_16 is None  # no checksum over an incomplete stack


def test_blank_mask_among_non_blank_is_a_warning(lucchi_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_dataset("lucchi_pp"), "reference", {})
    save_grey(lucchi_root / "Test_Out" / "7.png", np.zeros((6, 8), np.uint8))
    report = check_dataset("lucchi_pp", lucchi_root, progress=False)
    assert report.usable
    assert report.stacks[1].blank_masks == ["0007"]
    assert any("Test: 1 blank mask(s) among 12 slices" in w and "0007" in w for w in report.warnings)


def test_vnc_check_reports_split_and_blank_mitochondria(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_vnc(tmp_path / "vnc", blank_mito=(1, 7, 18))
    monkeypatch.setattr(get_dataset("vnc"), "reference", {})
    report = check_dataset("vnc", root, progress=False)
    assert report.usable and report.stacks[0].n_slices == 20 and report.stacks[0].shape == "20 x 6 x 8"
    assert any("split 17/3" in line and "test 3: 00, 03, 08" in line for line in report.splits)
    assert any("blank masks on slices 01, 07, 18" in w for w in report.warnings)
    json.dumps(report.to_dict())  # the --json report is plain data


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Run `emfm data fetch vnc`"):
        check_dataset("vnc", tmp_path / "absent")


def test_16bit_raw_is_hashed_as_little_endian_bytes(tmp_path: Path) -> None:
    root = tmp_path / "f"
    arrs = [(index_image(i).astype(np.uint16) * 300) for i in range(3)]
    (root / "images").mkdir(parents=True)
    for i, a in enumerate(arrs):
        Image.fromarray(a).save(root / "images" / f"{i}.png")
        save_grey(root / "masks" / f"{i}.png", index_mask(i))
    report = check_dataset(f"folder:{root}", progress=False)
    assert report.stacks[0].dtype == "uint16"
    assert report.stacks[0].raw_sha256_16 == sha16([a.astype("<u2") for a in arrs])
