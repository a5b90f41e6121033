"""The LightningModule: receives its segmenter (backbone + head), trains with Dice loss and AdamW."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import lightning as L
import torch

from emfm.evaluate.metrics import dice_loss
from emfm.models.segmenter import Segmenter
from emfm.train.bank import WholeEpoch
from emfm.train.datasets import PackedBatch, PackedGroup, pack_items

log = logging.getLogger(__name__)


class SegmentationModule(L.LightningModule):
    """Trains a :class:`Segmenter` from cached grids (frozen backbones) or from pixels (live encoding).

    Batches are lists of items (see ``emfm.train.crops``): each has a ``mask`` and ``grids`` (cached
    token grids, one per layer the head reads) and/or ``pixels``; items of one size run together. Or
    they come already stacked in those groups (:class:`~emfm.train.datasets.PackedBatch`, cache-only training).
    Only parameters with ``requires_grad`` go to the optimiser: the head, plus any adapter's.
    """

    def __init__(
        self, segmenter: Segmenter, *, lr: float, weight_decay: float, loss: str = "dice", alignment=None,
        lr_schedule: str = "constant", whole_epochs: int | None = None, grad_clip: float | None = None,
    ) -> None:
        """``whole_epochs``: the number of batches an epoch holds when the train loader hands the module whole
        epochs (:class:`~emfm.train.bank.OneCallPerEpoch`, cache-only training on one process); the module then
        steps its optimiser itself (manual optimisation) and clips gradients to ``grad_clip`` as the Trainer
        would. None: one batch per step, optimised by Lightning."""
        super().__init__()
        self.whole_epochs = whole_epochs
        self.grad_clip = grad_clip
        if whole_epochs is not None:
            self.automatic_optimization = False
        self.segmenter = segmenter
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.weight_decay = weight_decay
        self.loss_name = loss
        self.alignment = alignment  # an emfm.align.Alignment, or None for plain training
        # What the alignment trains beside the head (DANN's discriminator): a child module, so it moves with
        # this one and its parameters reach the optimiser; it is not part of the segmenter that is saved.
        self.align_module = None
        if alignment is not None and alignment.needs_features:
            from emfm.models.heads import feature_module

            self.align_module = alignment.training_module(feature_module(segmenter.head))
        self._captured: list[torch.Tensor] | None = None  # head features of the groups run so far

    @property
    def per_domain(self) -> bool:
        """Whether the head sees one training set at a time (the alignment normalises each on its own)."""
        return self.alignment is not None and self.alignment.per_domain_forward

    def _logits(self, group: PackedGroup) -> torch.Tensor:
        if group.grids:
            return self.segmenter.head_logits(group.grids, group.pixels, group.size)
        return self.segmenter(group.pixels)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """A packed batch moves its few stacked tensors itself: Lightning's generic walk over a dataclass
        copies it field by field on every step, which costs more than the head's work on cached grids."""
        if isinstance(batch, PackedBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _logits_and_targets(
        self, batch: list[dict] | PackedBatch
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
        """Logits, targets and training-set index per group of items that run together: one group per
        size, and per training set when the alignment normalises each set on its own.

        ``batch`` is a list of items (stacked here) or a :class:`PackedBatch` stacked beforehand
        (cache-only training, :mod:`emfm.train.bank`); both run the same groups in the same order.
        """
        per_domain = self.per_domain
        if isinstance(batch, PackedBatch):
            if batch.per_domain != per_domain:
                raise ValueError(f"a batch packed with per_domain={batch.per_domain} for a module that runs "
                                 f"per_domain={per_domain}: its groups would mix training sets or split them")
            packed = batch
        else:
            packed = pack_items(batch, per_domain=per_domain)
        logits, targets, sources = [], [], []
        self._item_sources: list[list[int]] = []
        for group in packed.groups:
            group = group.to(self.device)
            if per_domain:
                self.alignment.set_domain(self.segmenter.head, group.domain)
            logits.append(self._logits(group))
            targets.append(group.masks)
            sources.append(group.domain)
            self._item_sources.append(group.sources)
        if per_domain:
            self.alignment.set_domain(self.segmenter.head, None)
        return logits, targets, sources

    @contextlib.contextmanager
    def _capturing_features(self) -> Iterator[None]:
        """Record the input of the head's feature layer on every forward pass (feature alignment)."""
        from emfm.models.heads import feature_module

        self._captured = []

        def keep(_module, inputs) -> None:
            assert self._captured is not None
            self._captured.append(inputs[0])

        handle = feature_module(self.segmenter.head).register_forward_pre_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def _features_by_set(self) -> dict[int, torch.Tensor]:
        """The captured feature maps as rows (pixels x channels) per training set."""
        assert self._captured is not None
        rows: dict[int, list[torch.Tensor]] = {}
        for fmap, item_sources in zip(self._captured, self._item_sources):
            for b, s in enumerate(item_sources):
                rows.setdefault(s, []).append(fmap[b].flatten(1).T)
        self._captured = None
        return {s: torch.cat(r) for s, r in rows.items()}

    def _loss_of(self, logits: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        value = dice_loss(logits, targets)
        if self.loss_name == "dice_ce":
            import torch.nn.functional as F

            ce = sum(F.cross_entropy(lg.float(), y, reduction="sum") for lg, y in zip(logits, targets))
            value = value + ce / sum(y.numel() for y in targets)
        return value

    def loss(self, batch: list[dict] | PackedBatch, *, align_features: bool = False) -> torch.Tensor:
        """The segmentation loss; plus the alignment's feature term when ``align_features`` (training)."""
        if align_features and self.alignment is not None and self.alignment.needs_features:
            with self._capturing_features():
                value = self._segmentation_loss(batch)
            term = self.alignment.feature_loss(self._features_by_set())
            if term is not None:
                if getattr(self, "_trainer", None) is not None:  # also called outside a Trainer (tests)
                    self.log("align_loss", term.detach(), on_step=False, on_epoch=True, batch_size=len(batch))
                value = value + term
            return value
        return self._segmentation_loss(batch)

    def _segmentation_loss(self, batch: list[dict] | PackedBatch) -> torch.Tensor:
        logits, targets, sources = self._logits_and_targets(batch)
        if self.alignment is None or not self.alignment.per_set_loss:
            return self._loss_of(logits, targets)
        losses, counts = {}, {}
        for k in sorted(set(sources)):
            mine = [i for i, s in enumerate(sources) if s == k]
            losses[k] = self._loss_of([logits[i] for i in mine], [targets[i] for i in mine])
            counts[k] = sum(targets[i].numel() for i in mine)
        return self.alignment.combine(losses, counts)

    def training_step(self, batch: list[dict] | PackedBatch | WholeEpoch, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, WholeEpoch):
            return self._train_whole_epoch(batch)
        loss = self.loss(batch, align_features=True)
        # sync_dist: under DDP each process logs the mean over all of them, so early stopping and the kept
        # epoch are decided alike everywhere (a no-op on one process)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch), prog_bar=True, sync_dist=True)
        return loss

    def _train_whole_epoch(self, epoch: WholeEpoch) -> torch.Tensor | None:
        """Every optimiser step of an epoch in one Lightning step, in the order Lightning's automatic
        optimisation runs them (forward, zero the gradients, backward, clip, step, then the schedule), so the
        weights come out the same to the bit. The epoch's loss is summed as Lightning's epoch mean sums it
        (a float32 total of loss x batch size, over the count) and logged once."""
        optimizer = self.optimizers()
        schedule = self.lr_schedulers() if self.lr_schedule != "constant" else None
        total, count = None, 0
        for batch in epoch:
            if self._may_stop_now():
                break
            batch = batch.to(self.device)
            loss = self.loss(batch, align_features=True)
            optimizer.zero_grad()
            self.manual_backward(loss)
            if self.grad_clip:
                self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            optimizer.step()
            if schedule is not None:
                schedule.step()
            value = loss.detach().float() * len(batch)
            total = value if total is None else total + value
            count += len(batch)
        if not count:  # stopped before its first step (Lightning itself would not have started the epoch)
            return None
        mean = total / count
        self.log("train_loss", mean, on_step=False, on_epoch=True, batch_size=1, prog_bar=True, sync_dist=True)
        return mean

    def _may_stop_now(self) -> bool:
        """Lightning's test before each batch of an epoch (its epoch loop's ``done``): early stopping asked to
        stop and ``min_epochs`` and ``min_steps`` are met. An epoch handed over whole must end where Lightning's
        would: mid-epoch, at the step that meets ``min_steps`` after early stopping fired."""
        trainer = self.trainer
        if not trainer.should_stop:
            return False
        loop = trainer.fit_loop
        epochs_met = not loop.min_epochs or trainer.current_epoch >= loop.min_epochs
        steps_met = not loop.min_steps or trainer.global_step >= loop.min_steps
        return epochs_met and steps_met

    def validation_step(self, batch: list[dict] | PackedBatch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch), prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.segmenter.parameters() if p.requires_grad]
        if self.align_module is not None:
            params += list(self.align_module.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return optimizer
        # whole epochs: Lightning counts one step an epoch, the optimiser takes ``whole_epochs`` of them
        if self.whole_epochs:
            steps = self.whole_epochs * int(self.trainer.max_epochs)
        else:
            steps = self.trainer.estimated_stepping_batches
        total = max(1, int(steps))
        schedule = cosine_with_warmup(optimizer, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The weights that training changes (head and adapters), plus BatchNorm buffers."""
        keep = {n for n, p in self.segmenter.named_parameters() if p.requires_grad}
        state = self.segmenter.state_dict()
        return {k: v.detach().clone() for k, v in state.items() if k in keep or k.startswith("head.")}


#: Share of the steps spent warming the learning rate up linearly before the cosine decay.
WARMUP_SHARE = 0.05


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over the first 5% of ``total_steps``, then a cosine decay to 0 at ``total_steps``.

    Loshchilov and Hutter 2017 (SGDR) without restarts, with the warm-up of Goyal et al. 2017; a cosine decay is
    what DINOv2's linear evaluation trains its heads with. A LambdaLR with the formula written out:
    torch's SequentialLR of LinearLR and CosineAnnealingLR chains their factors and does not give this curve.
    """
    warmup = max(1, round(WARMUP_SHARE * total_steps))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class KeepBest(L.Callback):
    """Keep the trainable weights of the epoch with the lowest validation loss, restore them at the end.

    Lightning's ModelCheckpoint would write the whole module (the backbone too) to disk every time;
    only the head and adapters change, so an in-memory copy of those is enough.
    """

    def __init__(self) -> None:
        self.best_loss = float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: SegmentationModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and float(loss) < self.best_loss:
            self.best_loss = float(loss)
            self.best_epoch = trainer.current_epoch
            self.best_state = module.trainable_state()

    def on_fit_end(self, trainer: L.Trainer, module: SegmentationModule) -> None:
        if self.best_state is not None:
            module.segmenter.load_state_dict(self.best_state, strict=False)


class NewCropsEachEpoch(L.Callback):
    """Tell a crop dataset which epoch it is, so each epoch draws new windows (repeatably)."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        for part in (getattr(loader, "dataset", None), getattr(loader, "sampler", None)):
            if hasattr(part, "set_epoch"):  # crop datasets and the mixed-batch order
                part.set_epoch(trainer.current_epoch)


class History(L.Callback):
    """Per-epoch train and validation loss, for metrics.json and the curve figure."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: SegmentationModule) -> None:
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        validated = (trainer.current_epoch + 1) % (trainer.check_val_every_n_epoch or 1) == 0
        for key in ("train_loss", "val_loss"):
            if key in m and (key == "train_loss" or validated):  # no stale val_loss between validations
                row[key] = float(m[key])
        self.rows.append(row)
        # Without a progress bar (clusters, logs) the epochs would pass in silence.
        log.info("epoch %d: %s", row["epoch"], ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
