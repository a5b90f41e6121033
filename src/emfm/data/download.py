"""``emfm data fetch``: download a dataset's public archive, verify it, and unpack it atomically.

Steps, so that nothing half-written is ever where a reader would look:

1. stream the archive to a temporary file beside the destination, hashing as it arrives (a
   progress bar on stderr), and refuse a download shorter than its Content-Length;
2. check its sha256 against the dataset's :attr:`~emfm.data._datasets.EMDataset.archive_sha256`;
3. unpack into a temporary folder beside the destination and find the dataset's folders inside it
   (archives carry a top folder of their own, e.g. ``Lucchi++/``);
4. where the archive's sha256 is not known, verify the decoded stacks against the dataset's
   reference checksums instead;
5. ``os.replace`` that folder to the destination in one step, and remove the temporaries.

The URL can be overridden per call (``url=``, ``--url``) or by ``$EMFM_<NAME>_URL`` (e.g.
``EMFM_LUCCHI_PP_URL``), for mirrors and tests.

Limits, because a URL may serve anything: an archive larger than :data:`MAX_ARCHIVE_BYTES`, or one
whose members number more than :data:`MAX_MEMBERS` or unpack to more than :data:`MAX_UNPACKED_BYTES`
(a zip bomb), is refused before it fills the disk. A fetch holds a lock beside the destination while
it runs; the temporaries of a fetch that was killed (SIGKILL, a lost node) are removed by the next.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from emfm._io import DIR_MODE, current_umask
from emfm.data._datasets import EMDataset, PathArg
from emfm.data.registry import get_dataset
from emfm.errors import DataError, DownloadError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60

#: The largest archive fetched (the published datasets are well under 2 GB).
MAX_ARCHIVE_BYTES = 16 << 30
#: The most an archive may unpack to, and the most members it may hold.
MAX_UNPACKED_BYTES = 64 << 30
MAX_MEMBERS = 200_000


def url_env_var(name: str) -> str:
    """The environment variable that overrides a dataset's URL: ``EMFM_LUCCHI_PP_URL``."""
    return "EMFM_" + "".join(c if c.isalnum() else "_" for c in name.upper()) + "_URL"


def _by_hand(ds: EMDataset, dest: Path) -> str:
    return f"download it by hand and unpack it so that {dest} holds {ds.layout_summary()}"


def _download(url: str, target: Path, *, progress: bool) -> str:
    """Stream ``url`` into ``target``; return its sha256. Raises DownloadError on any failure."""
    from tqdm.auto import tqdm

    # urllib streams with the standard library alone; a short loop is all the download needs.
    h = hashlib.sha256()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp, open(target, "wb") as out:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > MAX_ARCHIVE_BYTES:
                raise DownloadError(f"{url} is {_size(expected)}, more than the {_size(MAX_ARCHIVE_BYTES)} limit")
            with tqdm(
                total=expected,
                unit="B",
                unit_scale=True,
                desc=Path(url.split("?")[0]).name or "download",
                disable=not progress,
                leave=False,
            ) as bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > MAX_ARCHIVE_BYTES:
                        raise DownloadError(f"{url} sends more than the {_size(MAX_ARCHIVE_BYTES)} limit; stopped")
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except DownloadError:
        raise
    except http.client.IncompleteRead as exc:
        raise DownloadError(f"download of {url} was cut short after {got + len(exc.partial)} bytes") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"could not download {url}: {reason}") from exc
    if expected is not None and got != expected:
        raise DownloadError(f"download of {url} was cut short: got {got} of {expected} bytes")
    return h.hexdigest()


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def _extract(archive: Path, into: Path, source: str) -> None:
    """Unpack the zip, after checking it does not hold more members or bytes than the limits allow."""
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise DownloadError(f"the archive from {source} holds {len(members)} members, more than the "
                                f"{MAX_MEMBERS} limit; it is not a dataset archive emfm knows")
        total = sum(m.file_size for m in members)
        if total > MAX_UNPACKED_BYTES:
            raise DownloadError(f"the archive from {source} unpacks to {_size(total)}, more than the "
                                f"{_size(MAX_UNPACKED_BYTES)} limit; it is not a dataset archive emfm knows")
        zf.extractall(into)  # zipfile drops absolute paths and '..' from member names


def _temporaries(dest: Path) -> str:
    """The name prefix of a fetch's temporaries beside ``dest`` (and how a later fetch finds them)."""
    return f".{dest.name}.fetch-"


@contextlib.contextmanager
def _fetch_lock(ds: EMDataset, dest: Path) -> Iterator[None]:
    """Hold the lock of fetches into ``dest``; once held, any temporaries beside it are left over from
    a fetch that died without cleaning up (SIGKILL), and are removed."""
    import filelock

    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_path = dest.parent / f".{dest.name}.fetch.lock"
    lock = filelock.FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DownloadError(
            f"another `emfm data fetch {ds.name}` into {dest} is running; wait for it to finish "
            f"(or, if none is, remove {lock_path})"
        ) from None
    try:
        for stale in dest.parent.glob(_temporaries(dest) + "*"):
            logger.info("removing %s, left by a fetch that did not finish", stale)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        yield
    finally:
        lock.release()
        lock_path.unlink(missing_ok=True)


def _verify_decoded(ds: EMDataset, root: Path, url: str) -> None:
    from emfm.data.check import CheckReport, _check_stack

    report = CheckReport(dataset=ds.name, root=str(root), mask_rule=ds.mask_rule.description)
    for stack in ds.stacks(root):
        _check_stack(ds, root, stack, report, progress=True)
    if report.errors:
        raise DownloadError(f"the archive from {url} does not hold the published {ds.name}: {report.errors[0]}")


def _destination(ds: EMDataset, root: PathArg | None, data_root: PathArg | None) -> Path:
    """Where the dataset goes: ``root`` itself, else its folder under ``data_root`` (``DIR/NAME``)."""
    if root is not None and data_root is not None:
        raise DataError(
            f"{ds.name}: got both a root ({root}) and a data root ({data_root}); pass either the folder to create "
            f"(--root) or the folder to create {ds.name}/ in (--data-root)."
        )
    return Path(root).expanduser() if root is not None else ds.root_under(data_root)


def _unpack(ds: EMDataset, source: str, expected: str | None, dest: Path, *, progress: bool) -> None:
    """Download, verify and unpack into temporaries beside ``dest``, then move into place in one step."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temporaries(dest), suffix=".download", dir=dest.parent)
    os.close(fd)
    archive = Path(tmp_name)
    unpacked = Path(tempfile.mkdtemp(prefix=_temporaries(dest), suffix=".unpack", dir=dest.parent))
    try:
        try:
            digest = _download(source, archive, progress=progress)
        except DownloadError as exc:
            raise DownloadError(f"{exc}. Check your connection, or {_by_hand(ds, dest)}.") from exc
        if expected is not None and digest != expected:
            raise DownloadError(
                f"the archive from {source} has sha256 {digest}, expected {expected}: it is corrupt or not the "
                f"published {ds.name}. Try again, or {_by_hand(ds, dest)}."
            )
        try:
            _extract(archive, unpacked, source)
        except (zipfile.BadZipFile, OSError) as exc:
            if isinstance(exc, DownloadError):
                raise
            raise DownloadError(f"the archive from {source} cannot be unpacked ({exc}).") from exc
        found = ds.find_root(unpacked)
        if found is None:
            raise DownloadError(f"the archive from {source} holds no {ds.layout_summary()}; {_by_hand(ds, dest)}.")
        if expected is None:
            logger.info("%s: no archive sha256 known; verifying the decoded stacks instead.", ds.name)
            _verify_decoded(ds, found, source)
        if dest.is_dir():
            dest.rmdir()  # empty (checked by the caller); os.replace cannot replace a folder otherwise everywhere
        os.replace(found, dest)
        os.chmod(dest, DIR_MODE & ~current_umask())  # mkdtemp's folder is private; a dataset is not
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)


def fetch_dataset(
    name: str,
    root: PathArg | None = None,
    *,
    data_root: PathArg | None = None,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download and unpack a registered dataset; return the folder it is in.

    Args:
        name: a registered dataset name (``lucchi_pp``, ``vnc``).
        root: the dataset's own folder to create. It must not exist or be empty; if it already holds
            the dataset, nothing is downloaded.
        data_root: what the user passed as ``--data-root``: the dataset goes to ``DIR/NAME``. With
            neither: ``$EMFM_DATA/NAME``, else the per-user directory.
        url: download from here instead (else ``$EMFM_<NAME>_URL``, else the dataset's URL).
        sha256: expected sha256 of the archive (else the dataset's :attr:`archive_sha256`; when that
            is None too, the decoded stacks are verified against the reference checksums instead).
        progress: progress bars on stderr.

    Raises:
        DownloadError: offline, network error, truncated download, checksum mismatch, an archive
            without the expected folders or over the size and member limits, or another fetch into
            the same place under way. Nothing is left at the destination then.
        DataError: ``name`` is a folder dataset, both ``root`` and ``data_root`` are given, or the
            destination holds something else.
    """
    ds = get_dataset(name)
    if ds.url is None:
        raise DataError(f"{ds.name}: has nothing to download; a folder dataset is already on your disk.")
    dest = _destination(ds, root, data_root)
    if dest.is_dir() and any(dest.iterdir()):
        if not ds.holds_dataset(dest):
            raise DataError(
                f"{dest} exists and is not empty, but does not hold {ds.name}; move it away or pass --root DIR."
            )
        logger.info("%s is already at %s; nothing downloaded.", ds.name, dest)
        return dest
    source = url or os.environ.get(url_env_var(ds.name)) or ds.url
    with _fetch_lock(ds, dest):
        _unpack(ds, source, sha256 or ds.archive_sha256, dest, progress=progress)
    logger.info("%s unpacked to %s", ds.name, dest)
    return dest
