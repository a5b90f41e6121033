"""Run an exported model (``.onnx`` or bioimage.io ``.zip``) the way ``emfm predict`` runs a run directory.

:class:`ExportedModel` offers what :class:`~emfm.predict.runner.SlicePredictor` asks of a segmenter: it is
called on a batch of network inputs and returns logits (B, 2, H, W), and its :meth:`~ExportedModel.model_input`
says what a slice becomes at the network's size. The predictor's own resizing, batching, tiling and
argmax then apply unchanged, so an export's masks can be compared with the run's.

- ``.onnx``: ONNX Runtime on the network's own input, the slice in [0, 1] made by the run's
  :class:`~emfm.transforms.Preprocessing` (the file records it).
- ``.zip``: bioimage.io.core's prediction pipeline on the package's declared input (the resized slice on
  its dtype's scale), so the package's declared preprocessing is what is tested; ONNX weights when the
  package has them, else the ``pytorch_state_dict`` ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from emfm.errors import ConfigError, RunDirError

SUFFIXES = (".onnx", ".zip")
_DIMS = ("batch", "channel", "y", "x")


def is_exported_model(path: str | Path) -> bool:
    """Whether ``path`` names an exported model (by its suffix) rather than a run directory."""
    return Path(path).suffix.lower() in SUFFIXES


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise RunDirError(f"no exported model at {p}; pass --model a file written by `emfm export`")
    return p


def _description(path: Path):
    from bioimageio.spec import InvalidDescr, load_model_description

    try:
        descr = load_model_description(path, perform_io_checks=False)
    except Exception as exc:  # a damaged zip raises from zipfile, yaml or pydantic
        raise RunDirError(f"{path} is not a bioimage.io package ({str(exc).splitlines()[0]})") from None
    if isinstance(descr, InvalidDescr):
        raise RunDirError(f"{path} is not a valid bioimage.io model package")
    return descr


def read_record(path: str | Path) -> dict[str, Any]:
    """The export's ``emfm`` record (ModelInfo, how it is fed); RunDirError if it is not an emfm export."""
    from emfm.export.onnx_file import read_metadata
    from emfm.export.package import read_config

    p = _existing(path)
    record = read_metadata(p) if p.suffix.lower() == ".onnx" else read_config(_description(p))
    if "model_info" not in record:
        raise RunDirError(f"{p} was not exported by emfm (it carries no emfm record); pass an `emfm export` output")
    return record


def exported_info(path: str | Path):
    """The run's :class:`~emfm.models.checkpoint.ModelInfo`, as the export recorded it."""
    from emfm.models.checkpoint import ModelInfo

    return ModelInfo.from_metadata(dict(read_record(path)["model_info"]))


def exported_training_scale(path: str | Path) -> float:
    """Network pixels per input pixel the run was trained at (tile mode's default ``scale``)."""
    scale = read_record(path).get("training_scale")
    if scale is None:
        raise ConfigError(f"{path} does not record the pixel scale its run was trained at; pass --scale S")
    return float(scale)


class ExportedModel:
    """An exported model behind the segmenter interface that :class:`~emfm.predict.runner.SlicePredictor`
    drives. CPU only: ``to`` and ``eval`` are accepted and change nothing."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = _existing(path)
        self.record = read_record(self.path)
        self.info = exported_info(self.path)
        self.preprocessing = self.info.preprocessing
        self.max_side = self.record.get("max_side")
        self.threads = threads or torch.get_num_threads()
        self.kind = "onnx" if self.path.suffix.lower() == ".onnx" else "bioimageio"
        self._run = self._onnx_runner() if self.kind == "onnx" else self._package_runner()

    def to(self, *_args: Any, **_kwargs: Any) -> ExportedModel:
        return self

    def eval(self) -> ExportedModel:
        return self

    def model_input(self, image: np.ndarray, size) -> torch.Tensor:
        """A slice as the exported network takes it, (1, H, W) at ``size`` (the network's size)."""
        if self.kind == "onnx":
            return self.preprocessing.unit(image, size)[None]
        from emfm.transforms import unit_at_size

        return unit_at_size(image, size, "dtype")[None] * float(self.record["dtype_max"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, H, W) for a batch of :meth:`model_input` tensors (B, 1, H, W)."""
        if self.max_side and max(batch.shape[-2:]) > self.max_side:
            raise ConfigError(
                f"{self.path} takes at most {self.max_side} px a side (one tile of a tiled run), got "
                f"{tuple(batch.shape[-2:])}; predict with --mode tile --tile {self.max_side} or smaller"
            )
        return torch.from_numpy(np.ascontiguousarray(self._run(batch.float().numpy())))

    def _onnx_runner(self):
        from emfm.export.architecture import INPUT_NAME
        from emfm.export.onnx_file import session

        run = session(self.path, threads=self.threads)
        return lambda x: run.run(["logits"], {INPUT_NAME: x})[0]

    def _package_runner(self):
        from bioimageio.core import Sample, Tensor, create_prediction_pipeline
        from bioimageio.core.common import MemberId

        from emfm.export.package import INPUT_ID

        descr = _description(self.path)
        fmt = "onnx" if descr.weights.onnx is not None else "pytorch_state_dict"
        pipeline = create_prediction_pipeline(descr, weight_format=fmt, devices=["cpu"])

        def run(x: np.ndarray) -> np.ndarray:
            sample = Sample(members={MemberId(INPUT_ID): Tensor.from_numpy(x, dims=_DIMS)}, stat={}, id="emfm")
            out = pipeline.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
            return np.asarray(out.members[MemberId("logits")].data.transpose(*_DIMS), dtype=np.float32)

        return run


def load_exported(path: str | Path, threads: int | None = None) -> ExportedModel:
    """An exported model ready to predict with (see :class:`ExportedModel`)."""
    return ExportedModel(path, threads=threads)
