"""How near the hardware's peak does emfm encode? The fp32 matmul peak of this machine, then emfm's own encode
path (preprocessing, tiling, stitching included) for every shape emfm uses, in GFLOP/s of the model's FLOPs.

- The peak: the best of square fp32 matmuls of a few sizes (``torch.mm``), 2 n^3 FLOPs each; bf16 too where
  the CPU has native bf16 (AVX512-BF16 or AMX, :mod:`emfm.hardware`), since a bf16 matmul on an AVX2-only CPU
  runs through a scalar fallback and says nothing about a peak.
- The model's FLOPs: counted once per shape by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
  convolutions and fused attention), so the figure is the arithmetic the model needs, not what a kernel did.
  torch counts the GPU attention kernels but not the CPU's (``_scaled_dot_product_flash_attention_for_cpu``),
  which at 1022 px is over half the work; its formula is registered here as torch's own SDPA formula.
- The shapes: a Lucchi++ slice resized to 518 px (378 x 518), a batch of 518 px tiles of a native-scale slice
  (emfm's tiled path, ``ENCODE_BATCH`` tiles per backbone call) and the slice at 1022 px (756 x 1022), each
  through :func:`emfm.features.encode_slice` in inference mode; median of ``--repeats`` after a warm-up.

The last line is ``encode: <GFLOP/s> = <ratio> of the matmul peak`` for the slowest shape (the figure every
shape reaches). Measure on an idle machine: another process on the same cores halves either number.

``--compile`` then times every shape again with the backbone's transformer under ``torch.compile`` (inductor,
static shapes, compiled once per shape outside the timing) and prints each shape's compiled/eager speed-up
from the same run: what a ``torch.compile`` option would buy before emfm offers one.

    python benchmarks/encode.py [--repeats 3] [--threads 2] [--compile]

Uses ../shared/weights/dinov2-vits14-imgfocus and the first Lucchi++ test slice when present, else a tiny
RANDOM backbone on a synthetic slice (and says so).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from emfm.features import ENCODE_BATCH, encode_slice
from emfm.hardware import cpu_native_bf16, describe_hardware, hardware_summary
from emfm.tiled import plan_tiles
from emfm.transforms import Preprocessing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling tiled_encode.py
MATMUL_SIZES = (1024, 2048, 3072)


def matmul_peak(dtype: torch.dtype, repeats: int) -> tuple[float, int]:
    """The best GFLOP/s of square ``dtype`` matmuls over :data:`MATMUL_SIZES`, and the size that gave it."""
    from tiled_encode import timed

    best = (0.0, 0)
    gen = torch.Generator().manual_seed(0)
    for n in MATMUL_SIZES:
        a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
        seconds = timed(lambda a=a, b=b: torch.mm(a, b), repeats)
        best = max(best, (2 * n**3 / seconds / 1e9, n))
    return best


def _count_cpu_attention() -> None:
    """Count the CPU's fused attention with torch's own SDPA formula (2 matmuls: Q K^T and (softmax) V)."""
    from torch.utils import flop_counter

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def model_flops(fn: Callable[[], object]) -> int:
    _count_cpu_attention()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def compiled_speedups(backbone, encoders: dict[str, tuple[Callable[[], object], float]], repeats: int) -> None:
    """Time each shape's encode again with the backbone's transformer compiled; print compiled/eager speed-ups.

    The first call of each shape compiles (inductor, static shapes) and is timed apart: a run pays it once
    per distinct slice or tile shape, which a cache of one shape amortises and a stack of mixed sizes does not.
    """
    import time

    from tiled_encode import timed

    model = backbone.model
    backbone.model = torch.compile(model, dynamic=False)
    print()
    try:
        for label, (encode, eager) in encoders.items():
            with torch.inference_mode():
                start = time.perf_counter()
                encode()
                first = time.perf_counter() - start
                seconds = timed(encode, repeats)
            print(f"compiled {label:38s} first call {first:6.1f} s  then {seconds:6.2f} s  "
                  f"speed-up {eager / seconds:.2f}x over eager")
    finally:
        backbone.model = model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time each shape under torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tiled_encode import load_inputs, timed  # the real backbone and a Lucchi++ slice, or a tiny random stand-in

    backbone, image, what = load_inputs()
    hardware = describe_hardware()
    print(f"{what}\n{hardware_summary(hardware)}\n")

    peak, n = matmul_peak(torch.float32, args.repeats)
    print(f"fp32 matmul peak: {peak:7.1f} GFLOP/s (square {n})")
    if cpu_native_bf16(hardware):
        bf16, n16 = matmul_peak(torch.bfloat16, args.repeats)
        print(f"bf16 matmul peak: {bf16:7.1f} GFLOP/s (square {n16}; native bf16)")
    else:
        print("bf16 matmul peak: not measured (no native bf16 on this CPU: emfm trains and encodes in fp32 here)")

    p = backbone.patch_size
    shapes = {
        "slice at 518 px": (Preprocessing(518, p), 1),
        f"tiles of 518 px, native scale, {ENCODE_BATCH} a call": (
            Preprocessing(1022, p, scale=1.0, tile=518, overlap=70), ENCODE_BATCH),
        "slice at 1022 px": (Preprocessing(1022, p), 1),
    }
    ratios, encoders = [], {}
    print()
    for label, (prep, batch) in shapes.items():
        pixels = prep.pixels(image)
        shape = tuple(pixels.shape[-2:])
        if prep.tile:
            layout = plan_tiles(*shape, tile=prep.tile, overlap=prep.overlap, patch=p)
            shape_text = f"{shape[0]} x {shape[1]} in {len(layout)} tiles"
        else:
            shape_text = f"{shape[0]} x {shape[1]}"

        def encode(pixels=pixels, prep=prep, batch=batch):
            return encode_slice(backbone, pixels, prep, batch_size=batch)

        with torch.inference_mode():
            flops = model_flops(encode)
            seconds = timed(encode, args.repeats)
        encoders[label] = (encode, seconds)
        rate = flops / seconds / 1e9
        ratios.append((rate, rate / peak))
        print(f"{label:38s} {shape_text:24s} {flops / 1e9:7.1f} GFLOP  {seconds:6.2f} s  {rate:7.1f} GFLOP/s  "
              f"{rate / peak:.2f} of peak")
    if args.compile:
        compiled_speedups(backbone, encoders, args.repeats)
    rate, ratio = min(ratios)
    print(f"\nencode: {rate:.1f} GFLOP/s = {ratio:.2f} of the matmul peak")


if __name__ == "__main__":
    main()
