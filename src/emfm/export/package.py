"""A bioimage.io model package (spec 0.5) of a run, described and zipped by ``bioimageio.spec``.

One input, ``raw``: the grey slice at the network's size (a multiple of the patch size a side) on its
dtype's scale (0..255 for uint8), float32, batch x channel x y x x. Its declared preprocessing is the run's
intensity rule (``scale_linear`` by the dtype's maximum, or the 0.5-99.5 percentile ``scale_range``) and a
clip to [0, 1]; the rest of the run's preprocessing (three channels, mean/std) is inside the network
(:mod:`emfm.export.architecture`). Resizing a slice to the network's size is the consumer's one step, and
the documentation says how (the run's :class:`~emfm.transforms.Preprocessing`). Three outputs at the
input's size: ``probability`` (P(foreground)), ``mask`` (uint8 0/1) and ``logits``. A tiled run's network
takes one tile at a time: its outputs declare the halo a consumer tiling a slice should crop.

Weights: ``pytorch_state_dict`` with its architecture source, and ``onnx`` when the graph traces with a
dynamic size. Test tensors: the run's first test slice and the run's own outputs for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emfm.export.architecture import OUTPUT_NAMES, ExportedSegmenter
from emfm.export.onnx_file import OnnxExport
from emfm.export.provenance import Provenance
from emfm.export.samples import MINMAX_PERCENTILES

INPUT_ID = "raw"
CONFIG_KEY = "emfm"


@dataclass(frozen=True)
class PackageParts:
    """Everything a package is made of, written into ``workdir`` before it is described and zipped."""

    workdir: Path
    module: ExportedSegmenter
    info: Any
    kwargs: dict[str, Any]
    unit: torch.Tensor
    intensities: torch.Tensor
    dtype_max: float
    halo: int
    onnx: OnnxExport | None
    provenance: Provenance
    metadata: dict[str, Any]


def input_descr(parts: PackageParts):
    """The ``raw`` input: axes, data range, declared intensity preprocessing and its test tensor."""
    from bioimageio.spec.model import v0_5 as bio

    p = int(parts.info.patch_size)
    space = [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=2 * p, step=p)) for a in "yx"]
    if parts.info.intensity == "minmax":
        lo, hi = MINMAX_PERCENTILES
        scale = bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(
            axes=[bio.AxisId("y"), bio.AxisId("x")], min_percentile=lo, max_percentile=hi, eps=1e-6))
    else:
        scale = bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=1.0 / parts.dtype_max, offset=0.0))
    return bio.InputTensorDescr(
        id=bio.TensorId(INPUT_ID),
        description=f"grey slice resized to the network's size, on the 0..{parts.dtype_max:g} scale of its dtype",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("grey")]), *space],
        test_tensor=bio.FileDescr(source=_npy(parts.workdir / "test_input.npy", parts.intensities)),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, parts.dtype_max)),
        preprocessing=[scale, bio.ClipDescr(kwargs=bio.ClipKwargs(min=0.0, max=1.0))],
    )


def output_descrs(parts: PackageParts) -> list:
    """``probability``, ``mask`` and ``logits``, the size of the input, with the tile halo if tiled."""
    from bioimageio.spec.model import v0_5 as bio

    with torch.no_grad():
        expected = parts.module(parts.unit)

    def axes(channels: list[str]) -> list:
        space = []
        for a in "yx":
            size = bio.SizeReference(tensor_id=bio.TensorId(INPUT_ID), axis_id=bio.AxisId(a))
            space.append(bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), size=size, halo=parts.halo)
                         if parts.halo else bio.SpaceOutputAxis(id=bio.AxisId(a), size=size))
        return [bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier(c) for c in channels]), *space]

    specs = {
        "probability": (["foreground"], bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                        "P(foreground), the softmax of the logits"),
        "mask": (["foreground"], bio.NominalOrOrdinalDataDescr(type="uint8", values=[0, 1]),
                 "0/1 mask: the argmax of the logits, as emfm evaluates and predicts"),
        "logits": (["background", "foreground"], bio.IntervalOrRatioDataDescr(type="float32"),
                   "two-class logits, for consumers that resize before deciding (as emfm predict does)"),
    }
    out = []
    for name, tensor in zip(OUTPUT_NAMES, expected):
        channels, data, text = specs[name]
        out.append(bio.OutputTensorDescr(
            id=bio.TensorId(name), description=text, axes=axes(channels), data=data,
            test_tensor=bio.FileDescr(source=_npy(parts.workdir / f"test_{name}.npy", tensor)),
        ))
    return out


def weights_descr(parts: PackageParts):
    """``pytorch_state_dict`` (state dict + architecture source + kwargs) and, if it traced, ``onnx``."""
    import shutil

    from bioimageio.spec.model import v0_5 as bio

    from emfm.export import architecture

    source = parts.workdir / "architecture.py"
    shutil.copyfile(architecture.__file__, source)
    torch.save({k: v.contiguous() for k, v in parts.module.state_dict().items()}, parts.workdir / "weights.pt")
    state = bio.PytorchStateDictWeightsDescr(
        source=parts.workdir / "weights.pt",
        architecture=bio.ArchitectureFromFileDescr(
            source=source, callable=bio.Identifier("build_segmenter"), kwargs=parts.kwargs),
        pytorch_version=bio.Version(torch.__version__.split("+")[0]),
        comment="needs emfm installed (the architecture imports it); LoRA, if any, is merged into the backbone",
    )
    onnx = None
    if parts.onnx is not None:
        onnx = bio.OnnxWeightsDescr(source=parts.workdir / "model.onnx", opset_version=parts.onnx.opset,
                                    parent="pytorch_state_dict", comment="dynamic batch, height and width")
    return bio.WeightsDescr(pytorch_state_dict=state, onnx=onnx)


def describe(parts: PackageParts, name: str):
    """The package's :class:`bioimageio.spec.model.v0_5.ModelDescr` (validated as it is built)."""
    from bioimageio.spec.model import v0_5 as bio

    from emfm.export.documentation import readme

    prov = parts.provenance
    docs = parts.workdir / "README.md"
    docs.write_text(readme(parts.info, prov, parts.metadata, name=name))
    return bio.ModelDescr(
        name=name,
        description=f"{prov.backbone} + {parts.info.head} head ({parts.info.adapter}): mitochondria in EM slices",
        authors=[bio.Author(name=a) for a in prov.authors],
        cite=[bio.CiteEntry(text=c.text, doi=c.doi, url=c.url) for c in prov.citations],
        license=bio.LicenseId(prov.license),
        documentation=bio.FileDescr(source=docs),
        covers=[bio.FileDescr(source=_cover(parts))],
        tags=["electron-microscopy", "mitochondria", "semantic-segmentation", "2d", "vision-transformer", "emfm"],
        inputs=[input_descr(parts)],
        outputs=output_descrs(parts),
        weights=weights_descr(parts),
        config=bio.Config(**{CONFIG_KEY: json.loads(json.dumps(parts.metadata))}),
    )


def write_package(parts: PackageParts, path: Path, name: str) -> None:
    """Describe the parts and zip them to ``path`` with ``bioimageio.spec`` (which checks every file)."""
    from bioimageio.spec import save_bioimageio_package

    save_bioimageio_package(describe(parts, name), output_path=path)


def read_config(descr) -> dict[str, Any]:
    """The ``emfm`` record a package's ``config`` holds (what ``emfm predict --model`` needs)."""
    extra = descr.config.model_extra or {}
    return dict(extra.get(CONFIG_KEY) or {})


def _npy(path: Path, tensor: torch.Tensor) -> Path:
    np.save(path, tensor.detach().cpu().numpy())
    return path


def _cover(parts: PackageParts) -> Path:
    """The test slice beside its predicted mask, as a PNG."""
    from PIL import Image

    with torch.no_grad():
        mask = parts.module(parts.unit)[1][0, 0].numpy()
    grey = (parts.unit[0, 0].numpy() * 255).round().astype(np.uint8)
    image = np.concatenate([grey, mask.astype(np.uint8) * 255], axis=1)
    path = parts.workdir / "cover.png"
    Image.fromarray(image).save(path)
    return path
