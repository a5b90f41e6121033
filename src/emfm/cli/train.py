"""``emfm train`` and ``emfm evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

# CLI flag -> TrainConfig field; flags default to None so that only what the user typed overrides
# the config file, which overrides the dataclass defaults.
_FLAGS = {
    "backbone": str, "train": str, "test": str, "head": str, "epochs": int, "seed": int,
    "resolution": int, "patience": int, "batch_size": int, "lr": float, "weight_decay": float,
    "pairing": str, "normalisation": str, "intensity": str, "precision": str, "data_root": str,
    "cache_dir": str, "max_train_slices": int, "layers": str, "scale": float, "tile": int, "tile_overlap": int,
    "crop": int, "crops_per_epoch": int, "augment": str, "loss": str, "min_steps": int, "val_every": int,
    "label_budget": int, "label_pick": str, "max_minutes": float, "align": str, "cv_folds": int, "cv_fold": int,
    "devices": int, "num_nodes": int, "strategy": str, "train_threads": int,
    "lr_schedule": str,
}
# Comma-separated list flags -> the config's lists.
_LISTS = {"layers": int, "augment": str}
_CHOICES = {
    "pairing": ["by-number", "text-sorted", "study-compose"], "strategy": ["auto", "ddp", "ddp_spawn"],
    "normalisation": ["imagenet", "backbone"], "intensity": ["dtype", "minmax"], "precision": ["32", "bf16", "auto"],
    "loss": ["dice", "dice_ce"], "label_pick": ["random", "even", "first"],
    "lr_schedule": ["constant", "cosine"],
}
_HELP = {
    "backbone": "registry name (dinov2-l, dinov3-l, openclip-l14...), hub id or local directory; "
                "unet or unet-small for the from-scratch U-Net baseline",
    "train": "training set(s), comma separated: lucchi_pp, vnc, folder:PATH",
    "test": "test set(s), comma separated (default: the training sets)",
    "head": "segmentation head: linear, deconv (the study's), multilinear, dpt or fusion",
    "resolution": "longest image edge in pixels (the study: 1022)",
    "pairing": "image/mask pairing; text-sorted reproduces the study's mistake on the training data, "
               "study-compose on the test data too, as the study scored it (ablations only)",
    "normalisation": "imagenet (the study, every family) or the backbone's own mean/std",
    "data_root": "folder holding one folder per dataset (default $EMFM_DATA or the user data dir)",
    "cache_dir": "feature cache (default $EMFM_CACHE or the user cache dir)",
    "max_train_slices": "use only the first N training slices of each set (quick checks)",
    "layers": "backbone blocks the head reads, comma separated, 0-based (default: the head's own)",
    "scale": "encode at this pixel scale (1.0 = native) through overlapping tiles, instead of resizing to --resolution",
    "tile": "tile edge in network pixels when --scale is given (a multiple of the patch)",
    "tile_overlap": "least overlap between tiles in network pixels",
    "crop": "train on random crops of this edge in network pixels (a multiple of the patch)",
    "crops_per_epoch": "crops per epoch with --crop",
    "augment": "flips/rotations encoded as extra cached variants, comma separated (hflip,vflip,rot90,...)",
    "loss": "dice (the study's) or dice_ce (Dice + cross-entropy)",
    "min_steps": "training steps before early stopping may stop",
    "val_every": "validate every N epochs (patience counts validations)",
    "align": "domain alignment for joint training: none, mixed (one slice of each set per batch), weighted, "
             "domain-bn; input standardisation: volume-norm, histogram-match, fda "
             "(settings: --set align_settings.KEY=VALUE)",
    "max_minutes": "stop training after this many minutes (the best weights so far are kept)",
    "label_budget": "train on N labelled slices of each training set, spread through the stack (see --label-pick)",
    "label_pick": "how a label budget picks: random (one per equal part, redrawn by --seed), even, or first",
    "devices": "train on N devices (GPUs, or CPU processes) with DDP; --batch-size is the global batch",
    "num_nodes": "machines in a multi-node DDP run (each with --devices devices)",
    "strategy": "auto (DDP when there are several processes), ddp, or ddp_spawn",
    "cv_folds": "cross-validate: replace each training set's published split by K folds of its labelled slices",
    "cv_fold": "which fold (0 .. cv_folds - 1) this run trains without and is scored on",
    "lr_schedule": "constant (the study's), or cosine: a 5%% linear warm-up, then a cosine decay to 0 over "
                   "--epochs (a --max-minutes budget may end training before the decay does)",
    "lr": "learning rate (default: the head's own; the study uses 5e-5)",
    "train_threads": "torch's intra-op threads while training (default: torch's); 1 can help a tiny head on a "
                     "machine shared with other work",
    "precision": "32 (default, reproducible), bf16 where the hardware has it natively (else fp32, with a "
                 "warning), or auto (bf16 or fp16 where native, else fp32); training and a frozen run's feature "
                 "encoding both run in it",
}


def adapter_flags() -> dict[str, tuple[str, type, str, list[str] | None]]:
    """``--<adapter>-<setting>`` flags from the adapter registry: dest -> (flag, type, help, choices); a
    setting with fixed values (``Literal``, or ``choices`` in the field's metadata, e.g. ``--lora-layout
    fused-qkv|separate``) offers them as choices."""
    import dataclasses
    import typing

    import yaml

    from emfm.adapters import ADAPTERS

    flags = {}
    for name, cls in ADAPTERS.items():
        hints = typing.get_type_hints(cls.settings_type)
        for f in dataclasses.fields(cls.settings_type):  # type: ignore[arg-type]
            dest = f"{name.replace('-', '_')}_{f.name}"
            typ = hints.get(f.name)
            choices = f.metadata.get("choices") or (typing.get_args(typ) if typing.get_origin(typ) is typing.Literal
                                                     else None)
            choices = [str(c) for c in choices] if choices else None
            parse = str if choices else typ if typ in (int, float, str) else yaml.safe_load  # else a YAML value
            flags[dest] = (f"--{name}-{f.name.replace('_', '-')}", parse, f"{name}: {f.name} (default {f.default})",
                           choices)
    return flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    from emfm.adapters import ADAPTERS

    p = sub.add_parser("train", help="adapt a backbone (frozen + head, LoRA, ...) and evaluate it",
                       description="Train a segmentation head (and adapters) and evaluate on each test set.")
    p.add_argument("--config", help="YAML file with TrainConfig keys")
    adapters = "; ".join(f"{n}: {c.summary}" for n, c in ADAPTERS.items())
    for name, typ in _FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None,
                       choices=_CHOICES.get(name), help=_HELP.get(name))
        if name == "backbone":
            p.add_argument(
                "--adapter", choices=ADAPTERS.names(), default=None, help=f"how the backbone is adapted ({adapters})"
            )
    for dest, (flag, typ, text, choices) in adapter_flags().items():
        p.add_argument(flag, dest=dest, type=typ, default=None, choices=choices, help=text)
    p.add_argument("--balance", action="store_true", default=None, help="sample the training sets equally")
    p.add_argument("--crops-per-set", action="store_true", default=None,
                   help="--crops-per-epoch counts each training set's crops (a joint run sees each set as often as "
                        "its single-set run does)")
    p.add_argument("--intensity-augment", action="store_true", default=None,
                   help="random contrast, noise and blur on pixels the model sees live (pixel heads, LoRA)")
    p.add_argument("--grad-checkpointing", action="store_true", default=None,
                   help="recompute a live backbone's activations in the backward pass (LoRA on large backbones)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (repeatable)")
    p.add_argument("--out", help="run directory (default runs/<backbone>-<adapter>-<train>-s<seed>)")
    p.add_argument("--overwrite", action="store_true", help="replace a run directory that holds another run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)

    e = sub.add_parser("evaluate", help="re-evaluate a saved run without training")
    e.add_argument("--run", required=True, help="run directory written by emfm train")
    e.add_argument("--test", help="test set(s), comma separated (default: the run's own)")
    e.add_argument("--data-root", help="folder holding one folder per dataset")
    e.add_argument("--backbone", metavar="PATH",
                   help="where the run's backbone weights are now, if they moved since training (checked: they "
                        "must be the same weights)")
    e.add_argument("--no-shift", action="store_true",
                   help="skip the test sets' distance from the training sets in the backbone's features "
                        "(Fréchet distance with a bootstrap interval, domain-probe AUC)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=run_evaluate)


def build_config(args: argparse.Namespace):
    from emfm.config import TrainConfig, apply_overrides, load_yaml
    from emfm.errors import ConfigError

    data = load_yaml(args.config) if args.config else {}
    for name in [*_FLAGS, "adapter", *adapter_flags()]:
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    if args.balance:
        data["balance"] = True
    if args.crops_per_set:
        data["crops_per_set"] = True
    if args.intensity_augment:
        data["intensity_augment"] = True
    if args.grad_checkpointing:
        data["grad_checkpointing"] = True
    for name, typ in _LISTS.items():
        if isinstance(data.get(name), str):
            try:
                data[name] = [typ(v) for v in data[name].split(",") if v.strip()]
            except ValueError:
                raise ConfigError(
                    f"--{name.replace('_', '-')} {data[name]!r}: expected a comma-separated list"
                ) from None
    data = apply_overrides(data, args.overrides)
    missing = [k for k in ("backbone", "train") if not data.get(k)]
    if missing:
        raise ConfigError(f"missing {', '.join('--' + m for m in missing)} (or give them in --config)")
    return TrainConfig.from_dict(data)


def default_out(config) -> Path:
    from emfm._io import safe_name

    backbone = Path(config.backbone).name if Path(config.backbone).exists() else config.backbone
    return Path("runs") / safe_name(
        f"{backbone}-{config.adapter}-{config.head}-{'+'.join(config.train)}-s{config.seed}"
    )


def print_metrics(metrics: dict) -> None:
    rows = [(name, m) for name, m in metrics["test"].items()]
    if "test_pooled" in metrics:
        rows.append(("pooled", metrics["test_pooled"]))
    print(f"{'test set':<24} {'fg IoU':>8} {'95% CI (slices)':>17} {'Dice':>8} {'IoU (resized)':>14} {'slices':>7} "
          f"{'empty':>6}")
    for name, m in rows:
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "  n/a"  # noqa: E731
        ci = m.get("fg_iou_interval")
        ci_text = f"[{ci['low']:.3f}, {ci['high']:.3f}]" if ci else "n/a"
        empty = m.get("empty_slices")
        print(f"{name:<24} {fmt(m['fg_iou']):>8} {ci_text:>17} {fmt(m['dice']):>8} "
              f"{fmt(m.get('fg_iou_resized')):>14} {m['n_slices']:>7} {'' if empty is None else empty:>6}")
    if any(m.get("fg_iou_interval") for _, m in rows):
        print("95% CI: moving-block bootstrap over the test slices (other slices like these, not another seed); "
              "empty: slices with no foreground in truth or prediction")


def run_train(args: argparse.Namespace) -> int:
    from emfm.errors import Interrupted
    from emfm.train.run import train_run

    config = build_config(args)
    out = Path(args.out) if args.out else default_out(config)
    try:
        metrics = train_run(config, out, overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_run(out)) from None
    if not metrics:  # a DDP rank other than 0: rank 0 writes and prints the run
        return 0
    r = metrics["run"]
    print(f"run {out}: {r['backbone']} {r['adapter']} + {r['head']}, trained on {'+'.join(r['train_sets'])}, "
          f"seed {r['seed']}, {metrics['epochs_run']} epochs (best {metrics['best_epoch']}), "
          f"{metrics['trainable_params']['total']:,} trainable parameters, {metrics['wall_seconds']:.0f} s")
    print_metrics(metrics)
    return 0


def interrupted_run(out: Path) -> str:
    """What an interrupted ``emfm train`` kept, and how to go on."""
    from emfm import rundir

    if not (out / rundir.CONFIG_NAME).is_file():
        return f"nothing was written to {out}; rerun the same command to train"
    return (
        f"the run in {out} did not finish (it has no {rundir.METRICS_NAME}); the features computed so far are "
        f"kept in the cache: rerun the same command to train it"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from emfm.config import split_names
    from emfm.evaluate.run import evaluate_run
    from emfm.evaluate.transfer import shift_lines

    metrics = evaluate_run(args.run, split_names(args.test) if args.test else None, data_root=args.data_root,
                           backbone=args.backbone, shift=not args.no_shift, progress=not args.no_progress)
    print(f"run {args.run}: {metrics['backbone']}")
    print_metrics(metrics)
    for line in shift_lines(metrics):
        print(line)
    return 0
