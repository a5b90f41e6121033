"""The representation analysis end to end: datasets in one backbone's feature space.

For each dataset, one pass over its ``trainval`` slices (the images the study compares: Lucchi++ 165,
VNC 17) and, for the mitochondria probe, its ``test`` slices, through the feature cache and in chunks
so that memory stays at a few images' worth of per-layer tokens. From that pass come the image
embeddings, the crop samples, the patches for the RGB picture and the probe's training patches. Then,
for every pair of datasets, the distances (:mod:`emfm.analysis.distances`) and the domain probe; over
all datasets, one PCA; and the figures.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emfm import __version__
from emfm._io import atomic_write_json, finite_json, safe_name
from emfm.analysis._threads import single_threaded_blas
from emfm.analysis.bootstrap import BootstrapMethod
from emfm.analysis.distances import compare_pair
from emfm.analysis.embeddings import EmbeddingKind, crop_embeddings, image_embeddings, patch_labels, patch_tokens
from emfm.analysis.pca import fit_pca, pca_rgb
from emfm.analysis.probes import MitochondriaProbe, domain_probe
from emfm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from emfm.backbones._base import Backbone
    from emfm.data._stack import SliceStack
    from emfm.features import FeatureCache

log = logging.getLogger(__name__)

Normalisation = Literal["imagenet", "backbone"]

#: Split whose images are compared between datasets, and the splits of the mitochondria probe.
DOMAIN_SPLIT = "trainval"
PROBE_TEST_SPLIT = "test"
MIN_IMAGES = 4  # two per half for the split-half baselines

ANALYSIS_NAME = "analysis.json"
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


def _evenly_spaced(stack: SliceStack, max_images: int | None) -> SliceStack:
    """At most ``max_images`` slices spread over the whole stack (consecutive EM slices are alike)."""
    if max_images is None or len(stack) <= max_images:
        return stack
    idx = np.unique(np.linspace(0, len(stack) - 1, max_images).round().astype(int))
    return stack.subset([stack.ids[i] for i in idx], stack.split)


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


def validate_options(
    *,
    datasets: Sequence[str],
    embedding: str = "mean",
    normalisation: str = "imagenet",
    max_images: int | None = None,
    n_boot: int = 200,
    baseline_repeats: int = 50,
    level: float = 0.95,
    bootstrap_method: str = "percentile",
) -> list[str]:
    """Check the options :func:`run_analysis` can check without data; return the dataset names.

    Raises:
        ConfigError: fewer than two datasets, a duplicate, or an option out of range.
    """
    names = [str(d) for d in datasets]
    if len(names) < 2:
        raise ConfigError(
            f"the analysis compares datasets: give at least two, e.g. --datasets lucchi_pp,vnc (got {names})"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"dataset(s) {dupes} given more than once in {names}; name each dataset once")
    if embedding not in ("mean", "cls"):
        raise ConfigError(f"unknown embedding {embedding!r}; use 'mean' (mean patch token) or 'cls' (class token)")
    if normalisation not in ("imagenet", "backbone"):
        raise ConfigError(f"unknown normalisation {normalisation!r}; use 'imagenet' or 'backbone'")
    if max_images is not None and max_images < MIN_IMAGES:
        raise ConfigError(f"--max-images {max_images} is too few: the analysis needs at least {MIN_IMAGES} per dataset")
    if n_boot < 2 or baseline_repeats < 2:
        raise ConfigError(f"bootstrap replicates and baseline repeats must be >= 2; got {n_boot} and {baseline_repeats}")
    if not 0 < level < 1:
        raise ConfigError(f"interval level must be between 0 and 1 (e.g. 0.95), got {level}")
    if bootstrap_method not in ("percentile", "basic", "BCa"):
        raise ConfigError(f"unknown bootstrap method {bootstrap_method!r}; use 'percentile', 'basic' or 'BCa'")
    return names


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


def _encode_dataset(
    backbone: Backbone,
    domain: SliceStack,
    test: SliceStack | None,
    *,
    index: int,
    layers: list[int],
    num_layers: int,
    embedding: EmbeddingKind,
    encode_kwargs: dict[str, Any],
    crop_size: int,
    crops_per_image: int,
    probe_patches: int,
    rgb_patches: int,
    chunk_size: int,
    seed: int,
    progress: bool,
) -> _DatasetFeatures:
    feats = _DatasetFeatures(domain.dataset, list(domain.ids), show_index=len(domain) // 2)
    # Besides the final tokens, the RGB figure shows the probed block nearest the middle: in fine-tuned
    # backbones the last block is often the least telling (its tokens may be mostly position).
    inner = [layer for layer in layers if layer != num_layers - 1] if test is not None else []
    mid = min(inner, key=lambda layer: abs(layer - num_layers // 2)) if inner else None
    views = {"final tokens": None} | ({f"block {mid}": mid} if mid is not None else {})
    rng = np.random.default_rng([seed, index])
    rgb_quota = math.ceil(rgb_patches / len(domain))
    probe = (
        MitochondriaProbe(layers, patches_per_image=math.ceil(probe_patches / len(domain)), seed=seed)
        if test is not None
        else None
    )
    stream = dict(
        layers=layers if probe is not None else [], encode_kwargs=encode_kwargs, chunk_size=chunk_size, counts=feats,
        progress=progress,
    )
    for i, grid, cls, per_layer in _stream(backbone, domain, **stream):
        feats.embeddings.append(image_embeddings([grid], cls[None], embedding)[0])
        feats.crops.append(crop_embeddings(grid, crop=crop_size, n_crops=crops_per_image, rng=rng))
        pick = rng.choice(grid.shape[1] * grid.shape[2], min(rgb_quota, grid.shape[1] * grid.shape[2]), replace=False)
        for label, layer in views.items():
            g = grid if layer is None else per_layer[layer]
            feats.rgb_patches.setdefault(label, []).append(patch_tokens(g)[pick])
            if i == feats.show_index:
                feats.show_grids[label] = g
        feats.grid_shapes.add(grid.shape[1:])
        if probe is not None:
            labels = patch_labels(domain.masks[i], grid.shape[1:])
            probe.add_train({layer: patch_tokens(g) for layer, g in per_layer.items()}, labels)
    if probe is not None and test is not None:
        log.info("fitting %d patch probes for %s", len(layers), domain.dataset)
        probe.fit(progress=progress)
        for i, grid, _, per_layer in _stream(backbone, test, **stream):
            probe.add_test({layer: patch_tokens(g) for layer, g in per_layer.items()}, patch_labels(test.masks[i], grid.shape[1:]))
        feats.probe = {"train_split": DOMAIN_SPLIT, "test_split": PROBE_TEST_SPLIT, **probe.result()}
    return feats


@single_threaded_blas()
def run_analysis(
    *,
    backbone: str | Backbone,
    datasets: Sequence[str],
    out: str | Path | None = None,
    data_root: str | Path | None = None,
    resolution: int = 518,
    embedding: EmbeddingKind = "mean",
    layers: Sequence[int] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    max_images: int | None = None,
    baseline_repeats: int = 50,
    level: float = 0.95,
    bootstrap_method: BootstrapMethod = "percentile",
    pca_components: int = 32,
    probe_components: int = 64,
    crop_size: int = 8,
    crops_per_image: int = 64,
    probe_patches: int = 20_000,
    rgb_patches: int = 20_000,
    normalisation: Normalisation = "imagenet",
    chunk_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare datasets in a backbone's feature space; write ``analysis.json`` and figures to ``out``.

    Args:
        backbone: registry name, hub id or local directory (or an already created backbone).
        datasets: at least two dataset names (``lucchi_pp``, ``vnc``, ``folder:PATH``).
        out: directory for ``analysis.json`` and the figures; None writes nothing.
        data_root: folder holding one folder per dataset (see :func:`emfm.paths.dataset_root`).
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
        chunk_size: slices encoded (or read from the cache) at a time.
        progress: progress bars.

    Returns:
        The result written to ``analysis.json`` (see the keys there).

    Raises:
        ConfigError: fewer than two datasets, a duplicate, a bad option or layer.
        DataError: a dataset with fewer than 4 images; whatever the data layer raises.
        UnknownNameError: an unknown dataset or backbone (raised by the data and backbone layers).
    """
    from emfm.data import get_dataset, load_split
    from emfm.features import FeatureCache
    from emfm.paths import cache_root, dataset_root
    from emfm.transforms import IMAGENET_MEAN, IMAGENET_STD, resized_shape

    started = time.perf_counter()
    names = validate_options(
        datasets=datasets, embedding=embedding, normalisation=normalisation, max_images=max_images, n_boot=n_boot,
        baseline_repeats=baseline_repeats, level=level, bootstrap_method=bootstrap_method,
    )
    for name in names:
        get_dataset(name)  # an unknown name fails here, before any data is read
    want_probe = layers is None or len(layers) > 0
    domains: dict[str, SliceStack] = {}
    tests: dict[str, SliceStack | None] = {}
    for name in names:
        root = dataset_root(name, data_root)
        domains[name] = _evenly_spaced(load_split(name, DOMAIN_SPLIT, root, progress=progress), max_images)
        if len(domains[name]) < MIN_IMAGES:
            raise DataError(
                f"dataset {name} has {len(domains[name])} images in its {DOMAIN_SPLIT} split; the analysis needs "
                f"at least {MIN_IMAGES} per dataset (two per half for the within-dataset baselines)"
            )
        tests[name] = (
            _evenly_spaced(load_split(name, PROBE_TEST_SPLIT, root, progress=progress), max_images)
            if want_probe
            else None
        )
        if tests[name] is not None and len(tests[name]) == 0:
            raise DataError(f"dataset {name} has no {PROBE_TEST_SPLIT} slices for the mitochondria probe; pass --layers none")
    if isinstance(backbone, str):
        from emfm.backbones import create_backbone

        backbone = create_backbone(backbone)
    probe_layers = _resolve_layers(layers, backbone.num_layers) if want_probe else []
    for stack in domains.values():
        resized_shape(stack.images[0].shape, resolution, backbone.patch_size)  # ConfigError if nothing fits
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalisation == "imagenet" else (backbone.mean, backbone.std)
    cache: FeatureCache | None = None
    if use_cache:
        cache = FeatureCache(Path(cache_dir) if cache_dir else cache_root() / "features")
    encode_kwargs = {"resolution": resolution, "cache": cache, "mean": mean, "std": std}

    feats: dict[str, _DatasetFeatures] = {}
    for index, name in enumerate(names):
        log.info("encoding %s (%d slices%s)", name, len(domains[name]),
                 f" + {len(tests[name])} test slices" if tests[name] is not None else "")
        feats[name] = _encode_dataset(
            backbone, domains[name], tests[name], index=index, layers=probe_layers, num_layers=backbone.num_layers,
            embedding=embedding,
            encode_kwargs=encode_kwargs, crop_size=crop_size, crops_per_image=crops_per_image,
            probe_patches=probe_patches, rgb_patches=rgb_patches, chunk_size=chunk_size, seed=seed,
            progress=progress,
        )
    emb = {n: np.stack(f.embeddings) for n, f in feats.items()}
    crops = {n: np.stack(f.crops) for n, f in feats.items()}

    comparisons = []
    for a, b in itertools.combinations(names, 2):
        log.info("comparing %s and %s", a, b)
        pair = compare_pair(
            {a: emb[a], b: emb[b]}, {a: crops[a], b: crops[b]}, pca_components=pca_components, n_boot=n_boot,
            baseline_repeats=baseline_repeats, level=level, method=bootstrap_method, seed=seed, progress=progress,
        )
        labels = np.array([0] * len(emb[a]) + [1] * len(emb[b]))
        pair["domain_probe"] = domain_probe(
            np.concatenate([emb[a], emb[b]]), labels, (a, b), n_components=probe_components, seed=seed
        )
        comparisons.append(pair)

    pooled = np.concatenate([emb[n] for n in names])
    pca, pca_summary = fit_pca(pooled, pca_components)
    coords = {n: pca.transform(emb[n])[:, :2] for n in names}
    pca_summary["fit_on"] = f"{embedding} image embeddings of all datasets pooled ({DOMAIN_SPLIT} splits)"

    result: dict[str, Any] = {
        "emfm_version": __version__,
        "backbone": {
            "name": backbone.name, "weights_id": backbone.weights_id, "family": getattr(backbone, "family", None),
            "patch_size": backbone.patch_size, "embed_dim": backbone.embed_dim, "num_layers": backbone.num_layers,
        },
        "protocol": {
            "resolution": resolution,
            "resize": "longest edge to the resolution, each side floored to a multiple of the patch size",
            "normalisation": normalisation, "mean": list(mean), "std": list(std),
            "embedding": embedding,
            "embedding_description": "mean of the final normalised patch tokens" if embedding == "mean"
            else "final normalised CLS token",
            "splits": {"distances_and_domain_probe": DOMAIN_SPLIT, "mitochondria_probe_train": DOMAIN_SPLIT,
                       "mitochondria_probe_test": PROBE_TEST_SPLIT if want_probe else None},
            "max_images": max_images, "seed": seed, "level": level, "n_boot": n_boot,
            "bootstrap_method": bootstrap_method, "baseline_repeats": baseline_repeats,
            "crop_size_patches": crop_size, "crops_per_image": crops_per_image,
            "probe_patches": probe_patches, "probe_layers": probe_layers,
            "feature_cache": str(cache.root) if cache is not None else None,
        },
        "datasets": {
            n: {
                "split": DOMAIN_SPLIT, "n_images": len(f.ids), "ids": f.ids, "pairing": domains[n].pairing,
                "input_sizes": sorted(list(s) for s in f.input_sizes),
                "patch_grids": sorted(list(s) for s in f.grid_shapes),
                "test_split": PROBE_TEST_SPLIT if tests[n] is not None else None,
                "n_test_images": len(tests[n]) if tests[n] is not None else 0,
                "features": {"computed": f.computed, "from_cache": f.cached},
            }
            for n, f in feats.items()
        },
        "pca": pca_summary,
        "comparisons": comparisons,
        "mitochondria_probe": {n: f.probe for n, f in feats.items() if f.probe is not None},
    }
    if out is not None:
        result["figures"] = _write_figures(Path(out), result, feats, domains, coords)
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


def _write_figures(
    out: Path,
    result: dict[str, Any],
    feats: dict[str, _DatasetFeatures],
    domains: dict[str, SliceStack],
    coords: dict[str, np.ndarray],
) -> dict[str, str]:
    from emfm.analysis.plots import plot_distances, plot_pca_rgb, plot_pca_scatter, plot_probe_curve

    out.mkdir(parents=True, exist_ok=True)
    bb = result["backbone"]["name"]
    res = result["protocol"]["resolution"]
    figures: dict[str, str] = {}
    ev = result["pca"]["explained_variance_ratio"]
    kind = "mean patch token" if result["protocol"]["embedding"] == "mean" else "CLS token"
    plot_pca_scatter(coords, ev[:2], out / FIGURES["pca"], title=f"{bb}, {res} px: PCA of image embeddings ({kind})")
    figures["pca"] = FIGURES["pca"]
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
    plot_pca_rgb(panels, out / FIGURES["pca_rgb"],
                 title=f"{bb}, {res} px: first three PCs of patch tokens (PCA fitted per dataset)")
    figures["pca_rgb"] = FIGURES["pca_rgb"]
    if result["mitochondria_probe"]:
        plot_probe_curve(result["mitochondria_probe"], out / FIGURES["probe_layers"],
                         title=f"{bb}, {res} px: linear patch probe for mitochondria, per block")
        figures["probe_layers"] = FIGURES["probe_layers"]
    for pair in result["comparisons"]:
        a, b = pair["datasets"]
        panels = []
        for label, entry in [*(("FD " + k, v) for k, v in pair["frechet"].items()), ("KID", pair["kid"])]:
            rows = [(f"{a} vs {b}", entry["value"], entry["interval"]["low"], entry["interval"]["high"])]
            rows += [(f"{ds}: half vs half", bl["mean"], bl["low"], bl["high"]) for ds, bl in entry["baselines"].items()]
            panels.append({"title": label, "rows": rows})
        fname = f"distances_{safe_name(a)}_vs_{safe_name(b)}.png"
        level = pair["kid"]["interval"]["level"]
        plot_distances(panels, out / fname, title=(
            f"{bb}, {res} px: {a} vs {b}\nred: value with {level:.0%} bootstrap interval; blue: within-dataset "
            f"split halves, mean and {level:.0%} range"
        ))
        figures[f"distances:{a}:{b}"] = fname
    return figures
