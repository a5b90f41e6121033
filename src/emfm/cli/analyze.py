"""``emfm analyze``: compare datasets in a backbone's feature space, and write what was found."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Compare datasets in one backbone's feature space: PCA of image embeddings, the Fréchet distance by four
estimators (full, PCA-k, Ledoit-Wolf, patch crops) and KID, each with a bootstrap interval and the same
distance between random halves of each dataset; a domain probe; and a per-layer linear probe for
mitochondria on patches. Writes OUT/analysis.json, OUT/config.yaml and figures (pca.png, pca_rgb.png,
probe_layers.png, distances_*.png)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="compare datasets in a backbone's feature space (PCA, FD, KID, probes)",
                       description=DESCRIPTION)
    p.add_argument("--backbone", required=True, help="registry name, hub id or local directory")
    p.add_argument("--datasets", required=True, help="two or more datasets, comma separated (lucchi_pp,vnc)")
    p.add_argument("--out", help="output directory (default runs/analysis-<backbone>-<datasets>)")
    p.add_argument("--data-root", help="folder holding one folder per dataset (default $EMFM_DATA or the user data dir)")
    p.add_argument("--resolution", type=int, default=518, help="longest image edge in pixels (default 518)")
    p.add_argument("--embedding", choices=["mean", "cls"], default="mean",
                   help="image embedding: mean patch token (the study) or CLS token (FD-DINOv2); default mean")
    p.add_argument("--layers", default="all",
                   help="blocks for the mitochondria probe: 'all' (default), 'none', or indices like 3,6,-1")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates per interval (default 200)")
    p.add_argument("--baseline-repeats", type=int, default=50, help="split-half repeats per dataset (default 50)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--normalisation", choices=["imagenet", "backbone"], default="imagenet",
                   help="pixel mean/std: imagenet (the study, every family) or the backbone's own")
    p.add_argument("--cache-dir", help="feature cache (default $EMFM_CACHE/features or the user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="compute every feature afresh and store nothing")
    p.add_argument("--max-images", type=int, help="at most N slices per dataset and split, evenly spaced")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_analyze)


def parse_layers(value: str) -> list[int] | None:
    """``all`` -> None (every block), ``none`` -> [] (no probe), ``3,6,-1`` -> [3, 6, -1]."""
    from emfm.errors import ConfigError

    text = value.strip().lower()
    if text == "all":
        return None
    if text in ("none", ""):
        return []
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--layers {value!r}: expected 'all', 'none' or block indices like 3,6,-1") from None


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`~emfm.analysis.run_analysis`, with local paths made absolute."""
    from emfm.config import split_names

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else None

    backbone = absolute(args.backbone) if Path(args.backbone).expanduser().exists() else args.backbone
    return {
        "backbone": backbone,
        "datasets": split_names(args.datasets),
        "data_root": absolute(args.data_root),
        "resolution": args.resolution,
        "embedding": args.embedding,
        "layers": parse_layers(args.layers),
        "n_boot": args.bootstrap,
        "baseline_repeats": args.baseline_repeats,
        "level": args.level,
        "seed": args.seed,
        "normalisation": args.normalisation,
        "cache_dir": absolute(args.cache_dir),
        "use_cache": not args.no_cache,
        "max_images": args.max_images,
    }


def default_out(config: dict[str, Any]) -> Path:
    from emfm._io import safe_name

    backbone = Path(config["backbone"]).name if Path(config["backbone"]).exists() else config["backbone"]
    return Path("runs") / safe_name(f"analysis-{backbone}-{'+'.join(config['datasets'])}")


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"


def print_summary(result: dict[str, Any], out: Path) -> None:
    """A short human summary; every number is in analysis.json with its protocol."""
    proto = result["protocol"]
    sets = ", ".join(f"{n} ({d['n_images']} images, {d['split']})" for n, d in result["datasets"].items())
    print(f"{result['backbone']['name']} at {proto['resolution']} px, {proto['embedding']} embeddings: {sets}")
    print(f"PCA: first 2 of {result['pca']['n_components']} components explain "
          f"{100 * result['pca']['cumulative'][min(1, len(result['pca']['cumulative']) - 1)]:.1f}% of the variance")
    for pair in result["comparisons"]:
        a, b = pair["datasets"]
        print(f"{a} vs {b}  (value [{100 * proto['level']:.0f}% bootstrap]; split-half mean per dataset)")
        entries = [(f"FD {k}", v) for k, v in pair["frechet"].items()] + [("KID", pair["kid"])]
        for label, e in entries:
            halves = ", ".join(f"{ds} {_fmt(bl['mean'])}" for ds, bl in e["baselines"].items())
            extra = []
            if e.get("singular"):
                extra.append(f"singular: {min(e['n_samples'].values())} samples in {e['dim']} dims")
            if "n_components" in e:
                extra.append(f"k={e['n_components']}")
            note = f"  ({'; '.join(extra)})" if extra else ""
            print(f"  {label:<15} {_fmt(e['value']):>9} [{_fmt(e['interval']['low'])}, {_fmt(e['interval']['high'])}]"
                  f"  halves: {halves}{note}")
        dp = pair["domain_probe"]
        h, cv = dp["holdout"], dp["cross_validation"]
        print(f"  domain probe (PCA-{dp['n_components']} + logistic regression): hold-out accuracy "
              f"{h['accuracy']:.3f} (balanced {h['balanced_accuracy']:.3f}, AUC {h['roc_auc']:.3f}, majority "
              f"{h['majority_accuracy']:.3f}, test {h['n_test']}); {cv['n_folds']}-fold CV AUC "
              f"{cv['roc_auc_mean']:.3f} ± {cv['roc_auc_std']:.3f}, balanced accuracy "
              f"{cv['balanced_accuracy_mean']:.3f}")
    for name, probe in result["mitochondria_probe"].items():
        curve = "  ".join(f"{layer}:{_fmt(v)}" for layer, v in zip(probe["layers"], probe["iou"]))
        print(f"mitochondria patch probe, {name} (IoU per block on {probe['n_test_patches']} test patches; "
              f"all-foreground {_fmt(probe['trivial_iou'])}): {curve}")
    print(f"written: {out / 'analysis.json'}, " + ", ".join(str(out / f) for f in result.get("figures", {}).values()))


def run_analyze(args: argparse.Namespace) -> int:
    import yaml

    from emfm import __version__
    from emfm._io import atomic_write_text
    from emfm.analysis import run_analysis
    from emfm.analysis.run import validate_options

    config = resolve_config(args)
    validate_options(**{k: config[k] for k in ("datasets", "embedding", "normalisation", "max_images", "n_boot",
                                               "baseline_repeats", "level")})
    out = Path(args.out) if args.out else default_out(config)
    out.mkdir(parents=True, exist_ok=True)
    header = "# emfm analyze: the keyword arguments of emfm.analysis.run_analysis (layers: null = every block)\n"
    atomic_write_text(out / "config.yaml", header + yaml.safe_dump(
        {**config, "out": str(out.resolve()), "emfm_version": __version__}, sort_keys=False))
    result = run_analysis(out=out, progress=not args.no_progress, **config)
    print_summary(result, out)
    return 0
