"""Time one frozen-head training epoch from the feature cache against the same epoch recomputing the backbone.

Prints both times and their ratio, measured side by side in one process. Uses the real backbone in
../shared/weights/dinov2-vits14-imgfocus and the first N Lucchi++ training slices when they are there,
else a tiny random backbone on synthetic slices (and says so).

    python benchmarks/frozen_epoch.py [--slices 32] [--resolution 518] [--head linear]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emfm.data._stack import SliceStack
from emfm.evaluate.metrics import dice_loss
from emfm.features import FeatureCache, encode_stack
from emfm.models.heads import create_head
from emfm.models.resize import bilinear_resize
from emfm.transforms import mask_to_tensor

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def load_inputs(n: int):
    from emfm.backbones import create_backbone

    weights = SHARED / "weights" / "dinov2-vits14-imgfocus"
    if weights.is_dir() and (SHARED / "data" / "lucchi_pp").is_dir():
        from emfm.data import load_split

        stack = load_split("lucchi_pp", "train", SHARED / "data" / "lucchi_pp", progress=False)
        return create_backbone(str(weights)), stack.subset(stack.ids[:n], "train"), "dinov2-vits14-imgfocus on Lucchi++"
    from emfm.backbones._testing import write_random_checkpoint

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (384, 512), dtype=np.uint8) for _ in range(n)]
    masks = [(img > 200).astype(np.uint8) for img in imgs]
    bb = create_backbone(str(write_random_checkpoint("dinov2", Path(tempfile.mkdtemp()) / "tiny")))
    return (
        bb,
        SliceStack("synthetic", "train", [str(i) for i in range(n)], imgs, masks),
        "tiny RANDOM backbone, synthetic",
    )


def head_epoch(head, opt, grids, masks, sizes, batch: int) -> None:
    for start in range(0, len(grids), batch):
        g = torch.stack(grids[start : start + batch])
        y = torch.stack(masks[start : start + batch])
        logits = bilinear_resize(head([g]), sizes[start])  # training's resize, as emfm's training step does it
        loss = dice_loss(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=518)
    ap.add_argument("--head", default="linear")
    ap.add_argument("--batch-size", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    backbone, stack, what = load_inputs(args.slices)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        feats = encode_stack(backbone, stack, resolution=args.resolution, cache=cache, progress=False)  # fill it
        masks = [mask_to_tensor(m, s) for m, s in zip(stack.masks, feats.sizes)]
        head = create_head(args.head, backbone.embed_dim)
        opt = torch.optim.AdamW(head.parameters(), lr=5e-5, weight_decay=1e-4)

        t0 = time.perf_counter()
        cached = encode_stack(backbone, stack, resolution=args.resolution, cache=cache, progress=False)
        head_epoch(head, opt, cached.grids, masks, feats.sizes, args.batch_size)
        from_cache = time.perf_counter() - t0
        assert cached.n_computed == 0

        t0 = time.perf_counter()
        fresh = encode_stack(backbone, stack, resolution=args.resolution, cache=None, progress=False)
        head_epoch(head, opt, fresh.grids, masks, feats.sizes, args.batch_size)
        recompute = time.perf_counter() - t0

    print(f"{what}: {len(stack)} slices at {args.resolution} px, head {args.head}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"epoch from the feature cache:   {from_cache:8.2f} s")
    print(f"epoch recomputing the backbone: {recompute:8.2f} s")
    print(f"ratio (recompute / cache):      {recompute / from_cache:8.1f} x")


if __name__ == "__main__":
    main()
