"""The study configuration: which grid to run, with which shared settings.

A study YAML names lists (``backbones``, ``adapters``, ``heads``, ``train_sets``, ``seeds`` and, to
sweep how many labelled slices a run gets, ``label_budgets``: numbers or ``all``; and ``aligns``, the
domain-alignment methods of :mod:`emfm.align`, applied to the runs trained on several sets), the
``test_sets`` every run is scored on (or ``own``: each run on the sets it was trained on),
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

from emfm._settings import unknown_keys_message
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
        grid_keys = {"backbone", "adapter", "head", "train", "test", "seed", "label_budget", "align"} & set(
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

        def listify(v: Any) -> list:
            return [v] if isinstance(v, (str, int)) else list(v or [])

        d["backbones"] = tuple(_resolve_path(b) for b in listify(d.get("backbones")))
        d["adapters"] = tuple(listify(d.get("adapters", ["frozen"])))
        d["heads"] = tuple(listify(d.get("heads", ["linear"])))
        d["train_sets"] = tuple(tuple(split_names(t)) for t in listify(d.get("train_sets")))
        tests = d.get("test_sets")
        d["test_sets"] = tuple(split_names(tests) if isinstance(tests, str) else listify(tests))
        d["seeds"] = tuple(int(s) for s in listify(d.get("seeds", [0])))
        d["label_budgets"] = _label_budgets(d.get("label_budgets"))
        d["aligns"] = tuple(listify(d.get("aligns", ["none"]))) or ("none",)
        defaults = dict(d.get("defaults") or {})
        for key in ("data_root", "cache_dir"):
            if defaults.get(key):
                defaults[key] = str(Path(defaults[key]).expanduser().resolve())
        d["defaults"] = defaults
        d["adapter_overrides"] = {k: dict(v) for k, v in (d.get("adapter_overrides") or {}).items()}
        abl = []
        for item in d.get("ablations") or []:
            item = dict(item)
            name = item.pop("name", None)
            if not name:
                raise ConfigError("every ablation needs a name (it labels the rows it adds)")
            abl.append(
                Ablation(
                    name=name,
                    backbones=tuple(_resolve_path(b) for b in listify(item.pop("backbones", []))),
                    adapters=tuple(listify(item.pop("adapters", []))),
                    heads=tuple(listify(item.pop("heads", []))),
                    train_sets=tuple(tuple(split_names(t)) for t in listify(item.pop("train_sets", []))),
                    seeds=tuple(int(x) for x in listify(item.pop("seeds", []))),
                    settings=item,
                )
            )
        d["ablations"] = tuple(abl)
        d["analysis"] = _analysis_config(d.get("analysis"))
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
