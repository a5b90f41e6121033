"""Share a trained run: ``emfm export`` to a bioimage.io model package or an ONNX file, and back.

Public API::

    export_run(run_dir, out, fmt="bioimageio" | "onnx", *, license=None, authors=None, overwrite=False,
               name=None) -> dict
    load_exported(path) -> ExportedModel      # what `emfm predict --model` runs
    is_exported_model(path) -> bool
    exported_info(path) -> ModelInfo

The exported network (:mod:`~emfm.export.architecture`) is the whole segmenter, LoRA merged, from a grey
slice in [0, 1] at the network's size to P(foreground), a 0/1 mask and the logits; the run's
:class:`~emfm.transforms.Preprocessing` is recorded with it (and its intensity rule declared as the
package's preprocessing). Modules, one job each: :mod:`~emfm.export.prepare` (run -> network),
:mod:`~emfm.export.positions` (a DINOv2 position table that traces at any size),
:mod:`~emfm.export.onnx_file`, :mod:`~emfm.export.package` (bioimage.io), :mod:`~emfm.export.samples`
(test tensors from the run's test set), :mod:`~emfm.export.provenance` (licence, authors, citations),
:mod:`~emfm.export.runtime` (running an export) and :mod:`~emfm.export.run` (the command).
"""

from __future__ import annotations

from emfm.export.run import export_run
from emfm.export.runtime import (
    ExportedModel,
    exported_info,
    exported_training_scale,
    is_exported_model,
    load_exported,
)

__all__ = [
    "ExportedModel",
    "export_run",
    "exported_info",
    "exported_training_scale",
    "is_exported_model",
    "load_exported",
]
