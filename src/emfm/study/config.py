"""The study configuration: which grid to run, with which shared settings.

A study YAML names lists (``backbones``, ``adapters``, ``heads``, ``train_sets``, ``seeds`` and, to
sweep how many labelled slices a run gets, ``label_budgets``: numbers or ``all``; and ``aligns``, the
domain-alignment methods of :mod:`emfm.align`, applied to the runs trained on several sets), the
``test_sets`` every run is scored on (or ``own``: each run on the sets it was trained on),
``cv_folds`` (K: every cell runs once per fold of a K-fold cross-validation over its training sets'
labelled slices, beside its seeds; absent, the published split),
``defaults`` (any TrainConfig key, shared by all runs),
``adapter_overrides`` (e.g. a lower resolution for LoRA on a CPU), ``ablations`` (extra, labelled
cells such as ``pairing: text-sorted``) and ``analysis`` (run once per backbone). Relative paths are
taken from the current directory and saved resolved with the study.

A from-scratch backbone (``unet``) has no adapter or head to cross with: it adds one cell per training
set, seed and budget, whatever the ``adapters`` and ``heads`` lists hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emfm._settings import check_annotation, check_number, unknown_keys_message
from emfm.analysis.config import AnalysisConfig
from emfm.config import TrainConfig, apply_overrides, load_yaml, split_names
from emfm.errors import ConfigError

#: ``test_sets: own`` scores each run on its own training sets (label-efficiency studies, one set at a time).
OWN_TEST_SETS = "own"


@dataclass(frozen=True)
class Ablation:
    """Extra grid cells that differ from the main grid in labelled settings (e.g. pairing)."""

    name: str
    settings: Mapping[str, Any]
    backbones: tuple[str, ...] = ()
    adapters: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    train_sets: tuple[tuple[str, ...], ...] = ()
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class StudyConfig:
    name: str
    backbones: tuple[str, ...]
    adapters: tuple[str, ...]
    heads: tuple[str, ...]
    train_sets: tuple[tuple[str, ...], ...]
    test_sets: tuple[str, ...]
    seeds: tuple[int, ...]
    label_budgets: tuple[int | None, ...] = (None,)
    aligns: tuple[str, ...] = ("none",)
    cv_folds: int | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    adapter_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ablations: tuple[Ablation, ...] = ()
    analysis: AnalysisConfig | None = None  # backbone, data_root, cache_dir: filled in per backbone
    description: str = ""

    def __post_init__(self) -> None:
        for key in ("backbones", "adapters", "heads", "train_sets", "test_sets", "seeds"):
            if not getattr(self, key):
                raise ConfigError(f"study {self.name!r}: {key} is empty; list at least one")
        train_keys = TrainConfig.accepted_keys()  # asked now: adapters registered after import count too
        bad = set(self.defaults) - train_keys
        for over in self.adapter_overrides.values():
            bad |= set(over) - train_keys
        for ab in self.ablations:
            bad |= set(ab.settings) - train_keys
        if bad:
            raise ConfigError(f"study {self.name!r}: {unknown_keys_message(bad, train_keys, 'run setting')}")
        if self.cv_folds is not None:
            check_number("cv_folds", self.cv_folds, minimum=2, integer=True)
        grid_keys = {"backbone", "adapter", "head", "train", "test", "seed", "label_budget", "align", "cv_folds",
                     "cv_fold"} & set(
            self.defaults
        )
        if grid_keys:
            raise ConfigError(f"study {self.name!r}: {sorted(grid_keys)} belong in the grid lists, not in defaults")
        from emfm.adapters import ADAPTERS
        from emfm.align import ALIGNMENTS

        for align in self.aligns:
            if align not in ALIGNMENTS:
                raise ConfigError(f"study {self.name!r}: {ALIGNMENTS.unknown_message(align)}")

        for adapter in [*self.adapters, *self.adapter_overrides, *(a for ab in self.ablations for a in ab.adapters)]:
            if adapter not in ADAPTERS:
                raise ConfigError(f"study {self.name!r}: {ADAPTERS.unknown_message(adapter)}")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
        data = apply_overrides(load_yaml(path), overrides)
        data.setdefault("name", Path(path).stem)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown study key(s) {unknown}; valid keys: {', '.join(sorted(known))}")
        d = dict(data)
        d["backbones"] = tuple(_resolve_path(b) for b in _names("backbones", d.get("backbones")))
        d["adapters"] = tuple(_names("adapters", d.get("adapters", ["frozen"])))
        d["heads"] = tuple(_names("heads", d.get("heads", ["linear"])))
        d["train_sets"] = _train_sets("train_sets", d.get("train_sets"))
        tests = d.get("test_sets")
        d["test_sets"] = tuple(split_names(tests) if isinstance(tests, str) else _names("test_sets", tests))
        d["seeds"] = _seeds("seeds", d.get("seeds", [0]))
        d["label_budgets"] = _label_budgets(d.get("label_budgets"))
        d["aligns"] = tuple(_names("aligns", d.get("aligns", ["none"]))) or ("none",)
        defaults = dict(_mapping("defaults", d.get("defaults")))
        for key in ("data_root", "cache_dir"):
            if defaults.get(key):
                check_annotation(f"defaults.{key}", defaults[key], str)
                defaults[key] = str(Path(defaults[key]).expanduser().resolve())
        d["defaults"] = defaults
        overrides = _mapping("adapter_overrides", d.get("adapter_overrides"))
        d["adapter_overrides"] = {k: dict(_mapping(f"adapter_overrides.{k}", v)) for k, v in overrides.items()}
        d["ablations"] = tuple(_ablation(item) for item in _listify(d.get("ablations")))
        d["analysis"] = _analysis_config(d.get("analysis"))
        for key in ("name", "description"):
            if key in d:
                check_annotation(key, d[key], str)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train_sets"] = [list(t) for t in self.train_sets]
        d["ablations"] = [
            {"name": a.name, "backbones": list(a.backbones), "adapters": list(a.adapters), "heads": list(a.heads),
             "train_sets": [list(t) for t in a.train_sets], "seeds": list(a.seeds), **dict(a.settings)}
            for a in self.ablations
        ]
        for key in ("backbones", "adapters", "heads", "test_sets", "seeds", "aligns"):
            d[key] = list(d[key])
        d["label_budgets"] = ["all" if b is None else b for b in self.label_budgets]
        if self.analysis is not None:
            d["analysis"] = {k: v for k, v in self.analysis.to_dict().items() if k not in _STUDY_FILLS}
        return d

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _listify(value: Any) -> list[Any]:
    """A YAML list, or one item given without brackets (``seeds: 0``), as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _names(key: str, value: Any) -> list[str]:
    names = _listify(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"study {key} holds {name!r}; list names (e.g. {key}: [a, b])")
    return names


def _train_sets(key: str, value: Any) -> tuple[tuple[str, ...], ...]:
    """Each entry one training set or several trained on together (``lucchi_pp,vnc`` or a list)."""
    out = []
    for item in _listify(value):
        if isinstance(item, str):
            out.append(tuple(split_names(item)))
        else:
            out.append(tuple(_names(f"{key} entry", item)))
    return tuple(out)


def _seeds(key: str, value: Any) -> tuple[int, ...]:
    seeds = _listify(value)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"study {key} holds {seed!r}; give whole numbers 0 or more (e.g. {key}: [0, 1, 2])")
    return tuple(seeds)


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"study {key} must be a mapping of settings to values (key: value lines), got {value!r}")
    return value


def _ablation(item: Any) -> Ablation:
    item = dict(_mapping("ablations entry", item))
    name = item.pop("name", None)
    if not name or not isinstance(name, str):
        raise ConfigError("every ablation needs a name (it labels the rows it adds)")
    return Ablation(
        name=name,
        backbones=tuple(_resolve_path(b) for b in _names("ablation backbones", item.pop("backbones", []))),
        adapters=tuple(_names("ablation adapters", item.pop("adapters", []))),
        heads=tuple(_names("ablation heads", item.pop("heads", []))),
        train_sets=_train_sets("ablation train_sets", item.pop("train_sets", [])),
        seeds=_seeds("ablation seeds", item.pop("seeds", [])),
        settings=item,
    )


def _label_budgets(value: Any) -> tuple[int | None, ...]:
    """``[1, 4, all]`` -> ``(1, 4, None)``; absent -> ``(None,)`` (every run gets all its slices)."""
    if value is None:
        return (None,)
    items = [value] if isinstance(value, (str, int)) else list(value)
    out: list[int | None] = []
    for item in items:
        if item is None or str(item).lower() == "all":
            out.append(None)
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            out.append(item)
        else:
            raise ConfigError(f"label_budgets holds {item!r}; give whole numbers of slices (1 or more) or 'all'")
    if not out:
        raise ConfigError("label_budgets is empty; list numbers of labelled slices (e.g. [1, 4, all]) or omit it")
    return tuple(dict.fromkeys(out))


def _resolve_path(name: str) -> str:
    p = Path(str(name)).expanduser()
    return str(p.resolve()) if p.exists() else str(name)


#: AnalysisConfig keys the study fills in for each backbone: the backbone from ``backbones``, the
#: paths from ``defaults`` (one data root and one feature cache for the runs and the analysis).
_STUDY_FILLS = {
    "backbone": "the analysis runs once per entry of the study's backbones",
    "data_root": "the analysis reads the data_root of the study's defaults",
    "cache_dir": "the analysis uses the cache_dir of the study's defaults",
}


def _analysis_config(block: Any) -> AnalysisConfig | None:
    """The study's ``analysis:`` block, checked now (a typo fails before any run starts); None or an
    empty block means no analysis."""
    if not block:
        return None
    if not isinstance(block, Mapping):
        raise ConfigError(f"study analysis must be a mapping of analysis settings, got {block!r}")
    filled = sorted(set(block) & set(_STUDY_FILLS))
    if filled:
        raise ConfigError(f"study analysis: remove {filled[0]!r}: {_STUDY_FILLS[filled[0]]}")
    return AnalysisConfig.from_dict(block)
