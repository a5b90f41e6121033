"""The exported network as an ONNX graph, with dynamic batch, height and width where the backbone allows.

``torch.export`` (strict, through TorchDynamo, which keeps Python arithmetic on sizes symbolic) traces the
network with the height and width declared as multiples of the patch size; ``torch.onnx`` turns the
program into ONNX. A backbone whose code fixes a size while tracing is exported at the example's size
instead, and says so in the file's metadata. The graph is then run once in ONNX Runtime on the example and
compared with PyTorch, so a file that computes something else is never written.

The file's metadata (``emfm``) holds the run's :class:`~emfm.models.checkpoint.ModelInfo`, which input the
graph takes and the sizes it accepts, so ``emfm predict --model`` can feed it as the run would be fed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emfm.errors import CheckpointFormatError
from emfm.export.architecture import INPUT_NAME, OUTPUT_NAMES, ExportedSegmenter
from emfm.export.positions import traceable_positions

log = logging.getLogger(__name__)

METADATA_KEY = "emfm"
#: ONNX Runtime against PyTorch on the example: the largest difference allowed in P and the logits.
TOLERANCE = 1e-4
_MAX_GRID = 1024  # patches a side that a dynamic graph accepts (14 336 px at patch 14)


@dataclass(frozen=True)
class OnnxExport:
    """What was written: whether height and width are dynamic, the largest side, the opset, the check."""

    dynamic: bool
    max_side: int | None
    opset: int
    max_difference: float


def export_program(module: ExportedSegmenter, example: torch.Tensor, *, patch: int, max_side: int | None):
    """``(program, dynamic)``: the network traced with dynamic sizes, or at the example's size if the
    backbone fixes one while tracing. ``example`` is (B >= 2, 1, H, W) (a batch of one would fix B)."""
    from torch.export import Dim

    grid = _MAX_GRID if max_side is None else max(2, max_side // patch)
    shapes = {"unit": {0: Dim("batch", min=1, max=4096), 2: patch * Dim("rows", min=2, max=grid),
                       3: patch * Dim("cols", min=2, max=grid)}}
    backbone = module.segmenter.backbone
    with traceable_positions(backbone), torch.no_grad():
        try:
            return torch.export.export(module, (example,), dynamic_shapes=shapes, strict=True), True
        except Exception as exc:  # torch.export raises many types for code that fixes a size
            log.warning(
                "%s does not trace with a dynamic size (%s); exporting at %s x %s only",
                getattr(backbone, "name", "the backbone"), str(exc).splitlines()[0][:200], *example.shape[-2:],
            )
            return torch.export.export(module, (example,), strict=True), False


def write_onnx(
    module: ExportedSegmenter, example: torch.Tensor, path: Path, *, patch: int, max_side: int | None,
    metadata: dict[str, Any],
) -> OnnxExport:
    """Trace ``module`` and write it to ``path`` as one self-contained ONNX file, checked in ONNX Runtime.

    Raises:
        CheckpointFormatError: the graph does not trace, or ONNX Runtime's outputs differ from PyTorch's
            by more than :data:`TOLERANCE` on the example.
    """
    import onnx

    try:
        program, dynamic = export_program(module, example, patch=patch, max_side=max_side)
        onnx_program = torch.onnx.export(
            program, (example,), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamo=True,
            optimize=True, verbose=False,
        )
    except Exception as exc:  # torch.onnx raises many types; the user needs the first line
        raise CheckpointFormatError(f"this run's network does not export to ONNX: {str(exc).splitlines()[0]}") from None
    model = onnx_program.model_proto
    record = {**metadata, "dynamic": dynamic, "max_side": max_side if dynamic else int(max(example.shape[-2:]))}
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(record)})
    onnx.save_model(model, str(path), save_as_external_data=False)
    opset = next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    difference = check_against_torch(module, path, example)
    return OnnxExport(dynamic=dynamic, max_side=record["max_side"], opset=int(opset), max_difference=difference)


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session; ``threads`` intra-op threads (default: ONNX Runtime's own choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_against_torch(module: ExportedSegmenter, path: Path, example: torch.Tensor) -> float:
    """The largest difference between ONNX Runtime's P and logits and PyTorch's on ``example`` (and on
    its first item alone, a batch of one); raises if above :data:`TOLERANCE` or if a mask differs
    elsewhere than where the logits are within it of a tie."""
    run = session(path)
    worst = 0.0
    for batch in (example, example[:1]):
        with torch.no_grad():
            expected = [t.numpy() for t in module(batch)]
        got = run.run(None, {INPUT_NAME: batch.numpy()})
        worst = max(worst, *(float(np.abs(g - e).max()) for g, e in ((got[0], expected[0]), (got[2], expected[2]))))
        margin = np.abs(expected[2][:, 1:2] - expected[2][:, :1])
        if worst > TOLERANCE or np.any((got[1] != expected[1]) & (margin > TOLERANCE)):
            raise CheckpointFormatError(
                f"the ONNX graph computes something else than the run (largest difference {worst:.2e}, allowed "
                f"{TOLERANCE:.0e}); please report this with the run's backbone and head"
            )
    return worst


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``emfm`` record of an exported ONNX file (without loading its weights)."""
    import onnx

    from emfm.errors import RunDirError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError, among others
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunDirError(f"{path} is not an ONNX file ({reason}); pass an `emfm export` output") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise RunDirError(f"{path} is an ONNX file but not one written by `emfm export`; it has no emfm metadata")
    return json.loads(props[METADATA_KEY])
