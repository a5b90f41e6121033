"""fetch_dataset against a local HTTP server: success, bad checksum, truncation, unreachable, atomicity."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from emfm.data import fetch_dataset, get_dataset
from emfm.data.download import url_env_var
from emfm.errors import DataError, DownloadError
from tests.data.synth_data import expected_lucchi, make_lucchi


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/")
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name.startswith("truncated"):
            self.wfile.write(body[: len(body) // 2])  # fewer bytes than Content-Length, then hang up
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


def _zip_of(folder: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top}/{p.relative_to(folder)}")
        zf.writestr("__MACOSX/._junk", b"junk")
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """A tiny Lucchi++-like zip with the archive's top folder, and its sha256."""
    data = _zip_of(make_lucchi(tmp_path_factory.mktemp("src") / "l", n=3), "Lucchi++")
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def server(archive: tuple[bytes, str]) -> Iterator[str]:
    data, _ = archive
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    _Handler.files = {
        "ok.zip": data,
        "corrupt.zip": bytes(corrupt),
        "truncated.zip": data,
        "empty-layout.zip": _plain_zip(),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _plain_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", b"no dataset here")
    return buf.getvalue()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_fetch_unpacks_into_place(tmp_path: Path, server: str, archive: tuple[bytes, str]) -> None:
    dest = tmp_path / "data" / "lucchi_pp"
    out = fetch_dataset("lucchi_pp", dest, url=f"{server}/ok.zip", sha256=archive[1], progress=False)
    assert out == dest
    assert sorted(p.name for p in dest.iterdir()) == ["Test_In", "Test_Out", "Train_In", "Train_Out"]
    assert len(get_dataset("lucchi_pp").list_slices(dest, "Train")) == 3
    assert _leftovers(dest.parent) == ["lucchi_pp"]  # no temporary file or folder left beside it


def test_env_var_overrides_the_url(
    tmp_path: Path, server: str, archive: tuple[bytes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert url_env_var("lucchi_pp") == "EMFM_LUCCHI_PP_URL"
    monkeypatch.setenv("EMFM_LUCCHI_PP_URL", f"{server}/ok.zip")
    fetch_dataset("lucchi_pp", tmp_path / "l", sha256=archive[1], progress=False)
    assert (tmp_path / "l" / "Test_Out").is_dir()


def test_corrupt_archive_leaves_nothing(tmp_path: Path, server: str, archive: tuple[bytes, str]) -> None:
    dest = tmp_path / "d" / "lucchi_pp"
    with pytest.raises(
        DownloadError, match=rf"corrupt\.zip has sha256 [0-9a-f]{{64}}, expected {archive[1]}: it is corrupt"
    ):
        fetch_dataset("lucchi_pp", dest, url=f"{server}/corrupt.zip", sha256=archive[1], progress=False)
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_truncated_download_leaves_nothing(tmp_path: Path, server: str, archive: tuple[bytes, str]) -> None:
    dest = tmp_path / "d" / "lucchi_pp"
    with pytest.raises(DownloadError, match=r"download of .*truncated\.zip was cut short"):
        fetch_dataset("lucchi_pp", dest, url=f"{server}/truncated.zip", sha256=archive[1], progress=False)
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_unreachable_url_is_one_line_with_the_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/lucchi_pp.zip"
    with pytest.raises(DownloadError) as info:
        fetch_dataset("lucchi_pp", tmp_path / "x" / "lucchi_pp", url=url, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"could not download {url}: ")
    assert (
        "download it by hand and unpack it so that" in message
        and "holds Train_In, Train_Out, Test_In, Test_Out" in message
    )
    assert _leftovers(tmp_path / "x") == []


def test_http_error_names_the_url(tmp_path: Path, server: str) -> None:
    with pytest.raises(DownloadError, match=r"could not download .*/missing\.zip: Not Found"):
        fetch_dataset("lucchi_pp", tmp_path / "m", url=f"{server}/missing.zip", progress=False)


def test_archive_without_the_dataset(tmp_path: Path, server: str) -> None:
    data = _Handler.files["empty-layout.zip"]
    with pytest.raises(DownloadError, match=r"empty-layout\.zip holds no Train_In, Train_Out, Test_In, Test_Out"):
        fetch_dataset(
            "lucchi_pp",
            tmp_path / "e" / "lucchi_pp",
            url=f"{server}/empty-layout.zip",
            sha256=hashlib.sha256(data).hexdigest(),
            progress=False,
        )
    assert _leftovers(tmp_path / "e") == []


def test_unknown_archive_sha_verifies_decoded_data(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = get_dataset("lucchi_pp")
    monkeypatch.setattr(ds, "archive_sha256", None)
    # the synthetic archive is not the published Lucchi++: the decoded check must refuse it
    with pytest.raises(
        DownloadError, match=r"does not hold the published lucchi_pp: Train: .* differ from the reference data"
    ):
        fetch_dataset("lucchi_pp", tmp_path / "u" / "lucchi_pp", url=f"{server}/ok.zip", progress=False)
    assert _leftovers(tmp_path / "u") == []
    # with references that describe it, the same archive is accepted
    monkeypatch.setattr(ds, "reference", {s: expected_lucchi(s, n=3) for s in ("Train", "Test")})
    fetch_dataset("lucchi_pp", tmp_path / "u" / "lucchi_pp", url=f"{server}/ok.zip", progress=False)
    assert (tmp_path / "u" / "lucchi_pp" / "Train_In").is_dir()


def test_present_dataset_is_not_downloaded_again(lucchi_root: Path) -> None:
    assert fetch_dataset("lucchi_pp", lucchi_root, url="http://127.0.0.1:9/never", progress=False) == lucchi_root


def test_non_empty_foreign_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"busy exists and is not empty, but does not hold lucchi_pp"):
        fetch_dataset("lucchi_pp", tmp_path / "busy", url="http://127.0.0.1:9/never", progress=False)


def test_folder_datasets_cannot_be_fetched(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"has nothing to download"):
        fetch_dataset(f"folder:{tmp_path}")


# -- limits and leftovers, through `emfm data fetch` -------------------------------------------------------


def _fetch(dest: Path, url: str) -> list[str]:
    return ["data", "fetch", "lucchi_pp", "--root", str(dest), "--url", url, "--no-progress"]


@pytest.fixture
def published(archive: tuple[bytes, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test archive as the one lucchi_pp publishes (the CLI checks the registered sha256)."""
    monkeypatch.setattr(get_dataset("lucchi_pp"), "archive_sha256", archive[1])


@pytest.mark.parametrize(
    "limit,value,message",
    [("MAX_ARCHIVE_BYTES", 100, r"ok\.zip is \d+ bytes, more than the 100 bytes limit"),
     ("MAX_MEMBERS", 3, r"holds \d+ members, more than the 3 limit"),
     ("MAX_UNPACKED_BYTES", 1000, r"unpacks to \d+ bytes, more than the 1000 bytes limit")],
)
def test_an_archive_over_a_limit_is_refused_and_leaves_nothing(
    tmp_path: Path, server: str, published: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], limit: str, value: int, message: str,
) -> None:
    import re

    from emfm.cli import main
    from emfm.data import download

    monkeypatch.setattr(download, limit, value)
    dest = tmp_path / "data" / "lucchi_pp"
    assert main(_fetch(dest, f"{server}/ok.zip")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emfm: error: ") and "\n" not in err and re.search(message, err), err
    assert _leftovers(dest.parent) == []


def test_a_fetch_removes_what_a_killed_fetch_left(
    tmp_path: Path, server: str, published: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from emfm.cli import main

    parent = tmp_path / "data"
    (parent / ".lucchi_pp.fetch-k1ll3d.unpack" / "Lucchi++").mkdir(parents=True)
    (parent / ".lucchi_pp.fetch-k1ll3d.download").write_bytes(b"half an archive")
    (parent / ".vnc.fetch-other.download").write_bytes(b"another dataset's, not ours to remove")
    assert main(_fetch(parent / "lucchi_pp", f"{server}/ok.zip")) == 0
    assert _leftovers(parent) == [".vnc.fetch-other.download", "lucchi_pp"]
    assert f"lucchi_pp is at {parent / 'lucchi_pp'}" in capsys.readouterr().out


def test_a_second_fetch_into_the_same_place_is_refused_while_one_runs(
    tmp_path: Path, server: str, published: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import filelock

    from emfm.cli import main

    parent = tmp_path / "data"
    parent.mkdir()
    (parent / ".lucchi_pp.fetch-running.download").write_bytes(b"being written")
    with filelock.FileLock(parent / ".lucchi_pp.fetch.lock", thread_local=False):
        assert main(_fetch(parent / "lucchi_pp", f"{server}/ok.zip")) == 2
    err = capsys.readouterr().err.strip()
    assert "another `emfm data fetch lucchi_pp` into" in err and "is running" in err
    assert (parent / ".lucchi_pp.fetch-running.download").read_bytes() == b"being written"  # not its to remove
    assert not (parent / "lucchi_pp").exists()
