"""From a run directory to the network that is exported: loaded, checked, LoRA merged, in-model tiling off.

LoRA's low-rank updates are merged into the attention weights (``W + s B A``, peft's own ``merge``, or
row block by row block for the fused-qkv layout) and the adapter layers are replaced by the merged linear
layers, so the exported backbone is a plain
transformers model of its family: the architecture rebuilds it from its configuration alone, and ONNX
sees ordinary matrix products. The merged weights differ from the adapted ones by float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from emfm.errors import CheckpointFormatError, ConfigError, RunDirError
from emfm.export.architecture import ExportedSegmenter, architecture_kwargs


@dataclass
class LoadedRun:
    """A run ready to export: its network, its facts, its training config and its backbone's family."""

    module: ExportedSegmenter
    info: Any
    config: Any
    family: str
    kwargs: dict[str, Any]
    run_dir: Path


def checkpoint_of(run_dir: str | Path) -> Path:
    """The run's checkpoint, or a RunDirError that says what the directory lacks."""
    from emfm.models.checkpoint import CHECKPOINT_NAME

    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist; pass --run the --out folder of `emfm train`")
    ckpt = run / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise RunDirError(f"{run} has no {CHECKPOINT_NAME}: it is not a finished `emfm train` run; train it first")
    return ckpt


def check_exportable(ckpt: Path) -> None:
    """Refuse a run whose model is more than its network: an input-side alignment (:mod:`emfm.align.inputs`)
    standardises each whole volume's intensities first, from statistics of the volume, which neither an
    ONNX graph of one tile nor a bioimage.io preprocessing step declares; an export would silently predict
    on raw intensities.

    Raises:
        ConfigError: the run was trained with an input-side alignment.
    """
    from emfm.models.checkpoint import read_info

    info = read_info(ckpt)
    if info.make_alignment().input_side:
        raise ConfigError(
            f"{ckpt.parent} standardises every volume with --align {info.align} before its network, which an "
            f"exported model cannot include; predict with `emfm predict --run {ckpt.parent}` instead"
        )


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer inside ``model`` into its base layer and put the base layer in its place:
    peft's (the separate layout) and emfm's own (the fused-qkv layout, where q, k and v each add their row
    block of one ``s B A``, :func:`emfm.adapters.fused_qkv.merge_grouped_lora`); returns how many were merged
    (0 for a frozen backbone)."""
    from emfm.adapters.fused_qkv import merge_grouped_lora

    merged = merge_grouped_lora(model)
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft, so no peft LoRA layers either
        return merged
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
            merged += 1
    return merged


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a finished run as the network to export.

    Raises:
        RunDirError: no run, no checkpoint, or a checkpoint trained on other backbone weights.
        CheckpointFormatError: a checkpoint whose tensors do not fit its backbone.
        ConfigError: a run without a readable ``config.yaml``.
    """
    from emfm.export.samples import run_config
    from emfm.models.checkpoint import load_checkpoint

    ckpt = checkpoint_of(run_dir)
    config = run_config(run_dir)
    try:
        segmenter, info = load_checkpoint(ckpt)
    except (RuntimeError, KeyError) as exc:  # torch's load_state_dict: missing keys, wrong shapes
        raise CheckpointFormatError(
            f"{ckpt} does not fit its backbone {config.backbone} ({' '.join(str(exc).split())[:200]}); "
            f"was the backbone replaced? retrain the run"
        ) from None
    backbone = segmenter.backbone
    if backbone is not None:
        merge_lora(backbone.model)
        if getattr(backbone, "projection", None) is not None:  # OpenCLIP's image-text projection: unused here
            backbone.projection = None
    # A tiled run's export takes one tile at a time (its consumers tile); no tiling inside the graph.
    segmenter.preprocessing = None
    module = ExportedSegmenter(segmenter, info.mean, info.std).eval()
    return LoadedRun(module=module, info=info, config=config, family=backbone.family,
                     kwargs=architecture_kwargs(backbone, info), run_dir=Path(run_dir))
