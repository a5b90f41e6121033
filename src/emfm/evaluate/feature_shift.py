"""How far apart a run's test sets lie in the head's own features: Fréchet distance and a domain probe.

An alignment method claims to bring the training sets together where the head reads them; this is the
measurement. The head's features are the input of its last layer (:func:`emfm.models.heads.feature_module`),
recorded while each test set is scored, so it costs one hook, not another pass. Each slice's feature map
is averaged over a ``windows x windows`` grid of regions: a slice is one bootstrap unit holding that many
samples, which keeps a 3-slice test set (VNC) usable while resampling whole slices, as neighbouring
regions of one slice are correlated.

- Fréchet distance (Heusel et al. 2017) between the two sets' region embeddings, sample covariances, in
  the 64 leading principal components of both sets' pooled features (all of them when there are fewer),
  with a percentile bootstrap interval that resamples slices within each set
  (:func:`emfm.analysis.bootstrap.bootstrap_interval`).
- Domain probe: PCA + logistic regression telling the two sets apart from region embeddings (the same
  leading components)
  (:func:`emfm.analysis.probes.domain_probe`), its pooled out-of-fold ROC-AUC. Regions of one slice can
  fall on both sides of a fold, which flatters the probe a little; 0.5 means the sets cannot be told
  apart, 1.0 that they always can.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emfm.errors import DataError

log = logging.getLogger(__name__)

WINDOWS = 4  # regions per side of a slice's feature map


class HeadFeatureRecorder:
    """Records (n_slices, windows^2, C) region embeddings of the head's features, one row per forward pass."""

    def __init__(self, head: nn.Module, *, windows: int = WINDOWS) -> None:
        self.head = head
        self.windows = windows
        self.rows: list[np.ndarray] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[HeadFeatureRecorder]:
        from emfm.models.heads import feature_module

        try:
            layer = feature_module(self.head)
        except Exception:  # a head without a feature layer: nothing to record, scoring goes on
            yield self
            return

        def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            fmap = inputs[0].detach().float()
            pooled = F.adaptive_avg_pool2d(fmap, self.windows)  # (B, C, w, w)
            self.rows.extend(pooled.flatten(2).transpose(1, 2).cpu().numpy())

        handle = layer.register_forward_pre_hook(keep)
        try:
            yield self
        finally:
            handle.remove()

    def embeddings(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, self.windows**2, 0), dtype=np.float32)


def feature_shift(
    embeddings: Mapping[str, np.ndarray], *, n_boot: int = 200, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Fréchet distance (with interval) and domain-probe AUC for every pair of sets.

    Args:
        embeddings: set name -> (n_slices, regions, C) from :class:`HeadFeatureRecorder`.

    Returns:
        ``{"A|B": {"sets", "frechet": {"value", "low", "high", ...}, "probe_auc", "n_slices"}}``; a pair with
        a set of fewer than 2 slices is left out (nothing to resample).
    """
    out: dict[str, Any] = {}
    usable = {k: np.asarray(v, dtype=np.float64) for k, v in embeddings.items() if len(v) >= 2}
    for (a, ua), (b, ub) in itertools.combinations(usable.items(), 2):
        try:
            out[f"{a}|{b}"] = _pair(a, ua, b, ub, n_boot=n_boot, level=level, seed=seed)
        except (ValueError, np.linalg.LinAlgError, DataError) as exc:  # a measurement must not sink a scored run
            log.warning("feature shift %s vs %s not measured: %s", a, b, exc)
            out[f"{a}|{b}"] = {"sets": [a, b], "error": f"{type(exc).__name__}: {exc}"}
    return out


COMPONENTS = 64  # Fréchet distance in this many leading principal components of the pooled features


def _leading_components(ua: np.ndarray, ub: np.ndarray, k: int = COMPONENTS) -> tuple[np.ndarray, np.ndarray, int]:
    """Both sets' (slices, regions, C) rows projected on the top-``k`` principal axes of their pooled rows.

    A multi-block head's features have 1,536 channels; 200 bootstrap Fréchet distances at that size cost
    minutes per run, in k = 64 a second. The projection is fitted once, on both sets together, so it favours
    neither (the ``pca`` estimator of :mod:`emfm.analysis.distances` does the same).
    """
    dim = int(ua.shape[-1])
    if dim <= k:
        return ua, ub, dim
    from sklearn.decomposition import PCA

    pooled = np.concatenate([ua.reshape(-1, dim), ub.reshape(-1, dim)])
    # randomized SVD (Halko et al. 2011): the top 64 axes of a 2,700 x 1,536 matrix in a second, not 20
    pca = PCA(n_components=min(k, len(pooled)), svd_solver="randomized", random_state=0).fit(pooled)
    return (pca.transform(ua.reshape(-1, dim)).reshape(*ua.shape[:2], -1),
            pca.transform(ub.reshape(-1, dim)).reshape(*ub.shape[:2], -1), dim)


def _pair(a: str, ua: np.ndarray, b: str, ub: np.ndarray, *, n_boot: int, level: float, seed: int) -> dict[str, Any]:
    from emfm.analysis._threads import single_threaded_blas
    from emfm.analysis.bootstrap import bootstrap_interval, pool_units
    from emfm.analysis.frechet import frechet_distance
    from emfm.analysis.probes import domain_probe

    def statistic(x: np.ndarray, y: np.ndarray) -> float:
        return frechet_distance(x, y, method="eigh").value

    ua, ub, dim = _leading_components(ua, ub)
    with single_threaded_blas():
        pa, pb = pool_units(ua), pool_units(ub)
        value = statistic(pa, pb)
        interval = bootstrap_interval(statistic, ua, ub, n_boot=n_boot, level=level, seed=seed, estimate=value)
    x = np.concatenate([pa, pb])
    labels = np.r_[np.zeros(len(pa), int), np.ones(len(pb), int)]
    probe = domain_probe(x, labels, [a, b], seed=seed)
    return {
        "sets": [a, b],
        "features": "input of the head's last layer, mean over a "
        f"{int(round(ua.shape[1] ** 0.5))} x {int(round(ua.shape[1] ** 0.5))} grid of regions per slice",
        "n_slices": {a: len(ua), b: len(ub)},
        "dim": dim,
        "components": int(ua.shape[-1]),
        "frechet": {"value": value, "low": interval["low"], "high": interval["high"], "level": level,
                    "interval": "percentile bootstrap over slices within each set"},
        "probe_auc": probe["cross_validation"].get("pooled_roc_auc", probe["holdout"]["roc_auc"]),
    }
