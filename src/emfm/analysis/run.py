"""The representation analysis end to end: datasets in one backbone's feature space.

:func:`run_analysis` is a sequence of stages, each a function below, in this order:

1. resolve: fail on what needs no data (no backbone at all, an unknown dataset name);
2. load data: each dataset's ``trainval`` slices (the images the study compares: Lucchi++ 165, VNC 17)
   and, for the mitochondria probe, its ``test`` slices;
3. prepare: create the backbone, resolve the probed blocks against its depth, settle the preprocessing
   and the feature cache; then ``config.yaml`` is written;
4. encode: one pass per dataset through the feature cache, in chunks so that memory stays at a few
   images' worth of per-layer tokens, keeping the image embeddings, the crop samples, the patches for
   the RGB picture, and fitting and scoring the mitochondria probe;
5. statistics: for every pair of datasets the distances (:mod:`emfm.analysis.distances`) and the
   domain probe; over all datasets one PCA;
6. summarise, figures, write: ``analysis.json`` with every number and its protocol, and the figures.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from emfm import __version__
from emfm._io import atomic_write_json, atomic_write_text, finite_json, safe_name
from emfm.analysis._threads import single_threaded_blas
from emfm.analysis.config import MIN_IMAGES, AnalysisConfig
from emfm.analysis.distances import compare_pair
from emfm.analysis.embeddings import crop_embeddings, image_embeddings, patch_labels, patch_tokens
from emfm.analysis.pca import fit_pca, pca_rgb
from emfm.analysis.probes import MitochondriaProbe, domain_probe
from emfm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from emfm.backbones._base import Backbone
    from emfm.data._datasets import Split
    from emfm.data._stack import SliceStack
    from emfm.features import FeatureCache

log = logging.getLogger(__name__)

#: Split whose images are compared between datasets, and the splits of the mitochondria probe.
DOMAIN_SPLIT: Final[Split] = "trainval"
PROBE_TEST_SPLIT: Final[Split] = "test"

ANALYSIS_NAME = "analysis.json"
CONFIG_NAME = "config.yaml"
FIGURES = {
    "pca": "pca.png",
    "pca_rgb": "pca_rgb.png",
    "probe_layers": "probe_layers.png",
}


@dataclass
class _DatasetFeatures:
    """What the analysis keeps of one dataset after its pass through the backbone."""

    name: str
    ids: list[str]
    embeddings: list[np.ndarray] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    rgb_patches: dict[str, list[np.ndarray]] = field(default_factory=dict)  # label -> sampled patch tokens
    show_index: int = 0
    show_grids: dict[str, np.ndarray] = field(default_factory=dict)  # label -> the shown slice's grid
    grid_shapes: set[tuple[int, int]] = field(default_factory=set)
    input_sizes: set[tuple[int, int]] = field(default_factory=set)
    computed: int = 0
    cached: int = 0
    probe: dict[str, Any] | None = None


@dataclass
class _Inputs:
    """What the first stages settle before anything is encoded: the slices, the backbone, its input."""

    domains: dict[str, SliceStack]
    tests: dict[str, SliceStack | None]  # None: no mitochondria probe, no test split read
    backbone: Backbone
    probe_layers: list[int]
    mean: Sequence[float]
    std: Sequence[float]
    cache: FeatureCache | None
    encode_kwargs: dict[str, Any]  # for emfm.features.encode_stack: they make the feature-cache keys


@dataclass
class _Statistics:
    """The numbers computed from the embeddings: pairwise comparisons and the pooled PCA."""

    comparisons: list[dict[str, Any]]
    pca: dict[str, Any]
    coords: dict[str, np.ndarray]  # dataset -> first two PCs of its image embeddings


@single_threaded_blas()
def run_analysis(
    config: AnalysisConfig,
    out: str | Path | None,
    *,
    progress: bool = True,
    backbone: Backbone | None = None,
) -> dict[str, Any]:
    """Compare datasets in a backbone's feature space; write ``analysis.json``, ``config.yaml`` and
    figures to ``out``.

    Args:
        config: what to compare and how (checked when it was built).
        out: directory for ``analysis.json``, ``config.yaml`` and the figures; None writes nothing.
        progress: progress bars.
        backbone: an already created backbone, used instead of creating ``config.backbone``.

    Returns:
        The result written to ``analysis.json`` (see the keys there).

    Raises:
        ConfigError: no backbone, a layer the backbone lacks, a resolution below one patch.
        DataError: a dataset with fewer than 4 images; whatever the data layer raises.
        UnknownNameError: an unknown dataset or backbone (raised by the data and backbone layers).
    """
    started = time.perf_counter()
    _resolve(config, backbone)
    domains, tests = _load_data(config, progress)
    inputs = _prepare(config, domains, tests, backbone)
    if out is not None:
        _write_config(config, Path(out), inputs.backbone)
    feats = _encode(config, inputs, progress)
    stats = _statistics(config, feats, progress)
    result = _summarise(config, inputs, feats, stats)
    if out is not None:
        result["figures"] = _write_figures(Path(out), result, feats, inputs.domains, stats.coords)
    return _write_result(result, out, started)


# -- resolve, load, prepare --------------------------------------------------------------------------


def _resolve(config: AnalysisConfig, backbone: Backbone | None) -> None:
    """Fail on what needs no data, before any is read: no backbone at all, an unknown dataset name."""
    from emfm.data import get_dataset

    if backbone is None and not config.backbone:
        raise ConfigError("no backbone to analyse: set backbone (a registry name, hub id or local directory)")
    for name in config.datasets:
        get_dataset(name)


def _load_data(
    config: AnalysisConfig, progress: bool
) -> tuple[dict[str, SliceStack], dict[str, SliceStack | None]]:
    """Each dataset's compared slices and, when the probe runs, its test slices (evenly thinned)."""
    from emfm.data import load_split

    domains: dict[str, SliceStack] = {}
    tests: dict[str, SliceStack | None] = {}
    for name in config.datasets:
        root = config.data_root
        domains[name] = _evenly_spaced(
            load_split(name, DOMAIN_SPLIT, data_root=root, progress=progress), config.max_images
        )
        if len(domains[name]) < MIN_IMAGES:
            raise DataError(
                f"dataset {name} has {len(domains[name])} images in its {DOMAIN_SPLIT} split; the analysis needs "
                f"at least {MIN_IMAGES} per dataset (two per half for the within-dataset baselines)"
            )
        test = (
            _evenly_spaced(load_split(name, PROBE_TEST_SPLIT, data_root=root, progress=progress), config.max_images)
            if config.wants_probe
            else None
        )
        tests[name] = test
        if test is not None and len(test) == 0:
            raise DataError(
                f"dataset {name} has no {PROBE_TEST_SPLIT} slices for the mitochondria probe; pass --layers none"
            )
    return domains, tests


def _evenly_spaced(stack: SliceStack, max_images: int | None) -> SliceStack:
    """At most ``max_images`` slices spread over the whole stack (consecutive EM slices are alike)."""
    if max_images is None or len(stack) <= max_images:
        return stack
    idx = np.unique(np.linspace(0, len(stack) - 1, max_images).round().astype(int))
    return stack.subset([stack.ids[i] for i in idx], stack.split)


def _prepare(
    config: AnalysisConfig,
    domains: dict[str, SliceStack],
    tests: dict[str, SliceStack | None],
    backbone: Backbone | None,
) -> _Inputs:
    """The backbone, its probed blocks, the pixel mean / std and the feature cache (after the data has
    loaded, so that a missing dataset fails before a large backbone is read)."""
    from emfm.features import FeatureCache
    from emfm.hardware import resolve_precision
    from emfm.paths import cache_root
    from emfm.transforms import IMAGENET_MEAN, IMAGENET_STD, resized_shape

    if backbone is None:
        from emfm.backbones import create_backbone

        backbone = create_backbone(str(config.backbone))
    probe_layers = _resolve_layers(config.layers, backbone.num_layers) if config.wants_probe else []
    for stack in domains.values():
        resized_shape(stack.images[0].shape, config.resolution, backbone.patch_size)  # ConfigError if nothing fits
    imagenet = config.normalisation == "imagenet"
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (backbone.mean, backbone.std)
    cache: FeatureCache | None = None
    if config.use_cache:
        cache = FeatureCache(Path(config.cache_dir) if config.cache_dir else cache_root() / "features")
    precision, note = resolve_precision(config.precision, next(backbone.parameters()).device)
    if note:
        log.warning(note)
    encode_kwargs = {
        "resolution": config.resolution, "cache": cache, "mean": mean, "std": std, "intensity": config.intensity,
        "precision": precision,
    }
    return _Inputs(domains, tests, backbone, probe_layers, mean, std, cache, encode_kwargs)


def _resolve_layers(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    if layers is None:
        return list(range(num_layers))
    bad = [i for i in layers if not -num_layers <= int(i) < num_layers]
    if bad:
        raise ConfigError(
            f"layer(s) {bad} do not exist: the backbone has {num_layers} blocks, indices 0..{num_layers - 1} "
            f"(or -{num_layers}..-1 from the end)"
        )
    return sorted({int(i) % num_layers for i in layers})


def _write_config(config: AnalysisConfig, out: Path, backbone: Backbone) -> None:
    """``config.yaml`` before the long part, so that even an interrupted analysis says what it was."""
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# emfm {__version__}: the settings of this analysis (emfm.analysis.AnalysisConfig; layers: null = "
        "every block).\n# Rerun it with: emfm analyze --config config.yaml\n"
    )
    if not config.backbone:
        header += f"# backbone: null: it ran with an already created backbone, {backbone.name}\n"
    (out / ANALYSIS_NAME).unlink(missing_ok=True)  # a result of other settings must not sit beside this config
    atomic_write_text(out / CONFIG_NAME, header + config.to_yaml())


# -- encode -------------------------------------------------------------------------------------------


def _encode(config: AnalysisConfig, inputs: _Inputs, progress: bool) -> dict[str, _DatasetFeatures]:
    feats: dict[str, _DatasetFeatures] = {}
    for index, name in enumerate(config.datasets):
        test = inputs.tests[name]
        log.info("encoding %s (%d slices%s)", name, len(inputs.domains[name]),
                 f" + {len(test)} test slices" if test is not None else "")
        feats[name] = _encode_dataset(config, inputs, name, index, progress)
    return feats


def _stream(
    backbone: Backbone,
    stack: SliceStack,
    *,
    layers: list[int],
    encode_kwargs: dict[str, Any],
    chunk_size: int,
    counts: _DatasetFeatures,
    progress: bool,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[int, np.ndarray]]]:
    """(index, final grid, cls, {layer: grid}) per slice, encoded through the cache a chunk at a time."""
    from tqdm.auto import tqdm

    from emfm.features import encode_stack

    with tqdm(total=len(stack), desc=f"features {stack.dataset}/{stack.split}", disable=not progress) as bar:
        for start in range(0, len(stack), chunk_size):
            sub = stack.subset(stack.ids[start : start + chunk_size], stack.split)
            f = encode_stack(backbone, sub, layers=layers, progress=False, **encode_kwargs)
            counts.computed += f.n_computed
            counts.cached += f.n_cached
            counts.input_sizes.update(tuple(s) for s in f.sizes)
            for i in range(len(sub)):
                yield (
                    start + i,
                    f.grids[i].numpy(),
                    f.cls[i].numpy(),
                    {layer: f.layers[layer][i].numpy() for layer in layers},
                )
                bar.update(1)


def _rgb_views(probe_layers: list[int], num_layers: int) -> dict[str, int | None]:
    """Label -> block (None: final tokens) of the RGB picture. Besides the final tokens it shows the
    probed block nearest the middle: in fine-tuned backbones the last block is often the least telling
    (its tokens may be mostly position)."""
    inner = [layer for layer in probe_layers if layer != num_layers - 1]
    mid = min(inner, key=lambda layer: abs(layer - num_layers // 2)) if inner else None
    return {"final tokens": None} | ({f"block {mid}": mid} if mid is not None else {})


def _encode_dataset(
    config: AnalysisConfig, inputs: _Inputs, name: str, index: int, progress: bool
) -> _DatasetFeatures:
    """One pass over a dataset's slices (then its test slices, for the probe) through the cache."""
    domain, test = inputs.domains[name], inputs.tests[name]
    feats = _DatasetFeatures(domain.dataset, list(domain.ids), show_index=len(domain) // 2)
    views = _rgb_views(inputs.probe_layers if test is not None else [], inputs.backbone.num_layers)
    rng = np.random.default_rng([config.seed, index])
    rgb_quota = math.ceil(config.rgb_patches / len(domain))
    probe = None
    if test is not None:
        per_image = math.ceil(config.probe_patches / len(domain))
        probe = MitochondriaProbe(inputs.probe_layers, patches_per_image=per_image, seed=config.seed)
    stream: dict[str, Any] = dict(
        layers=inputs.probe_layers if probe is not None else [], encode_kwargs=inputs.encode_kwargs,
        chunk_size=config.chunk_size, counts=feats, progress=progress,
    )
    for i, grid, cls, per_layer in _stream(inputs.backbone, domain, **stream):
        _keep_slice(config, feats, i, grid, cls, per_layer, views, rng, rgb_quota)
        if probe is not None:
            labels = patch_labels(domain.masks[i], grid.shape[1:])
            probe.add_train({layer: patch_tokens(g) for layer, g in per_layer.items()}, labels)
    if probe is not None and test is not None:
        log.info("fitting %d patch probes for %s", len(inputs.probe_layers), domain.dataset)
        probe.fit(progress=progress)
        for i, grid, _, per_layer in _stream(inputs.backbone, test, **stream):
            tokens = {layer: patch_tokens(g) for layer, g in per_layer.items()}
            probe.add_test(tokens, patch_labels(test.masks[i], grid.shape[1:]))
        feats.probe = {"train_split": DOMAIN_SPLIT, "test_split": PROBE_TEST_SPLIT, **probe.result()}
    return feats


def _keep_slice(
    config: AnalysisConfig,
    feats: _DatasetFeatures,
    i: int,
    grid: np.ndarray,
    cls: np.ndarray,
    per_layer: dict[int, np.ndarray],
    views: dict[str, int | None],
    rng: np.random.Generator,
    rgb_quota: int,
) -> None:
    """What one slice leaves behind: its embedding, its crop samples and its share of the RGB patches
    (drawn from ``rng`` in this order, which the numbers depend on)."""
    feats.embeddings.append(image_embeddings([grid], cls[None], config.embedding)[0])
    feats.crops.append(crop_embeddings(grid, crop=config.crop_size, n_crops=config.crops_per_image, rng=rng))
    n_patches = grid.shape[1] * grid.shape[2]
    pick = rng.choice(n_patches, min(rgb_quota, n_patches), replace=False)
    for label, layer in views.items():
        g = grid if layer is None else per_layer[layer]
        feats.rgb_patches.setdefault(label, []).append(patch_tokens(g)[pick])
        if i == feats.show_index:
            feats.show_grids[label] = g
    feats.grid_shapes.add(grid.shape[1:])


# -- statistics ---------------------------------------------------------------------------------------


def _statistics(config: AnalysisConfig, feats: dict[str, _DatasetFeatures], progress: bool) -> _Statistics:
    """Distances and the domain probe for every pair of datasets, then one PCA of all embeddings."""
    names = list(config.datasets)
    emb = {n: np.stack(f.embeddings) for n, f in feats.items()}
    crops = {n: np.stack(f.crops) for n, f in feats.items()}
    comparisons = [_compare(config, a, b, emb, crops, progress) for a, b in itertools.combinations(names, 2)]
    pooled = np.concatenate([emb[n] for n in names])
    pca, pca_summary = fit_pca(pooled, config.pca_components)
    coords = {n: pca.transform(emb[n])[:, :2] for n in names}
    pca_summary["fit_on"] = f"{config.embedding} image embeddings of all datasets pooled ({DOMAIN_SPLIT} splits)"
    return _Statistics(comparisons, pca_summary, coords)


def _compare(
    config: AnalysisConfig,
    a: str,
    b: str,
    emb: dict[str, np.ndarray],
    crops: dict[str, np.ndarray],
    progress: bool,
) -> dict[str, Any]:
    log.info("comparing %s and %s", a, b)
    pair = compare_pair(
        {a: emb[a], b: emb[b]}, {a: crops[a], b: crops[b]}, pca_components=config.pca_components,
        n_boot=config.n_boot, baseline_repeats=config.baseline_repeats, level=config.level,
        method=config.bootstrap_method, seed=config.seed, progress=progress,
    )
    labels = np.array([0] * len(emb[a]) + [1] * len(emb[b]))
    pair["domain_probe"] = domain_probe(
        np.concatenate([emb[a], emb[b]]), labels, (a, b), n_components=config.probe_components, seed=config.seed
    )
    return pair


# -- summarise, write ---------------------------------------------------------------------------------


def _summarise(
    config: AnalysisConfig, inputs: _Inputs, feats: dict[str, _DatasetFeatures], stats: _Statistics
) -> dict[str, Any]:
    """The result as ``analysis.json`` holds it: every number beside the protocol that produced it."""
    bb = inputs.backbone
    return {
        "emfm_version": __version__,
        "backbone": {
            "name": bb.name, "weights_id": bb.weights_id, "family": getattr(bb, "family", None),
            "patch_size": bb.patch_size, "embed_dim": bb.embed_dim, "num_layers": bb.num_layers,
        },
        "protocol": _protocol(config, inputs),
        "datasets": {n: _dataset_entry(f, inputs.domains[n], inputs.tests[n]) for n, f in feats.items()},
        "pca": stats.pca,
        "comparisons": stats.comparisons,
        "mitochondria_probe": {n: f.probe for n, f in feats.items() if f.probe is not None},
    }


def _protocol(config: AnalysisConfig, inputs: _Inputs) -> dict[str, Any]:
    mean_token = config.embedding == "mean"
    return {
        "resolution": config.resolution,
        "resize": "longest edge to the resolution, each side floored to a multiple of the patch size",
        "normalisation": config.normalisation, "mean": list(inputs.mean), "std": list(inputs.std),
        "intensity": config.intensity,
        "precision": inputs.encode_kwargs["precision"], "precision_requested": config.precision,
        "embedding": config.embedding,
        "embedding_description": "mean of the final normalised patch tokens" if mean_token
        else "final normalised CLS token",
        "splits": {"distances_and_domain_probe": DOMAIN_SPLIT, "mitochondria_probe_train": DOMAIN_SPLIT,
                   "mitochondria_probe_test": PROBE_TEST_SPLIT if config.wants_probe else None},
        "max_images": config.max_images, "seed": config.seed, "level": config.level, "n_boot": config.n_boot,
        "bootstrap_method": config.bootstrap_method, "baseline_repeats": config.baseline_repeats,
        "crop_size_patches": config.crop_size, "crops_per_image": config.crops_per_image,
        "probe_patches": config.probe_patches, "probe_layers": inputs.probe_layers,
        "feature_cache": str(inputs.cache.root) if inputs.cache is not None else None,
    }


def _dataset_entry(f: _DatasetFeatures, domain: SliceStack, test: SliceStack | None) -> dict[str, Any]:
    return {
        "split": DOMAIN_SPLIT, "n_images": len(f.ids), "ids": f.ids, "pairing": domain.pairing,
        "input_sizes": sorted(list(s) for s in f.input_sizes),
        "patch_grids": sorted(list(s) for s in f.grid_shapes),
        "test_split": PROBE_TEST_SPLIT if test is not None else None,
        "n_test_images": len(test) if test is not None else 0,
        "features": {"computed": f.computed, "from_cache": f.cached},
    }


def _write_result(result: dict[str, Any], out: str | Path | None, started: float) -> dict[str, Any]:
    """Add the environment and the time taken; write ``analysis.json`` last (its presence means done)."""
    result["environment"] = _environment()
    result["seconds"] = round(time.perf_counter() - started, 1)
    result = finite_json(result)
    if out is not None:
        atomic_write_json(Path(out) / ANALYSIS_NAME, result)
    return result


def _environment() -> dict[str, Any]:
    """Versions and git commit, so a number can be traced back to the code that made it."""
    from emfm.rundir import environment

    env = environment()
    return {k: env[k] for k in ("emfm", "git_commit", "python", "libraries") if k in env}


# -- figures ------------------------------------------------------------------------------------------


def _write_figures(
    out: Path,
    result: dict[str, Any],
    feats: dict[str, _DatasetFeatures],
    domains: dict[str, SliceStack],
    coords: dict[str, np.ndarray],
) -> dict[str, str]:
    """The PCA scatter, the RGB picture, the probe curve and one distance figure per pair; records in
    ``result`` which slice and views the RGB picture shows."""
    from emfm.analysis.plots import plot_distances, plot_pca_rgb, plot_pca_scatter, plot_probe_curve

    out.mkdir(parents=True, exist_ok=True)
    head = f"{result['backbone']['name']}, {result['protocol']['resolution']} px"
    figures: dict[str, str] = {}
    ev = result["pca"]["explained_variance_ratio"]
    kind = "mean patch token" if result["protocol"]["embedding"] == "mean" else "CLS token"
    plot_pca_scatter(coords, ev[:2], out / FIGURES["pca"], title=f"{head}: PCA of image embeddings ({kind})")
    figures["pca"] = FIGURES["pca"]
    plot_pca_rgb(_rgb_panels(result, feats, domains), out / FIGURES["pca_rgb"],
                 title=f"{head}: first three PCs of patch tokens (PCA fitted per dataset)")
    figures["pca_rgb"] = FIGURES["pca_rgb"]
    if result["mitochondria_probe"]:
        plot_probe_curve(result["mitochondria_probe"], out / FIGURES["probe_layers"],
                         title=f"{head}: linear patch probe for mitochondria, per block")
        figures["probe_layers"] = FIGURES["probe_layers"]
    for pair in result["comparisons"]:
        a, b = pair["datasets"]
        fname = f"distances_{safe_name(a)}_vs_{safe_name(b)}.png"
        level = pair["kid"]["interval"]["level"]
        plot_distances(_distance_panels(pair), out / fname, title=(
            f"{head}: {a} vs {b}\nred: value with {level:.0%} bootstrap interval; blue: within-dataset "
            f"split halves, mean and {level:.0%} range"
        ))
        figures[f"distances:{a}:{b}"] = fname
    return figures


def _rgb_panels(
    result: dict[str, Any], feats: dict[str, _DatasetFeatures], domains: dict[str, SliceStack]
) -> list[dict[str, Any]]:
    """Per dataset, its middle slice beside the first three PCs of each view's patch tokens."""
    panels = []
    for name, f in feats.items():
        views = []
        for label, patches in f.rgb_patches.items():
            rgb, explained = pca_rgb(np.concatenate(patches), f.show_grids[label])
            views.append({"label": label, "rgb": rgb, "explained": explained})
        panels.append({
            "dataset": name, "slice_id": f.ids[f.show_index], "image": domains[name].images[f.show_index],
            "views": views,
        })
        result["datasets"][name]["rgb_slice"] = f.ids[f.show_index]
        result["datasets"][name]["rgb_views"] = [v["label"] for v in views]
    return panels


def _distance_panels(pair: dict[str, Any]) -> list[dict[str, Any]]:
    """One panel per estimator: the pair's value and interval above each dataset's split halves."""
    a, b = pair["datasets"]
    panels = []
    for label, entry in [*(("FD " + k, v) for k, v in pair["frechet"].items()), ("KID", pair["kid"])]:
        rows = [(f"{a} vs {b}", entry["value"], entry["interval"]["low"], entry["interval"]["high"])]
        rows += [(f"{ds}: half vs half", bl["mean"], bl["low"], bl["high"]) for ds, bl in entry["baselines"].items()]
        panels.append({"title": label, "rows": rows})
    return panels
