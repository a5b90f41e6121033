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
- The precisions: fp32 (emfm's default) and, where the CPU has native bf16, bf16 autocast, which is what a run
  with ``--precision auto`` (or ``bf16``) encodes its feature cache in (:func:`emfm.hardware.precision_autocast`).
  Their repeats alternate, so a slower minute of a shared machine falls on both alike.

The last two lines give the slowest shape (the figure every shape reaches) against the fp32 matmul peak: fp32
encode, then ``encode: <GFLOP/s> = <ratio> of the matmul peak`` in the precision ``--precision auto`` takes here
(fp32 on a CPU without native bf16). The peak is measured again after the encodes and the higher one kept, so a
machine that sped up midway cannot flatter the ratio. Measure on an idle machine: another process on the same
cores halves either number.

``--compile`` then times every shape again with the backbone's transformer under ``torch.compile`` (inductor,
static shapes, compiled once per shape outside the timing) and prints each shape's compiled/eager speed-up
from the same run: what a ``torch.compile`` option would buy before emfm offers one.

    python benchmarks/encode.py [--repeats 3] [--threads 2] [--compile]

Uses ../shared/weights/dinov2-vits14-imgfocus and the first Lucchi++ test slice when present, else a tiny
RANDOM backbone on a synthetic slice (and says so).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from emfm.features import ENCODE_BATCH, encode_slice
from emfm.hardware import describe_hardware, hardware_summary, precision_autocast, resolve_precision
from emfm.tiled import plan_tiles
from emfm.transforms import Preprocessing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling tiled_encode.py
MATMUL_SIZES = (1024, 2048, 3072)
NAMES = {"32": "fp32", "bf16": "bf16 autocast"}


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


def timed_precisions(encode: Callable[[], object], precisions: list[str], repeats: int) -> dict[str, float]:
    """The median seconds of ``encode`` in each precision, repeats alternating between them, so that a slower
    minute of a shared machine falls on every precision alike, not on one."""
    import time

    times: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(repeats + 1):  # the first round warms up (allocations, kernel selection) and is dropped
        for precision in precisions:
            with torch.inference_mode(), precision_autocast(precision, "cpu"):
                start = time.perf_counter()
                encode()
                times[precision].append(time.perf_counter() - start)
    return {p: statistics.median(t[1:]) for p, t in times.items()}


def shapes_to_encode(backbone, image) -> dict[str, tuple[Callable[[], object], str]]:
    """Every shape emfm encodes, as an encode of the slice through emfm's own path and its size in words."""
    p = backbone.patch_size
    preps = {
        "slice at 518 px": (Preprocessing(518, p), 1),
        f"tiles of 518 px, native scale, {ENCODE_BATCH} a call": (
            Preprocessing(1022, p, scale=1.0, tile=518, overlap=70), ENCODE_BATCH),
        "slice at 1022 px": (Preprocessing(1022, p), 1),
    }
    out = {}
    for label, (prep, batch) in preps.items():
        pixels = prep.pixels(image)
        shape = tuple(pixels.shape[-2:])
        text = f"{shape[0]} x {shape[1]}"
        if prep.tile:
            text += f" in {len(plan_tiles(*shape, tile=prep.tile, overlap=prep.overlap, patch=p))} tiles"

        def encode(pixels=pixels, prep=prep, batch=batch):
            return encode_slice(backbone, pixels, prep, batch_size=batch)

        out[label] = (encode, text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time each shape under torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tiled_encode import load_inputs  # the real backbone and a Lucchi++ slice, or a tiny random stand-in

    backbone, image, what = load_inputs()
    hardware = describe_hardware()
    auto, _ = resolve_precision("auto", "cpu", hardware)  # what --precision auto encodes in here
    print(f"{what}\n{hardware_summary(hardware)}\n")

    peak, n = matmul_peak(torch.float32, args.repeats)
    print(f"fp32 matmul peak: {peak:7.1f} GFLOP/s (square {n})")
    peaks = {"32": peak}
    if auto == "bf16":
        peaks["bf16"], n16 = matmul_peak(torch.bfloat16, args.repeats)
        print(f"bf16 matmul peak: {peaks['bf16']:7.1f} GFLOP/s (square {n16}; native bf16)")
    else:
        print("bf16 matmul peak: not measured (no native bf16 on this CPU: emfm trains and encodes in fp32 here)")

    precisions = sorted(peaks, key=lambda p: p != "32")
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    encoders = {}
    print(f"\nemfm's encode path; {' and '.join(NAMES[p] for p in precisions)}, repeats alternating")
    for label, (encode, shape_text) in shapes_to_encode(backbone, image).items():
        with torch.inference_mode():
            flops = model_flops(encode)
        seconds = timed_precisions(encode, precisions, args.repeats)
        encoders[label] = (encode, seconds["32"])
        for precision in precisions:
            rate = flops / seconds[precision] / 1e9
            rates[precision].append(rate)
            own = f", {rate / peaks[precision]:.2f} of the bf16 peak" if precision != "32" else ""
            print(f"{label:38s} {shape_text:22s} {NAMES[precision]:13s} {flops / 1e9:6.1f} GFLOP "
                  f"{seconds[precision]:6.2f} s {rate:7.1f} GFLOP/s  {rate / peak:.2f} of the fp32 peak{own}")
    if args.compile:
        compiled_speedups(backbone, encoders, args.repeats)
    again, _ = matmul_peak(torch.float32, args.repeats)  # the machine may have sped up since: keep the higher
    if again > peak:
        print(f"\nfp32 matmul peak measured again after the encodes: {again:.1f} GFLOP/s; ratios below use it")
        peak = again
    print(f"\nfp32 encode, slowest shape: {min(rates['32']):.1f} GFLOP/s = {min(rates['32']) / peak:.2f} "
          f"of the fp32 matmul peak")
    rate = min(rates[auto])
    print(f"encode: {rate:.1f} GFLOP/s = {rate / peak:.2f} of the matmul peak "
          f"(the fp32 peak; {NAMES[auto]}, as --precision auto encodes on this machine; slowest shape)")


if __name__ == "__main__":
    main()
