"""Tiny trained runs (frozen and LoRA, random backbone) and their exports, made once per session.

Exporting traces the network twice (torch.export, then ONNX), some tens of seconds on a CPU, so each run
is exported once to each format and every test reads those files.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from emfm.config import TrainConfig
from emfm.train.run import train_run


def train_tiny(backbone: Path, dataset: str, out: Path, cache: Path, **kw) -> Path:
    """One epoch on the synthetic folder set at 56 px: enough for non-trivial heads and LoRA matrices."""
    base = {"backbone": str(backbone), "train": dataset, "cache_dir": str(cache), "epochs": 1, "resolution": 56,
            "lr": 1e-2, "min_steps": 0}
    train_run(TrainConfig.from_dict({**base, **kw}), out, progress=False)
    return out


@pytest.fixture(scope="session")
def runs(tiny_backbone_dir, datasets, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("export_runs")
    a, _ = datasets
    return {
        "frozen": train_tiny(tiny_backbone_dir, a, base / "frozen", base / "cache"),
        "lora": train_tiny(tiny_backbone_dir, a, base / "lora", base / "cache", adapter="lora", lora_rank=2),
    }


@pytest.fixture(scope="session")
def exports(runs, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(adapter, format) -> the exported file; the frozen ONNX one through the CLI (its output kept)."""
    from emfm.cli import main
    from emfm.export import export_run

    base = tmp_path_factory.mktemp("exports")
    out: dict = {}
    for adapter, run in runs.items():
        out[adapter, "bioimageio"] = Path(export_run(run, base / f"{adapter}.zip", "bioimageio", license="MIT",
                                                     authors=["Test Author"])["output"])
        onnx = base / f"{adapter}.onnx"
        if adapter == "frozen":
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                code = main(["export", "--run", str(run), "--format", "onnx", "--out", str(onnx), "--license", "MIT"])
            out["cli"] = (code, text.getvalue())
        else:
            export_run(run, onnx, "onnx", license="MIT")
        out[adapter, "onnx"] = onnx
    return out
