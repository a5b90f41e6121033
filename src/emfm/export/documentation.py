"""The README of an exported package: what the model is, how to feed it, and whose work it carries."""

from __future__ import annotations

from typing import Any

from emfm.export.provenance import Provenance


def preprocessing_text(info: Any) -> str:
    """The run's :class:`~emfm.transforms.Preprocessing` in words: how a slice is sized and scaled."""
    p = info.patch_size
    if info.scale is None:
        size = (
            f"resize the whole slice (bicubic, antialiased when shrinking) so that its longest edge is "
            f"{info.resolution} px and each side is floored to a multiple of {p} px"
        )
    else:
        size = (
            f"resize the slice by {info.scale:g} network pixels per stored pixel (bicubic, antialiased when "
            f"shrinking), each side rounded to the nearest multiple of {p} px"
        )
    rule = (
        "divided by the dtype's maximum (255 for uint8, 65535 for uint16)" if info.intensity == "dtype"
        else "stretched between the slice's 0.5 and 99.5 percentiles (emfm computes them on the stored slice "
             "before resizing; the package's declared `scale_range` on the resized one, which differs slightly)"
    )
    return (
        f"1. {size};\n"
        f"2. intensities {rule}, then clipped to [0, 1] (declared as the input's preprocessing: feed the "
        f"resized slice on its dtype's scale);\n"
        f"3. the grey channel repeated to three and normalised with mean {list(info.mean)} and std "
        f"{list(info.std)} (inside the network)."
    )


def readme(info: Any, prov: Provenance, metadata: dict[str, Any], *, name: str) -> str:
    """The package's documentation (Markdown)."""
    tiled = metadata.get("max_side")
    tiling = (
        f"\nThe run was trained on {info.tile} px tiles: feed at most {tiled} px a side and tile larger "
        f"slices, cropping the declared halo of {metadata.get('halo')} px from each tile's outputs.\n"
        if tiled else ""
    )
    datasets = "\n".join(f"- {d.title} (`{d.name}`): {d.licence}. Cite: {d.citation or 'n/a'}" for d in prov.datasets)
    cites = "\n".join(f"- {c.text}" for c in prov.citations)
    scores = "\n".join(
        f"- {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
        for name, m in (metadata.get("test_metrics") or {}).items()
    )
    return f"""# {name}

Segments mitochondria in 2-D electron-microscopy slices. Exported by emfm {metadata.get('emfm_version')} from a
trained run: backbone {info.backbone_name} (`{info.backbone}`), adapter `{info.adapter}` (LoRA merged into the
weights if any), head `{info.head}` reading blocks {list(info.layers) or 'final'}.

## Input
A grey slice, float32, batch x channel (1) x y x x, each side a multiple of {info.patch_size} px. Prepare it as
the run was trained:

{preprocessing_text(info)}
{tiling}
## Outputs
At the input's size: `probability` (P(foreground), float32), `mask` (uint8 0/1, the argmax of the logits) and
`logits` (two classes). emfm resizes the logits back to the stored slice's size (bilinear) before taking the
argmax; `emfm predict --model THIS_FILE` does exactly that.

## Weights
- `pytorch_state_dict`: needs emfm installed (the architecture source imports it).
- `onnx` (when present): ONNX Runtime alone; checked against PyTorch on the test input at export
  (largest difference {metadata.get('onnx_max_difference')}).

## Validation
The run's own test scores (emfm evaluate, masks at each slice's stored size):
{scores or '- (no metrics recorded)'}

The package's test tensors are the run's first test slice and the run's own outputs for it; `bioimageio.core`'s
model test reproduces them from both weight formats.

## Licence and terms
Package licence: {prov.license}. Backbone weights: {prov.backbone_terms}.
Training and test data:
{datasets or '- (none recorded)'}

## Cite
{cites or '- (nothing recorded)'}
"""
