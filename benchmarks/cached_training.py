"""Time N epochs of a frozen head trained from the feature cache: the item path against the packed one, a step
or an epoch a Lightning call, on torch's default threads and on one.

The item path is the one before cache-only training (a dict per item, stacked each step); the packed path
cuts batches from one bank of grids and builds the val batches once (``emfm.train.bank``); an epoch a call
(the default for packed batches on one process) hands Lightning each epoch whole and steps the optimiser in
the module (``OneCallPerEpoch``). One thread is what ``train_threads: 1`` gives, for a machine shared with
other work. Each of the five runs starts from the same head and seed, so their loss curves must agree; the
script prints the largest difference beside the times, measured in one process one after another. Uses the
real backbone in ../shared/weights/dinov2-vits14-imgfocus on Lucchi++ when they are there, else a tiny random
backbone on synthetic slices (and says so).

    python benchmarks/cached_training.py [--epochs 10] [--resolution 224] [--head linear] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

import torch

from emfm.config import TrainConfig
from emfm.runsets import load_stacks
from emfm.train.fit import fit
from emfm.train.run import prepare, resolve, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def base_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    weights, data = SHARED / "weights" / "dinov2-vits14-imgfocus", SHARED / "data"
    common = dict(head=args.head, resolution=args.resolution, epochs=args.epochs, batch_size=args.batch_size,
                  patience=0, min_steps=0, cache_dir=args.cache_dir)
    if weights.is_dir() and (data / "lucchi_pp").is_dir():
        cfg = TrainConfig.from_dict(dict(backbone=str(weights), train="lucchi_pp", data_root=str(data), **common))
        return cfg, "dinov2-vits14-imgfocus on Lucchi++"
    import sys

    from emfm.backbones._testing import write_random_checkpoint

    sys.path.insert(0, str(ROOT))  # the test suite's synthetic EM-like slices
    from tests.helpers import write_folder_dataset

    tmp = Path(tempfile.mkdtemp())
    backbone = write_random_checkpoint("dinov2", tmp / "tiny")
    train = write_folder_dataset(tmp / "synthetic", n_train=40, n_test=2, shape=(384, 512), seed=0)
    return TrainConfig.from_dict(dict(backbone=str(backbone), train=train, **common)), "tiny RANDOM backbone, synthetic"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--head", default="linear")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: emfm's own, filled on the first run)")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    cfg, what = base_config(args)
    cfg = resolve_config(cfg)
    data = load_stacks(cfg, progress=False)
    plan = resolve(cfg, data)
    model = prepare(plan, data, progress=False)  # encodes through the cache once
    start = {k: v.clone() for k, v in model.segmenter.head.state_dict().items()}
    default = torch.get_num_threads()
    n_train = sum(len(tr) for tr, _ in data.train.values())

    runs = {}
    for label, packed, one_call, threads in (
        ("item path, default threads", False, False, default),
        ("packed, a step a call, default threads", True, False, default),
        ("packed, an epoch a call (now), default", True, True, default),
        ("item path, 1 thread", False, False, 1),
        ("packed, an epoch a call, 1 thread", True, True, 1),
    ):
        model.segmenter.head.load_state_dict(start)
        torch.manual_seed(cfg.seed)
        run_plan = dataclasses.replace(plan, config=cfg.replace(train_threads=threads))
        fitted = fit(run_plan, data, model, progress=False, packed=packed, one_call_per_epoch=one_call)
        runs[label] = fitted
        assert torch.get_num_threads() == default, "fit left torch's thread setting changed"

    curves = [[row.get(k, 0.0) for row in f.history for k in ("train_loss", "val_loss")] for f in runs.values()]
    spread = max(abs(a - b) for c in curves[1:] for a, b in zip(curves[0], c))
    print(f"{what}: {n_train} training slices at {args.resolution} px, head {args.head}, batch {args.batch_size}, "
          f"{args.epochs} epochs; torch's default here: {default} threads")
    for label, f in runs.items():
        print(f"{label:40s} {f.seconds:8.2f} s  ({f.seconds / max(len(f.history), 1):.3f} s/epoch)")
    seconds = [f.seconds for f in runs.values()]
    print(f"ratio item path / packed, an epoch a call (default threads):     {seconds[0] / seconds[2]:6.2f} x")
    print(f"ratio a step a call / an epoch a call (packed, default threads): {seconds[1] / seconds[2]:6.2f} x")
    print(f"ratio on one thread (item path / packed, an epoch a call):       {seconds[3] / seconds[4]:6.2f} x")
    print(f"ratio of threads (an epoch a call, one thread / default):        {seconds[4] / seconds[2]:6.2f} x")
    print(f"largest difference between the five loss curves (one thread sums in another order): {spread:.2g}")


if __name__ == "__main__":
    main()
