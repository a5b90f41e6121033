"""The machine a run ran on, and the training precision that machine computes natively.

A time or a throughput means little without the hardware that made it, so every training run records
:func:`describe_hardware` in its ``metrics.json`` and the study report prints it. The same description
decides precision (:func:`resolve_precision`): bf16 halves memory traffic where the hardware has bf16
units (CUDA GPUs of compute capability 8.0 and newer, x86 CPUs with AVX512-BF16 or AMX), but a CPU
without them (AVX2 only) runs a bf16 matmul through a scalar fallback about 100 times slower than fp32
(1.3 against 116 GFLOP/s measured), so asking for bf16 there would make training far slower, not faster.

Only x86 CPU flags are recognised; any other CPU counts as having no native bf16.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emfm.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: The x86 CPU flags that decide matmul speed: AVX2 (every fp32 kernel), AVX-512, and the native bf16 ones.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
#: Flags any one of which gives a CPU native bf16 matmuls (oneDNN uses them).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: The precisions a run may ask for: fp32 (the default, reproducible), bf16, or what the hardware does natively.
PRECISION_CHOICES = ("32", "bf16", "auto")
#: A resolved precision -> Lightning's name for it ("16" only comes from "auto" on a GPU without bf16).
LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
CPU_NO_BF16_NOTE = (
    "bf16 requested but this CPU has no native bf16 (no AVX512-BF16 or AMX): a bf16 matmul runs far slower "
    "than fp32 here; computing in fp32"
)


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> tuple[str | None, set[str] | None]:
    """The CPU's model name and flags from ``/proc/cpuinfo``; (None, None) where there is none (macOS,
    Windows) or it cannot be read, so a description never fails on another OS."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None, None
    model: str | None = None
    flags: set[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key in ("flags", "features") and flags is None:  # "Features" on ARM
            flags = set(value.split())
        if model is not None and flags is not None:
            break
    return model, flags


def _describe_cpu() -> dict[str, Any]:
    import torch

    model, flags = read_cpuinfo()
    return {
        "model": model or platform.processor() or platform.machine() or None,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        # None: unknown (no /proc/cpuinfo), which counts as absent when precision is chosen
        "flags": {f: (f in flags) if flags is not None else None for f in CPU_FLAGS},
        "torch_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA ATen's kernels use
    }


def _describe_kernels() -> dict[str, Any]:
    """The libraries torch runs matmuls and convolutions with, from ``torch.__config__.show()``."""
    import torch

    shown = torch.__config__.show()

    def find(pattern: str) -> str | None:
        match = re.search(pattern, shown)
        return match.group(1) if match else None

    onednn_bf16 = None
    with contextlib.suppress(AttributeError, RuntimeError):  # private, so guarded: will oneDNN take bf16 here
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return {
        "blas": find(r"BLAS_INFO=(\w+)"),
        "mkl": find(r"Math Kernel Library Version ([\w.]+)") if torch.backends.mkl.is_available() else None,
        "onednn": find(r"MKL-DNN (v[\w.]+)") if torch.backends.mkldnn.is_available() else None,
        "onednn_bf16": onednn_bf16,
        "openmp": torch.backends.openmp.is_available(),
    }


def _cuda_native_bf16(torch_module) -> bool:
    try:  # emulated bf16 (older GPUs) is no faster than fp32: only native support counts
        return bool(torch_module.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the argument
        return torch_module.cuda.get_device_capability(0) >= (8, 0)


def _describe_gpu() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "capability": f"{major}.{minor}",
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "bf16": _cuda_native_bf16(torch),
    }


@functools.lru_cache(maxsize=1)
def _detected() -> dict[str, Any]:
    import torch

    return {"cpu": _describe_cpu(), "torch": torch.__version__, "kernels": _describe_kernels(),
            "gpu": _describe_gpu()}


def describe_hardware() -> dict[str, Any]:
    """CPU (model, the flags in :data:`CPU_FLAGS`), torch's version and intra-op threads, its kernel
    libraries (BLAS, MKL, oneDNN) and, where CUDA is available, the GPU (name, compute capability, CUDA,
    cuDNN, native bf16): JSON-ready, for ``metrics.json``.

    Detection runs once per process (reading ``/proc/cpuinfo``, asking CUDA); the thread count is read
    at each call, since runs and benchmarks change it. The caller gets its own copy to change.
    """
    import torch

    out = copy.deepcopy(_detected())
    out["torch_threads"] = torch.get_num_threads()
    return out


def hardware_summary(hardware: dict[str, Any]) -> str:
    """One line for people: ``AMD EPYC (2 cores; avx2, avx512f, avx512_bf16; no amx_bf16, amx_tile), torch
    2.13.0 on 2 threads, BLAS mkl, MKL 2024.2, oneDNN v3.12.0; GPU ...``."""
    cpu = hardware.get("cpu") or {}
    flags = cpu.get("flags") or {}
    have = [f for f, v in flags.items() if v]
    lack = [f for f, v in flags.items() if v is False]
    flag_text = "flags unknown" if not have and not lack else (
        ", ".join(have) + ("; no " + ", ".join(lack) if lack else ""))
    kernels = hardware.get("kernels") or {}
    libs = [f"{name} {kernels[key]}" for key, name in (("blas", "BLAS"), ("mkl", "MKL"), ("onednn", "oneDNN"))
            if kernels.get(key)]
    text = (f"{cpu.get('model') or 'unknown CPU'} ({cpu.get('cores')} cores; {flag_text}), torch "
            f"{hardware.get('torch')} on {hardware.get('torch_threads')} threads, "
            f"{', '.join(libs) or 'no kernel library named'}")
    gpu = hardware.get("gpu")
    if gpu:
        text += (f"; GPU {gpu.get('name')} x{gpu.get('count')} (compute capability {gpu.get('capability')}, "
                 f"CUDA {gpu.get('cuda')}, cuDNN {gpu.get('cudnn')}, {'native' if gpu.get('bf16') else 'no'} bf16)")
    return text


def cpu_native_bf16(hardware: dict[str, Any] | None = None) -> bool:
    """Whether the CPU has native bf16 matmuls (AVX512-BF16 or AMX-BF16); unknown flags count as no."""
    flags = ((hardware or describe_hardware()).get("cpu") or {}).get("flags") or {}
    return any(flags.get(f) for f in NATIVE_BF16_FLAGS)


def training_device() -> str:
    """The device a run trains on: the first CUDA GPU when there is one, else the CPU (as ``prepare``)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(
    requested: str, device: str | torch.device, hardware: dict[str, Any] | None = None
) -> tuple[str, str | None]:
    """The precision to train in on ``device`` (``"32"``, ``"bf16"`` or ``"16"``) and a note when the request
    was not honoured.

    ``"32"`` is the default everywhere because fp32 results are reproducible across machines; bf16
    changes the numbers (slightly) with the hardware. ``"bf16"`` is honoured where it is native: a CUDA
    GPU with bf16 units, or a CPU with AVX512-BF16 or AMX; elsewhere training runs in fp32 and the note
    (for a warning and ``metrics.json``) says why. ``"auto"`` takes bf16 where it is native, fp16 mixed
    precision on a GPU without bf16, and fp32 on any other CPU or device, without a note: it asked for
    whatever is fast.

    Args:
        requested: ``"32"``, ``"bf16"`` or ``"auto"`` (:data:`PRECISION_CHOICES`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
        hardware: a :func:`describe_hardware` record (default: this machine's).

    Raises:
        ConfigError: ``requested`` is not one of the choices.
    """
    requested = str(requested)
    if requested not in PRECISION_CHOICES:
        raise ConfigError(f"precision {requested!r} is not one of {', '.join(PRECISION_CHOICES)}; use 32 (the "
                          f"default), bf16 or auto")
    if requested == "32":
        return "32", None
    hw = hardware if hardware is not None else describe_hardware()
    kind = str(device).split(":")[0]
    if kind == "cuda":
        gpu = hw.get("gpu") or {}
        if gpu.get("bf16"):
            return "bf16", None
        if requested == "auto":
            return "16", None
        return "32", (f"bf16 requested but this GPU ({gpu.get('name')}, compute capability {gpu.get('capability')}) "
                      f"has no native bf16 (it needs 8.0 or newer); computing in fp32 (precision auto takes fp16 "
                      f"mixed precision here)")
    if kind == "cpu" and cpu_native_bf16(hw):
        return "bf16", None
    if requested == "auto":
        return "32", None
    if kind != "cpu":
        return "32", f"bf16 requested on a {kind} device, whose bf16 support emfm does not check; computing in fp32"
    if all(v is None for v in ((hw.get("cpu") or {}).get("flags") or {}).values()):
        return "32", ("bf16 requested but this CPU's flags cannot be read (no /proc/cpuinfo), so native bf16 "
                      "(AVX512-BF16 or AMX) is not confirmed; computing in fp32")
    return "32", CPU_NO_BF16_NOTE


#: A resolved precision -> the autocast dtype it computes in (fp32 runs without autocast).
AUTOCAST_DTYPES = {"bf16": "bfloat16", "16": "float16"}


def precision_autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The autocast context that computes a forward pass on ``device`` in a resolved ``precision``.

    Encoding for the feature cache runs outside Lightning, whose precision plugin autocasts training
    steps only; this gives the encode the same mixed precision, so ``--precision auto`` encodes in bf16
    where the hardware has it (measured on an AMX Xeon, ``benchmarks/encode.py``: 1.8-2.6x faster than fp32
    for the shapes emfm encodes) and a default run stays in fp32 to the bit.

    Args:
        precision: ``"32"`` (no autocast), ``"bf16"`` or ``"16"``, as :func:`resolve_precision` returns.
        device: the device the backbone runs on.

    Raises:
        ConfigError: ``precision`` is none of those three.
    """
    import torch

    if str(precision) == "32":
        return contextlib.nullcontext()
    if str(precision) not in AUTOCAST_DTYPES:
        raise ConfigError(f"precision {precision!r} is not a resolved precision (32, bf16 or 16); resolve "
                          f"'auto' with emfm.hardware.resolve_precision first")
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=getattr(torch, AUTOCAST_DTYPES[str(precision)]))
