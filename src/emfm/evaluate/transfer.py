"""How far a test set lies from a run's training sets in the run's own backbone features.

An IoU on a new folder says how well the model does there; it does not say why. Beside it, ``emfm
evaluate`` reports how far the test set's images lie from each training set's where the model reads them:
the backbone's final patch tokens, averaged per slice (the ``mean`` image embedding of
:func:`emfm.analysis.embeddings.image_embeddings`), for slices prepared and standardised exactly as the
run prepares them (its preprocessing, and its input-side alignment, :mod:`emfm.align.inputs`). A frozen
run's embeddings come through the feature cache (the training sets' are there from training); a LoRA
run's are encoded live by its adapted backbone, which the cache's key cannot tell from the frozen one.

- Fréchet distance (Heusel et al. 2017) between the two sets' image embeddings, sample covariances, with
  a percentile bootstrap interval resampling slices within each set and split-half baselines (the same
  distance between random halves of one set: the scale of "no shift"), as
  :func:`emfm.analysis.distances.compare_pair` reports them. That function is not called as a whole: its
  baselines need 4 slices per set (a test folder may hold 3) and it always adds KID, so its parts are
  (:func:`~emfm.analysis.bootstrap.bootstrap_interval`, :func:`~emfm.analysis.bootstrap.split_half_baseline`).
- Domain-probe AUC: :func:`emfm.analysis.probes.domain_probe` (PCA + logistic regression) telling the test
  set from the training set, its pooled out-of-fold ROC-AUC; 0.5: the sets cannot be told apart, 1.0: always.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emfm.analysis._threads import single_threaded_blas
from emfm.errors import DataError, EmfmError

log = logging.getLogger(__name__)

N_BOOT = 200  # bootstrap draws per interval: cheap, since the distance is taken in the samples' own span
BASELINE_REPEATS = 50
LEVEL = 0.95


def span_coordinates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sample sets in an orthonormal basis of the affine span of all their samples.

    With fewer samples than dimensions (tens of slices, 1024-d embeddings) every mean difference and
    covariance of these samples, and of any resample or half of them, lies in that span, and the Fréchet
    distance is invariant to translation and rotation: so it is the same in at most n1 + n2 - 1
    coordinates, where each of the hundreds of bootstrap evaluations costs microseconds instead of two
    d x d eigendecompositions. No library offers this reduction, hence the SVD here.
    """
    pooled = np.concatenate([x, y]).astype(np.float64)
    if len(pooled) - 1 >= pooled.shape[1]:
        return x.astype(np.float64), y.astype(np.float64)
    centred = pooled - pooled.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10
    coords = centred @ vt[keep].T if keep.any() else np.zeros((len(pooled), 1))
    return coords[: len(x)], coords[len(x) :]


def _frechet(x: np.ndarray, y: np.ndarray) -> float:
    from emfm.analysis.frechet import frechet_distance

    return frechet_distance(x, y, method="eigh").value


def frechet_with_interval(x: np.ndarray, y: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Fréchet distance of two embedding sets with its bootstrap interval and split-half baselines.

    ``above_baselines`` is whether the interval's lower end clears the upper percentile of every baseline
    that could be taken (a set of fewer than 4 slices has none); None if none could.
    """
    from emfm.analysis.bootstrap import bootstrap_interval, split_half_baseline

    xs, ys = span_coordinates(np.asarray(x), np.asarray(y))
    value = _frechet(xs, ys)
    interval = bootstrap_interval(_frechet, xs, ys, n_boot=n_boot, level=LEVEL, seed=seed, estimate=value)
    baselines = {
        side: split_half_baseline(_frechet, s, repeats=BASELINE_REPEATS, level=LEVEL, seed=seed)
        for side, s in (("test", xs), ("train", ys)) if len(s) >= 4
    }
    above = bool(interval["low"] > max(b["high"] for b in baselines.values())) if baselines else None
    return {
        "value": value,
        # bias: the replicates' mean minus the value; the distance is biased upwards on few slices, so the
        # percentile interval can lie above the value itself
        "interval": {k: interval[k] for k in ("low", "high", "level", "n_boot", "bias")},
        "baselines": {side: {k: b[k] for k in ("mean", "high", "repeats")} for side, b in baselines.items()},
        "above_baselines": above,
    }


def probe_auc(x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> tuple[float | None, str | None]:
    """The domain probe's pooled out-of-fold ROC-AUC (test set = class 0), or None and why not."""
    from emfm.analysis.probes import domain_probe

    try:
        result = domain_probe(np.concatenate([x, y]), np.r_[np.zeros(len(x)), np.ones(len(y))], ["test", "train"],
                              seed=seed)
    except (DataError, ValueError) as exc:  # too few slices for the probe's stratified splits
        return None, f"no domain probe ({' '.join(str(exc).split())[:160]})"
    return result["cross_validation"]["pooled_roc_auc"], None


@single_threaded_blas()
def pair_shift(test: np.ndarray, train: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """``{"frechet": {...}, "probe_auc", "n_images"}`` for one test set against one training set."""
    out: dict[str, Any] = {"n_images": {"test": len(test), "train": len(train)}}
    try:
        out["frechet"] = frechet_with_interval(test, train, n_boot=n_boot, seed=seed)
    except DataError as exc:  # fewer than 2 slices in a set: no covariance
        out["frechet"], out["frechet_note"] = None, str(exc)
    out["probe_auc"], note = probe_auc(test, train, seed=seed)
    if note:
        out["probe_note"] = note
    return out


def embeddings(backbone: Any, stack: Any, preprocessing: Any, cache: Any, *, progress: bool) -> np.ndarray:
    """The ``mean`` image embeddings (N, C) of a stack's slices, through ``cache`` when one is given."""
    from emfm.analysis.embeddings import image_embeddings
    from emfm.features import encode_stack

    f = encode_stack(backbone, stack, preprocessing=preprocessing, cache=cache, progress=progress)
    return image_embeddings(f.grids, f.cls, "mean")


def training_stacks(config: Any, info: Any, *, progress: bool) -> tuple[dict[str, Any], list[str]]:
    """Each training set's training split as the run trained on it (standardised with the run's fitted
    state, train and val together, as training did), and a line for each set that could not be read."""
    from emfm.align.inputs import standardise_stacks
    from emfm.runsets import load_training_set

    alignment = info.make_alignment()
    stacks, missing = {}, []
    for name in config.train:
        try:
            pair = load_training_set(config, name, progress=progress)
        except (EmfmError, OSError) as exc:
            missing.append(f"{name} ({' '.join(str(exc).split())[:120]})")
            continue
        stacks[name] = standardise_stacks(alignment, list(pair), info.align_state)[0]
    return stacks, missing


def feature_cache(config: Any, info: Any):
    """The run's feature cache for a frozen backbone; None for an adapted one (its features are not the
    frozen backbone's, which is all a cache key knows of)."""
    from emfm.features import FeatureCache
    from emfm.paths import cache_root

    if not info.make_adapter().uses_cached_features:
        return None
    return FeatureCache(Path(config.cache_dir) if config.cache_dir else cache_root() / "features")


def transfer_report(
    segmenter: Any,
    info: Any,
    config: Any,
    test_stacks: Mapping[str, Any],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """``{"shift": {test set: {training set: pair_shift}}}``, with ``shift_note`` when training sets are missing.

    Args:
        segmenter: the loaded run (its backbone encodes; adapted for LoRA runs).
        info: its ModelInfo (preprocessing, alignment and its state).
        config: its TrainConfig, ``data_root`` where the training sets are now.
        test_stacks: the test sets as scored (already standardised).
    """
    if getattr(segmenter.backbone, "family", None) == "scratch":  # a U-Net from scratch has no backbone
        return {"shift": {}, "shift_note": "a model trained from scratch has no backbone features to compare"}
    train, missing = training_stacks(config, info, progress=progress)
    out: dict[str, Any] = {"shift": {}}
    if missing:
        out["shift_note"] = f"training set(s) not found, so no shift from them: {'; '.join(missing)}"
        log.warning("%s", out["shift_note"])
    if not train:
        return out
    cache = feature_cache(config, info)

    def embed(stack: Any) -> np.ndarray:
        return embeddings(segmenter.backbone, stack, info.preprocessing, cache, progress=progress)

    train_x = {name: embed(stack) for name, stack in train.items()}
    for test_name, stack in test_stacks.items():
        x = embed(stack)
        out["shift"][test_name] = {name: pair_shift(x, y, n_boot=n_boot, seed=seed) for name, y in train_x.items()}
    return out


def shift_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The printed summary of :func:`transfer_report`'s part of the metrics (empty if it was skipped)."""
    lines = [f"shift: {metrics['shift_note']}"] if metrics.get("shift_note") else []
    shift = metrics.get("shift") or {}
    if shift:
        lines.append("distance to the training sets (backbone features, mean image embedding): "
                     "Fréchet distance [95% bootstrap interval], domain-probe AUC")
    for test_name, per_train in shift.items():
        for train_name, s in per_train.items():
            fd = s.get("frechet")
            fd_text = (f"FD {fd['value']:.4g} [{fd['interval']['low']:.4g}, {fd['interval']['high']:.4g}]"
                       if fd else "FD n/a")
            auc = f"AUC {s['probe_auc']:.3f}" if s.get("probe_auc") is not None else "AUC n/a"
            lines.append(f"  {test_name} vs {train_name}: {fd_text}, {auc}")
    return lines
