"""Fréchet distance between two sets of embeddings, with its small-sample problem stated openly.

The Fréchet distance between Gaussians fitted to two sets of features (Heusel et al., "GANs Trained by a
Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017) is

    FD = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)),

with means and covariances estimated from the samples (covariances with N - 1). On DINOv2 features it is
FD-DINOv2 (Stein et al., "Exposing flaws of generative model evaluation metrics and their unfair
treatment of diffusion models", NeurIPS 2023). With 165 and 17 images in 384 to 1536 dimensions the
sample covariances are singular (rank at most N - 1) and the estimate is biased upwards, so every result
here carries its sample sizes, dimension and estimator, and the estimators below trade bias for variance
in different, named ways:

- ``full``: the textbook sample covariance; finite here but singular when N - 1 < d (flagged).
- ``pca``: both sets projected on the first k principal components of their union, k < N.
- ``ledoit_wolf``: Ledoit-Wolf shrinkage of each covariance towards a scaled identity
  (Ledoit and Wolf, "A well-conditioned estimator for large-dimensional covariance matrices", 2004).
- crops (see :mod:`emfm.analysis.embeddings`): many patch-window samples per image, so N >> d.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from emfm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Covariance = Literal["sample", "ledoit_wolf"]
TraceMethod = Literal["sqrtm", "eigh"]

#: The imaginary part of sqrtm(S1 S2) that is dropped as rounding noise, relative to its real diagonal.
IMAG_RTOL = 1e-3


@dataclass(frozen=True)
class FrechetResult:
    """One Fréchet distance and how it was obtained.

    Attributes:
        value: the distance (a finite real number).
        n1, n2: samples in each set.
        dim: feature dimension the covariances live in.
        covariance: ``sample`` (N - 1) or ``ledoit_wolf``.
        singular: True if either sample covariance is rank-deficient by construction (N - 1 < dim).
        eps: the multiple of the identity added to both covariances because sqrtm was not finite or had a
            non-negligible imaginary part (pytorch-fid's remedy); 0.0 if none was needed.
        max_imag: the largest imaginary part on the diagonal of sqrtm(S1 S2) that was dropped.
        shrinkage: Ledoit-Wolf shrinkage intensities of the two covariances (None for ``sample``).
        method: how Tr(sqrtm(S1 S2)) was computed, ``sqrtm`` or ``eigh`` (see
            :func:`frechet_distance_from_moments`).
    """

    value: float
    n1: int
    n2: int
    dim: int
    covariance: str
    singular: bool
    eps: float
    max_imag: float
    shrinkage: tuple[float, float] | None = None
    method: str = "sqrtm"

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["shrinkage"] = list(self.shrinkage) if self.shrinkage is not None else None
        return d


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[float, float] | None:
    """Tr(sqrtm(S1 S2)) and the largest dropped imaginary part, or None if sqrtm is unusable."""
    import warnings

    from scipy import linalg

    # sqrtm warns on singular products; that case is expected here (N - 1 < d), flagged in the result,
    # and its output is checked below for finiteness and a real diagonal instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        return None
    diag = np.diagonal(covmean)
    max_imag = float(np.max(np.abs(diag.imag))) if np.iscomplexobj(covmean) else 0.0
    scale = max(float(np.mean(np.abs(diag.real))), np.finfo(float).tiny)
    if max_imag > IMAG_RTOL * scale:
        return None
    return float(np.sum(diag.real)), max_imag


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr(sqrtm(S1 S2)) = sum_i sqrt(lambda_i(S1^1/2 S2 S1^1/2)) for symmetric PSD S1, S2.

    S1 S2 is similar to the symmetric PSD matrix S1^1/2 S2 S1^1/2, so both have the same non-negative
    eigenvalues; two symmetric eigendecompositions give the trace without a general matrix square root.
    Round-off eigenvalues below zero are clipped to zero.
    """
    w, v = np.linalg.eigh(sigma1)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root @ sigma2 @ root
    lam = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def frechet_distance_from_moments(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    eps: float = 1e-6,
    method: TraceMethod = "sqrtm",
) -> tuple[float, float, float]:
    """Fréchet distance between N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017).

    FD = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)).

    With ``method="sqrtm"`` (the reference, as pytorch-fid and dgm-eval compute it) the trace comes from
    ``scipy.linalg.sqrtm``. An imaginary part below ``IMAG_RTOL`` of its real diagonal is rounding noise
    and is dropped. If sqrtm is not finite, or its imaginary part is larger, ``eps`` times the mean
    variance is added to both diagonals and sqrtm is retried once, as pytorch-fid does; that is
    recorded in the result.

    With ``method="eigh"`` the same trace is sum_i sqrt(lambda_i(S1^1/2 S2 S1^1/2)), from two symmetric
    eigendecompositions: real by construction, and on singular covariances (N - 1 < d) tens of times
    faster than sqrtm, whose Schur method struggles with the many zero eigenvalues there. It is what the
    bootstrap and the baselines use (hundreds of evaluations); the two agree to rounding on
    well-conditioned input (tested), and :func:`emfm.analysis.distances.compare_pair` records their
    agreement on every point estimate.

    Args:
        mu1, mu2: means, shape (d,).
        sigma1, sigma2: covariances, shape (d, d).
        eps: relative size of the diagonal offset used for the sqrtm retry.
        method: ``sqrtm`` or ``eigh``.

    Returns:
        (distance, eps_added, max_imag): eps_added is the absolute offset used (0.0 if none).

    Raises:
        DataError: if the shapes disagree, an input is not finite, or sqrtm fails even after the offset.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, float)), np.atleast_1d(np.asarray(mu2, float))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, float)), np.atleast_2d(np.asarray(sigma2, float))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise DataError(
            f"Fréchet distance needs means of shape (d,) and covariances (d, d) for one d; got means "
            f"{mu1.shape}, {mu2.shape} and covariances {sigma1.shape}, {sigma2.shape}"
        )
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"Fréchet distance: {name} holds NaN or infinite values; check the embeddings")
    diff = mu1 - mu2
    traces = float(np.trace(sigma1) + np.trace(sigma2))
    if method == "eigh":
        return float(diff @ diff + traces - 2.0 * _trace_sqrt_product_eigh(sigma1, sigma2)), 0.0, 0.0
    if method != "sqrtm":
        raise ConfigError(f"unknown trace method {method!r}; use 'sqrtm' or 'eigh'")
    got = _trace_sqrt_product(sigma1, sigma2)
    offset = 0.0
    if got is None:
        offset = eps * max(float(np.mean(np.diagonal(sigma1)) + np.mean(np.diagonal(sigma2))) / 2, 1e-12)
        log.warning("sqrtm(S1 S2) was not finite or not real; adding %.3g * I to both covariances", offset)
        eye = np.eye(d) * offset
        got = _trace_sqrt_product(sigma1 + eye, sigma2 + eye)
        if got is None:
            raise DataError(
                f"Fréchet distance: sqrtm of the covariance product is not finite and real even after "
                f"adding {offset:.3g} * I (dimension {d}); use the 'pca' or 'ledoit_wolf' estimator"
            )
        traces += 2 * d * offset
    tr_covmean, max_imag = got
    value = float(diff @ diff + traces - 2.0 * tr_covmean)
    return value, offset, max_imag


def _check_samples(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DataError(
            f"expected two sample matrices (n, d) with the same d; got shapes {x.shape} and {y.shape}"
        )
    if min(len(x), len(y)) < 2:
        raise DataError(
            f"a covariance needs at least 2 samples per set; got {len(x)} and {len(y)}: add images"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError("the embeddings hold NaN or infinite values; check the backbone output")
    return x, y


def _moments(x: np.ndarray, covariance: Covariance) -> tuple[np.ndarray, np.ndarray, float | None]:
    mu = x.mean(axis=0)
    if covariance == "sample":
        return mu, np.atleast_2d(np.cov(x, rowvar=False, ddof=1)), None
    if covariance == "ledoit_wolf":
        from sklearn.covariance import ledoit_wolf

        shrunk, shrinkage = ledoit_wolf(x)
        # sklearn shrinks the 1/N covariance; rescale so that zero shrinkage is the N - 1 estimate.
        n = len(x)
        return mu, np.atleast_2d(shrunk) * n / (n - 1), float(shrinkage)
    raise ConfigError(f"unknown covariance estimator {covariance!r}; use 'sample' or 'ledoit_wolf'")


def frechet_distance(
    x: np.ndarray, y: np.ndarray, *, covariance: Covariance = "sample", method: TraceMethod = "sqrtm"
) -> FrechetResult:
    """Fréchet distance between the Gaussians fitted to two sample sets (Heusel et al. 2017).

    FD = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)), means over samples and covariances with
    N - 1 (``sample``) or Ledoit-Wolf shrinkage (``ledoit_wolf``, Ledoit and Wolf 2004; rescaled by
    N / (N - 1) so that zero shrinkage gives the N - 1 covariance). On DINOv2 CLS tokens this is
    FD-DINOv2 (Stein et al. 2023).

    Args:
        x, y: samples, shapes (n1, d) and (n2, d).
        covariance: ``sample`` or ``ledoit_wolf``.
        method: ``sqrtm`` (reference) or ``eigh`` (fast, for resampling); see
            :func:`frechet_distance_from_moments`.

    Returns:
        The distance with its sample sizes, dimension and whether the covariances are singular.

    Raises:
        DataError: on mismatched shapes, fewer than 2 samples, or non-finite values.
    """
    x, y = _check_samples(x, y)
    mu1, s1, k1 = _moments(x, covariance)
    mu2, s2, k2 = _moments(y, covariance)
    value, eps, max_imag = frechet_distance_from_moments(mu1, s1, mu2, s2, method=method)
    d = x.shape[1]
    return FrechetResult(
        value=value,
        n1=len(x),
        n2=len(y),
        dim=d,
        covariance=covariance,
        singular=covariance == "sample" and min(len(x), len(y)) - 1 < d,
        eps=eps,
        max_imag=max_imag,
        shrinkage=(k1, k2) if k1 is not None and k2 is not None else None,
        method=method,
    )


def pca_frechet_distance(
    x: np.ndarray, y: np.ndarray, *, n_components: int, method: TraceMethod = "sqrtm"
) -> FrechetResult:
    """Fréchet distance (Heusel et al. 2017) after projecting both sets on PCA-k of their union.

    The principal components are fitted on the pooled samples of both sets (unwhitened, scikit-learn),
    so the projection is the same for both, and FD = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2))
    is taken in k dimensions. With k < N - 1 for both sets the covariances have full rank; the price is
    that a shift outside the first k directions is not seen.

    Raises:
        ConfigError: if ``n_components`` is not between 1 and min(n1 + n2, d).
    """
    from sklearn.decomposition import PCA

    x, y = _check_samples(x, y)
    limit = min(len(x) + len(y), x.shape[1])
    if not 1 <= n_components <= limit:
        raise ConfigError(
            f"PCA to {n_components} components is impossible with {len(x) + len(y)} samples in "
            f"{x.shape[1]} dimensions; choose 1..{limit}"
        )
    pca = PCA(n_components=n_components, svd_solver="full").fit(np.concatenate([x, y]))
    return frechet_distance(pca.transform(x), pca.transform(y), method=method)
