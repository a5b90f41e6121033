"""``emfm export``: a run directory -> a bioimage.io package (``.zip``) or an ONNX file (``.onnx``).

Every check that needs no model comes first (format, output path, folder, run directory, licence), so a
mistake costs a line, not a load. The output appears in one step (:func:`emfm._io.atomic_path`): a
failed or interrupted export leaves nothing behind, and the package's parts are assembled in a
temporary folder that is always removed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch

from emfm import __version__
from emfm._io import atomic_path
from emfm.errors import ConfigError

log = logging.getLogger(__name__)

Format = Literal["bioimageio", "onnx"]
SUFFIXES = {"bioimageio": ".zip", "onnx": ".onnx"}


def check_output(out: str | Path, fmt: str, *, overwrite: bool = False) -> Path:
    """The output path, checked: known format, matching suffix, not existing (unless ``overwrite``), in a
    folder that exists and can be written to (nothing is created here, so a refusal leaves nothing behind).

    Raises:
        ConfigError: any of these fails; the message says how to fix it.
    """
    if fmt not in SUFFIXES:
        raise ConfigError(f"unknown export format {fmt!r}; use {' or '.join(SUFFIXES)}")
    path = Path(out)
    if path.suffix.lower() != SUFFIXES[fmt]:
        raise ConfigError(
            f"--format {fmt} writes a {SUFFIXES[fmt]} file; name the output e.g. {path.stem}{SUFFIXES[fmt]}"
        )
    if path.exists() and (not overwrite or path.is_dir()):
        if path.is_dir():
            raise ConfigError(f"{path} exists and is a directory; choose another --out")
        raise ConfigError(f"{path} exists; choose another --out or pass --overwrite")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"the output folder {folder} does not exist; create it or choose another --out")
    try:  # a probe, not os.access: that says yes to root on a read-only file system
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot write to the output folder {folder} ({reason}); choose another --out") from None
    return path


def test_metrics(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """The run's test scores (foreground IoU and Dice per test set) from its ``metrics.json``, if any."""
    import json

    from emfm import rundir

    try:
        tests = json.loads((Path(run_dir) / rundir.METRICS_NAME).read_text()).get("test") or {}
    except (OSError, ValueError):
        return {}
    return {name: {k: m[k] for k in ("fg_iou", "dice") if isinstance(m, dict) and m.get(k) is not None}
            for name, m in tests.items() if isinstance(m, dict)}


def export_metadata(loaded, training_scale: float | None, dtype_max: float, halo: int, max_side: int | None) -> dict:
    """What ``emfm predict --model`` reads back: the run's ModelInfo and how the exported network is fed."""
    info = loaded.info
    return {
        "format": 1,
        "emfm_version": __version__,
        "model_info": {**asdict(info), "adapter_settings": dict(info.adapter_settings), "layers": list(info.layers)},
        "training_scale": training_scale,
        "dtype_max": dtype_max,
        "halo": halo,
        "max_side": max_side,
        "train": list(loaded.config.train),
        "test": list(loaded.config.test),
        "test_metrics": test_metrics(loaded.run_dir),
    }


def package_name(info: Any) -> str:
    """A bioimage.io model name (letters, digits, ``_+- ()``; at most 64 characters)."""
    import re

    raw = f"emfm {info.backbone_name} {info.adapter} {info.head}"
    return re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", raw)[:64].strip() or "emfm model"


def export_run(
    run_dir: str | Path,
    out: str | Path,
    fmt: Format = "bioimageio",
    *,
    license: str | None = None,
    authors: list[str] | None = None,
    overwrite: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """Export a trained run as a bioimage.io package or an ONNX file.

    Args:
        run_dir: a finished ``emfm train`` run.
        out: the ``.zip`` (bioimage.io) or ``.onnx`` file to write; must not exist unless ``overwrite``.
        fmt: ``bioimageio`` or ``onnx``.
        license: SPDX licence of the package; defaults to the backbone registry's (required for backbones
            that are not registered, such as a local directory).
        authors: who made the model (default: the login name).
        overwrite: replace an existing output file.
        name: the package's name (default from the backbone, adapter and head).

    Returns:
        A summary: output path and size, format, whether the graph has dynamic sizes, the largest ONNX
        Runtime-PyTorch difference on the test slice, licence and seconds.

    Raises:
        ConfigError: bad format/output/folder, a backbone that may not be shared (gated weights, a licence
            that does not allow redistribution, an unregistered backbone without ``license``), a run with an
            input-side alignment (its per-volume standardisation is not part of the network).
        RunDirError: no run or checkpoint, or a checkpoint trained on other backbone weights.
        CheckpointFormatError: a checkpoint that does not fit its backbone, or a graph that does not export.
        DataError: the run's test data are gone (the package's test tensors come from them).
    """
    from emfm.export.prepare import check_exportable, checkpoint_of, load_run
    from emfm.export.provenance import provenance
    from emfm.export.samples import (
        dtype_max,
        first_slice,
        network_input,
        pick_test_slice,
        training_scale,
        unit_from_intensities,
    )

    started = time.perf_counter()
    path = check_output(out, fmt, overwrite=overwrite)
    check_exportable(checkpoint_of(run_dir))
    loaded = load_run(run_dir)
    info = loaded.info
    prov = provenance(info, loaded.family, loaded.config, license=license, authors=authors)
    tiled_vit = info.scale is not None and loaded.family != "scratch"
    max_side = int(info.tile) if tiled_vit and info.tile else None
    halo = int(info.overlap or 0) // 2 if tiled_vit else 0
    if fmt == "bioimageio":
        sample, unit, intensities = pick_test_slice(loaded.config, loaded.module, info.preprocessing, max_side=max_side)
    else:
        sample = first_slice(loaded.config, "test")
        unit, intensities = network_input(sample.image, info.preprocessing, max_side=max_side)
    if info.intensity == "minmax":  # the package's declared stretch, over the resized slice (see samples)
        unit = unit_from_intensities(intensities, "minmax", dtype_max(sample.image))
    metadata = export_metadata(loaded, training_scale(loaded.config, info), dtype_max(sample.image), halo, max_side)
    example = torch.cat([unit, unit.flip(-1)])  # a batch of two, so the batch stays dynamic when traced
    if fmt == "onnx":
        result = _write_onnx_file(loaded, example, path, metadata, max_side)
    else:
        result = _write_package(loaded, example, path, metadata, max_side, unit, intensities, halo, prov, name)
    return {
        "output": str(path), "format": fmt, "bytes": path.stat().st_size, **result, "license": prov.license,
        "test_slice": f"{sample.dataset} {sample.slice_id}", "seconds": round(time.perf_counter() - started, 2),
    }


def _write_onnx_file(loaded, example, path: Path, metadata: dict, max_side: int | None) -> dict:
    from emfm.export.onnx_file import write_onnx

    with atomic_path(path, suffix=".onnx") as tmp:
        done = write_onnx(loaded.module, example, tmp, patch=loaded.info.patch_size, max_side=max_side,
                          metadata={**metadata, "input": "unit"})
    return {"dynamic": done.dynamic, "max_side": done.max_side, "onnx_max_difference": done.max_difference}


def _write_package(loaded, example, path, metadata, max_side, unit, intensities, halo, prov, name) -> dict:
    from emfm.export.onnx_file import write_onnx
    from emfm.export.package import PackageParts, write_package

    with tempfile.TemporaryDirectory(prefix=".emfm-export-", dir=path.parent) as work:
        workdir = Path(work)
        done = write_onnx(loaded.module, example, workdir / "model.onnx", patch=loaded.info.patch_size,
                          max_side=max_side, metadata={**metadata, "input": "unit"})
        if not done.dynamic:
            log.warning("the ONNX graph has a fixed size, so the package carries pytorch_state_dict weights only")
        record = {**metadata, "input": "raw", "max_side": done.max_side if done.dynamic else max_side,
                  "onnx_max_difference": done.max_difference}
        parts = PackageParts(
            workdir=workdir, module=loaded.module, info=loaded.info, kwargs=loaded.kwargs, unit=unit,
            intensities=intensities, dtype_max=metadata["dtype_max"], halo=halo,
            onnx=done if done.dynamic else None, provenance=prov, metadata=record,
        )
        with atomic_path(path, suffix=".zip") as tmp:
            write_package(parts, tmp, name or package_name(loaded.info))
    return {"dynamic": done.dynamic, "max_side": record["max_side"], "onnx_max_difference": done.max_difference}
