"""``emfm predict``: segment a volume with a trained run (a thin wrapper over :mod:`emfm.predict`).

The prediction settings (:class:`~emfm.predict.settings.PredictSettings`) are resolved here, once:
``--config FILE`` first, then the setting flags that were given, then each ``--set KEY=VALUE``, each
later source winning. A key that is no setting is one line naming the nearest valid key.
"""

from __future__ import annotations

import argparse

#: The PredictSettings keys, each also a flag of its own (``batch_size`` -> ``--batch-size``).
#: Named here rather than imported, so that building the parser imports nothing of emfm.predict.
SETTING_KEYS = ("mode", "tile", "halo", "scale", "batch_size", "probability_dtype", "bf16", "device")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment an EM volume with a trained run",
        description=(
            "Predict a uint8 0/1 mask volume of the input's shape, slice by slice, in bounded memory. "
            "Rerunning over a partial output of the same job finishes it. Settings come from --config, "
            "then the flags, then --set, each later one winning."
        ),
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", help="run directory written by `emfm train`")
    model.add_argument("--model", help="a model written by `emfm export` (.onnx or bioimage.io .zip), run the same "
                                       "way as its run directory (on the CPU), to check it before sharing it")
    p.add_argument(
        "--input", required=True,
        help="3-D tif, folder of 2-D slices (png/webp/tif), STORE.zarr[:ARRAY] (OME-Zarr too) or FILE.h5:DATASET",
    )
    p.add_argument("--output", required=True, help="mask volume: .zarr, .ome.zarr or .tif/.tiff")
    _add_setting_flags(p)
    p.add_argument("--config", metavar="FILE", help="YAML file of prediction settings (the keys --set takes)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help=f"set a prediction setting by name, the value read as YAML (repeatable; wins over the flags and "
             f"--config); keys: {', '.join(SETTING_KEYS)}",
    )
    p.add_argument("--probabilities", help="also write P(foreground) here (.zarr, .ome.zarr or .tif)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--backbone", metavar="PATH",
                   help="where the run's backbone weights are now, if they moved (checked against the run's digest)")
    p.add_argument("--max-slices", type=int, help="compute at most N missing slices, then stop (resumable)")
    p.add_argument("--dask", action="store_true", help="run through dask, one task per block of slices")
    p.add_argument("--workers", type=int, help="dask worker threads on this machine (implies --dask)")
    p.add_argument("--scheduler", help="address of a dask distributed scheduler, e.g. tcp://host:8786 (implies --dask)")
    p.add_argument("--block-slices", type=int, default=8, help="dask: slices per block (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def _add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per setting. None of them has a parser default, so a flag that is not given leaves
    the value of --config (or the setting's own default) alone."""
    p.add_argument("--mode", choices=["resize", "tile"],
                   help="resize: whole slice at the run's resolution, as in evaluation (default); "
                        "tile: overlapping tiles at the run's training pixel size")
    p.add_argument("--tile", type=int, help="tile mode: tile edge in network pixels (default: the run's resolution)")
    p.add_argument("--halo", type=int, help="tile mode: fading tile border in network pixels (default: tile/8)")
    p.add_argument("--scale", type=float,
                   help="tile mode: network pixels per input pixel (default: as the run was trained)")
    p.add_argument("--batch-size", type=int,
                   help="slices (resize) or tiles (tile) per model call (default 4; 1 reproduces "
                        "`emfm evaluate` bit for bit, larger batches may flip the odd near-tied pixel)")
    p.add_argument("--probability-dtype", choices=["float16", "uint8"],
                   help="float16 P in [0, 1] (default) or uint8 round(255 P)")
    p.add_argument("--bf16", action="store_true", default=None,
                   help="bfloat16 autocast (faster; may flip near-tied pixels)")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")


def predict_settings(args: argparse.Namespace):
    """The run's :class:`~emfm.predict.settings.PredictSettings`: --config, then the flags given, then --set."""
    from emfm.config import apply_overrides, load_yaml
    from emfm.predict.settings import PredictSettings

    data = load_yaml(args.config) if args.config else {}
    data.update({key: getattr(args, key) for key in SETTING_KEYS if getattr(args, key) is not None})
    return PredictSettings.from_dict(apply_overrides(data, args.overrides))


def _scheduler(address: str | None) -> object:
    """``threads`` on this machine, or a client of the distributed scheduler at ``address``."""
    from emfm.errors import ConfigError

    if not address:
        return "threads"
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise ConfigError(
            "--scheduler needs dask's distributed package; install it with `pip install emfm[cluster]`"
        ) from None
    try:
        return Client(address)
    except OSError as exc:
        raise ConfigError(f"--scheduler {address}: cannot reach the dask scheduler ({exc})") from None


def run_predict(args: argparse.Namespace) -> int:
    from emfm.errors import ConfigError

    settings = predict_settings(args)
    common = dict(probabilities=args.probabilities, overwrite=args.overwrite, progress=not args.no_progress)
    run = args.run or args.model
    if args.backbone and (args.model or args.dask or args.workers or args.scheduler):
        raise ConfigError("--backbone relocates a run's backbone for --run without dask; an export holds its own")
    if args.model:
        from emfm.export import is_exported_model

        if not is_exported_model(args.model):
            raise ConfigError(f"--model {args.model}: expected an `emfm export` output (.onnx or .zip); pass a run "
                              f"directory as --run")
    if args.dask or args.workers or args.scheduler:
        if args.model:
            raise ConfigError("--model works without dask only; drop --dask/--workers/--scheduler or predict --run")
        if args.max_slices is not None:
            raise ConfigError("--max-slices works without dask only; drop --dask/--workers/--scheduler or it")
        from emfm.predict import predict_volume_dask

        result = predict_volume_dask(
            run, args.input, args.output, settings, block_slices=args.block_slices,
            scheduler=_scheduler(args.scheduler), num_workers=args.workers, **common,
        )
    else:
        from emfm.predict import predict_volume

        backbone = None
        if args.backbone:
            from emfm.models.checkpoint import read_info, run_backbone
            from emfm.predict.runner import checkpoint_path

            backbone = run_backbone(read_info(checkpoint_path(run)), args.backbone)
        result = predict_volume(
            run, args.input, args.output, settings, max_slices=args.max_slices, backbone=backbone, **common
        )
    _report(result)
    return 0


def _report(result: dict) -> None:
    z, y, x = result["shape"]
    where = result["output"]
    if not result["complete"]:
        where = f"{where} (partial: rerun the same command to finish)"
    print(f"masks {z} x {y} x {x} ({result['mode']} mode) -> {where}")
    if result["probabilities"]:
        print(f"foreground probabilities ({result['probability_dtype']}) -> {result['probabilities']}")
    rate = result["slices_per_second"]
    print(
        f"computed {result['computed']} slices, {result['skipped']} already done, in {result['seconds']:.1f} s"
        + (f" ({rate:.2f} slices/s on {result['device']})" if rate else "")
    )
