"""Resolve a Hugging Face hub id to local files through the hub cache, offline first.

Every hub exception is turned into one actionable line here (:class:`~emfm.errors.WeightsNotFoundError`,
:class:`~emfm.errors.GatedWeightsError` or :class:`~emfm.errors.DownloadError`), so the rest of emfm only
ever sees local paths. With ``HF_HUB_OFFLINE=1`` (read at call time, so tests and users may set it late)
nothing is fetched: files come from the cache or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from emfm._io import file_sha256
from emfm.errors import DownloadError, GatedWeightsError, WeightsNotFoundError

log = logging.getLogger(__name__)

# The weight files of a transformers model repository, in the order transformers prefers them.
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids network access right now."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE)


def cache_location(cache_dir: str | os.PathLike[str] | None) -> str:
    """The hub cache that is searched: ``cache_dir``, else ``$HF_HUB_CACHE`` / ``$HF_HOME/hub``."""
    if cache_dir:
        return str(Path(cache_dir).expanduser())
    env = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )
    if env:
        return env
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_cached(
    repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> bool:
    """Whether a repository's config and weights are in the hub cache; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    cache = cache_location(cache_dir)

    def cached(filename: str) -> str | None:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        return found if isinstance(found, str) else None

    if cached("config.json") is None:
        return False
    for name in WEIGHT_FILES:
        path = cached(name)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return True
        return all(cached(shard) for shard in _shards(Path(path)))
    return False


def resolve(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    display_name: str | None = None,
    gated: bool = False,
    official_file: str | None = None,
    official_url: str | None = None,
) -> tuple[Path, list[Path]]:
    """Return (snapshot directory, weight files) for a transformers repository on the hub.

    Each file comes from the cache when it is there; otherwise it is downloaded, unless offline.

    Raises:
        WeightsNotFoundError: not cached and offline / unreachable, or no such repository or revision.
        GatedWeightsError: the repository is gated and access has not been granted (or, offline, is gated
            and not cached).
        DownloadError: any other hub failure.
    """
    ctx = _Context(repo_id, revision, cache_location(cache_dir), display_name, gated, official_file, official_url)
    config = ctx.fetch("config.json")
    snapshot = config.parent
    for name in WEIGHT_FILES:
        path = ctx.fetch(name, optional=True)
        if path is None:
            continue
        if name.endswith(".index.json"):
            shards = [ctx.fetch(shard) for shard in _shards(path)]
            return snapshot, shards
        return snapshot, [path]
    if offline():
        raise ctx._not_cached("HF_HUB_OFFLINE is set, so nothing is downloaded")
    raise WeightsNotFoundError(
        f"hub repository {repo_id!r} has a config.json but none of {', '.join(WEIGHT_FILES)} "
        f"(cache searched: {ctx.cache}); pass a local model directory instead"
    )


def digest(files: Sequence[Path]) -> str:
    """A stable sha256 of weight files, cheap where the hub cache already knows it.

    A hub cache stores each large file as a blob named by the sha256 of its bytes, so a cached file's digest
    is read from its blob name; other files are hashed once. One file's digest is its own sha256 (so it can be
    checked against a published checksum); several files are combined as sha256 over "name sha256" lines.
    """
    sums = [(path.name, _file_sha256(path)) for path in sorted(files, key=lambda p: p.name)]
    if len(sums) == 1:
        return sums[0][1]
    joined = "\n".join(f"{name} {sha}" for name, sha in sums)
    return hashlib.sha256(joined.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    target = Path(os.path.realpath(path))
    if target != path.absolute() and target.parent.name == "blobs" and _SHA256.match(target.name):
        return target.name
    return file_sha256(target, chunk=1 << 24)


def _shards(index_file: Path) -> list[str]:
    import json

    weight_map = json.loads(index_file.read_text())["weight_map"]
    return sorted(set(weight_map.values()))


class _Context:
    """One resolution: the facts every error message needs, and the file fetcher."""

    def __init__(
        self,
        repo_id: str,
        revision: str | None,
        cache: str,
        display_name: str | None,
        gated: bool,
        official_file: str | None,
        official_url: str | None,
    ) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.cache = cache
        self.label = f"{display_name!r} (hub id {repo_id})" if display_name else f"hub id {repo_id!r}"
        self.gated = gated
        self.official_file = official_file
        self.official_url = official_url

    def fetch(self, filename: str, *, optional: bool = False) -> Path | None:
        from huggingface_hub import errors as hub_errors
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(self.repo_id, filename, cache_dir=self.cache, revision=self.revision)
        if isinstance(cached, str):
            return Path(cached)
        if cached is not None and optional:  # the cache records that the repo has no such file
            return None
        if offline():
            if optional:
                return None
            raise self._not_cached("HF_HUB_OFFLINE is set, so nothing is downloaded")
        log.info("downloading %s from the hub repository %s into %s", filename, self.repo_id, self.cache)
        try:
            path = hf_hub_download(self.repo_id, filename, revision=self.revision, cache_dir=self.cache)
        except hub_errors.GatedRepoError as exc:
            raise self._gated(f"the hub refused access ({_short(exc)})") from None
        except hub_errors.RepositoryNotFoundError:
            raise WeightsNotFoundError(
                f"{self.label}: no such repository on the Hugging Face hub, or it is private "
                "(run `hf auth login` if you have access); check the name or pass a local path"
            ) from None
        except hub_errors.RevisionNotFoundError:
            raise WeightsNotFoundError(
                f"{self.label}: revision {self.revision!r} does not exist; pass an existing revision= "
                "or leave it out for main"
            ) from None
        except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as exc:
            # the hub cannot be reached and the file is not cached (a subclass of EntryNotFoundError)
            raise self._not_cached(f"the hub could not be reached ({_short(exc)})") from None
        except hub_errors.EntryNotFoundError:
            if optional:
                return None
            raise WeightsNotFoundError(
                f"{self.label} has no file {filename!r}; it is not a transformers model repository. "
                "Pass a local directory or checkpoint file instead"
            ) from None
        except hub_errors.HfHubHTTPError as exc:
            raise DownloadError(f"{self.label}: downloading {filename!r} failed: {_short(exc)}") from None
        except OSError as exc:  # network errors below the hub client
            raise self._not_cached(f"the hub could not be reached ({_short(exc)})") from None
        return Path(path)

    def _not_cached(self, why: str) -> Exception:
        if self.gated:
            return self._gated(why)
        revision = f" at revision {self.revision}" if self.revision else ""
        return WeightsNotFoundError(
            f"weights for {self.label}{revision} are not in the Hugging Face cache {self.cache} and {why}. "
            f"Download them where there is network (`hf download {self.repo_id}`, or any emfm command "
            "without HF_HUB_OFFLINE=1), point cache_dir / HF_HUB_CACHE at a cache that has them, "
            "or pass a local model directory or official checkpoint file instead of the name"
        )

    def _gated(self, why: str) -> GatedWeightsError:
        official = ""
        if self.official_file:
            where = f" from {self.official_url}" if self.official_url else " from its publisher"
            official = f"request the official release file {self.official_file}{where} and pass its path, "
        return GatedWeightsError(
            f"weights for {self.label} are gated and not available here: {why}. To get them: accept the "
            f"licence on https://huggingface.co/{self.repo_id} while logged in, run `hf auth login` with a "
            f"token of that account, then run again with network so they land in the cache {self.cache} "
            f"(or copy such a cache there); or {official}or pass a downloaded model directory as a local path "
            "instead of the name"
        )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
