"""The run being adapted: its config, its model, and how its head is fed.

The run directory is read, never written: ``config.yaml`` (kept verbatim for the adapted run, so
``emfm evaluate`` and ``emfm predict`` treat it like the source), the checkpoint (rebuilt by
:func:`emfm.models.checkpoint.load_checkpoint`, backbone digest checked) and ``splits.json`` (the exact
labelled slices it was trained on). A frozen run's head reads cached features: the target is encoded once
through the same on-disk feature cache, with the same keys, that training used (:func:`encode_target`);
a run that encodes live (LoRA, a from-scratch U-Net) is fed pixels and its backbone runs as it ran in
evaluation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emfm import rundir
from emfm._io import file_sha256
from emfm.errors import RunDirError

if TYPE_CHECKING:
    from emfm.adapt.target import TargetSet
    from emfm.config import TrainConfig
    from emfm.features import FeatureCache, StackFeatures
    from emfm.models.checkpoint import ModelInfo
    from emfm.models.segmenter import Segmenter

log = logging.getLogger(__name__)

SPLITS_NAME = "splits.json"


@dataclass
class SourceRun:
    """A trained run, loaded: its directory, config (and the text of ``config.yaml``), model and feature cache."""

    run_dir: Path
    config: TrainConfig
    config_yaml: str
    info: ModelInfo
    segmenter: Segmenter
    checkpoint_sha256: str
    cache: FeatureCache

    @property
    def backbone(self) -> Any:
        return self.segmenter.backbone

    @property
    def uses_cached_features(self) -> bool:
        return bool(self.info.make_adapter().uses_cached_features)

    @property
    def encode_precision(self) -> str:
        """The precision the run's frozen features are encoded in on this machine: its ``precision`` setting as
        training resolves it (fp32 unless it asked for bf16 or auto where the hardware has bf16), so that
        adaptation reads the cache entries training wrote and encodes a target as training encoded its data."""
        from emfm.hardware import resolve_precision

        return resolve_precision(self.config.precision, self.device)[0]

    @property
    def layers(self) -> tuple[int, ...]:
        """The blocks the head reads (0-based; older checkpoints name none: the final block)."""
        return tuple(self.info.layers) or (self.backbone.num_layers - 1,)

    @property
    def device(self) -> Any:
        return next(self.segmenter.head.parameters()).device

    def splits(self) -> dict[str, Any]:
        """The run's ``splits.json`` (the slice ids it trained on), or empty for runs that have none."""
        path = self.run_dir / SPLITS_NAME
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            log.warning("%s is unreadable; the run's training slices are taken from its config instead", path)
            return {}



def check_run_dir(run_dir: str | Path) -> Path:
    """The run directory, checked to hold a finished run's config and checkpoint (RunDirError if not)."""
    from emfm.models.checkpoint import CHECKPOINT_NAME

    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist; pass --run the --out folder of `emfm train`")
    for name in (rundir.CONFIG_NAME, CHECKPOINT_NAME):
        if not (run / name).is_file():
            raise RunDirError(
                f"{run} has no {name}: it is not a finished run; pass --run the --out folder of a finished `emfm train`"
            )
    return run.resolve()


def load_source_run(
    run_dir: str | Path, *, backbone_path: str | Path | None = None, cache_dir: str | Path | None = None
) -> SourceRun:
    """Load a run to adapt, on the GPU where there is one.

    Args:
        run_dir: the run directory (``emfm train --out``, or an earlier ``emfm adapt --out``).
        backbone_path: where the run's backbone weights are now, if they moved (their digest is checked).
        cache_dir: the feature cache; default the run's own (``cache_dir`` of its config), as training chose it.
    """
    import torch

    from emfm.config import TrainConfig, load_yaml
    from emfm.features import FeatureCache
    from emfm.models.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from emfm.paths import cache_root

    run = check_run_dir(run_dir)
    config = TrainConfig.from_dict(load_yaml(run / rundir.CONFIG_NAME))
    segmenter, info = load_checkpoint(run / CHECKPOINT_NAME, backbone_path=backbone_path)
    segmenter.to("cuda" if torch.cuda.is_available() else "cpu")
    where = cache_dir or config.cache_dir
    cache = FeatureCache(Path(where).expanduser() if where else cache_root() / "features")
    return SourceRun(
        run_dir=run, config=config, config_yaml=(run / rundir.CONFIG_NAME).read_text(), info=info,
        segmenter=segmenter, checkpoint_sha256=file_sha256(run / CHECKPOINT_NAME), cache=cache,
    )


def standardise(source: SourceRun, images: list) -> list:
    """Slices as the run's input-side alignment shows them to the model (the identity for every other)."""
    return list(source.info.make_alignment().standardise(images, source.info.align_state))


def encode_target(source: SourceRun, target: TargetSet, *, progress: bool = True) -> StackFeatures | None:
    """The target's features through the run's feature cache (frozen runs), or None (the run encodes live)."""
    if not source.uses_cached_features:
        return None
    from emfm.features import encode_stack

    backbone = source.backbone
    return encode_stack(
        backbone, target.stack(), preprocessing=source.info.preprocessing, cache=source.cache,
        layers=source.segmenter.intermediate_layers(backbone.num_layers), precision=source.encode_precision,
        progress=progress,
    )


def forward_target(source: SourceRun, segmenter: Segmenter, target: TargetSet, features: StackFeatures | None):
    """A function that runs ``segmenter`` over every target slice, as evaluation would (whole slices, one at a
    time, from cached grids where there are some), and throws the logits away: what AdaBN needs."""
    from emfm.evaluate.inference import slice_logits

    prep = source.info.preprocessing

    def forward_all() -> None:
        for i, image in enumerate(target.images):
            grids = features.head_grids(i, segmenter.layers) if features is not None else None
            slice_logits(segmenter, image, prep, grids=grids)

    return forward_all
