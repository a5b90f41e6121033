"""``--method self-training``: a mean teacher labels the target's confident pixels, the student learns them.

Self-training is how EM mitochondria segmentation has been adapted to unlabelled volumes: Wu et al. 2021
("Uncertainty-Aware Label Rectification for Domain Adaptive Mitochondria Segmentation", MICCAI) learn the
target from a source model's pseudo-labels, keeping the reliable ones; DA-ISC (Huang et al. 2022, "Domain
Adaptive Mitochondria Segmentation via Enforcing Inter-Section Consistency", MICCAI) adapts with the unlabelled
target's own consistency; Archit & Pape 2023 ("Probabilistic Domain Adaptation for Biomedical Image
Segmentation") filter pseudo-labels and train jointly on source and target. Here, with the teacher of
Tarvainen & Valpola 2017:

1. The teacher is an exponential moving average of the student (:mod:`emfm.adapt.teacher`, ``decay``).
2. The teacher predicts on the clean target crop; pixels where its softmax confidence is at least
   ``threshold`` take its argmax as their pseudo-label, the others are ignored.
3. The student sees an honestly augmented view of the same crop (:mod:`emfm.adapt.views`) and is trained with
   cross-entropy on the confident pixels only, plus (``source_weight``, default 1) the run's own supervised
   loss on its own labelled slices when they can be found (:mod:`emfm.adapt.supervised`).
4. A fixed number of ``steps``, seeded; the adapted run keeps the teacher.

Only the head trains: a frozen run reads the target's features from the feature cache (encoded once, as
training encodes), a LoRA or from-scratch run encodes each crop live with its backbone (and LoRA) fixed, so
the adapted checkpoint differs from the source in the head's tensors only. BatchNorm statistics are
domain-specific and frozen while training (:class:`~emfm.adapt.batchnorm.TwoDomains`: the target's are
estimated first by AdaBN); since the layers before them moved, the kept teacher's target statistics are
estimated once more at the end. Target labels are never read: a target is images only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from emfm._settings import Settings, check_number
from emfm.adapt import batchnorm
from emfm.adapt._base import Adapted, AdaptMethod, register_method
from emfm.adapt.source import SourceRun, encode_target, forward_target
from emfm.adapt.target import TargetSet
from emfm.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelfTrainingSettings(Settings):
    """Mean-teacher self-training; ``lr``, ``batch_size`` and ``crop`` default to the run's own (whole slices
    for a run trained without crops)."""

    what = "self-training setting"

    steps: int = 200
    decay: float = 0.99
    threshold: float = 0.9
    source_weight: float = 1.0
    seed: int = 0
    lr: float | None = None
    batch_size: int | None = None
    crop: int | None = None
    feature_dropout: float = 0.2
    intensity_augment: bool = True

    def __post_init__(self) -> None:
        check_number("steps", self.steps, minimum=1, integer=True)
        check_number("decay", self.decay, minimum=0, maximum=1)
        check_number("threshold", self.threshold, minimum=0, maximum=1)
        check_number("source_weight", self.source_weight, minimum=0)
        check_number("seed", self.seed, minimum=0, integer=True)
        check_number("feature_dropout", self.feature_dropout, minimum=0, maximum=0.95)
        if self.lr is not None:
            check_number("lr", self.lr, minimum=0, exclusive_minimum=True)
        if self.batch_size is not None:
            check_number("batch_size", self.batch_size, minimum=1, integer=True)
        if self.crop is not None:
            check_number("crop", self.crop, minimum=1, integer=True)


@register_method
class SelfTraining(AdaptMethod):
    """Mean-teacher self-training on confident pseudo-labels, with the run's supervised loss beside it."""

    name = "self-training"
    summary = "mean-teacher self-training on confident pseudo-labels (+ the run's own supervised loss)"
    source = ("Tarvainen & Valpola 2017 (mean teacher); Wu et al. 2021 (pseudo-labels for EM mitochondria); "
              "Huang et al. 2022 (DA-ISC); Archit & Pape 2023 (joint source-target self-training)")
    settings_type = SelfTrainingSettings

    def check(self, source: SourceRun) -> None:
        crop = self.crop(source)
        patch = source.info.patch_size
        if crop is not None and crop % patch:
            fit = crop // patch * patch or patch
            raise ConfigError(f"crop {crop} is not a multiple of the run's patch size {patch}; use {fit}")

    def crop(self, source: SourceRun) -> int | None:
        return self.settings.crop if self.settings.crop is not None else source.config.crop  # type: ignore[attr-defined]

    def adapt(self, source: SourceRun, target: TargetSet, *, progress: bool = True) -> Adapted:
        from tqdm.auto import tqdm

        s: SelfTrainingSettings = self.settings  # type: ignore[assignment]
        started = time.perf_counter()
        loop = _Loop(self, source, target, progress)
        torch.manual_seed(s.seed)  # feature dropout draws from torch's generator; crops and intensities from the seed
        history = [loop.step(i) for i in tqdm(range(s.steps), desc="self-training", disable=not progress)]
        segmenter, info = loop.finish()
        record = {
            "confident_fraction": [h["confident_fraction"] for h in history],
            "target_loss": [h["target_loss"] for h in history],
            "source_loss": [h["source_loss"] for h in history] if loop.supervised is not None else None,
            "source": loop.source_record, "lr": loop.lr, "batch_size": loop.batch_size, "crop": loop.views.crop,
            "per_domain": loop.domains.slot is not None, "encoding": "cached" if loop.cached else "live",
            "adapt_seconds": round(time.perf_counter() - started, 3),
        }
        fractions = record["confident_fraction"]
        summary = (f"{s.steps} steps, confident pixels {fractions[0]:.1%} of the first target batch and "
                   f"{fractions[-1]:.1%} of the last, " + ("with" if loop.supervised is not None else "without")
                   + " the run's supervised loss")
        return Adapted(segmenter=segmenter, info=info, steps=s.steps, summary=summary, record=record)


class _Loop:
    """The student, its teacher, the target's views and the source batches, and one training step."""

    def __init__(self, method: SelfTraining, source: SourceRun, target: TargetSet, progress: bool) -> None:
        from emfm.adapt.teacher import as_teacher
        from emfm.adapt.views import TargetViews, target_sources
        from emfm.models.heads import head_default_lr
        from emfm.train.augment import IntensityAugment

        s: SelfTrainingSettings = method.settings  # type: ignore[assignment]
        self.s, self.run, self.target = s, source, target
        self.student = source.segmenter
        self.cached = source.uses_cached_features
        self.features = encode_target(source, target, progress=progress)
        self.domains, teacher = batchnorm.split_statistics(
            self.student.head, forward_target(source, self.student, target, self.features)
        )
        self.teacher = as_teacher(teacher)
        cfg = source.config
        self.lr = float(s.lr if s.lr is not None else (cfg.lr if cfg.lr is not None else head_default_lr(cfg.head)))
        self.batch_size = int(s.batch_size or cfg.batch_size)
        pixels = not self.cached or self.student.needs_pixels
        layers = source.layers
        grids = (lambda i: self.features.head_grids(i, layers)) if self.features is not None else None
        sources = target_sources(target.images, source.info.preprocessing, grids=grids, want_pixels=pixels)
        intensity = IntensityAugment() if s.intensity_augment and pixels else None
        self.views = TargetViews(sources, crop=method.crop(source), patch=source.info.patch_size,
                                 preprocessing=source.info.preprocessing, intensity=intensity, seed=s.seed)
        self.supervised, self.source_record = self._source_batches(progress)
        self._ready_student()
        params = [p for p in self.student.head.parameters() if p.requires_grad]
        self.optimiser = torch.optim.AdamW(params, lr=self.lr, weight_decay=cfg.weight_decay)

    def _source_batches(self, progress: bool):
        if self.s.source_weight == 0:
            return None, {"used": False, "reason": "source_weight is 0"}
        from emfm.adapt.supervised import source_batches

        batches, record = source_batches(self.run, lr=self.lr, batch_size=self.batch_size, seed=self.s.seed,
                                         progress=progress)
        return batches, {**record, "weight": self.s.source_weight}

    def _ready_student(self) -> None:
        """The head trains (its BatchNorm layers in evaluation mode: statistics frozen), the backbone does not."""
        from torch.nn.modules.batchnorm import _BatchNorm

        head = self.student.head
        head.train()
        for m in head.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
        for p in head.parameters():
            p.requires_grad_(True)

    def step(self, index: int) -> dict[str, float | None]:
        """One optimiser step on a target batch (and a source batch); the teacher follows."""
        from emfm.adapt.teacher import ema_update
        from emfm.adapt.views import view_logits

        device, s = self.run.device, self.s
        encode = self.student.encode if not self.cached else None
        ce_sum, confident, pixels = torch.zeros((), device=device), 0, 0
        for group in self.views.batch(index, self.batch_size):
            with torch.no_grad():
                probs = view_logits(encode, self.teacher, group, "clean", device=device).softmax(1)
            confidence, pseudo = probs.max(1)
            keep = confidence >= s.threshold
            with self.domains.target(self.student.head):
                logits = view_logits(encode, self.student.head, group, "strong", device=device,
                                     dropout=s.feature_dropout)
            ce = F.cross_entropy(logits.float(), pseudo, reduction="none")
            ce_sum = ce_sum + (ce * keep).sum()
            confident, pixels = confident + int(keep.sum()), pixels + keep.numel()
        target_loss = ce_sum / max(confident, 1)
        loss, source_loss = target_loss, None
        if self.supervised is not None:
            source_loss = self.supervised.loss(index)
            loss = loss + s.source_weight * source_loss
        if loss.requires_grad:
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if self.run.config.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.student.head.parameters(), self.run.config.grad_clip)
            self.optimiser.step()
        ema_update(self.teacher, self.student.head, s.decay)
        return {"confident_fraction": round(confident / max(pixels, 1), 6),
                "target_loss": round(float(target_loss.detach()), 6),
                "source_loss": round(float(source_loss.detach()), 6) if source_loss is not None else None}

    def finish(self) -> tuple[Any, Any]:
        """The teacher as the adapted segmenter: its target statistics estimated afresh, the target's domain kept."""
        from emfm.models.segmenter import Segmenter

        student, slot = self.student, self.domains.slot
        segmenter = Segmenter(self.teacher, student.backbone, layers=student.layers,
                              preprocessing=student.preprocessing).eval()
        norms = batchnorm.target_slot_norms(self.teacher, slot)
        if norms:
            batchnorm.estimate(self.teacher, norms, forward_target(self.run, segmenter, self.target, self.features))
        batchnorm.keep_target(self.teacher, slot)
        info = self.run.info
        if slot is not None:
            info = dataclasses.replace(info, domains=(self.target.name,))
        return segmenter, info
