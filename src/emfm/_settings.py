"""The one way emfm builds a typed config from a mapping: unknown keys named with their nearest valid
key, values checked against their choices and ranges, and the result saved back as YAML.

Training, analysis, prediction, studies and every adapter's own settings are frozen dataclasses that
inherit :class:`Settings`, so a typo anywhere (a study's ``analysis:`` block, ``--set``, a predict
setting) gives the same one-line :class:`~emfm.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from emfm.errors import ConfigError

S = TypeVar("S", bound="Settings")


def unknown_keys_message(unknown: Collection[str], known: Collection[str], what: str = "config") -> str:
    """``unknown config key 'epoch' (did you mean 'epochs'?); valid keys: ...``."""
    parts = []
    for key in sorted(unknown):
        near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        parts.append(f"{key!r} (did you mean {near[0]!r}?)" if near else repr(key))
    plural = "s" if len(parts) > 1 else ""
    return f"unknown {what} key{plural} {'; '.join(parts)}; valid keys: {', '.join(sorted(known))}"


def check_choice(name: str, value: Any, choices: Collection[Any], hint: str = "") -> None:
    """Raise a ConfigError naming ``name`` and the valid values unless ``value`` is one of ``choices``."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"unknown {name} {value!r}; use one of {listed}{hint}")


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    integer: bool = False,
) -> None:
    """Raise a ConfigError unless ``value`` is a number (an integer if asked) in the given range."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    low_bad = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    high_bad = maximum is not None and value > maximum
    if low_bad or high_bad:
        lo = "" if minimum is None else (f"> {minimum}" if exclusive_minimum else f">= {minimum}")
        hi = "" if maximum is None else f"<= {maximum}"
        raise ConfigError(f"{name} must be {' and '.join(x for x in (lo, hi) if x)}, got {value!r}")


class Settings:
    """Mixin for frozen dataclasses: build from a mapping with key hints, save as a dict or YAML."""

    #: What a key of this config is called in messages (``"analysis"`` -> "unknown analysis key").
    what: str = "config"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def check_keys(cls, data: Mapping[str, Any], extra: Collection[str] = ()) -> None:
        known = set(cls.field_names()) | set(extra)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(unknown_keys_message(unknown, known, cls.what))

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any] | None) -> S:
        data = dict(data or {})
        cls.check_keys(data)
        return cls(**data)

    def coerce_floats(self) -> None:
        """Turn numeric strings in float fields into floats: YAML 1.1 reads ``5e-4`` (no dot) as a
        string, and a user who typed ``--set lr=5e-4`` meant the number."""
        import typing

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, str) and hints.get(f.name) in (float, float | None):
                with contextlib.suppress(ValueError):  # left for the field's own check to report
                    object.__setattr__(self, f.name, float(value))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
