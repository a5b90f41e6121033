"""An exported run's size, and ONNX Runtime's speed against PyTorch's on this CPU, side by side in one run.

Exports the run to a bioimage.io package and to ONNX (timing each), then times the run's own PyTorch
model (``load_checkpoint``, LoRA as trained) and the ONNX graph in ONNX Runtime on the same input, the
run's first test slice at the network's size (and a 518 x 518 slice, the backbone's own table size),
alternating the two so that both see the same load on the machine. Prints the median of the repeats, the
ratio and the largest difference between their logits.

    python benchmarks/export_speed.py [--run DIR] [--repeats 5] [--threads 1] [--license MIT]

Without ``--run``, trains a tiny frozen run first: ../shared/weights/dinov2-vits14-imgfocus on Lucchi++
(6 training slices, 224 px) when present, else a tiny RANDOM backbone on synthetic slices (and says so).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def tiny_run(where: Path) -> tuple[Path, str]:
    """A freshly trained small run, and what it is."""
    from emfm.config import TrainConfig
    from emfm.train.run import train_run

    weights, data = SHARED / "weights" / "dinov2-vits14-imgfocus", SHARED / "data"
    if weights.is_dir() and (data / "lucchi_pp").is_dir():
        cfg = {"backbone": str(weights), "train": "lucchi_pp", "data_root": str(data), "resolution": 224,
               "max_train_slices": 6}
        what = "dinov2-vits14-imgfocus, frozen, linear head, Lucchi++ (6 slices, 224 px)"
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from emfm.backbones._testing import write_random_checkpoint
        from tests.helpers import write_folder_dataset

        bb = write_random_checkpoint("dinov2", where / "bb")
        cfg = {"backbone": str(bb), "train": write_folder_dataset(where / "data", 8, 2, (384, 512), seed=0),
               "resolution": 224}
        what = "tiny RANDOM backbone on synthetic 384 x 512 slices (no ../shared)"
    cfg.update({"cache_dir": str(where / "cache"), "epochs": 3, "min_steps": 0, "lr": 1e-2})
    train_run(TrainConfig.from_dict(cfg), where / "run", progress=False)
    return where / "run", what


def side_by_side(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, called in turn ``repeats`` times after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def compare(run: Path, onnx_path: Path, threads: int, repeats: int) -> None:
    from emfm.export.onnx_file import session
    from emfm.export.samples import run_config, test_slices
    from emfm.models.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    segmenter, info = load_checkpoint(run / "checkpoint.safetensors")
    ort = session(onnx_path, threads=threads)
    image = next(test_slices(run_config(run), "test")).image
    for size in (info.preprocessing.network_size(image.shape), (518, 518)):
        unit = info.preprocessing.unit(image, size)
        pixels, feed = info.preprocessing.normalise(unit)[None], {"unit": unit[None, None].numpy()}

        def torch_run(pixels=pixels):
            with torch.inference_mode():
                return segmenter(pixels)

        def ort_run(feed=feed):
            return ort.run(["logits"], feed)[0]

        median = side_by_side({"pytorch": torch_run, "onnxruntime": ort_run}, repeats)
        diff = float(np.abs(ort_run() - torch_run().numpy()).max())
        print(f"  {size[0]} x {size[1]} px: PyTorch {median['pytorch'] * 1e3:8.1f} ms, ONNX Runtime "
              f"{median['onnxruntime'] * 1e3:8.1f} ms, ONNX Runtime / PyTorch = "
              f"{median['onnxruntime'] / median['pytorch']:.2f} (largest logit difference {diff:.1e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a trained run (default: train a tiny one first)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes")
    ap.add_argument("--license", default="MIT", help="licence for a backbone that is not registered")
    args = ap.parse_args()

    from emfm.export import export_run

    with tempfile.TemporaryDirectory(prefix="emfm-export-bench-") as tmp:
        where = Path(tmp)
        run, what = (args.run, f"run {args.run}") if args.run else tiny_run(where)
        print(f"model: {what}")
        for fmt, name in (("bioimageio", "model.zip"), ("onnx", "model.onnx")):
            result = export_run(run, where / name, fmt, license=args.license)
            print(f"{fmt:>10}: {result['bytes'] / 1e6:7.2f} MB, exported in {result['seconds']:.1f} s "
                  f"({'dynamic' if result['dynamic'] else 'fixed'} height and width)")
        print(f"speed, median of {args.repeats}, {args.threads} thread(s), batch of one:")
        compare(run, where / "model.onnx", args.threads, args.repeats)


if __name__ == "__main__":
    main()
