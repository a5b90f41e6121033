"""The training step's resize of logits to the slice: ``F.interpolate`` against emfm's matmul form, side by side.

Checks first that the two agree (value and gradient, to float rounding), then times resize + backward for the
shapes cache-only training meets: two Lucchi++ slices at 518 px (a 27 x 37 grid to 389 x 518), two at 224 px
(16 x 21 to 224 x 298) and a fusion head's 64-channel map at a quarter of 518 px. The two alternate, so a busy
machine slows both alike.

    python benchmarks/resize.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from emfm.models.resize import bilinear_resize

SHAPES = {
    "logits 518 px": ((2, 2, 27, 37), (389, 518)),
    "logits 224 px": ((2, 2, 16, 21), (224, 298)),
    "fusion map": ((2, 64, 54, 74), (97, 130)),
}


def _interpolate(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    ratios = []
    for label, (shape, size) in SHAPES.items():
        x = torch.randn(*shape, generator=gen, requires_grad=True)
        upstream = torch.randn(shape[0], shape[1], *size, generator=gen)
        (g_ref,) = torch.autograd.grad(ref := _interpolate(x, size), x, upstream)
        (g_ours,) = torch.autograd.grad(ours := bilinear_resize(x, size), x, upstream)
        value_gap = float((ref - ours).detach().abs().max())
        grad_gap = float((g_ref - g_ours).abs().max())
        times: dict[str, list[float]] = {"interpolate": [], "matmul (emfm)": []}
        for _ in range(3):
            for name, fn in zip(times, (_interpolate, bilinear_resize)):
                start = time.perf_counter()
                for _ in range(args.repeats):
                    fn(x, size).backward(upstream)
                times[name].append((time.perf_counter() - start) / args.repeats * 1e3)
        best = {name: min(ms) for name, ms in times.items()}
        ratio = best["interpolate"] / best["matmul (emfm)"]
        ratios.append(ratio)
        print(f"{label:14s} {tuple(shape)} -> {size}: interpolate {best['interpolate']:.2f} ms, "
              f"matmul {best['matmul (emfm)']:.2f} ms per resize + backward, {ratio:.2f}x "
              f"(largest difference: value {value_gap:.1e}, gradient {grad_gap:.1e})")
    print(f"resize: {min(ratios):.2f}-{max(ratios):.2f}x faster")


if __name__ == "__main__":
    main()
