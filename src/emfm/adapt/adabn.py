"""``--method adabn``: the head's BatchNorm statistics re-estimated on the target's slices, nothing else.

Li et al. 2018, "Adaptive Batch Normalization for practical domain adaptation" (Pattern Recognition 80):
every BatchNorm layer's running mean and variance become the target's, a cumulative average over the
target's slices (momentum None), computed without gradients; every weight, and the backbone, stay as
trained. Each slice goes through the model whole, as evaluation and prediction see it (from the feature
cache for a frozen run, live for LoRA and from-scratch runs), so the statistics are those of the inputs
the adapted model will meet. A run trained with ``align: domain-bn`` keeps the target's statistics as its
one domain, named after the target (:mod:`emfm.adapt.batchnorm` says why). A head without BatchNorm (the
from-scratch U-Net normalises per instance) is refused: there is nothing to re-estimate.

The same re-estimation happens inside ``emfm evaluate`` for a domain-bn run on a set it was not trained on;
this method makes it a run of its own, for any head with BatchNorm, that ``emfm predict`` uses too.
"""

from __future__ import annotations

import dataclasses
import time

from emfm.adapt import batchnorm
from emfm.adapt._base import Adapted, AdaptMethod, register_method
from emfm.adapt.source import SourceRun, encode_target, forward_target
from emfm.adapt.target import TargetSet


@register_method
class AdaBN(AdaptMethod):
    """Re-estimate every BatchNorm running mean and variance of the head on the target (Li et al. 2018)."""

    name = "adabn"
    summary = "re-estimate the head's BatchNorm statistics on the target's slices (no training)"
    source = "Li et al. 2018, Adaptive Batch Normalization for practical domain adaptation"

    def check(self, source: SourceRun) -> None:
        batchnorm.require_batchnorm(source.segmenter.head, str(source.run_dir), self.name)

    def adapt(self, source: SourceRun, target: TargetSet, *, progress: bool = True) -> Adapted:
        started = time.perf_counter()
        segmenter = source.segmenter
        features = encode_target(source, target, progress=progress)
        norms, slot = batchnorm.target_norms(segmenter.head)
        batchnorm.estimate(segmenter.head, norms, forward_target(source, segmenter, target, features))
        batchnorm.keep_target(segmenter.head, slot)
        info = source.info if slot is None else dataclasses.replace(source.info, domains=(target.name,))
        record = {
            "batchnorm_layers": len(norms),
            "per_domain": slot is not None,
            "slices_averaged": len(target),
            "adapt_seconds": round(time.perf_counter() - started, 3),
        }
        layers = f"{len(norms)} BatchNorm layer{'s' if len(norms) != 1 else ''}"
        summary = f"the statistics of {layers} re-estimated on {len(target)} target slices"
        if slot is not None:
            summary += ", kept as the run's one domain"
        return Adapted(segmenter=segmenter, info=info, steps=len(target), summary=summary, record=record)
