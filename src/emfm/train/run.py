"""One training run end to end: load, adapt, train, evaluate, and write the run directory.

Everything that can be checked is checked before the backbone runs (unknown head or dataset, a
resolution no patch size fits, an empty test set, a run directory that holds another run).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from emfm import rundir
from emfm._io import atomic_write_json, finite_json
from emfm.config import TrainConfig
from emfm.data._stack import SliceStack
from emfm.errors import ConfigError, DataError
from emfm.paths import dataset_root
from emfm.transforms import IMAGENET_MEAN, IMAGENET_STD, mask_to_tensor, resized_shape

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


def load_stacks(
    config: TrainConfig, *, progress: bool = True
) -> tuple[dict[str, tuple[SliceStack, SliceStack]], dict[str, SliceStack]]:
    """Training (train, val) stacks per training set and test stacks per test set.

    The pairing ablation (``text-sorted``) applies to the training data only; test sets are always
    paired correctly, so the reported IoU measures the model, not the mispairing.
    """
    from emfm.data import get_dataset, load_split

    for name in set(config.train) & set(config.test):
        if name.startswith("folder:") and not getattr(get_dataset(name), "has_test_split", True):
            raise ConfigError(
                f"{name} is both a training and a test set but has no test/ part, so the test would score "
                f"slices the model was trained on; add PATH/test/images and PATH/test/masks or test on another set"
            )
    train: dict[str, tuple[SliceStack, SliceStack]] = {}
    for name in config.train:
        root = dataset_root(name, config.data_root)
        tr = load_split(name, "train", root, pairing=config.pairing, progress=progress)
        va = load_split(name, "val", root, pairing=config.pairing, progress=progress)
        if config.max_train_slices:
            tr = tr.subset(tr.ids[: config.max_train_slices], "train")
        if len(tr) == 0:
            raise DataError(f"training set {name} has no slices; check --data-root")
        train[name] = (tr, va)
    test = {}
    for name in config.test:
        st = load_split(name, "test", dataset_root(name, config.data_root), progress=progress)
        if len(st) == 0:
            raise DataError(f"test set {name} has no slices; check --data-root or the dataset's split")
        test[name] = st
    return train, test


def train_run(
    config: TrainConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    backbone=None,
) -> dict[str, Any]:
    """Train and evaluate one run; write ``out`` and return its metrics.

    Args:
        config: the resolved run configuration.
        out: the run directory.
        overwrite: replace a directory that holds a different run.
        progress: show progress bars.
        backbone: an already created backbone (tests, notebooks); else ``config.backbone`` is loaded.
    """
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from emfm.features import FeatureCache, encode_stack
    from emfm.models.checkpoint import CHECKPOINT_NAME, ModelInfo, save_checkpoint
    from emfm.models.heads import HEADS, create_head
    from emfm.models.lora import LoraSettings, apply_lora
    from emfm.models.segmenter import Segmenter
    from emfm.paths import cache_root
    from emfm.train.datasets import FeatureItems, PixelItems, list_collate, make_sampler
    from emfm.train.module import History, KeepBest, SegmentationModule

    started = time.perf_counter()
    config = resolve_config(config)
    HEADS.get(config.head)  # an unknown head fails before anything is loaded
    train_stacks, test_stacks = load_stacks(config, progress=progress)
    if backbone is None:
        from emfm.backbones import create_backbone

        backbone = create_backbone(config.backbone)
    patch = backbone.patch_size
    for stack in [s for pair in train_stacks.values() for s in pair] + list(test_stacks.values()):
        for img in stack.images[:1]:
            resized_shape(img.shape, config.resolution, patch)  # raises ConfigError if nothing fits
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if config.normalisation == "imagenet" else (backbone.mean, backbone.std)
    run_dir = rundir.prepare(out, config.to_yaml(), overwrite=overwrite)
    splits = {
        name: {"train": tr.ids, "val": va.ids, "pairing": tr.pairing} for name, (tr, va) in train_stacks.items()
    }
    splits.update({f"test:{name}": {"test": st.ids} for name, st in test_stacks.items()})
    atomic_write_json(run_dir / "splits.json", splits)

    L.seed_everything(config.seed, workers=True, verbose=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone.to(device)
    lora_params = 0
    features: dict[str, Any] = {}
    feature_counts = {"computed": 0, "cached": 0}
    if config.adapter == "frozen":
        for p in backbone.parameters():
            p.requires_grad_(False)
        cache = FeatureCache(Path(config.cache_dir) if config.cache_dir else cache_root() / "features")

        def encode(stack: SliceStack):
            f = encode_stack(
                backbone, stack, resolution=config.resolution, cache=cache, mean=mean, std=std,
                intensity=config.intensity, progress=progress,
            )
            feature_counts["computed"] += f.n_computed
            feature_counts["cached"] += f.n_cached
            return f

        for name, (tr, va) in train_stacks.items():
            features[f"train:{name}"], features[f"val:{name}"] = encode(tr), encode(va)
        for name, st in test_stacks.items():
            features[f"test:{name}"] = encode(st)
    else:
        lora_params = apply_lora(backbone, LoraSettings(config.lora_rank, config.lora_alpha, config.lora_dropout))
        # Backbones load in eval mode; LoRA trains them, so they train in train mode, as in the study
        # (no dropout is active in these models; DINOv3 applies its RoPE jitter only in train mode).
        backbone.train()

    torch.manual_seed(config.seed)
    head = create_head(config.head, backbone.embed_dim)
    segmenter = Segmenter(head, backbone if config.adapter == "lora" else None)
    head_params = sum(p.numel() for p in head.parameters())
    log.info("trainable parameters: head %d, LoRA %d", head_params, lora_params)

    def items(kind: str):
        names = list(train_stacks)
        stacks = [train_stacks[n][0 if kind == "train" else 1] for n in names]
        if config.adapter == "frozen":
            grids, masks, sources = [], [], []
            for k, (n, st) in enumerate(zip(names, stacks)):
                f = features[f"{kind}:{n}"]
                for i in range(len(st)):
                    grids.append(f.grids[i])
                    masks.append(mask_to_tensor(st.masks[i], f.sizes[i]))
                    sources.append(k)
            return FeatureItems(grids, masks, sources)
        sizes = [[resized_shape(img.shape, config.resolution, patch) for img in st.images] for st in stacks]
        return PixelItems(stacks, sizes, mean, std, config.intensity)

    train_items, val_items = items("train"), items("val")
    sampler = make_sampler(train_items.sources, balance=config.balance, seed=config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_items, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        collate_fn=list_collate, generator=gen,
    )
    val_loader = DataLoader(val_items, batch_size=config.batch_size, collate_fn=list_collate)
    has_val = len(val_items) > 0
    if not has_val:
        log.warning("no validation slices: training runs all %d epochs and keeps the last weights", config.epochs)

    module = SegmentationModule(
        segmenter, inputs="grid" if config.adapter == "frozen" else "pixels", lr=config.lr,
        weight_decay=config.weight_decay,
    )
    keep, history = KeepBest(), History()
    callbacks: list[L.Callback] = [keep, history]
    if has_val and config.patience > 0:
        from lightning.pytorch.callbacks import EarlyStopping

        callbacks.append(EarlyStopping(monitor="val_loss", patience=config.patience, mode="min"))
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator="auto",
        devices=1,
        precision="bf16-mixed" if config.precision == "bf16" else "32-true",
        gradient_clip_val=config.grad_clip or None,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0,
    )
    trainer.fit(module, train_loader, val_loader if has_val else None)
    segmenter.to(device).eval()
    train_seconds = time.perf_counter() - started

    info = ModelInfo(
        backbone=config.backbone, backbone_name=backbone.name, weights_id=backbone.weights_id,
        head=config.head, in_channels=backbone.embed_dim, adapter=config.adapter,
        resolution=config.resolution, mean=tuple(mean), std=tuple(std), intensity=config.intensity,
        lora_rank=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        patch_size=patch,
    )
    if config.adapter == "lora":
        segmenter.backbone = backbone
    save_checkpoint(run_dir / CHECKPOINT_NAME, segmenter, info)

    from emfm.evaluate.run import evaluate_segmenter

    evaluation = evaluate_segmenter(
        segmenter, info, test_stacks, run_dir,
        features={n: features.get(f"test:{n}") for n in test_stacks} if config.adapter == "frozen" else None,
        progress=progress,
    )
    from emfm.evaluate.figures import plot_curves

    plot_curves(
        history.rows, run_dir / "curve.png", best_epoch=keep.best_epoch if has_val else None,
        title=f"{backbone.name} {config.adapter} + {config.head}, train {'+'.join(config.train)}",
    )
    metrics = {
        "run": {
            "backbone": backbone.name, "backbone_source": config.backbone, "weights_id": backbone.weights_id,
            "adapter": config.adapter, "head": config.head, "train_sets": list(config.train),
            "test_sets": list(config.test), "seed": config.seed, "resolution": config.resolution,
            "pairing": config.pairing, "balance": config.balance, "precision": config.precision,
        },
        **evaluation,
        "train": history.rows,
        "best_epoch": keep.best_epoch if has_val else len(history.rows) - 1,
        "best_val_loss": keep.best_loss if has_val else None,
        "epochs_run": len(history.rows),
        "trainable_params": {"head": head_params, "lora": lora_params, "total": head_params + lora_params},
        "backbone_params": sum(p.numel() for n, p in backbone.named_parameters() if "lora_" not in n),
        "features": feature_counts,
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(run_dir / rundir.METRICS_NAME, finite_json(metrics))
    return metrics

