"""Datasets compared in a backbone's feature space: PCA, Fréchet distance, KID and linear probes.

The study explains its results by a "domain mismatch" between EM datasets, seen through PCA, a Fréchet
distance and linear probes. This package gives the same analysis for any backbone and datasets, with
the small-sample problem handled openly: every distance carries its estimator, sample sizes and
dimension, a bootstrap interval, and the same distance between random halves of each dataset.

Public API::

    AnalysisConfig(datasets=..., backbone=..., ...)                 # every setting, checked when built
    run_analysis(config, out, *, progress=True, backbone=None) -> dict  # the whole analysis (emfm analyze)
    frechet_distance(x, y, *, covariance="sample") -> FrechetResult
    pca_frechet_distance(x, y, *, n_components) -> FrechetResult
    frechet_distance_from_moments(mu1, sigma1, mu2, sigma2) -> (value, eps, max_imag)
    kernel_inception_distance(x, y, ...) -> KIDResult; mmd2_unbiased(x, y) -> float
    bootstrap_interval(statistic, x, y, ...) -> dict; split_half_baseline(statistic, x, ...) -> dict
    compare_pair(images, crops, ...) -> dict
    domain_probe(x, labels, class_names, ...) -> dict; MitochondriaProbe; mitochondria_probe(...)
"""

from emfm.analysis.bootstrap import bootstrap_interval, split_half_baseline
from emfm.analysis.config import AnalysisConfig
from emfm.analysis.distances import ESTIMATORS, compare_pair
from emfm.analysis.frechet import FrechetResult, frechet_distance, frechet_distance_from_moments, pca_frechet_distance
from emfm.analysis.kid import KIDResult, kernel_inception_distance, mmd2_unbiased
from emfm.analysis.probes import MitochondriaProbe, domain_probe, mitochondria_probe
from emfm.analysis.run import run_analysis

__all__ = [
    "AnalysisConfig",
    "ESTIMATORS",
    "FrechetResult",
    "KIDResult",
    "MitochondriaProbe",
    "bootstrap_interval",
    "compare_pair",
    "domain_probe",
    "frechet_distance",
    "frechet_distance_from_moments",
    "kernel_inception_distance",
    "mitochondria_probe",
    "mmd2_unbiased",
    "pca_frechet_distance",
    "run_analysis",
    "split_half_baseline",
]
