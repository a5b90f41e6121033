"""Where emfm keeps data, caches and runs when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-root``, else ``$EMFM_DATA``, else the per-user data directory (platformdirs)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("EMFM_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("emfm")) / "data"


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Feature cache: ``explicit``, else ``$EMFM_CACHE``, else the per-user cache directory."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("EMFM_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("emfm"))
