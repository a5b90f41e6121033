"""Evaluate a trained segmenter on test sets and record it in a run directory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emfm._io import safe_name
from emfm.data._stack import SliceStack
from emfm.evaluate.evaluate import StackResult, evaluate_stack, summarise
from emfm.evaluate.inference import slice_logits
from emfm.features import StackFeatures
from emfm.models.checkpoint import ModelInfo
from emfm.models.segmenter import Segmenter

log = logging.getLogger(__name__)


def evaluate_segmenter(
    segmenter: Segmenter,
    info: ModelInfo,
    test_stacks: Mapping[str, SliceStack],
    run_dir: str | Path,
    *,
    features: Mapping[str, StackFeatures | None] | None = None,
    save_predictions: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every test set, write predictions and the example figure, return the metrics' test part.

    With two or more test sets it also reports how far apart they lie in the head's features
    (``feature_shift``, :mod:`emfm.evaluate.feature_shift`), recorded while they are scored.
    """
    from emfm.evaluate.feature_shift import HeadFeatureRecorder, feature_shift
    from emfm.evaluate.figures import plot_examples

    run_dir = Path(run_dir)
    results: dict[str, StackResult] = {}
    head_features: dict[str, np.ndarray] = {}
    alignment = info.make_alignment()
    for name, stack in test_stacks.items():
        cached = (features or {}).get(name)

        def forward_all(stack=stack, cached=cached) -> None:
            """The set's slices through the model, labels unread (for alignments that adapt to a set, AdaBN)."""
            for i in range(len(stack)):
                grids = cached.head_grids(i, segmenter.layers) if cached is not None else None
                slice_logits(segmenter, stack.images[i], info.preprocessing, grids=grids)

        recorder = HeadFeatureRecorder(segmenter.head)
        with alignment.test_domain(segmenter.head, name, info.domains, forward_all), recorder.recording():
            results[name] = evaluate_stack(segmenter, stack, info.preprocessing, features=cached, progress=progress)
        head_features[name] = recorder.embeddings()
        if save_predictions:
            _save_predictions(run_dir / "predictions" / f"{safe_name(name)}.tif", results[name].predictions)
    panels = []
    for name, stack in test_stacks.items():
        res = results[name]
        # Three slices spread through the stack (first, middle and last quartiles of those with foreground).
        with_fg = [i for i, m in enumerate(stack.masks) if m.any()] or list(range(len(stack)))
        picks = sorted({with_fg[int(q * (len(with_fg) - 1))] for q in (0.25, 0.5, 0.75)})
        for i in picks:
            panels.append(
                (name, stack.ids[i], stack.images[i], stack.masks[i], res.predictions[i], res.native.per_slice[i])
            )
    plot_examples(panels, run_dir / "examples.png")
    out = summarise(results, {n: s.ids for n, s in test_stacks.items()})
    if len(test_stacks) >= 2:
        out["feature_shift"] = feature_shift(head_features)
    return out


def _save_predictions(path: Path, preds: list[np.ndarray]) -> None:
    """Predicted 0/1 masks as a zlib-compressed tif: one (Z, Y, X) stack when the slices share a size,
    else one page per slice."""
    import tifffile

    from emfm._io import atomic_path

    with atomic_path(path, suffix=".tif") as tmp:
        if len({p.shape for p in preds}) == 1:
            tifffile.imwrite(tmp, np.stack(preds).astype(np.uint8), compression="zlib", photometric="minisblack")
        else:
            with tifffile.TiffWriter(tmp) as tif:
                for p in preds:
                    tif.write(p.astype(np.uint8), compression="zlib", contiguous=False, photometric="minisblack")


def _test_stack(config, name: str):
    """Test set ``name`` as the run was scored on it: its fold's test part for a cross-validation run's own
    training set, else the published test split (paired as the run's pairing says)."""
    from emfm.data import load_split

    if config.cv_folds and name in config.train:
        from emfm.runsets import fold_parts

        return fold_parts(config, name, progress=False)[2]
    return load_split(name, "test", data_root=config.data_root, pairing=config.split_pairing("test"))


def evaluate_run(
    run_dir: str | Path,
    test: list[str] | None = None,
    *,
    data_root: str | None = None,
    backbone: str | Path | None = None,
    shift: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-evaluate a saved run on ``test`` sets (default: its own) without training.

    ``backbone`` is where the run's backbone weights are now, when they have moved since training (the
    checkpoint records where they were); they must be the same weights (their digest is checked).
    The model is loaded before any data, so a missing or wrong backbone fails first.
    With ``shift``, each test set's distance from the run's training sets in the backbone's features is
    reported too (``shift``, :mod:`emfm.evaluate.transfer`).
    Writes ``evaluation.json`` (and predictions) in the run directory and returns the metrics.
    """
    from emfm import rundir
    from emfm._io import atomic_write_json, finite_json
    from emfm.align.inputs import standardise_for_run
    from emfm.config import TrainConfig, load_yaml
    from emfm.models.checkpoint import CHECKPOINT_NAME, load_checkpoint

    run_dir = Path(run_dir)
    cfg_path = run_dir / rundir.CONFIG_NAME
    if not cfg_path.is_file():
        from emfm.errors import RunDirError

        raise RunDirError(f"{run_dir} is not a run directory (no {rundir.CONFIG_NAME}); pass the --out of `emfm train`")
    config = TrainConfig.from_dict(load_yaml(cfg_path))
    names = test or list(config.test)
    root = data_root or config.data_root
    segmenter, info = load_checkpoint(run_dir / CHECKPOINT_NAME, backbone_path=backbone)
    # A study-compose run (the study's exact mispairing ablation) is re-scored as it was scored: mispaired;
    # a cross-validation run on its own fold's test slices.
    stacks = {n: _test_stack(config.replace(data_root=root), n) for n in names}
    stacks = standardise_for_run(info, stacks)  # an input-side alignment's standardisation, as in training
    result = evaluate_segmenter(segmenter, info, stacks, run_dir, progress=progress)
    source = str(Path(backbone).expanduser().resolve()) if backbone is not None else info.backbone
    out = {"run_dir": str(run_dir), "backbone": info.backbone_name, "backbone_source": source, **result}
    if shift:
        from emfm.evaluate.transfer import transfer_report

        out.update(transfer_report(segmenter, info, config.replace(data_root=root), stacks, progress=progress))
    atomic_write_json(run_dir / "evaluation.json", finite_json(out))
    return out

