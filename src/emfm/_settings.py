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
import functools
import numbers
import os
import types
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

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


def _accepts_float(hint: Any) -> bool:
    return hint is float or (_is_union(hint) and float in get_args(hint))


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _kind(hint: Any) -> str:
    """How a message names what ``hint`` wants: ``an integer``, ``a list of integers``..."""
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(hint):
        kinds = [_kind(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"a list of {_kind(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return "a mapping of keys to values"
    return f"a {getattr(hint, '__name__', hint)}"


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` names; a tuple field also takes one item or, for
    text items, a comma-separated string (the fields split them themselves)."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args) or (
            isinstance(value, int) and not isinstance(value, bool) and str(value) in args  # precision: 32
        )
    if _is_union(hint):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        item = args[0] if args else Any
        if isinstance(value, (list, tuple)):
            return all(_fits(v, item) for v in value)
        return _fits(value, item)  # one item for a list of them: the field makes it a tuple
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return isinstance(value, Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this check does not know: left to the field's own checks


def check_annotation(name: str, value: Any, hint: Any) -> None:
    """Raise a ConfigError naming ``name`` and what it takes unless ``value`` fits the annotation ``hint``.

    Messages match :func:`check_number` and :func:`check_choice` (``epochs must be an integer, got
    'ten'``; ``unknown loss 'l1'; use one of 'dice', 'dice_ce'``); a list whose items are wrong names
    the item (``layers (each) must be an integer, got 'a'``).
    """
    if _fits(value, hint):
        return
    try:
        _raise_misfit(name, value, hint)
    except ConfigError as exc:
        exc.field = name.removesuffix(" (each)")  # type: ignore[attr-defined]
        raise


def _raise_misfit(name: str, value: Any, hint: Any) -> None:
    options = [a for a in get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    if len(options) == 1:
        (inner,) = options
        if get_origin(inner) is Literal:
            check_choice(name, value, get_args(inner))
        if get_origin(inner) is tuple and isinstance(value, (list, tuple)) and get_args(inner):
            item = get_args(inner)[0]
            bad = next(v for v in value if not _fits(v, item))
            _raise_misfit(f"{name} (each)", bad, item)
        hint = inner  # "lr must be a number": that it may also be left out goes without saying
    path_like = hint is str and name.endswith(("_root", "_dir", "_path"))
    raise ConfigError(f"{name} must be {'a path' if path_like else _kind(hint)}, got {value!r}")


def _checked_post_init(own: Callable[[Any], None]) -> Callable[[Any], None]:
    """``own`` (a config's ``__post_init__``, with its ranges and combinations) after the annotation check.

    When a field has the wrong type, the field's own check, where it has one, usually words it
    better ("device must be a name such as 'cpu'..."), so its ConfigError wins if it names the same
    field; anything else it raises on the wrong value (a TypeError, or an error about another
    setting that the bad value led to) gives way to the annotation check's message.
    """

    @functools.wraps(own)
    def post_init(self: Any) -> None:
        try:
            self.check_fields()
        except ConfigError as generic:
            name = generic.field  # type: ignore[attr-defined]
            try:
                own(self)
            except ConfigError as specific:
                text = str(specific)
                if text.startswith((f"{name} ", f"unknown {name} ")):
                    raise specific from None
            except Exception:  # noqa: BLE001 (the wrong value broke the field's own check: ours says why)
                pass
            raise generic from None
        own(self)

    post_init._checks_fields = True  # type: ignore[attr-defined]
    return post_init


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap a subclass's own ``__post_init__`` so that every field is checked against its
        annotation too (see :meth:`_checked_post_init`), without each config having to ask."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_checks_fields", False):
            cls.__post_init__ = _checked_post_init(own)  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        self.check_fields()

    def check_fields(self) -> None:
        """Check every field against its annotation: a wrong type (``epochs: ten``, ``seed: [a]``,
        ``balance: maybe``) is one ConfigError naming the field and what it takes, instead of a
        TypeError deep in torch or in a comparison. Numeric strings in float fields become floats first."""
        import typing

        self.coerce_floats()
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check_annotation(f.name, getattr(self, f.name), hints.get(f.name, Any))

    def coerce_floats(self) -> None:
        """Turn numeric strings in float fields into floats: YAML 1.1 reads ``5e-4`` (no dot) as a
        string, and a user who typed ``--set lr=5e-4`` meant the number."""
        import typing

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, str) and _accepts_float(hints.get(f.name)):
                with contextlib.suppress(ValueError):  # left for the type check to report
                    object.__setattr__(self, f.name, float(value))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
