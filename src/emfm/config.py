"""Typed, self-validating configuration for a training run; YAML with dotted overrides.

Resolved once at the edge (CLI or study runner), saved with the run, then handed to the library.
Cross-field checks raise :class:`~emfm.errors.ConfigError` with the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emfm import __version__
from emfm._settings import Settings, check_choice, check_number
from emfm.data import Pairing as DataPairing
from emfm.errors import ConfigError
from emfm.transforms import INTENSITIES, Intensity

#: How a run pairs images with masks: ``by-number`` (correct); ``text-sorted``, the study's mistake on the
#: training data only (test sets paired correctly, so the score measures the model); ``study-compose``,
#: the study's exact setting: its compose script paired the Lucchi++ *test* set by sorted names too (2 of
#: 165 slices meet their own mask) and its figures were scored against those masks, pooled over both test
#: sets (``test_pooled`` in metrics.json). Ablations only.
Pairing = Literal["by-number", "text-sorted", "study-compose"]
PAIRINGS = ("by-number", "text-sorted", "study-compose")
Normalisation = Literal["backbone", "imagenet"]
NORMALISATIONS = ("imagenet", "backbone")
Precision = Literal["32", "bf16", "auto"]
PRECISIONS = ("32", "bf16", "auto")  # as emfm.hardware.PRECISION_CHOICES
Loss = Literal["dice", "dice_ce"]
LOSSES = ("dice", "dice_ce")
LrSchedule = Literal["constant", "cosine"]
LR_SCHEDULES = ("constant", "cosine")
LabelPick = Literal["random", "even", "first"]
LABEL_PICKS = ("random", "even", "first")


def split_names(value: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (folder:PATH names keep their own commas only
    when given as a list)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def fold_adapter_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """Move flat adapter keys (``lora_rank: 8``) into ``adapter_settings`` for the chosen adapter.

    Flat keys of adapters other than the chosen one are dropped: a study's shared ``defaults`` may
    set ``lora_rank`` for its LoRA runs without it being an error in its frozen runs. Keys given in
    ``adapter_settings`` itself win over flat ones.
    """
    from emfm.adapters import flat_setting_keys

    out = dict(data)
    adapter = out.get("adapter", "frozen")
    folded: dict[str, Any] = {}
    for key, (name, field_name) in flat_setting_keys().items():
        if key in out:
            value = out.pop(key)
            if name == adapter:
                folded[field_name] = value
    nested = out.get("adapter_settings") or {}
    if not isinstance(nested, Mapping):
        raise ConfigError(f"adapter_settings must be a mapping of setting to value, got {nested!r}")
    out["adapter_settings"] = {**folded, **nested}
    return out


@dataclass(frozen=True)
class TrainConfig(Settings):
    """One training run: which backbone, how adapted, trained on what, tested on what.

    Defaults follow the study's protocol (docs/protocol.md) except ``resolution``, ``head`` and ``lr``,
    which default to values that learn in a short CPU run (``lr`` None takes the head's own default,
    e.g. 1e-3 for the linear head, where the protocol's 5e-5 needs hundreds of epochs);
    ``configs/study.yaml`` sets the published ones (1022, deconv, 5e-5).
    ``adapter`` names a registered adapter (:mod:`emfm.adapters`) and ``adapter_settings`` holds that
    adapter's own settings, completed with its defaults.
    A from-scratch ``backbone`` (``unet``, :mod:`emfm.backbones.scratch`) has no head or adapter to
    choose: they become its network (``head: unet``) and ``adapter: scratch``, and slices are taken at
    native scale unless ``scale`` says otherwise.
    ``cv_folds`` / ``cv_fold`` replace each training set's published split by fold ``cv_fold`` of a
    ``cv_folds``-fold cross-validation over all its labelled slices (contiguous test blocks,
    :func:`emfm.data.splits.make_fold_split`); the run is scored on that fold's test part.
    ``label_budget`` trains on N labelled slices of each training set, picked by ``label_pick``
    (:mod:`emfm.data.budget`; ``random`` is redrawn by ``seed``); the validation split is never touched.
    ``devices`` x ``num_nodes`` processes train with Lightning's DDP (``strategy``); ``batch_size`` is the
    global batch, shared evenly by them, and the learning rate is not rescaled (:mod:`emfm.distributed`).
    ``crops_per_set`` counts ``crops_per_epoch`` per training set: a joint run of K sets then draws K times as
    many crops an epoch, so each set is seen as often as in its own single-set run (the same training for each
    set, at K times the compute, which two single-set runs pay too). Off, a joint run shares one epoch's crops
    among its sets, in proportion to their slices unless an alignment mixes them.
    ``grad_checkpointing`` recomputes a live backbone's activations in the backward pass (LoRA on large
    backbones: far less memory, about a third more time, the same gradients).
    ``precision`` defaults to ``32`` (fp32), whose results are reproducible from machine to machine;
    ``bf16`` is honoured only where the hardware has native bf16 (else fp32, with a warning) and ``auto``
    takes bf16 or fp16 wherever it is native (:func:`emfm.hardware.resolve_precision`).
    ``train_threads`` sets torch's intra-op threads while training (unset: torch's default). One thread can help a
    cache-only run of a tiny head on a machine shared with other work, where a pool of several spins longer
    than each op lasts; on an idle machine torch's default was faster (``benchmarks/cached_training.py``).
    """

    backbone: str
    train: tuple[str, ...]
    test: tuple[str, ...] = ()
    adapter: str = "frozen"
    adapter_settings: Mapping[str, Any] = field(default_factory=dict)
    align: str = "none"
    align_settings: Mapping[str, Any] = field(default_factory=dict)
    head: str = "linear"
    layers: tuple[int, ...] | None = None
    resolution: int = 518
    scale: float | None = None
    tile: int = 518
    tile_overlap: int = 70
    crop: int | None = None
    crops_per_epoch: int = 64
    crops_per_set: bool = False
    augment: tuple[str, ...] = ()
    intensity_augment: bool = False
    loss: Loss = "dice"
    lr_schedule: LrSchedule = "constant"
    epochs: int = 100
    patience: int = 20
    min_steps: int = 300
    val_every: int = 1
    max_minutes: float | None = None
    seed: int = 0
    batch_size: int = 2
    lr: float | None = None
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    balance: bool = False
    pairing: Pairing = "by-number"
    normalisation: Normalisation = "imagenet"
    intensity: Intensity = "dtype"
    precision: Precision = "32"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    grad_checkpointing: bool = False
    # How fast, not what: left out of comparisons, and out of the saved config while unset (see to_dict).
    train_threads: int | None = field(default=None, compare=False)
    data_root: str | None = None
    cache_dir: str | None = None
    max_train_slices: int | None = None
    label_budget: int | None = None
    label_pick: LabelPick = "random"
    cv_folds: int | None = None
    cv_fold: int = 0
    emfm_version: str = field(default=__version__, compare=False)

    def __post_init__(self) -> None:
        self.coerce_floats()
        object.__setattr__(self, "train", tuple(split_names(self.train)))
        object.__setattr__(self, "test", tuple(split_names(self.test)) or tuple(self.train))
        if not self.train:
            raise ConfigError("no training set given; pass --train NAME[,NAME...] (e.g. lucchi_pp)")
        self._check_scratch()
        settings = self.make_adapter().settings_dict()  # unknown adapter or setting -> ConfigError here
        object.__setattr__(self, "adapter_settings", settings)
        alignment = self.make_alignment()
        alignment.check(self.train)
        object.__setattr__(self, "align_settings", alignment.settings_dict())
        check_choice("pairing", self.pairing, PAIRINGS, "; 'by-number' is correct, 'text-sorted' the study's mistake "
                     "on the training data, 'study-compose' on the test data too")
        check_choice("normalisation", self.normalisation, NORMALISATIONS)
        check_choice("intensity", self.intensity, INTENSITIES)
        object.__setattr__(self, "precision", str(self.precision))
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("loss", self.loss, LOSSES, "; dice is the study's, dice_ce adds cross-entropy")
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES, "; constant is the study's")
        self._check_sampling()
        for name in ("epochs", "batch_size", "resolution"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("patience", self.patience, minimum=0, integer=True)
        check_number("seed", self.seed, minimum=0, integer=True)
        if self.lr is not None:
            check_number("lr", self.lr, minimum=0, exclusive_minimum=True)
        check_number("weight_decay", self.weight_decay, minimum=0)
        check_number("grad_clip", self.grad_clip, minimum=0)
        check_number("devices", self.devices, minimum=1, integer=True)
        check_number("num_nodes", self.num_nodes, minimum=1, integer=True)
        from emfm.distributed import STRATEGIES, per_device_batch

        check_choice("strategy", self.strategy, STRATEGIES, "; auto is DDP on several devices")
        per_device_batch(self.batch_size, self.devices, self.num_nodes)
        if self.train_threads is not None:
            check_number("train_threads", self.train_threads, minimum=1, integer=True)
        if self.max_train_slices is not None:
            check_number("max_train_slices", self.max_train_slices, minimum=1, integer=True)
        if self.label_budget is not None:
            check_number("label_budget", self.label_budget, minimum=1, integer=True)
        if self.cv_folds is not None:
            check_number("cv_folds", self.cv_folds, minimum=2, integer=True)
            check_number("cv_fold", self.cv_fold, minimum=0, maximum=self.cv_folds - 1, integer=True)
        elif self.cv_fold != 0:
            raise ConfigError(f"cv_fold {self.cv_fold} given without cv_folds; set cv_folds (e.g. 5) or drop cv_fold")
        check_choice("label_pick", self.label_pick, LABEL_PICKS, "; random is seeded by seed")
        if self.balance and len(self.train) < 2:
            raise ConfigError("--balance needs at least two training sets (e.g. --train lucchi_pp,vnc)")

    def _check_scratch(self) -> None:
        """A from-scratch backbone's run: its own network as the head, the ``scratch`` adapter, native scale.

        The defaults (``head: linear``, ``adapter: frozen``) are replaced silently; anything else set on
        purpose is refused, since a U-Net has no backbone to put a head on or to adapt.
        """
        from emfm.baselines import SCRATCH_MODELS, is_scratch_model

        if not is_scratch_model(self.backbone):
            if self.adapter == "scratch":
                raise ConfigError(
                    f"adapter 'scratch' trains a from-scratch model; use --backbone "
                    f"{' or '.join(SCRATCH_MODELS)}, or adapt {self.backbone} with frozen or lora"
                )
            return
        model = SCRATCH_MODELS[self.backbone]
        if self.head not in ("linear", model.head):
            raise ConfigError(
                f"{model.name} is a whole network trained from scratch: it takes no --head {self.head} "
                f"(drop --head, or pick a foundation-model backbone for that head)"
            )
        if self.adapter not in ("frozen", "scratch"):
            raise ConfigError(f"{model.name} has no pretrained backbone to adapt with {self.adapter}; drop --adapter")
        if self.layers is not None:
            raise ConfigError(f"{model.name} has no backbone blocks to read; drop --layers")
        object.__setattr__(self, "head", model.head)
        object.__setattr__(self, "adapter", "scratch")
        object.__setattr__(self, "adapter_settings", {})
        if self.scale is None:
            object.__setattr__(self, "scale", 1.0)

    def _check_sampling(self) -> None:
        """Layers, tiles, crops and augmentation: the settings of how slices reach the head."""
        from emfm.transforms import GEOMETRIC_VARIANTS

        if self.layers is not None:
            object.__setattr__(
                self, "layers", tuple(self.layers) if not isinstance(self.layers, int) else (self.layers,)
            )
            for j in self.layers:
                check_number("layers (each)", j, integer=True)
            if not self.layers:
                raise ConfigError(
                    "layers is empty; list the backbone blocks the head reads (e.g. [5, 8, 11]) or omit it"
                )
        if self.scale is not None:
            check_number("scale", self.scale, minimum=0, exclusive_minimum=True)
        check_number("tile", self.tile, minimum=1, integer=True)
        check_number("tile_overlap", self.tile_overlap, minimum=0, integer=True)
        if self.tile_overlap >= self.tile:
            raise ConfigError(f"tile_overlap {self.tile_overlap} must be smaller than tile {self.tile}")
        if self.crop is not None:
            check_number("crop", self.crop, minimum=1, integer=True)
        check_number("crops_per_epoch", self.crops_per_epoch, minimum=1, integer=True)
        if self.crops_per_set and self.crop is None:
            raise ConfigError(
                "crops_per_set counts random crops, which need crop (e.g. --crop 224); set crop, or drop it"
            )
        if len(self.train) < 2:  # nothing to count per set: one run, one run id, with or without it
            object.__setattr__(self, "crops_per_set", False)
        check_number("min_steps", self.min_steps, minimum=0, integer=True)
        check_number("val_every", self.val_every, minimum=1, integer=True)
        if self.max_minutes is not None:
            check_number("max_minutes", self.max_minutes, minimum=0, exclusive_minimum=True)
        augment = (self.augment,) if isinstance(self.augment, str) else tuple(self.augment or ())
        object.__setattr__(self, "augment", augment)
        for v in augment:
            check_choice("augment variant", v, GEOMETRIC_VARIANTS)

    def make_adapter(self):
        """The run's :class:`~emfm.adapters.Adapter`, built from ``adapter`` and ``adapter_settings``."""
        from emfm.adapters import ADAPTERS, create_adapter

        if self.adapter not in ADAPTERS:
            raise ConfigError(ADAPTERS.unknown_message(str(self.adapter)))
        return create_adapter(self.adapter, self.adapter_settings)

    def split_pairing(self, split: str) -> DataPairing:
        """How the data layer pairs ``split`` (train, val, test) for this run's ``pairing``: text-sorted for
        training splits under either ablation, and for test splits only under ``study-compose``."""
        if self.pairing == "by-number" or (split == "test" and self.pairing != "study-compose"):
            return "by-number"
        return "text-sorted"

    def make_alignment(self):
        """The run's :class:`~emfm.align.Alignment` (``none`` for plain training), with its settings."""
        from emfm.align import ALIGNMENTS, create_alignment

        if self.align not in ALIGNMENTS:
            raise ConfigError(ALIGNMENTS.unknown_message(str(self.align)))
        if not isinstance(self.align_settings, Mapping):
            raise ConfigError(f"align_settings must be a mapping of setting to value, got {self.align_settings!r}")
        return create_alignment(self.align, self.align_settings)

    # -- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["adapter_settings"] = dict(self.adapter_settings)
        d["align_settings"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.align_settings.items()}
        for key in ("layers", "augment"):
            d[key] = list(d[key]) if d[key] is not None else None
        if d["train_threads"] is None:  # unset, it is not in the file: configs and study run ids stay as they were
            del d["train_threads"]
        if not d["crops_per_set"]:  # likewise: run ids from before it existed stay valid
            del d["crops_per_set"]
        return d

    @classmethod
    def accepted_keys(cls) -> set[str]:
        """Every key a training config may hold: the fields and each adapter's flat keys."""
        from emfm.adapters import flat_setting_keys

        return set(cls.field_names()) | set(flat_setting_keys())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainConfig:
        data = dict(data or {})
        cls.check_keys(data, extra=cls.accepted_keys())
        return cls(**fold_adapter_keys(data))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        return cls.from_dict(apply_overrides(load_yaml(path), overrides))


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
