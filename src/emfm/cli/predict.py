"""``emfm predict``: segment a volume with a trained run (a thin wrapper over :mod:`emfm.predict`)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment an EM volume with a trained run",
        description=(
            "Predict a uint8 0/1 mask volume of the input's shape, slice by slice, in bounded memory. "
            "Rerunning over a partial output of the same job finishes it."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by `emfm train`")
    p.add_argument(
        "--input", required=True,
        help="3-D tif, folder of 2-D slices (png/webp/tif), STORE.zarr[:ARRAY] (OME-Zarr too) or FILE.h5:DATASET",
    )
    p.add_argument("--output", required=True, help="mask volume: .zarr, .ome.zarr or .tif/.tiff")
    p.add_argument("--mode", choices=["resize", "tile"], default="resize",
                   help="resize: whole slice at the run's resolution, as in evaluation (default); "
                        "tile: overlapping tiles at the run's training pixel size")
    p.add_argument("--tile", type=int, help="tile mode: tile edge in network pixels (default: the run's resolution)")
    p.add_argument("--halo", type=int, help="tile mode: fading tile border in network pixels (default: tile/8)")
    p.add_argument("--scale", type=float,
                   help="tile mode: network pixels per input pixel (default: as the run was trained)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="slices (resize) or tiles (tile) per model call (default 4; 1 reproduces "
                        "`emfm evaluate` bit for bit, larger batches may flip the odd near-tied pixel)")
    p.add_argument("--probabilities", help="also write P(foreground) here (.zarr, .ome.zarr or .tif)")
    p.add_argument("--probability-dtype", choices=["float16", "uint8"], default="float16",
                   help="float16 P in [0, 1] (default) or uint8 round(255 P)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster; may flip near-tied pixels)")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--max-slices", type=int, help="compute at most N missing slices, then stop (resumable)")
    p.add_argument("--dask", action="store_true", help="run through dask, one task per block of slices")
    p.add_argument("--workers", type=int, help="dask worker threads on this machine (implies --dask)")
    p.add_argument("--scheduler", help="address of a dask distributed scheduler, e.g. tcp://host:8786 (implies --dask)")
    p.add_argument("--block-slices", type=int, default=8, help="dask: slices per block (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from emfm.errors import ConfigError

    settings = dict(
        mode=args.mode, tile=args.tile, halo=args.halo, scale=args.scale, batch_size=args.batch_size,
        probabilities=args.probabilities, probability_dtype=args.probability_dtype, bf16=args.bf16,
        overwrite=args.overwrite, device=args.device,
    )
    use_dask = args.dask or args.workers or args.scheduler
    if use_dask:
        if args.max_slices is not None:
            raise ConfigError("--max-slices works without dask only; drop --dask/--workers/--scheduler or it")
        from emfm.predict import predict_volume_dask

        scheduler: object = "threads"
        if args.scheduler:
            try:
                from distributed import Client
            except ModuleNotFoundError:
                raise ConfigError(
                    "--scheduler needs dask's distributed package; install it with `pip install emfm[cluster]`"
                ) from None
            scheduler = Client(args.scheduler)
        result = predict_volume_dask(
            args.run, args.input, args.output, block_slices=args.block_slices, scheduler=scheduler,
            num_workers=args.workers, progress=not args.no_progress, **settings,
        )
    else:
        from emfm.predict import predict_volume

        result = predict_volume(
            args.run, args.input, args.output, max_slices=args.max_slices, progress=not args.no_progress, **settings,
        )
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
    return 0
