"""Linear probes: can a linear read-out tell the datasets apart, and find mitochondria, from the features?

- Domain probe (the study's): logistic regression (L2, C = 1, max_iter 1000) on PCA-64 of the image
  embeddings of two datasets. Here the PCA is fitted inside each training split (a scikit-learn
  pipeline) so that no test image shapes the projection, and the number of components is reduced when
  a training split has fewer samples. Scored on a stratified 80/20 split and by stratified k-fold
  cross-validation, with accuracy, balanced accuracy (Brodersen et al. 2010; needed with 165 vs 17
  images, where always answering the larger dataset already scores 0.91) and ROC-AUC.
- Mitochondria probe: a logistic regression per patch from one layer's tokens (standardised), fitted on
  a seeded subsample of a dataset's training patches and scored on every patch of its test split by
  foreground IoU (tp / (tp + fp + fn), pooled over all test patches), one probe per layer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from emfm.errors import DataError

log = logging.getLogger(__name__)

PatchItem = tuple[dict[int, np.ndarray], np.ndarray]
"""One image for the mitochondria probe: {layer: tokens (P, C)} and foreground labels (P,)."""


def _class_counts(labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    return {name: int(np.sum(labels == i)) for i, name in enumerate(names)}


def domain_probe(
    x: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    n_components: int = 64,
    test_size: float = 0.2,
    n_folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Logistic regression on PCA features telling two datasets apart.

    Pipeline: PCA(k, unwhitened) -> LogisticRegression(L2, C = 1, max_iter = 1000), fitted on training
    images only. k = min(n_components, dim, smallest training split). Scores: accuracy, balanced accuracy
    (mean per-class recall) and ROC-AUC (Hanley and McNeil 1982) on a stratified ``test_size`` hold-out
    and over stratified ``n_folds``-fold cross-validation (fewer folds if the smaller class has fewer
    images), plus the pooled out-of-fold AUC.

    Args:
        x: embeddings, (n, d).
        labels: 0 / 1 per row (index into ``class_names``).
        class_names: the two dataset names.
        n_components, test_size, n_folds, seed: as above; ``seed`` drives both splits.

    Raises:
        DataError: if there are not exactly two classes, or a class has fewer than 2 images.
    """
    x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    if len(class_names) != 2 or counts.size != 2 or counts.min() < 2:
        raise DataError(
            f"the domain probe needs two datasets with at least 2 images each; got counts "
            f"{_class_counts(labels, class_names)}"
        )
    n, d = x.shape
    folds = int(min(n_folds, counts.min()))
    n_test = math.ceil(test_size * n)
    smallest_train = min(n - n_test, n - math.ceil(n / folds))
    k = min(n_components, d, smallest_train)
    holdout = _holdout_scores(x, labels, class_names, k, test_size, seed)
    crossval = _cross_validation_scores(x, labels, k, folds, seed)
    if folds < n_folds:
        crossval["note"] = f"{folds} folds instead of {n_folds}: the smaller dataset has {counts.min()} images"
    out: dict[str, Any] = {
        "classifier": "PCA (unwhitened, fitted on training images) -> LogisticRegression(L2, C=1, max_iter=1000)",
        "classes": {"0": class_names[0], "1": class_names[1]},
        "n": _class_counts(labels, class_names),
        "dim": d,
        "n_components_requested": n_components,
        "n_components": k,
        "holdout": {"test_size": test_size, "seed": seed, "stratified": True, **holdout},
        "cross_validation": {"stratified": True, "seed": seed, **crossval},
    }
    if k < n_components:
        out["n_components_note"] = (
            f"reduced from {n_components} to {k}: PCA cannot have more components than the {d} dims or "
            f"the {smallest_train} images of the smallest training split"
        )
    return out


def _domain_pipeline(k: int) -> Any:
    """PCA-k then logistic regression, fitted together so that the PCA sees training images only."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(PCA(n_components=k, whiten=False, svd_solver="full"), LogisticRegression(C=1.0, max_iter=1000))


def _holdout_scores(
    x: np.ndarray, labels: np.ndarray, class_names: Sequence[str], k: int, test_size: float, seed: int
) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, labels, test_size=test_size, stratify=labels, random_state=seed)
    proba = _domain_pipeline(k).fit(xtr, ytr).predict_proba(xte)[:, 1]
    pred = (proba >= 0.5).astype(int)
    return {
        "accuracy": float(accuracy_score(yte, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(yte, pred)),
        "roc_auc": float(roc_auc_score(yte, proba)),
        "majority_accuracy": float(np.bincount(yte, minlength=2).max() / len(yte)),
        "n_train": _class_counts(ytr, class_names),
        "n_test": _class_counts(yte, class_names),
    }


def _cross_validation_scores(x: np.ndarray, labels: np.ndarray, k: int, folds: int, seed: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_validate(_domain_pipeline(k), x, labels, cv=cv, scoring=("accuracy", "balanced_accuracy", "roc_auc"))
    oof = cross_val_predict(_domain_pipeline(k), x, labels, cv=cv, method="predict_proba")[:, 1]
    return {
        "n_folds": folds,
        **{
            f"{m}_{stat}": float(fn(scores[f"test_{m}"]))
            for m in ("accuracy", "balanced_accuracy", "roc_auc")
            for stat, fn in (("mean", np.mean), ("std", lambda v: np.std(v, ddof=1)))
        },
        "pooled_roc_auc": float(roc_auc_score(labels, oof)),
    }


def _fit_patch_probe(tokens: np.ndarray, labels: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(tokens, labels)


class MitochondriaProbe:
    """Per-layer linear read-out of foreground patches, scored by pooled patch IoU on test images.

    Fed one image at a time, so that a caller can stream images out of the feature cache: first every
    training image (:meth:`add_train`), then :meth:`fit`, then every test image (:meth:`add_test`), then
    :meth:`result`. From each training image ``patches_per_image`` patches are drawn without replacement
    (seeded; the same patches for every layer). Per layer, StandardScaler -> LogisticRegression(L2,
    C = 1, max_iter = 1000) is fitted on them; a test patch is foreground if its probability is >= 0.5,
    and IoU = tp / (tp + fp + fn) over all test patches. ``trivial_iou`` is the IoU of calling every
    patch foreground (the test set's foreground fraction): the floor a useful probe must clear. An IoU
    is None where it is undefined (no foreground in the test patches and none predicted).
    """

    def __init__(self, layers: Sequence[int], *, patches_per_image: int, seed: int = 0) -> None:
        self.layers = list(layers)
        self.patches_per_image = patches_per_image
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._feats: dict[int, list[np.ndarray]] = {layer: [] for layer in self.layers}
        self._labels: list[np.ndarray] = []
        self._probes: dict[int, Any] = {}
        self._counts = {layer: np.zeros(3, dtype=np.int64) for layer in self.layers}  # tp, fp, fn
        self._n_test = self._n_test_fg = self._n_test_images = 0
        self._n_train = self._n_train_fg = 0

    def add_train(self, tokens: Mapping[int, np.ndarray], labels: np.ndarray) -> None:
        """One training image: ``{layer: (P, C)}`` tokens and its (P,) foreground labels."""
        labels = np.asarray(labels, dtype=bool)
        pick = self._rng.choice(len(labels), min(self.patches_per_image, len(labels)), replace=False)
        for layer in self.layers:
            self._feats[layer].append(np.asarray(tokens[layer], dtype=np.float32)[pick])
        self._labels.append(labels[pick])

    def fit(self, *, progress: bool = False) -> None:
        """Fit one probe per layer on the sampled training patches.

        Raises:
            DataError: if the training sample holds only one class.
        """
        from tqdm.auto import tqdm

        y = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=bool)
        self._n_train, self._n_train_fg = int(y.size), int(y.sum())
        if y.size == 0 or y.all() or not y.any():
            raise DataError(
                f"the mitochondria probe's training sample ({y.size} patches from {len(self._labels)} images) "
                f"has {int(y.sum())} foreground patches; it needs both classes: check the masks or sample "
                f"more patches"
            )
        for layer in tqdm(self.layers, desc="fitting patch probes", disable=not progress, leave=False):
            self._probes[layer] = _fit_patch_probe(np.concatenate(self._feats.pop(layer)), y)

    def add_test(self, tokens: Mapping[int, np.ndarray], labels: np.ndarray) -> None:
        """One test image: predict every patch with each layer's probe and count tp, fp, fn."""
        truth = np.asarray(labels, dtype=bool)
        for layer in self.layers:
            pred = self._probes[layer].predict_proba(np.asarray(tokens[layer], dtype=np.float32))[:, 1] >= 0.5
            self._counts[layer] += [np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)]
        self._n_test += truth.size
        self._n_test_fg += int(truth.sum())
        self._n_test_images += 1

    def result(self) -> dict[str, Any]:
        """IoU per layer with its counts, and the sample sizes behind it."""
        per_layer = {}
        for layer in self.layers:
            tp, fp, fn = (int(v) for v in self._counts[layer])
            union = tp + fp + fn
            per_layer[layer] = {"iou": tp / union if union else None, "tp": tp, "fp": fp, "fn": fn}
        return {
            "classifier": "StandardScaler -> LogisticRegression(L2, C=1, max_iter=1000), threshold 0.5",
            "layers": list(self.layers),
            "iou": [per_layer[layer]["iou"] for layer in self.layers],
            "per_layer": per_layer,
            "n_train_images": len(self._labels),
            "n_train_patches": self._n_train,
            "n_train_foreground": self._n_train_fg,
            "patches_per_image": self.patches_per_image,
            "n_test_images": self._n_test_images,
            "n_test_patches": self._n_test,
            "n_test_foreground": self._n_test_fg,
            "trivial_iou": self._n_test_fg / self._n_test if self._n_test else None,
            "seed": self.seed,
        }


def mitochondria_probe(
    train: Iterable[PatchItem],
    test: Iterable[PatchItem],
    *,
    layers: Sequence[int],
    patches_per_image: int,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit and score a :class:`MitochondriaProbe` on two iterables of (tokens per layer, labels).

    Raises:
        DataError: if the training sample holds only one class.
    """
    probe = MitochondriaProbe(layers, patches_per_image=patches_per_image, seed=seed)
    for tokens, labels in train:
        probe.add_train(tokens, labels)
    probe.fit(progress=progress)
    for tokens, labels in test:
        probe.add_test(tokens, labels)
    return probe.result()
