"""Encode time of one Lucchi++ slice at native scale: one 1022 px pass against 518 px tiles.

Attention is quadratic in the tokens, so cutting a native-scale slice into backbone-sized tiles may
cost less than one large pass, or more (tiles overlap, so they hold more tokens in all). This prints
both, measured side by side in one process on the same slice, and their ratio; emfm's tiled runs use
whichever the ``tile`` setting picks (a ``tile`` at least the slice's size means one pass).

    python benchmarks/tiled_encode.py [--repeats 3] [--overlap 70] [--threads 2]

Uses ../shared/weights/dinov2-vits14-imgfocus and the first Lucchi++ test slice when present, else a
tiny RANDOM backbone on a synthetic slice (and says so).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emfm.features import encode_slice
from emfm.tiled import plan_tiles
from emfm.transforms import Preprocessing

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def load_inputs():
    from emfm.backbones import create_backbone

    weights = SHARED / "weights" / "dinov2-vits14-imgfocus"
    if weights.is_dir() and (SHARED / "data" / "lucchi_pp").is_dir():
        from emfm.data import load_split

        stack = load_split("lucchi_pp", "test", data_root=SHARED / "data", progress=False)
        return create_backbone(str(weights)), stack.images[0], "dinov2-vits14-imgfocus, Lucchi++ test slice 0"
    from emfm.backbones._testing import write_random_checkpoint

    image = np.random.default_rng(0).integers(0, 255, (768, 1024), dtype=np.uint8)
    bb = create_backbone(str(write_random_checkpoint("dinov2", Path(tempfile.mkdtemp()) / "tiny")))
    return bb, image, "tiny RANDOM backbone, synthetic 768 x 1024 slice"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=518)
    ap.add_argument("--overlap", type=int, default=70)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backbone, image, what = load_inputs()
    p = backbone.patch_size
    single = Preprocessing(1022, p, scale=1.0, tile=4096, overlap=0)  # one pass: the tile exceeds the slice
    tiled = Preprocessing(1022, p, scale=1.0, tile=args.tile, overlap=args.overlap)
    pixels = single.pixels(image)
    layout = plan_tiles(*pixels.shape[-2:], tile=args.tile, overlap=args.overlap, patch=p)
    with torch.inference_mode():
        t_single = timed(lambda: encode_slice(backbone, pixels, single), args.repeats)
        t_tiled = timed(lambda: encode_slice(backbone, pixels, tiled), args.repeats)
    tokens = (pixels.shape[-2] // p) * (pixels.shape[-1] // p)
    print(f"{what}; native scale {tuple(pixels.shape[-2:])} px, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"one pass ({tokens} tokens):                       {t_single:7.2f} s")
    print(f"{len(layout)} tiles of {args.tile} px, overlap {args.overlap} "
          f"({sum((t.height // p) * (t.width // p) for t in layout.tiles)} tokens): "
          f"{t_tiled:7.2f} s")
    print(f"ratio (tiles / one pass): {t_tiled / t_single:.2f}")


if __name__ == "__main__":
    main()
