"""Name + --data-root -> dataset: the parent-folder reading, $EMFM_DATA, folder:PATH, one root only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import emfm.data
from emfm.data import ResolvedDataset, check_dataset, fetch_dataset, get_dataset, load_split, resolve_dataset
from emfm.data.folder import FolderDataset
from emfm.errors import DataError, UnknownNameError
from tests.data.synth_data import index_image, index_mask, make_lucchi, save_grey


def make_user_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        save_grey(root / "images" / f"s{i}.png", index_image(i))
        save_grey(root / "masks" / f"s{i}.png", index_mask(i) * 255)
    return root


def test_data_root_is_the_parent_of_the_dataset_folders(lucchi_root: Path) -> None:
    resolved = resolve_dataset("lucchi_pp", lucchi_root.parent)
    assert isinstance(resolved, ResolvedDataset)
    dataset, root = resolved
    assert dataset is get_dataset("lucchi_pp") and root == lucchi_root
    assert resolve_dataset("lucchi_pp", str(lucchi_root.parent)).root == lucchi_root


def test_load_split_takes_the_data_root(lucchi_full: Path) -> None:
    stack = load_split("lucchi_pp", "val", data_root=lucchi_full.parent, progress=False)
    assert len(stack) == 16 and stack.meta["root"] == str(lucchi_full)


def test_env_is_the_default_data_root_and_an_explicit_one_wins(
    lucchi_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMFM_DATA", str(lucchi_root.parent))
    assert resolve_dataset("lucchi_pp").root == lucchi_root
    elsewhere = make_lucchi(tmp_path / "other" / "lucchi_pp", n=2)
    assert resolve_dataset("lucchi_pp", tmp_path / "other").root == elsewhere
    monkeypatch.setenv("EMFM_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"no dataset at .*empty/lucchi_pp \(it does not exist"):
        resolve_dataset("lucchi_pp")


def test_a_dataset_root_still_works_and_not_with_a_data_root(lucchi_root: Path) -> None:
    assert resolve_dataset("lucchi_pp", root=lucchi_root).root == lucchi_root
    with pytest.raises(DataError, match=r"got both a root .* and a data root .*; pass either"):
        resolve_dataset("lucchi_pp", lucchi_root.parent, root=lucchi_root)


def test_data_root_that_is_the_dataset_itself_says_to_pass_its_parent(lucchi_root: Path) -> None:
    with pytest.raises(DataError, match=r"is the lucchi_pp folder itself: pass .* as --data-root"):
        resolve_dataset("lucchi_pp", lucchi_root)
    with pytest.raises(DataError, match=r"is the lucchi_pp folder itself"):
        load_split("lucchi_pp", "test", data_root=lucchi_root)


def test_unknown_name_is_reported_before_any_path(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'lucci_pp'.*Did you mean 'lucchi_pp'"):
        resolve_dataset("lucci_pp", tmp_path)


def test_folder_path_is_not_under_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_user_folder(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    dataset, root = resolve_dataset("folder:mine", tmp_path / "data")
    assert isinstance(dataset, FolderDataset) and root == Path("mine")
    stack = load_split("folder:mine", "trainval", data_root=tmp_path / "data", progress=False)
    assert stack.ids == ["s0", "s1", "s2"]


def test_folder_with_two_folders_and_folder_with_a_comma_in_its_path(tmp_path: Path) -> None:
    make_user_folder(tmp_path / "d")
    images, masks = tmp_path / "d" / "images", tmp_path / "d" / "masks"
    dataset, root = resolve_dataset(f"folder:{images},{masks}", tmp_path / "data")
    assert dataset.stacks(root) == ["trainval"] and dataset.stack_label("trainval") == f"trainval ({images} + {masks})"
    comma = make_user_folder(tmp_path / "a,b")  # an existing path with a comma is a path, not two folders
    dataset, root = resolve_dataset(f"folder:{comma}")
    assert root == comma and len(dataset.list_slices(root, "trainval")) == 3


def test_folder_refuses_a_root_of_its_own(tmp_path: Path) -> None:
    make_user_folder(tmp_path / "mine")
    with pytest.raises(DataError, match=r"a folder dataset carries its own path; do not pass a root"):
        resolve_dataset(f"folder:{tmp_path / 'mine'}", root=tmp_path)


def test_check_reads_data_root_both_ways(lucchi_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert check_dataset("lucchi_pp", data_root=lucchi_root.parent, progress=False).root == str(lucchi_root)
    with caplog.at_level("INFO", logger="emfm.data.check"):
        report = check_dataset("lucchi_pp", data_root=lucchi_root, progress=False)
    assert report.root == str(lucchi_root) and "holds lucchi_pp itself" in caplog.text
    with pytest.raises(DataError, match=r"folder dataset carries its own path; do not pass --data-root"):
        check_dataset(f"folder:{make_user_folder(lucchi_root.parent / 'mine')}", data_root=lucchi_root.parent)


def test_fetch_goes_under_the_data_root(lucchi_root: Path, tmp_path: Path) -> None:
    never = "http://127.0.0.1:9/never"  # nothing is downloaded when the dataset is already there
    assert fetch_dataset("lucchi_pp", data_root=lucchi_root.parent, url=never, progress=False) == lucchi_root
    with pytest.raises(DataError, match=r"got both a root .* and a data root"):
        fetch_dataset("lucchi_pp", tmp_path / "x", data_root=tmp_path, url=never, progress=False)


def test_base_module_imports_no_concrete_dataset() -> None:
    code = (
        "import sys, emfm.data._datasets\n"
        "loaded = [m for m in ('emfm.data.lucchi_pp', 'emfm.data.vnc', 'emfm.data.folder') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from emfm.data import dataset_names\n"
        "assert dataset_names() == ['lucchi_pp', 'vnc'] and 'emfm.data.lucchi_pp' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def _data_imports() -> dict[str, set[str]]:
    """Each emfm.data module -> the emfm.data modules it imports, at any depth of its code."""
    package = Path(emfm.data.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[path.stem] = {m.split(".")[2] for m in found if m.startswith("emfm.data.")}
    return graph


def test_no_import_cycle_among_the_data_modules() -> None:
    graph = _data_imports()
    assert not graph["_datasets"] & {"lucchi_pp", "vnc", "folder", "registry"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(m == goal or (m not in seen and reaches(m, goal, seen | {m})) for m in graph.get(start, ()))

    cycles = sorted(m for m in graph if m != "__init__" and reaches(m, m, {m}))
    assert cycles == []
