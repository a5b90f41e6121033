"""``emfm adapt``: adapt a trained run to unlabelled data (a thin wrapper over :mod:`emfm.adapt`).

The method's settings come from ``--set KEY=VALUE`` (values read as YAML, as ``emfm train --set``); a key
that is no setting of the method is one line naming the nearest valid key. Every check is made before
anything is written, so a refused command leaves no output directory.
"""

from __future__ import annotations

import argparse

#: The registered methods, named here rather than imported so that building the parser imports no torch
#: (a test checks that they are the registry's).
METHODS = ("adabn", "self-training")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a trained run to your unlabelled data (AdaBN, mean-teacher self-training)",
        description=(
            "Adapt a trained run to unlabelled target data and write the adapted run to --out, which `emfm evaluate "
            "--run` and `emfm predict --run` take like any other run. The target's labels, if it has any, are "
            "never read."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by `emfm train` (never modified)")
    p.add_argument(
        "--target", required=True,
        help="unlabelled data: a volume (3-D tif, STORE.zarr[:ARRAY], FILE.h5[:DATASET], folder of slices), "
             "folder:PATH with the slices in PATH/images, or a dataset name (its training-split images)",
    )
    p.add_argument("--method", required=True,
                   help=f"{' or '.join(METHODS)}: adabn re-estimates the head's BatchNorm statistics on the "
                        f"target; self-training trains the head on a mean teacher's confident pseudo-labels")
    p.add_argument("--out", required=True, help="directory of the adapted run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the method (repeatable); self-training: steps, decay, threshold, "
                        "source_weight, seed, lr, batch_size, crop, feature_dropout, intensity_augment")
    p.add_argument("--data-root", help="folder holding one folder per dataset, for a dataset --target "
                                       "(default: the run's data root)")
    p.add_argument("--cache-dir", help="feature cache (default: the run's)")
    p.add_argument("--backbone", metavar="PATH",
                   help="where the run's backbone weights are now, if they moved (checked against the run's digest)")
    p.add_argument("--max-slices", type=int, help="use at most N target slices, spread evenly through it")
    p.add_argument("--overwrite", action="store_true", help="replace an --out that holds something else")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_adapt)


def run_adapt(args: argparse.Namespace) -> int:
    from emfm.adapt import adapt_run
    from emfm.config import apply_overrides

    settings = apply_overrides({}, args.overrides)
    record = adapt_run(
        args.run, args.target, args.method, args.out, settings=settings, data_root=args.data_root,
        cache_dir=args.cache_dir, backbone=args.backbone, max_slices=args.max_slices, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"adapted run {args.out}: {record['method']} of {record['source_run']} on {record['target']['description']}"
          f" in {record['seconds']:.1f} s")
    print(record["summary"])
    source = record.get("source")
    if isinstance(source, dict) and not source.get("used"):
        print(f"without the source loss: {source.get('reason')}")
    print(f"use it like any run: `emfm evaluate --run {args.out}`, `emfm predict --run {args.out} ...`")
    return 0
