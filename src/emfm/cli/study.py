"""``emfm study CONFIG --out DIR``: run a whole grid, resumably, and write the results and report."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="run a grid of runs (resumable) and write results.csv and a report",
        description="Expand a study config into runs, run those not yet complete, and write results.csv, "
        "report.md, report.html and results.tex. Safe to interrupt and rerun.",
    )
    p.add_argument("config", help="study YAML (see configs/quick.yaml and configs/study.yaml)")
    p.add_argument("--out", help="study directory (default runs/<study name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study key, e.g. seeds=[0] or defaults.epochs=5 (repeatable)")
    p.add_argument("--executor", choices=["local", "slurm", "submitit-local", "debug"], default="local",
                   help="local: one run after another here; slurm: one SLURM job per run through submitit")
    p.add_argument("--slurm-partition", help="SLURM partition (slurm executor)")
    p.add_argument("--timeout-min", type=int, help="job time limit in minutes (submitit executors)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs per job (submitit executors)")
    p.add_argument("--no-wait", action="store_true", help="submit the jobs and return; aggregate later")
    p.add_argument("--aggregate-only", action="store_true", help="run nothing; aggregate the finished runs")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is complete")
    p.add_argument("--overwrite", action="store_true",
                   help="take over an --out that holds another study (its runs are kept; study.yaml and the "
                        "report are replaced)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emfm.study.config import StudyConfig
    from emfm.study.grid import expand_grid
    from emfm.study.runner import pending_runs, run_study

    study = StudyConfig.from_yaml(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / study.name
    if args.dry_run:
        specs = expand_grid(study)
        todo = {s.run_id for s in pending_runs(specs, out)}
        for s in specs:
            print(f"{'todo' if s.run_id in todo else 'done'}  {s.run_id}")
        print(f"{len(specs)} runs, {len(specs) - len(todo)} complete, {len(todo)} to run")
        return 0
    params = {}
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.timeout_min:
        params["timeout_min"] = args.timeout_min
    if args.gpus_per_node is not None:
        params["gpus_per_node"] = args.gpus_per_node
    summary = run_study(study, out, executor=args.executor, executor_params=params, wait=not args.no_wait,
                        aggregate_only=args.aggregate_only, overwrite=args.overwrite)
    if "submitted" in summary:
        print(f"submitted {summary['submitted']} runs; "
              f"when they finish: emfm study {args.config} --out {out} --aggregate-only")
        return 0
    print(f"study {study.name}: {summary['runs']} runs "
          f"({summary['ran']} run now, {summary['skipped']} already complete, "
          f"{summary['pending']} pending) in {summary['seconds']} s")
    print(f"results: {summary['results']}\nreport:  {summary['report']}\nhtml:    {summary['html']}")
    return 0 if summary["pending"] == 0 else 1
