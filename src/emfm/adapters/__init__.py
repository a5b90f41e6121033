"""Ways of adapting a backbone, as registered objects (see :mod:`emfm.adapters._base`).

Importing this package registers the built-in adapters; :func:`create_adapter` builds one from a
name and its settings. A new method is one module with an ``@register_adapter`` class, imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emfm.adapters import frozen, lora, scratch  # noqa: F401  (registers the built-in adapters)
from emfm.adapters._base import ADAPTERS, Adapter, NoSettings, TrainsOn, register_adapter


def adapter_names() -> list[str]:
    return ADAPTERS.names()


def create_adapter(name: str, settings: Mapping[str, Any] | None = None) -> Adapter:
    """Build a registered adapter; an unknown name lists the valid ones with the nearest first."""
    return ADAPTERS.get(name)(settings)


def flat_setting_keys() -> dict[str, tuple[str, str]]:
    """Every flat config key ``<adapter>_<field>`` (``lora_rank``...) -> (adapter, field)."""
    keys: dict[str, tuple[str, str]] = {}
    for name, cls in ADAPTERS.items():
        for field in cls.settings_type.field_names():
            keys[f"{name.replace('-', '_')}_{field}"] = (name, field)
    return keys


__all__ = [
    "ADAPTERS", "Adapter", "NoSettings", "TrainsOn", "adapter_names", "create_adapter", "flat_setting_keys",
    "register_adapter",
]
