"""Peak memory and throughput of ``emfm predict`` on a volume and on one 8 times larger.

Streaming prediction should hold a batch of slices and the model, never the volume: the peak
resident memory (RSS high-water mark) must not grow with the number of slices. Each prediction runs
in a fresh subprocess so that its ``ru_maxrss`` is its own. The model is a tiny random DINOv2 (the
figures measure emfm's plumbing: reading, preprocessing, writing, not a real backbone's speed).

Run from the repository root::

    python benchmarks/predict_memory.py                       # 32 and 256 slices of 1024 x 1024
    python benchmarks/predict_memory.py --slices 8 --size 512 --dask
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_run(base: Path, resolution: int) -> Path:
    """A run directory over a tiny random DINOv2 with a random linear head."""
    import torch

    from emfm.backbones import create_backbone
    from emfm.backbones._testing import write_random_checkpoint
    from emfm.models.checkpoint import CHECKPOINT_NAME, ModelInfo, save_checkpoint
    from emfm.models.heads import create_head
    from emfm.models.segmenter import Segmenter
    from emfm.transforms import IMAGENET_MEAN, IMAGENET_STD

    bb_dir = write_random_checkpoint("dinov2", base / "tiny-dinov2", hidden_size=32, num_layers=2, num_heads=2)
    bb = create_backbone(str(bb_dir))
    torch.manual_seed(0)
    head = create_head("linear", bb.embed_dim).eval()
    info = ModelInfo(
        backbone=str(bb_dir), backbone_name=bb.name, weights_id=bb.weights_id, head="linear",
        in_channels=bb.embed_dim, adapter="frozen", resolution=resolution, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        patch_size=bb.patch_size,
    )
    run = base / "run"
    run.mkdir()
    save_checkpoint(run / CHECKPOINT_NAME, Segmenter(head), info)
    return run


def make_volume(path: Path, slices: int, size: int) -> None:
    """A synthetic uint8 zarr volume, written slice by slice (blobs on noise, like EM mitochondria)."""
    import numpy as np
    import zarr

    arr = zarr.create_array(str(path), shape=(slices, size, size), chunks=(1, size, size), dtype="uint8")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for z in range(slices):
        img = rng.normal(90, 20, size=(size, size))
        for _ in range(8):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 30, size / 10)
            img += 100 * (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r)
        arr[z] = np.clip(img, 0, 255).astype(np.uint8)


def child(args: argparse.Namespace) -> None:
    """One prediction in this process; print its summary and this process's peak RSS as JSON."""
    from emfm.predict import PredictSettings, predict_volume, predict_volume_dask

    settings = PredictSettings(batch_size=args.batch_size)
    kw = dict(probabilities=args.probabilities, progress=False)
    if args.dask:
        result = predict_volume_dask(
            args.run, args.input, args.output, settings, scheduler="threads", block_slices=8, **kw
        )
    else:
        result = predict_volume(args.run, args.input, args.output, settings, **kw)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    keep = ("computed", "seconds", "slices_per_second")
    print(json.dumps({"peak_mb": peak_kb / 1024, **{k: result[k] for k in keep}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=32, help="slices of the small volume (the large has 8x)")
    parser.add_argument("--size", type=int, default=1024, help="slice edge in pixels")
    parser.add_argument("--resolution", type=int, default=518, help="the run's resolution")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dask", action="store_true", help="also measure the dask runner (threads)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--probabilities", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    with tempfile.TemporaryDirectory(prefix="emfm-predict-bench-") as tmp:
        base = Path(tmp)
        run = make_run(base, args.resolution)
        print(f"emfm predict memory benchmark: tiny random DINOv2 (width 32, 2 layers), run resolution "
              f"{args.resolution}, batch {args.batch_size}, {args.size} x {args.size} uint8 slices, masks (.zarr) + "
              f"float16 probabilities (.zarr); torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"{'runner':<11} {'slices':>7} {'volume MB':>10} {'peak RSS MB':>12} {'slices/s':>9} {'seconds':>8}")
        rows = []
        runners = ["sequential"] + (["dask"] if args.dask else [])
        for n in (args.slices, 8 * args.slices):
            vol = base / f"vol{n}.zarr"
            make_volume(vol, n, args.size)
            for runner in runners:
                out = base / f"{runner}{n}"
                cmd = [sys.executable, __file__, "--child", "--run", str(run), "--input", str(vol),
                       "--output", f"{out}.zarr", "--probabilities", f"{out}_p.zarr",
                       "--batch-size", str(args.batch_size)] + (["--dask"] if runner == "dask" else [])
                started = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"child failed:\n{proc.stderr}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append((runner, n, r["peak_mb"]))
                print(f"{runner:<11} {n:>7} {n * args.size**2 / 1e6:>10.0f} {r['peak_mb']:>12.0f} "
                      f"{r['slices_per_second']:>9.2f} {time.perf_counter() - started:>8.1f}")
        for runner in runners:
            small, large = [peak for r, _, peak in rows if r == runner]
            print(f"{runner}: peak RSS grows by {large - small:+.0f} MB ({(large / small - 1) * 100:+.1f} %) "
                  f"for 8x the slices")


if __name__ == "__main__":
    main()
