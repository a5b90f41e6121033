"""``emfm analyze``: compare datasets in a backbone's feature space, and write what was found."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emfm.analysis.config import AnalysisConfig

DESCRIPTION = """\
Compare datasets in one backbone's feature space: PCA of image embeddings, the Fréchet distance by four
estimators (full, PCA-k, Ledoit-Wolf, patch crops) and KID, each with a bootstrap interval and the same
distance between random halves of each dataset; a domain probe; and a per-layer linear probe for
mitochondria on patches. Writes OUT/analysis.json, OUT/config.yaml and figures (pca.png, pca_rgb.png,
probe_layers.png, distances_*.png)."""


#: AnalysisConfig keys, listed here rather than imported, so that building the parser imports nothing
#: of emfm.analysis (the analysis config checks a --config or --set key against its own fields).
SETTING_KEYS = (
    "datasets", "backbone", "data_root", "resolution", "embedding", "layers", "n_boot", "seed", "cache_dir",
    "use_cache", "max_images", "baseline_repeats", "level", "bootstrap_method", "pca_components",
    "probe_components", "crop_size", "crops_per_image", "probe_patches", "rgb_patches", "normalisation",
    "intensity", "chunk_size", "precision",
)
#: Flag dest -> AnalysisConfig key, for the flags whose value is the setting as it is.
_FLAGS = {
    "backbone": "backbone", "data_root": "data_root", "resolution": "resolution", "embedding": "embedding",
    "bootstrap": "n_boot", "baseline_repeats": "baseline_repeats", "level": "level", "seed": "seed",
    "normalisation": "normalisation", "intensity": "intensity", "cache_dir": "cache_dir",
    "max_images": "max_images", "precision": "precision",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="compare datasets in a backbone's feature space (PCA, FD, KID, probes)",
                       description=DESCRIPTION + " Settings come from --config, then the flags given, then --set, "
                       "each later one winning.")
    # No flag has a parser default: a flag not given leaves the --config value (or the setting's default).
    p.add_argument("--backbone", help="registry name, hub id or local directory (required, here or in --config)")
    p.add_argument("--datasets", help="two or more datasets, comma separated (lucchi_pp,vnc)")
    p.add_argument("--out", help="output directory (default runs/analysis-<backbone>-<datasets>)")
    p.add_argument("--data-root",
                   help="folder holding one folder per dataset (default $EMFM_DATA or the user data dir)")
    p.add_argument("--resolution", type=int, help="longest image edge in pixels (default 518)")
    p.add_argument("--embedding", choices=["mean", "cls"],
                   help="image embedding: mean patch token (the study) or CLS token (FD-DINOv2); default mean")
    p.add_argument("--layers",
                   help="blocks for the mitochondria probe: 'all' (default), 'none', or indices like 3,6,-1")
    p.add_argument("--bootstrap", type=int, help="bootstrap replicates per interval (default 200)")
    p.add_argument("--baseline-repeats", type=int, help="split-half repeats per dataset (default 50)")
    p.add_argument("--level", type=float, help="interval coverage (default 0.95)")
    p.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    p.add_argument("--normalisation", choices=["imagenet", "backbone"],
                   help="pixel mean/std: imagenet (the study, every family; default) or the backbone's own")
    p.add_argument("--intensity", choices=["dtype", "minmax"],
                   help="stored pixels to [0, 1]: by the dtype's maximum (default) or each slice's own range")
    p.add_argument("--precision", choices=["32", "bf16", "auto"],
                   help="what the backbone encodes in: 32 (default, reproducible), bf16 where the hardware has it "
                        "natively (else fp32, with a warning), or auto (bf16 or fp16 where native, else fp32)")
    p.add_argument("--cache-dir", help="feature cache (default $EMFM_CACHE/features or the user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="compute every feature afresh and store nothing")
    p.add_argument("--max-images", type=int, help="at most N slices per dataset and split, evenly spaced")
    p.add_argument("--config", metavar="FILE", help="YAML file of analysis settings (the keys --set takes; an "
                   "analysis's own config.yaml reruns it)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"set an analysis setting by name, the value read as YAML (repeatable; wins over the flags "
                        f"and --config); keys: {', '.join(SETTING_KEYS)}")
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


def build_config(args: argparse.Namespace) -> AnalysisConfig:
    """The run's AnalysisConfig: --config, then the flags given, then --set; local paths made absolute
    (so that the saved config.yaml reruns from any directory)."""
    from emfm.analysis.config import AnalysisConfig
    from emfm.config import apply_overrides, load_yaml, split_names
    from emfm.errors import ConfigError

    data = load_yaml(args.config) if args.config else {}
    data.update({key: getattr(args, dest) for dest, key in _FLAGS.items() if getattr(args, dest) is not None})
    if args.datasets is not None:
        data["datasets"] = split_names(args.datasets)
    if args.layers is not None:
        data["layers"] = parse_layers(args.layers)
    if args.no_cache:
        data["use_cache"] = False
    data = apply_overrides(data, args.overrides)
    if not data.get("backbone"):
        raise ConfigError("missing --backbone (or give backbone in --config)")
    for key in ("data_root", "cache_dir"):
        if data.get(key):
            data[key] = str(Path(str(data[key])).expanduser().resolve())
    if isinstance(data["backbone"], str) and Path(data["backbone"]).expanduser().exists():
        data["backbone"] = str(Path(data["backbone"]).expanduser().resolve())
    return AnalysisConfig.from_dict(data)


def default_out(config: AnalysisConfig) -> Path:
    from emfm._io import safe_name

    name = str(config.backbone)
    backbone = Path(name).name if Path(name).exists() else name
    return Path("runs") / safe_name(f"analysis-{backbone}-{'+'.join(config.datasets)}")


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
    from emfm.analysis import run_analysis

    config = build_config(args)
    out = Path(args.out) if args.out else default_out(config)
    result = run_analysis(config, out, progress=not args.no_progress)
    print_summary(result, out)
    return 0
