"""The dataset registry: names, facts in each module, and unknown names."""

from __future__ import annotations

import re
from typing import get_args

import pytest

import emfm.data.lucchi_pp as lucchi_pp
import emfm.data.vnc as vnc
from emfm.data import PAIRINGS, SPLITS, Pairing, Split, dataset_names, get_dataset, load_split
from emfm.data.folder import FolderDataset
from emfm.errors import UnknownNameError


def test_names() -> None:
    assert dataset_names() == ["lucchi_pp", "vnc"]


@pytest.mark.parametrize("module", [lucchi_pp, vnc])
def test_each_module_carries_its_facts(module) -> None:
    doc = module.__doc__ or ""
    for section in ("Citation:", "Licence:", "Download:", "Layout", "Split"):
        assert section in doc
    assert module.URL.startswith(("http://", "https://"))
    assert module.ARCHIVE_SHA256 is None or re.fullmatch(r"[0-9a-f]{64}", module.ARCHIVE_SHA256)
    ds = get_dataset(module.__name__.rsplit(".", 1)[1])
    assert ds.url == module.URL and ds.archive_sha256 == module.ARCHIVE_SHA256
    assert ds.citation and ds.licence and ds.reference == module.REFERENCE


def test_reference_checksums_are_the_readme_table() -> None:
    assert lucchi_pp.REFERENCE["Train"].raw == "45d77f092b5c6fba"
    assert lucchi_pp.REFERENCE["Test"].mask == "908b416bde9a726e"
    assert vnc.REFERENCE["stack1"].mask == "0707a89f8083bf59"


def test_unknown_name_lists_valid_names_and_folder() -> None:
    with pytest.raises(
        UnknownNameError,
        match=r"unknown dataset 'lucchi'.*Did you mean 'lucchi_pp'.*Valid names: lucchi_pp, vnc\. Or use folder:PATH",
    ):
        get_dataset("lucchi")
    with pytest.raises(KeyError):  # still a KeyError for callers that catch that
        load_split("mitoem", "train")


def test_folder_names_build_a_folder_dataset(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    ds = get_dataset(f"folder:{tmp_path}")
    assert isinstance(ds, FolderDataset) and ds.name == f"folder:{tmp_path}"


def test_pairings_and_splits_are_defined_once() -> None:
    assert PAIRINGS == get_args(Pairing) == ("by-number", "text-sorted")
    assert SPLITS == get_args(Split) == ("train", "val", "trainval", "test")
