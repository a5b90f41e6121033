"""One training run end to end, as named stages: resolve, data, prepare, fit, evaluate, write.

Everything that can be checked is checked before the backbone runs (unknown head, adapter or
dataset, a resolution no patch size fits, an empty test set, a run directory that holds another run).
How the backbone is adapted is the adapter's business (:mod:`emfm.adapters`): this module only asks
it whether it trains on cached features or on pixels, and what it keeps in the checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emfm import rundir
from emfm._io import atomic_write_json, finite_json
from emfm.config import TrainConfig
from emfm.errors import ConfigError
from emfm.runsets import RunData, load_stacks, load_training_set, standardise_inputs  # noqa: F401 (their home before)
from emfm.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

log = logging.getLogger(__name__)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Make local paths absolute so the saved config works from any directory."""
    changes: dict[str, Any] = {}
    if Path(config.backbone).expanduser().exists():
        changes["backbone"] = str(Path(config.backbone).expanduser().resolve())
    for key in ("data_root", "cache_dir"):
        value = getattr(config, key)
        if value:
            changes[key] = str(Path(value).expanduser().resolve())
    return config.replace(**changes) if changes else config


@dataclass
class Plan:
    """A resolved run: config, its adapter, the backbone, the preprocessing every slice gets, the
    blocks the head reads (0-based, the last one is the final grid), the learning rate, and the precision
    training runs in (the config's, as this machine honours it: :func:`emfm.hardware.resolve_precision`)."""

    config: TrainConfig
    adapter: Any
    backbone: Any
    preprocessing: Preprocessing
    layers: tuple[int, ...]
    lr: float
    alignment: Any = None
    align_state: dict[str, Any] = field(default_factory=dict)
    precision: str = "32"
    precision_note: str | None = None  # why the config's precision was not honoured, if it was not

    @property
    def lightning_precision(self) -> str:
        """Lightning's name for :attr:`precision` (``32-true``, ``bf16-mixed``, ``16-mixed``)."""
        from emfm.hardware import LIGHTNING_PRECISION

        return LIGHTNING_PRECISION[self.precision]

    @property
    def variants(self) -> tuple[str, ...]:
        """The training slices' augmentation variants (the slice itself first)."""
        return ("identity", *(v for v in self.config.augment if v != "identity"))

    @property
    def intermediate_layers(self) -> list[int]:
        return [j for j in self.layers if j != self.backbone.num_layers - 1]


def run_preprocessing(config: TrainConfig, backbone) -> Preprocessing:
    """The run's preprocessing: whole-slice resize (the study's) or tiles at a pixel scale."""
    imagenet = config.normalisation == "imagenet"
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (backbone.mean, backbone.std)
    # A from-scratch network is fully convolutional: it takes a whole slice at its scale, no tiles.
    tiled = config.scale is not None and backbone.family != "scratch"
    if tiled and config.tile % backbone.patch_size:
        raise ConfigError(
            f"tile {config.tile} is not a multiple of the patch size {backbone.patch_size}; "
            f"use {config.tile // backbone.patch_size * backbone.patch_size}"
        )
    return Preprocessing(
        config.resolution, backbone.patch_size, mean, std, config.intensity,  # type: ignore[arg-type]
        scale=config.scale, tile=config.tile if tiled else None, overlap=config.tile_overlap if tiled else None,
    )


def resolve(config: TrainConfig, data: RunData, backbone=None) -> Plan:
    """Build the adapter and the backbone, fix the preprocessing, layers and learning rate, and check
    that every slice's size and the crop fit."""
    from emfm.hardware import resolve_precision, training_device
    from emfm.models.heads import head_default_lr, head_layers
    from emfm.models.segmenter import resolve_layers

    adapter = config.make_adapter()
    if backbone is None:
        from emfm.backbones import create_backbone

        backbone = create_backbone(config.backbone)
    prep = run_preprocessing(config, backbone)
    for stack in data.all_stacks():
        for img in stack.images[:1]:
            prep.network_size(img.shape)  # raises ConfigError if nothing fits
    if config.crop is not None and config.crop % prep.patch_size:
        raise ConfigError(f"crop {config.crop} is not a multiple of the patch size {prep.patch_size}")
    layers = resolve_layers(config.layers or head_layers(config.head, backbone.num_layers), backbone.num_layers)
    lr = config.lr if config.lr is not None else head_default_lr(config.head)
    precision, note = resolve_precision(config.precision, training_device())
    if note:
        log.warning(note)
    return Plan(config, adapter, backbone, prep, layers, lr, config.make_alignment(), data.align_state,
                precision=precision, precision_note=note)


@dataclass
class Model:
    """What the prepare stage hands to fit: the segmenter, cached features, parameter counts."""

    segmenter: Any
    features: dict[str, Any] = field(default_factory=dict)
    feature_counts: dict[str, int] = field(default_factory=lambda: {"computed": 0, "cached": 0})
    head_params: int = 0
    adapter_params: int = 0


def encode_all(plan: Plan, data: RunData, *, progress: bool) -> tuple[dict[str, Any], dict[str, int]]:
    """Features of every train, val and test slice through the on-disk cache (frozen backbones), encoded in
    the run's resolved precision (fp32 unless the run asked for bf16 or auto where the hardware has it)."""
    from emfm.features import FeatureCache, encode_stack
    from emfm.paths import cache_root

    cfg = plan.config
    cache = FeatureCache(Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "features")
    counts = {"computed": 0, "cached": 0}
    jobs = [(f"train:{n}:{v}", tr, v) for n, (tr, _) in data.train.items() for v in plan.variants]
    jobs += [(f"val:{n}:identity", va, "identity") for n, (_, va) in data.train.items()]
    jobs += [(f"test:{n}:identity", st, "identity") for n, st in data.test.items()]
    features = {}
    for key, stack, variant in jobs:
        f = encode_stack(
            plan.backbone, stack, preprocessing=plan.preprocessing, variant=variant, cache=cache,
            layers=plan.intermediate_layers, precision=plan.precision, progress=progress,
        )
        counts["computed"] += f.n_computed
        counts["cached"] += f.n_cached
        features[key] = f
    return features, counts


def prepare(plan: Plan, data: RunData, *, progress: bool) -> Model:
    """Seed, let the adapter ready the backbone, encode (cached-feature adapters), build the head."""
    import lightning as L
    import torch

    from emfm.models.heads import create_head
    from emfm.models.segmenter import Segmenter

    L.seed_everything(plan.config.seed, workers=True, verbose=False)
    plan.backbone.to("cuda" if torch.cuda.is_available() else "cpu")
    adapter_params = plan.adapter.prepare(plan.backbone)
    features, counts = encode_all(plan, data, progress=progress) if plan.adapter.uses_cached_features else ({}, {})
    torch.manual_seed(plan.config.seed)
    head = create_head(
        plan.config.head, plan.backbone.embed_dim, num_layers=len(plan.layers), patch_size=plan.preprocessing.patch_size
    )
    plan.alignment.prepare_head(head, list(plan.config.train))
    segmenter = Segmenter(
        head, None if plan.adapter.uses_cached_features else plan.backbone, layers=plan.layers,
        preprocessing=plan.preprocessing,
    )
    head_params = sum(p.numel() for p in head.parameters())
    log.info("trainable parameters: head %d, adapter %s %d", head_params, plan.adapter.name, adapter_params)
    model = Model(segmenter, features, head_params=head_params, adapter_params=adapter_params)
    if counts:
        model.feature_counts = counts
    return model


def train_run(
    config: TrainConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    backbone=None,
    on_epoch=None,
) -> dict[str, Any]:
    """Train and evaluate one run; write ``out`` and return its metrics.

    Args:
        config: the run configuration (local paths are made absolute here).
        out: the run directory.
        overwrite: replace a directory that holds a different run.
        progress: show progress bars.
        backbone: an already created backbone (tests, notebooks); else ``config.backbone`` is loaded.
        on_epoch: called as each training epoch starts with (epoch, max epochs, seconds per epoch so far).
    """
    from emfm.models.heads import HEADS
    from emfm.train.fit import fit

    started = time.perf_counter()
    config = resolve_config(config)
    HEADS.get(config.head)  # an unknown head fails before anything is loaded
    data = load_stacks(config, progress=progress)
    plan = resolve(config, data, backbone)
    from emfm.distributed import is_primary

    if not is_primary():  # a DDP rank beside rank 0: it trains its share and leaves the run to rank 0
        model = prepare(plan, data, progress=False)
        fit(plan, data, model, progress=False)
        return {}
    run_dir = rundir.prepare(out, config.to_yaml(), overwrite=overwrite, load=TrainConfig.from_dict)
    atomic_write_json(run_dir / "splits.json", data.splits_record())
    model = prepare(plan, data, progress=progress)
    fitted = fit(plan, data, model, progress=progress, on_epoch=on_epoch)
    info = save_model(plan, model, run_dir)
    evaluation = evaluate(plan, data, model, info, run_dir, progress=progress)
    plot_curve(plan, fitted, run_dir)
    metrics = summarise(plan, data, model, fitted, evaluation, started)
    atomic_write_json(run_dir / rundir.METRICS_NAME, finite_json(metrics))
    return metrics


def save_model(plan: Plan, model: Model, run_dir: Path):
    """Write the checkpoint (head + what the adapter keeps) and return its ModelInfo."""
    from emfm.models.checkpoint import CHECKPOINT_NAME, ModelInfo, save_checkpoint

    cfg, prep, backbone = plan.config, plan.preprocessing, plan.backbone
    info = ModelInfo(
        backbone=cfg.backbone, backbone_name=backbone.name, weights_id=backbone.weights_id, head=cfg.head,
        in_channels=backbone.embed_dim, adapter=plan.adapter.name, resolution=prep.resolution,
        mean=prep.mean, std=prep.std, intensity=prep.intensity, patch_size=prep.patch_size,  # type: ignore[arg-type]
        adapter_settings=plan.adapter.settings_dict(), layers=plan.layers, scale=prep.scale, tile=prep.tile,
        overlap=prep.overlap, align=plan.alignment.name, align_settings=plan.alignment.settings_dict(),
        domains=tuple(cfg.train), align_state=plan.align_state,
    )
    save_checkpoint(run_dir / CHECKPOINT_NAME, model.segmenter, info, plan.adapter.state(backbone))
    return info


def evaluate(plan: Plan, data: RunData, model: Model, info, run_dir: Path, *, progress: bool) -> dict[str, Any]:
    """Score every test set with the trained segmenter (from cached test features where there are some)."""
    from emfm.evaluate.run import evaluate_segmenter

    cached = {n: model.features.get(f"test:{n}:identity") for n in data.test} if model.features else None
    return evaluate_segmenter(model.segmenter, info, data.test, run_dir, features=cached, progress=progress)


def plot_curve(plan: Plan, fitted, run_dir: Path) -> None:
    from emfm.evaluate.figures import plot_curves

    cfg = plan.config
    plot_curves(
        fitted.history, run_dir / "curve.png", best_epoch=fitted.best_epoch if fitted.has_val else None,
        title=f"{plan.backbone.name} {plan.adapter.name} + {cfg.head}, train {'+'.join(cfg.train)}",
    )


def summarise(
    plan: Plan, data: RunData, model: Model, fitted, evaluation: dict[str, Any], started: float
) -> dict[str, Any]:
    """metrics.json: the run's identity, the evaluation, the training curve, sizes, times and the hardware."""
    from emfm.hardware import describe_hardware

    cfg, backbone = plan.config, plan.backbone
    total = model.head_params + model.adapter_params
    return {
        "run": {
            "backbone": backbone.name, "backbone_source": cfg.backbone, "weights_id": backbone.weights_id,
            "adapter": plan.adapter.name, "adapter_settings": plan.adapter.settings_dict(), "head": cfg.head,
            "train_sets": list(cfg.train), "test_sets": list(cfg.test), "seed": cfg.seed,
            "resolution": cfg.resolution, "scale": cfg.scale, "layers": list(plan.layers), "crop": cfg.crop,
            "augment": list(plan.variants), "lr": plan.lr, "pairing": cfg.pairing, "balance": cfg.balance,
            # the precision training ran in, and the one the config asked for (bf16 is honoured only where native)
            "precision": plan.precision, "precision_requested": cfg.precision,
            "label_budget": cfg.label_budget, "label_pick": cfg.label_pick,
            "cv_folds": cfg.cv_folds, "cv_fold": cfg.cv_fold if cfg.cv_folds else None,
            "align": plan.alignment.name, "align_settings": plan.alignment.settings_dict(),
            "from_scratch": backbone.family == "scratch",
            # LoRA's layout (fused-qkv, the study's, or separate), None for other adapters: a report row says it
            "lora_layout": plan.adapter.settings_dict().get("layout") if plan.adapter.name == "lora" else None,
        },
        "train_slices": {name: len(tr) for name, (tr, _) in data.train.items()},
        "warnings": [*([plan.precision_note] if plan.precision_note else []), *fitted.warnings],
        "val_foreground_predicted": fitted.val_foreground,
        **evaluation,
        "train": fitted.history,
        "best_epoch": fitted.best_epoch,
        "best_val_loss": fitted.best_val_loss,
        "epochs_run": len(fitted.history),
        "trainable_params": {"head": model.head_params, "adapter": model.adapter_params, "total": total},
        "backbone_params": sum(p.numel() for n, p in backbone.named_parameters() if "lora_" not in n),
        "features": model.feature_counts,
        "train_seconds": round(fitted.seconds, 2),
        "train_memory": fitted.memory,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "hardware": describe_hardware(),
    }
