"""``emfm backbones list`` and ``emfm backbones info NAME|PATH``.

``list`` reads only the registry and the hub cache (no torch model is built, nothing is downloaded);
``info`` loads the backbone - offline under ``HF_HUB_OFFLINE=1`` - and prints what a user needs to cite and
cache it.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backbones",
        help="list the registered backbones, or load one and describe it",
        description="Registered vision backbones (DINOv2, DINOv3, OpenCLIP) and any hub id or local checkpoint.",
    )
    actions = parser.add_subparsers(dest="backbones_action", metavar="ACTION")

    listing = actions.add_parser("list", help="table of registered backbones and whether each is cached")
    listing.add_argument("--cache-dir", help="Hugging Face hub cache to look in (default: HF_HUB_CACHE)")
    listing.set_defaults(func=_list)

    info = actions.add_parser("info", help="load a backbone and print its facts")
    info.add_argument("backbone", metavar="NAME|PATH", help="registered name, hub id, model directory or checkpoint")
    info.add_argument("--num-heads", type=int, help="attention heads, for official files that do not record them")
    info.add_argument("--revision", help="hub revision (branch, tag or commit)")
    info.add_argument("--cache-dir", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    info.set_defaults(func=_info)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)


def format_params(count: int) -> str:
    """``22.06 M`` / ``6.72 B``: parameter counts as people quote them."""
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.2f} M"


def _list(args: argparse.Namespace) -> int:
    from emfm.backbones import is_cached, list_backbones

    header = ("name", "family", "params", "patch", "width", "licence", "gated", "cached")
    rows = [
        (
            r.name,
            r.family,
            format_params(r.num_params),
            str(r.patch_size),
            str(r.embed_dim),
            r.license,
            "yes" if r.gated else "no",
            "yes" if is_cached(r.name, cache_dir=args.cache_dir) else "no",
        )
        for r in list_backbones()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print("\nAny Hugging Face hub id or local model directory / official checkpoint file works too.")
    from emfm.baselines import SCRATCH_MODELS

    print("From-scratch baselines (no pretrained weights; --backbone NAME):")
    for model in SCRATCH_MODELS.values():
        print(f"  {model.name:<12} {model.summary}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from emfm.backbones import BACKBONES, create_backbone

    backbone = create_backbone(
        args.backbone, num_heads=args.num_heads, revision=args.revision, cache_dir=args.cache_dir
    )
    lines = [
        ("name", backbone.name),
        ("family", f"{backbone.family} ({type(backbone).title} architecture)"),
        ("parameters", format_params(backbone.num_params)),
        ("patch", str(backbone.patch_size)),
        ("width", str(backbone.embed_dim)),
        ("depth", str(backbone.num_layers)),
        ("heads", str(backbone.model.config.num_attention_heads)),
        ("registers", str(backbone.num_register_tokens)),
        ("mean", ", ".join(f"{m:g}" for m in backbone.mean)),
        ("std", ", ".join(f"{s:g}" for s in backbone.std)),
        ("weights_id", backbone.weights_id),
        ("lora targets", ", ".join(backbone.lora_target_modules)),
        ("source", backbone.source),
    ]
    if args.backbone in BACKBONES:
        record = BACKBONES.get(args.backbone)
        lines += [("licence", record.license + (" (gated)" if record.gated else "")), ("paper", record.paper)]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0
