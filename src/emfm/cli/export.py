"""``emfm export``: a trained run as a bioimage.io model package or an ONNX file (a thin wrapper over
:func:`emfm.export.export_run`)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained run as a bioimage.io package or an ONNX file",
        description=(
            "Write the whole segmenter (backbone, LoRA merged, head) as one model from a grey slice at the "
            "network's size to P(foreground), a 0/1 mask and the logits, with the run's preprocessing recorded. "
            "Check an export with `emfm predict --model FILE`."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by `emfm train`")
    p.add_argument("--format", dest="fmt", choices=["bioimageio", "onnx"], default="bioimageio",
                   help="bioimageio: a bioimage.io model package (.zip, spec 0.5); onnx: one ONNX file (.onnx)")
    p.add_argument("--out", required=True, help="the file to write (.zip or .onnx); it must not exist")
    p.add_argument("--license", help="SPDX licence of the package (default: the backbone registry's; required for "
                                     "a backbone that is not registered, e.g. a local directory)")
    p.add_argument("--author", dest="authors", action="append", metavar="NAME",
                   help="an author of the model (repeatable; default: your login name)")
    p.add_argument("--name", help="the package's name (default: from backbone, adapter and head)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from emfm.export import export_run

    result = export_run(args.run, args.out, args.fmt, license=args.license, authors=args.authors,
                        overwrite=args.overwrite, name=args.name)
    sizes = "dynamic height and width" if result["dynamic"] else "a fixed size"
    print(f"{result['format']} model ({result['bytes'] / 1e6:.1f} MB, {sizes}, licence {result['license']}) "
          f"-> {result['output']}")
    print(f"ONNX Runtime matches PyTorch on {result['test_slice']} to {result['onnx_max_difference']:.1e}; "
          f"exported in {result['seconds']:.1f} s")
    return 0
