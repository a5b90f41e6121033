"""``emfm data``: list, fetch and check datasets.

- ``emfm data list``: the registered datasets with their facts.
- ``emfm data fetch NAME [--root DIR | --data-root DIR] [--url URL]``: download, verify, unpack.
- ``emfm data check NAME [--root DIR | --data-root DIR] [--json PATH]``: counts, shapes, pairing,
  foreground and checksums; exit 0 when the dataset is usable, 1 when problems were found.

``--root DIR`` is the dataset's own folder (for lucchi_pp the one holding ``Train_In``);
``--data-root DIR`` is the folder holding one folder per dataset (``DIR/NAME``), as in every other emfm
command. Without either: ``$EMFM_DATA/NAME``, else the per-user data directory.
"""

from __future__ import annotations

import argparse


def _add_root_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--root", help="the dataset's own folder (e.g. the one holding Train_In for lucchi_pp)")
    g.add_argument("--data-root", help="folder holding one folder per dataset (DIR/NAME); default $EMFM_DATA")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, fetch and check datasets", description="List, fetch and check datasets.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    ls = dsub.add_parser("list", help="the registered datasets and their facts")
    ls.set_defaults(func=run_list)

    fetch = dsub.add_parser("fetch", help="download, verify and unpack a dataset")
    fetch.add_argument("name", help="dataset name (see `emfm data list`)")
    _add_root_args(fetch)
    fetch.add_argument("--url", help="download from this URL instead (also $EMFM_<NAME>_URL)")
    fetch.set_defaults(func=run_fetch)

    check = dsub.add_parser(
        "check",
        help="check a dataset on disk: counts, shapes, pairing, foreground, checksums",
        description="Check a dataset on disk. Exit 0 when it is usable, 1 when problems were found.",
    )
    check.add_argument("name", help="dataset name or folder:PATH")
    _add_root_args(check)
    check.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    check.set_defaults(func=run_check)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
    from emfm.data import dataset_names, get_dataset

    for name in dataset_names():
        ds = get_dataset(name)
        print(f"{name}: {ds.title}")
        print(f"  layout:   {ds.layout}")
        print(f"  masks:    {ds.mask_rule.description}")
        print(f"  licence:  {ds.licence}")
        print(f"  cite:     {ds.citation}")
        print(f"  download: {ds.url} (sha256 {ds.archive_sha256 or 'unknown: decoded data are verified'})")
    print("folder:PATH: your own PATH/images + PATH/masks (see `emfm data check folder:PATH`)")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from emfm.data import fetch_dataset

    where = fetch_dataset(args.name, args.root, data_root=args.data_root, url=args.url, progress=not args.no_progress)
    print(f"{args.name} is at {where}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from emfm._io import atomic_write_json
    from emfm.data import check_dataset

    report = check_dataset(args.name, args.root, data_root=args.data_root, progress=not args.no_progress)
    print("\n".join(report.lines()))
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    return 0 if report.usable else 1
