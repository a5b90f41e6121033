"""Typed, self-validating configuration for a training run; YAML with dotted overrides.

Resolved once at the edge (CLI or study runner), saved with the run, then handed to the library.
Cross-field checks raise :class:`~emfm.errors.ConfigError` with the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emfm import __version__
from emfm.errors import ConfigError

Adapter = Literal["frozen", "lora"]
Pairing = Literal["by-number", "text-sorted"]
Normalisation = Literal["backbone", "imagenet"]
Precision = Literal["32", "bf16"]


def split_names(value: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (folder:PATH names keep their own commas only
    when given as a list)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


@dataclass(frozen=True)
class TrainConfig:
    """One training run: which backbone, how adapted, trained on what, tested on what.

    Defaults follow the study's protocol (docs/protocol.md) except ``resolution`` and ``head``, which
    default to CPU-friendly values; ``configs/study.yaml`` sets the published ones (1022, deconv).
    """

    backbone: str
    train: tuple[str, ...]
    test: tuple[str, ...] = ()
    adapter: Adapter = "frozen"
    head: str = "linear"
    resolution: int = 518
    epochs: int = 100
    patience: int = 20
    seed: int = 0
    batch_size: int = 2
    lr: float = 5e-5
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    balance: bool = False
    pairing: Pairing = "by-number"
    normalisation: Normalisation = "imagenet"
    intensity: Literal["dtype", "minmax"] = "dtype"
    precision: Precision = "32"
    data_root: str | None = None
    cache_dir: str | None = None
    max_train_slices: int | None = None
    emfm_version: str = field(default=__version__, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(split_names(self.train)))
        object.__setattr__(self, "test", tuple(split_names(self.test)) or tuple(self.train))
        if not self.train:
            raise ConfigError("no training set given; pass --train NAME[,NAME...] (e.g. lucchi_pp)")
        if self.adapter not in ("frozen", "lora"):
            raise ConfigError(f"unknown adapter {self.adapter!r}; use 'frozen' or 'lora'")
        if self.pairing not in ("by-number", "text-sorted"):
            raise ConfigError(f"unknown pairing {self.pairing!r}; use 'by-number' (correct) or 'text-sorted'")
        if self.normalisation not in ("backbone", "imagenet"):
            raise ConfigError(f"unknown normalisation {self.normalisation!r}; use 'backbone' or 'imagenet'")
        if str(self.precision) not in ("32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}; use '32' or 'bf16'")
        object.__setattr__(self, "precision", str(self.precision))
        for name in ("epochs", "batch_size", "resolution", "lora_rank"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.balance and len(self.train) < 2:
            raise ConfigError("--balance needs at least two training sets (e.g. --train lucchi_pp,vnc)")

    # -- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = list(self.train)
        d["test"] = list(self.test)
        return d

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            import difflib

            hints = [difflib.get_close_matches(u, known, n=1) for u in unknown]
            hint = "; ".join(f"{u!r} (did you mean {h[0]!r}?)" if h else repr(u) for u, h in zip(unknown, hints))
            raise ConfigError(f"unknown config key(s) {hint}; valid keys: {', '.join(sorted(known))}")
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        return cls.from_dict(apply_overrides(load_yaml(path), overrides))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` (or ``a.b=value`` for nested mappings) overrides; values parsed as YAML."""
    import yaml

    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        parts = key.strip().split(".")
        node: dict[str, Any] = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = value
    return out
