"""The settings of one representation analysis, checked once when they are built.

:class:`AnalysisConfig` is what ``emfm analyze`` builds from its flags, ``--config`` and ``--set``,
what a study builds from its ``analysis:`` block (filling in each backbone), and what
:func:`emfm.analysis.run_analysis` is given. Every check that needs no data or backbone happens here,
so a typo or an out-of-range value is one line naming the setting before anything is loaded; the
checks that do (unknown dataset names, layers beyond the backbone's depth, a resolution below one
patch) happen in the run's first stages. Saved beside ``analysis.json`` as ``config.yaml``, which
``emfm analyze --config`` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emfm._settings import Settings, check_choice, check_number
from emfm.analysis.bootstrap import BOOTSTRAP_METHODS, BootstrapMethod
from emfm.analysis.embeddings import EMBEDDINGS, EmbeddingKind
from emfm.config import NORMALISATIONS, PRECISIONS, Normalisation, Precision, split_names
from emfm.errors import ConfigError
from emfm.transforms import INTENSITIES, Intensity

#: Fewest images per dataset: the split-half baselines need two images in each half.
MIN_IMAGES = 4


@dataclass(frozen=True)
class AnalysisConfig(Settings):
    """Which backbone and datasets to compare, and how (see :func:`emfm.analysis.run_analysis`).

    Attributes:
        datasets: at least two dataset names (``lucchi_pp``, ``vnc``, ``folder:PATH``); a string is
            split at commas.
        backbone: registry name, hub id or local directory; None when the caller hands
            :func:`~emfm.analysis.run_analysis` an already created backbone (a study fills it in).
        data_root: folder holding one folder per dataset (see :func:`emfm.data.resolve_dataset`).
        resolution: longest image edge in pixels fed to the backbone.
        embedding: image embedding, ``mean`` patch token (the study) or ``cls`` (FD-DINOv2).
        layers: blocks (0-based, negative from the end) for the mitochondria probe; None = all, empty =
            no probe (and no test split is read).
        n_boot: bootstrap replicates per interval.
        seed: seed of every random choice (crops, patch samples, bootstrap, baselines, probe splits).
        cache_dir: feature cache (default ``$EMFM_CACHE``/features or the user cache dir).
        use_cache: False computes every feature afresh and stores nothing.
        max_images: at most this many slices per dataset and split, evenly spaced (quick checks).
        baseline_repeats: split-half repeats per dataset and statistic.
        level: interval coverage.
        bootstrap_method: ``percentile`` (default), ``basic`` or ``BCa``.
        pca_components: PCA components of the image embeddings (and the requested k of the ``pca``
            Fréchet estimator).
        probe_components: PCA components in the domain probe.
        crop_size: crop side in patches; crops_per_image: crops drawn per image.
        probe_patches: training patches per dataset for the mitochondria probe (spread over images).
        rgb_patches: patches per dataset to fit the RGB picture's PCA on.
        normalisation: ``imagenet`` (the study, every family) or the backbone's own mean / std.
        intensity: how stored pixels map to [0, 1] before normalising (``dtype`` or per-slice
            ``minmax``; see :func:`emfm.transforms.to_unit_float`).
        chunk_size: slices encoded (or read from the cache) at a time.
        precision: what the backbone encodes in: ``32`` (the default, reproducible), ``bf16`` where the
            hardware has it natively (else fp32, with a warning), or ``auto`` (see
            :func:`emfm.hardware.resolve_precision`); bf16 features are cached apart from fp32 ones.
    """

    what = "analysis"

    datasets: tuple[str, ...] = ()
    backbone: str | None = None
    data_root: str | None = None
    resolution: int = 518
    embedding: EmbeddingKind = "mean"
    layers: tuple[int, ...] | None = None
    n_boot: int = 200
    seed: int = 0
    cache_dir: str | None = None
    use_cache: bool = True
    max_images: int | None = None
    baseline_repeats: int = 50
    level: float = 0.95
    bootstrap_method: BootstrapMethod = "percentile"
    pca_components: int = 32
    probe_components: int = 64
    crop_size: int = 8
    crops_per_image: int = 64
    probe_patches: int = 20_000
    rgb_patches: int = 20_000
    normalisation: Normalisation = "imagenet"
    intensity: Intensity = "dtype"
    chunk_size: int = 8
    precision: Precision = "32"

    def __post_init__(self) -> None:
        self.coerce_floats()
        self._check_datasets()
        self._check_paths()
        self._check_layers()
        check_choice("embedding", self.embedding, EMBEDDINGS, "; 'mean' is the mean patch token, 'cls' the class token")
        check_choice("normalisation", self.normalisation, NORMALISATIONS)
        check_choice("intensity", self.intensity, INTENSITIES)
        check_choice("bootstrap_method", self.bootstrap_method, BOOTSTRAP_METHODS)
        object.__setattr__(self, "precision", str(self.precision))  # YAML reads 32 as a number
        check_choice("precision", self.precision, PRECISIONS, "; 32 is the default, auto what the hardware "
                     "computes natively")
        if not isinstance(self.use_cache, bool):
            raise ConfigError(f"use_cache must be true or false, got {self.use_cache!r}")
        check_number("seed", self.seed, minimum=0, integer=True)
        for name in ("n_boot", "baseline_repeats"):
            check_number(name, getattr(self, name), minimum=2, integer=True)
        # Two components at least: the PCA figure plots the first two.
        check_number("pca_components", self.pca_components, minimum=2, integer=True)
        for name in ("resolution", "probe_components", "crop_size", "crops_per_image", "probe_patches",
                     "rgb_patches", "chunk_size"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("level", self.level)
        if not 0 < self.level < 1:
            raise ConfigError(f"level must be > 0 and < 1 (the interval coverage, e.g. 0.95), got {self.level!r}")
        if self.max_images is not None:
            check_number("max_images", self.max_images, integer=True)
            if self.max_images < MIN_IMAGES:
                raise ConfigError(
                    f"max_images must be >= {MIN_IMAGES}, got {self.max_images}: too few, the split-half "
                    "baselines need two images per half"
                )

    def _check_datasets(self) -> None:
        names = split_names(self.datasets) if isinstance(self.datasets, (str, list, tuple)) else None
        if names is None:
            raise ConfigError(f"datasets must be a list of dataset names, got {self.datasets!r}")
        object.__setattr__(self, "datasets", tuple(names))
        if len(names) < 2:
            raise ConfigError(
                f"the analysis compares datasets: give at least two, e.g. --datasets lucchi_pp,vnc (got {names})"
            )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"dataset(s) {dupes} given more than once in {names}; name each dataset once")

    def _check_paths(self) -> None:
        """Paths become strings, so that the config saves as YAML and compares equal after a reload."""
        if self.backbone is not None and (not isinstance(self.backbone, (str, Path)) or not str(self.backbone)):
            raise ConfigError(f"backbone must be a registry name, hub id or directory, got {self.backbone!r}")
        for name in ("backbone", "data_root", "cache_dir"):
            value = getattr(self, name)
            if isinstance(value, Path):
                object.__setattr__(self, name, str(value))
            elif value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a path, got {value!r}")

    def _check_layers(self) -> None:
        if self.layers is None:
            return
        layers = (self.layers,) if isinstance(self.layers, int) else self.layers
        if not isinstance(layers, (list, tuple)):
            raise ConfigError(
                f"layers must be null (every block), [] (no mitochondria probe) or a list of block indices, "
                f"got {self.layers!r}"
            )
        for layer in layers:
            check_number("layers (each)", layer, integer=True)
        object.__setattr__(self, "layers", tuple(layers))

    @property
    def wants_probe(self) -> bool:
        """Whether the mitochondria probe runs (and so whether the test splits are read)."""
        return self.layers is None or len(self.layers) > 0

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AnalysisConfig:
        """A config saved as ``config.yaml`` (or written by hand), with ``key=value`` overrides."""
        from emfm.config import apply_overrides, load_yaml

        return cls.from_dict(apply_overrides(load_yaml(path), overrides))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d
