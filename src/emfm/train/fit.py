"""The fit stage of a run: data loaders over cached features or pixels, then Lightning's Trainer.

Early stopping watches the validation loss; :class:`~emfm.train.module.KeepBest` restores the best
epoch's weights at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from emfm.distributed import per_device_batch, world_size
from emfm.errors import ConfigError

if TYPE_CHECKING:
    from emfm.config import TrainConfig
    from emfm.train._lightning import EpochHook
    from emfm.train.run import Model, Plan, RunData

log = logging.getLogger(__name__)


@dataclass
class Fitted:
    """What training leaves besides the weights: the curve, the kept epoch, the time it took."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float | None
    has_val: bool
    seconds: float
    warnings: list[str]
    val_foreground: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)


def kept_model_warnings(module, val_loader, best_epoch: int, epochs_run: int) -> tuple[list[str], float | None]:
    """Warnings about a kept model that probably learned nothing: it predicts no foreground on the
    validation slices, or its best epoch is the first (the loss never improved on the start)."""
    import torch

    from emfm.evaluate.metrics import class_map

    warnings = []
    predicted = total = 0
    module.eval()
    with torch.no_grad():
        for batch in val_loader:
            for logits in module._logits_and_targets(batch)[0]:
                predicted += int((class_map(logits) == 1).sum())
                total += logits[:, 0].numel()
    fraction = predicted / total if total else None
    if fraction == 0:
        warnings.append("the kept model predicts no foreground on the validation slices: it learned nothing "
                        "(raise --lr or --epochs, or set --min-steps)")
    if best_epoch == 0 and epochs_run > 1:
        warnings.append("the best validation loss came at the first epoch: later epochs never improved on it "
                        "(raise --lr, --patience or --min-steps)")
    for text in warnings:
        log.warning(text)
    return warnings, fraction


def _layer_grids(features, i: int, plan: Plan) -> list:
    """Slice ``i``'s grids for the head's layers, in its order (the last block is the final grid)."""
    last = plan.backbone.num_layers - 1
    return [features.grids[i] if j == last else features.layers[j][i] for j in plan.layers]


def _sources(plan: Plan, data: RunData, model: Model, kind: str) -> list:
    """One CropSource per (training set, slice, variant): mask, cached grids, [0, 1] pixels."""
    from emfm.train.crops import CropSource
    from emfm.transforms import geometric_variant

    prep, frozen = plan.preprocessing, plan.adapter.uses_cached_features
    want_unit = not frozen or model.segmenter.needs_pixels
    variants = plan.variants if kind == "train" else ("identity",)
    out = []
    for k, (name, pair) in enumerate(data.train.items()):
        stack = pair[0 if kind == "train" else 1]
        for variant in variants:
            f = model.features.get(f"{kind}:{name}:{variant}") if frozen else None
            for i in range(len(stack)):
                image = geometric_variant(stack.images[i], variant)
                size = prep.network_size(image.shape)
                out.append(CropSource(
                    mask=prep.mask(geometric_variant(stack.masks[i], variant), size),
                    grids=_layer_grids(f, i, plan) if f is not None else [],
                    unit=prep.unit(image, size).half() if want_unit else None,  # half: memory, not precision
                    dataset=k,
                ))
    return out


def training_items(plan: Plan, data: RunData, model: Model, kind: str):
    """The train or val items: random crops (``crop``) or whole slices, from cached grids or pixels."""
    from emfm.train.augment import IntensityAugment
    from emfm.train.crops import CropItems, WholeItems

    cfg = plan.config
    sources = _sources(plan, data, model, kind)
    want_pixels = not plan.adapter.uses_cached_features or model.segmenter.needs_pixels
    if kind == "train" and cfg.crop is not None:
        # Intensity changes only where pixels are computed live (see emfm.train.augment).
        intensity = IntensityAugment() if cfg.intensity_augment and want_pixels else None
        return CropItems(
            sources, crop=cfg.crop, patch=plan.preprocessing.patch_size, length=crops_in_epoch(cfg, len(data.train)),
            preprocessing=plan.preprocessing, want_pixels=want_pixels, intensity=intensity, balance=cfg.balance,
            mixed=plan.alignment.mixed_batches and len(data.train) > 1, seed=cfg.seed,
        )
    return WholeItems(sources, preprocessing=plan.preprocessing, want_pixels=want_pixels)


def crops_in_epoch(cfg: TrainConfig, n_sets: int) -> int:
    """Random crops an epoch: ``crops_per_epoch``, times the number of training sets with ``crops_per_set``."""
    return cfg.crops_per_epoch * (n_sets if cfg.crops_per_set else 1)


def cache_only(plan: Plan, model: Model) -> bool:
    """Whether training reads nothing but cached grids (a frozen backbone and a head without pixels): then
    a run's batches can be cut from one bank of them (:mod:`emfm.train.bank`)."""
    return bool(plan.adapter.uses_cached_features and model.features and not model.segmenter.needs_pixels)


def packs(plan: Plan, model: Model, packed: bool | None) -> bool:
    """Whether the run's batches are cut from a bank of cached grids: asked for (None: whenever it can be) and
    possible (:func:`cache_only`)."""
    return cache_only(plan, model) if packed is None else bool(packed) and cache_only(plan, model)


def whole_epochs(plan: Plan, model: Model, packed: bool | None) -> bool:
    """Whether Lightning gets each epoch as one step (:class:`~emfm.train.bank.OneCallPerEpoch`): packed batches
    on one process. Under DDP each process's batches and gradients go through Lightning's own step."""
    return packs(plan, model, packed) and world_size(plan.config.devices, plan.config.num_nodes) == 1


def training_threads(plan: Plan, model: Model) -> int | None:
    """torch's intra-op threads for training: the config's ``train_threads``, else None (torch's default).

    Not one thread by default for tiny heads: on an idle 2-core machine, 149 cached Lucchi++ grids trained
    a linear head 1.3x (518 px) and 1.1x (224 px) faster on torch's 2 threads than on one
    (``benchmarks/cached_training.py``); one thread pays only where other work shares the cores.
    """
    return int(plan.config.train_threads) if plan.config.train_threads is not None else None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` intra-op threads and put torch's setting back after it (None: leave it)."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _feature_swapper(model: Model, kind: str):
    """An ``on_copy`` for :class:`~emfm.train.bank.GridBank`: where the run's ``kind`` features hold a grid the
    bank has copied, they take the bank's row instead, so the copy they held is freed (one copy in memory)."""
    holders: dict[int, list[tuple[list, int]]] = {}
    for name, f in model.features.items():
        if name.startswith(f"{kind}:"):
            for grids in (f.grids, *f.layers.values()):
                for i, t in enumerate(grids):
                    holders.setdefault(id(t), []).append((grids, i))

    def swap(old: list, new: list) -> None:
        for t, row in zip(old, new):
            for grids, i in holders.pop(id(t), ()):
                grids[i] = row

    return swap


def make_loaders(plan: Plan, data: RunData, model: Model, *, packed: bool | None = None) -> tuple[Any, Any, bool]:
    """The train and val loaders, and whether there is validation.

    ``packed`` (default: whenever training is :func:`cache_only`) cuts batches from a
    :class:`~emfm.train.bank.GridBank` and builds the val batches once; False keeps the item path (a dict per
    item, stacked each step), which gives the same batches: tests and benchmarks compare the two.
    """
    import torch
    from torch.utils.data import DataLoader

    from emfm.train.datasets import MixedOrder, list_collate, make_sampler

    cfg = plan.config
    train_items, val_items = training_items(plan, data, model, "train"), training_items(plan, data, model, "val")
    packed = packs(plan, model, packed)
    collate: Any = list_collate
    if packed:
        from emfm.train.bank import BankItems, GridBank

        per_domain = bool(plan.alignment.per_domain_forward)
        train_items = BankItems(train_items, GridBank(train_items.sources, on_copy=_feature_swapper(model, "train")),
                                per_domain=per_domain)
        val_items = BankItems(val_items, GridBank(val_items.sources, on_copy=_feature_swapper(model, "val")),
                              per_domain=per_domain)
        collate = train_items.collate
    crops = cfg.crop is not None  # crops draw their own sources (balanced, mixed or not) from their seed
    mixed = plan.alignment.mixed_batches and len(data.train) > 1
    # batch_size is the global batch: each of the DDP processes takes its share (emfm.distributed)
    world = world_size(cfg.devices, cfg.num_nodes)
    batch_size = per_device_batch(cfg.batch_size, cfg.devices, cfg.num_nodes)
    if mixed and world > 1:
        raise ConfigError(f"align {plan.alignment.name} mixes the training sets within every batch, which DDP's "
                          f"sampler would deal out across {world} processes; train it on one device (--devices 1)")
    if mixed:  # every batch holds each training set equally: a multiple of the number of sets
        k = len(data.train)
        batch_size = max(k, round(cfg.batch_size / k) * k)
        if batch_size != cfg.batch_size:
            log.info("align %s: batch size %d -> %d (a multiple of %d sets)", plan.alignment.name, cfg.batch_size,
                     batch_size, k)
    if crops:
        sampler = None
    elif mixed:
        sampler = MixedOrder(train_items.sources_index, seed=cfg.seed)
    else:
        sampler = make_sampler(train_items.sources_index, balance=cfg.balance, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        train_items, batch_size=batch_size, shuffle=sampler is None and not crops, sampler=sampler,
        collate_fn=collate, generator=gen,
    )
    if packed:  # validation: the same batches every epoch, packed once
        from emfm.train.bank import prebuilt_loader

        val_loader = prebuilt_loader(val_items, cfg.batch_size)
    else:
        val_loader = DataLoader(val_items, batch_size=cfg.batch_size, collate_fn=list_collate)
    return train_loader, val_loader, len(val_items) > 0


def enable_grad_checkpointing(plan: Plan) -> bool:
    """Recompute the live backbone's block activations in the backward pass (transformers' gradient
    checkpointing, non-reentrant) instead of keeping them: LoRA on a large backbone then fits in far less
    memory for about a third more compute, with the same gradients. A frozen backbone (cached features) has
    no backward pass to save: returns False and changes nothing."""
    model = getattr(plan.backbone, "model", None)
    if plan.adapter.uses_cached_features or not getattr(model, "supports_gradient_checkpointing", False):
        log.info("grad_checkpointing: nothing to checkpoint (no live transformers backbone in this run)")
        return False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def _strategy(cfg: Any) -> Any:
    """Lightning's strategy: ``auto`` on one process, else DDP, whose processes Lightning starts as new
    commands (``ddp``, ``auto``) or forks (``ddp_spawn``); on a machine without CUDA they talk over gloo, the
    backend CPUs have."""
    if world_size(cfg.devices, cfg.num_nodes) == 1 and cfg.strategy == "auto":
        return "auto"
    import torch
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(
        process_group_backend=None if torch.cuda.is_available() else "gloo",
        start_method="spawn" if cfg.strategy == "ddp_spawn" else "popen",
    )


def fit(
    plan: Plan, data: RunData, model: Model, *, progress: bool, on_epoch: EpochHook | None = None,
    packed: bool | None = None, one_call_per_epoch: bool | None = None,
) -> Fitted:
    """Train the segmenter's trainable parameters (head, adapter) with Lightning; ``on_epoch`` hears of
    each epoch as it starts (a study's progress line). ``packed`` picks how batches are made
    (:func:`make_loaders`), ``one_call_per_epoch`` whether packed batches reach Lightning an epoch at a time
    (None: :func:`whole_epochs`; only packed batches can) and :func:`training_threads` how many threads run
    them; none of them changes the result."""
    import lightning as L

    from emfm.train.module import History, KeepBest, NewCropsEachEpoch, SegmentationModule

    cfg = plan.config
    started = time.perf_counter()
    threads = training_threads(plan, model)
    if threads is not None:
        log.info("training on %d intra-op thread(s)", threads)
    with torch_threads(threads):  # masks at network size and the bank's copies are small ops too
        train_loader, val_loader, has_val = make_loaders(plan, data, model, packed=packed)
    if not has_val:
        log.warning("no validation slices: training runs all %d epochs and keeps the last weights", cfg.epochs)
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(plan)
    # The head trains in train mode (BatchNorm on batch statistics) whatever an earlier evaluation left it in:
    # Lightning keeps each submodule's mode as it finds it, so a second fit of one model would otherwise differ.
    model.segmenter.head.train()
    one_call = whole_epochs(plan, model, packed) if one_call_per_epoch is None else one_call_per_epoch
    if one_call and not packs(plan, model, packed):
        raise ValueError("one call per epoch needs packed batches (cache-only training: a frozen backbone and a "
                         "head without pixels)")
    if one_call:
        from emfm.train.bank import OneCallPerEpoch

        train_loader = OneCallPerEpoch(train_loader)
    module = SegmentationModule(
        model.segmenter, lr=plan.lr, weight_decay=cfg.weight_decay, loss=cfg.loss, alignment=plan.alignment,
        lr_schedule=cfg.lr_schedule, whole_epochs=len(train_loader.loader) if one_call else None,
        grad_clip=cfg.grad_clip if one_call else None,
    )
    keep, history = KeepBest(), History()
    callbacks: list[L.Callback] = [keep, history, NewCropsEachEpoch()]
    if has_val and cfg.patience > 0:
        from lightning.pytorch.callbacks import EarlyStopping

        callbacks.append(EarlyStopping(monitor="val_loss", patience=cfg.patience, mode="min"))
    if on_epoch is not None:
        from emfm.train._lightning import epoch_callback

        callbacks.append(epoch_callback(on_epoch))
    trainer = L.Trainer(
        max_epochs=cfg.epochs, min_steps=cfg.min_steps or None, accelerator="auto", devices=cfg.devices,
        num_nodes=cfg.num_nodes, strategy=_strategy(cfg),
        precision=plan.lightning_precision,
        gradient_clip_val=None if one_call else cfg.grad_clip or None,  # one call per epoch: the module clips
        callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=cfg.val_every,
        # A time budget (Lightning's max_time) ends training like the last epoch would: the best weights are kept.
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        limit_val_batches=1.0 if has_val else 0,
    )
    from emfm._memory import PeakMemory
    from emfm.train._lightning import lightning_guard

    with PeakMemory() as peak, lightning_guard(cfg), torch_threads(threads):
        trainer.fit(module, train_loader, val_loader if has_val else None)
    # Lightning hands the module back on the CPU; the backbone (none for a from-scratch model) stayed put.
    device = next(plan.backbone.parameters(), next(model.segmenter.parameters())).device
    model.segmenter.to(device).eval()
    best_epoch = keep.best_epoch if has_val else len(history.rows) - 1
    seconds = time.perf_counter() - started
    warnings, fraction = (
        kept_model_warnings(module, val_loader, best_epoch, len(history.rows)) if has_val else ([], None)
    )
    return Fitted(
        history=history.rows, best_epoch=best_epoch, best_val_loss=keep.best_loss if has_val else None,
        has_val=has_val, seconds=seconds, warnings=warnings, val_foreground=fraction, memory=peak.record(),
    )
