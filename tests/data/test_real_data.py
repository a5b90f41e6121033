"""The real data in ../shared: a few slices fast, the whole check (README checksums) when slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emfm.data import check_dataset, get_dataset, load_split, read_image
from emfm.data._datasets import read_pair

LUCCHI = get_dataset("lucchi_pp")
VNC = get_dataset("vnc")


@pytest.fixture(scope="module")
def lucchi_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "lucchi_pp"


@pytest.fixture(scope="module")
def vnc_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "vnc"


def test_real_lucchi_files_decode_as_documented(lucchi_dir: Path) -> None:
    raw = read_image(lucchi_dir / "Train_In" / "mask0000.webp")  # RGB WebP with R = G = B
    assert raw.shape == (768, 1024) and raw.dtype == np.uint8
    rgba = read_image(lucchi_dir / "Test_Out" / "0.png")
    assert set(np.unique(rgba)) == {0, 255}
    for stack in ("Train", "Test"):
        slices = LUCCHI.list_slices(lucchi_dir, stack)
        assert len(slices) == 165 and slices[10].image.name == "mask0010.webp" and slices[10].mask.name == "10.png"
        for r in (read_pair(s, LUCCHI.mask_rule) for s in slices[:2]):
            assert r.mask.shape == r.image.shape and set(np.unique(r.mask)) <= {0, 1}


@pytest.mark.parametrize("stack", ["Train", "Test"])
def test_text_sorted_gives_2_of_165_their_own_mask(lucchi_dir: Path, stack: str) -> None:
    slices = LUCCHI.list_slices(lucchi_dir, stack, pairing="text-sorted")
    own = [s.id for s in slices if int(s.mask.stem) == int(s.id)]
    assert len(slices) == 165 and own == ["0000", "0001"]


def test_real_vnc_pairs_and_mitochondria_warning(vnc_dir: Path) -> None:
    slices = VNC.list_slices(vnc_dir, "stack1")
    assert [s.id for s in slices] == [f"{i:02d}" for i in range(20)]
    r = read_pair(slices[1], VNC.mask_rule)
    assert r.image.shape == (1024, 1024) and 0.05 < r.mask.mean() < 0.08
    (warning,) = VNC.extra_checks(vnc_dir, progress=False)
    assert "masks 01, 07, 18 are 1-bit PNGs" in warning and "5bf56ac64336f8c3" in warning


@pytest.mark.slow
def test_real_check_matches_the_readme(lucchi_dir: Path, vnc_dir: Path) -> None:
    lucchi = check_dataset("lucchi_pp", lucchi_dir, progress=False)
    assert lucchi.usable, lucchi.errors
    got = {s.stack: (s.shape, s.raw_sha256_16, s.mask_sha256_16, s.foreground) for s in lucchi.stacks}
    assert got == {
        "Train": ("165 x 768 x 1024", "45d77f092b5c6fba", "2d930068c1450966", "7.00%"),
        "Test": ("165 x 768 x 1024", "82c7ad7059f66349", "908b416bde9a726e", "6.69%"),
    }
    vnc = check_dataset("vnc", vnc_dir, progress=False)
    (s,) = vnc.stacks
    assert vnc.usable and (s.shape, s.raw_sha256_16, s.mask_sha256_16, s.foreground) == (
        "20 x 1024 x 1024",
        "b845f8b459993f5c",
        "0707a89f8083bf59",
        "5.38%",
    )
    assert any("01, 07, 18" in w for w in vnc.warnings)


@pytest.mark.slow
def test_real_text_sorted_ablation_by_content(lucchi_dir: Path) -> None:
    right = load_split("lucchi_pp", "trainval", lucchi_dir, progress=False)
    wrong = load_split("lucchi_pp", "trainval", lucchi_dir, pairing="text-sorted", progress=False)
    same = [sid for sid, a, b in zip(right.ids, right.masks, wrong.masks) if np.array_equal(a, b)]
    assert wrong.pairing == "text-sorted" and same == ["0000", "0001"]
    assert [len(load_split("lucchi_pp", s, lucchi_dir, progress=False)) for s in ("train", "val")] == [149, 16]
