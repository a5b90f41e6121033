"""Does bf16 speed up LoRA training on this machine? One LoRA epoch in fp32 and in bf16 autocast, alternating.

The quick study's LoRA runs are its largest part (the backbone's forward and backward pass at 224 px on every
step). bf16 is honoured only where the hardware has it natively (:func:`emfm.hardware.resolve_precision`);
this times the same epoch (the first ``--slices`` Lucchi++ training slices, the quick study's LoRA settings,
validation included) in both precisions, ``--rounds`` times each with the precisions alternating, so that a
slower minute of a shared machine falls on both alike, and prints the medians and their ratio. Each epoch
starts from a fresh backbone, adapter and head with the same seed.

    python benchmarks/lora_precision.py [--slices 40] [--rounds 3] [--resolution 224]

Uses ../shared/weights/dinov2-vits14-imgfocus on Lucchi++ when they are there, else a tiny RANDOM backbone on
synthetic slices (and says so). On a CPU without native bf16 both precisions run in fp32, and it says so.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

from emfm.config import TrainConfig
from emfm.hardware import resolve_precision
from emfm.runsets import load_stacks
from emfm.train.fit import fit
from emfm.train.run import prepare, resolve, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def base_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """The quick study's LoRA run (configs/quick.yaml) cut to one epoch on the first ``--slices`` slices."""
    common = dict(adapter="lora", head="linear", resolution=args.resolution, epochs=1, patience=0, min_steps=0,
                  lr=5e-4, max_train_slices=args.slices)
    weights, data = SHARED / "weights" / "dinov2-vits14-imgfocus", SHARED / "data"
    if weights.is_dir() and (data / "lucchi_pp").is_dir():
        cfg = TrainConfig.from_dict(dict(backbone=str(weights), train="lucchi_pp", data_root=str(data), **common))
        return cfg, f"dinov2-vits14-imgfocus, LoRA, first {args.slices} Lucchi++ training slices"
    import sys

    from emfm.backbones._testing import write_random_checkpoint

    sys.path.insert(0, str(ROOT))  # the test suite's synthetic EM-like slices
    from tests.helpers import write_folder_dataset

    tmp = Path(tempfile.mkdtemp())
    backbone = write_random_checkpoint("dinov2", tmp / "tiny")
    train = write_folder_dataset(tmp / "synthetic", n_train=args.slices, n_test=2, shape=(384, 512), seed=0)
    return TrainConfig.from_dict(dict(backbone=str(backbone), train=train, **common)), "tiny RANDOM backbone, LoRA"


def one_epoch(cfg: TrainConfig, data) -> float:
    """Seconds of one LoRA epoch (training and validation) from a fresh backbone, adapter and head."""
    plan = resolve(cfg, data)
    model = prepare(plan, data, progress=False)
    return fit(plan, data, model, progress=False).seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=224)
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("emfm").setLevel(logging.ERROR)

    cfg, what = base_config(args)
    cfg = resolve_config(cfg)
    data = load_stacks(cfg, progress=False)
    bf16, note = resolve_precision("bf16", "cpu")
    print(f"{what}, {args.resolution} px, batch {cfg.batch_size}; bf16 resolves to {bf16} here"
          + (f" ({note})" if note else ""))
    one_epoch(cfg, data)  # warm-up: first-call allocations, kernel selection
    seconds: dict[str, list[float]] = {"32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision in seconds:
            seconds[precision].append(one_epoch(cfg.replace(precision=precision), data))
    fp32, half = (statistics.median(seconds[p]) for p in ("32", "bf16"))
    for precision, label in (("32", "fp32"), ("bf16", "bf16")):
        runs = ", ".join(f"{s:.2f}" for s in seconds[precision])
        print(f"{label:5s} one epoch: median {statistics.median(seconds[precision]):6.2f} s  ({runs})")
    print(f"bf16 / fp32 speed-up: {fp32 / half:.2f}x")


if __name__ == "__main__":
    main()
