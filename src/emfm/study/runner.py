"""Run a study's grid: skip complete runs, run the rest here or on a cluster, then aggregate.

Resumability rests on two facts: a run directory is complete exactly when its ``metrics.json`` exists
(written last and atomically by ``train_run``), and every file others read (results, report) is
written atomically. A study killed at any moment, even by SIGKILL, therefore leaves nothing that a
rerun would mistake for complete; the rerun redoes only the runs without metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from emfm import rundir
from emfm._io import atomic_write_text
from emfm.study.config import StudyConfig
from emfm.study.grid import RunSpec, analysis_dir, expand_grid

log = logging.getLogger(__name__)

Executor = Literal["local", "slurm", "submitit-local", "debug"]


def _run_one(spec: RunSpec, study_dir: str) -> str:
    """Train one run (top-level so that submitit can pickle it)."""
    from emfm.train.run import train_run

    train_run(spec.config, spec.directory(study_dir), overwrite=True, progress=False)
    return spec.run_id


def pending_runs(specs: Sequence[RunSpec], study_dir: str | Path) -> list[RunSpec]:
    return [s for s in specs if not _complete(s, study_dir)]


def _complete(spec: RunSpec, study_dir: str | Path) -> bool:
    d = spec.directory(study_dir)
    cfg = d / rundir.CONFIG_NAME
    return rundir.is_complete(d) and cfg.is_file() and cfg.read_text() == spec.config.to_yaml()


def run_study(
    study: StudyConfig,
    out: str | Path,
    *,
    executor: Executor = "local",
    executor_params: Mapping[str, Any] | None = None,
    wait: bool = True,
    aggregate_only: bool = False,
    on_run_done: Callable[[RunSpec], None] | None = None,
) -> dict[str, Any]:
    """Run what is missing of ``study`` under ``out`` and write ``results.csv`` and the report.

    Args:
        study: the study.
        out: the study directory.
        executor: ``local`` runs one after another in this process; ``slurm`` submits each pending
            run as a SLURM job through submitit (``submitit-local`` and ``debug`` use submitit's
            local and in-process executors, for trying a set-up without a cluster).
        executor_params: passed to ``submitit.AutoExecutor.update_parameters`` (e.g. ``timeout_min``,
            ``slurm_partition``, ``gpus_per_node``).
        wait: with a submitit executor, wait for the jobs and aggregate; otherwise return once they
            are submitted (rerun with ``aggregate_only`` later).
        aggregate_only: run nothing; aggregate what is complete.
        on_run_done: called after each local run (progress reporting, tests).

    Returns:
        A summary: counts of runs done, skipped and pending, and the paths written.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", study.to_yaml())
    specs = expand_grid(study)
    todo = [] if aggregate_only else pending_runs(specs, out)
    skipped = len(specs) - len(todo) if not aggregate_only else 0
    log.info("study %s: %d runs, %d complete, %d to run", study.name, len(specs), len(specs) - len(todo), len(todo))
    started = time.perf_counter()
    # The analysis goes first: it encodes every slice once with all the layers it probes, and the
    # frozen runs at the same resolution then read their final grids from those cache entries.
    analysis = run_analyses(study, out) if study.analysis and not aggregate_only else collect_analyses(study, out)
    if todo and executor == "local":
        bar = tqdm(todo, desc=f"study {study.name}", unit="run")
        for spec in bar:
            bar.set_postfix_str(spec.run_id[:48])
            _run_one(spec, str(out))
            if on_run_done:
                on_run_done(spec)
    elif todo:
        jobs = _submit(todo, out, executor, executor_params or {})
        if not wait:
            return {"runs": len(specs), "submitted": len(jobs), "skipped": skipped, "pending": len(todo)}
        for job in tqdm(jobs, desc="waiting for jobs", unit="run"):
            job.result()
    from emfm.study.aggregate import write_results
    from emfm.study.report import write_report

    table = write_results(specs, out)
    report = write_report(study, specs, table, analysis, out)
    remaining = len(pending_runs(specs, out))
    return {
        "runs": len(specs), "ran": len(todo), "skipped": skipped, "pending": remaining,
        "seconds": round(time.perf_counter() - started, 1), "results": str(out / "results.csv"), **report,
    }


def _submit(specs: Sequence[RunSpec], out: Path, executor: str, params: Mapping[str, Any]) -> list:
    try:
        import submitit
    except ImportError:
        from emfm.errors import ConfigError

        raise ConfigError("the slurm executor needs submitit: pip install 'emfm[cluster]'") from None
    cluster = {"slurm": "slurm", "submitit-local": "local", "debug": "debug"}[executor]
    ex = submitit.AutoExecutor(folder=out / "jobs" / "%j", cluster=cluster)
    ex.update_parameters(name="emfm", **dict(params))
    return [ex.submit(_run_one, spec, str(out)) for spec in specs]


def run_analyses(study: StudyConfig, out: Path) -> dict[str, dict]:
    """The representation analysis once per backbone (skipped where ``analysis.json`` exists), with
    the data root and feature cache of the study's defaults."""
    import json

    from emfm.analysis import run_analysis

    results: dict[str, dict] = {}
    if study.analysis is None:
        return results
    for backbone in study.backbones:
        d = analysis_dir(out, backbone)
        path = d / "analysis.json"
        if not path.is_file():
            config = study.analysis.replace(
                backbone=backbone,
                data_root=study.defaults.get("data_root"),
                cache_dir=study.defaults.get("cache_dir"),
            )
            run_analysis(config, d)
        results[backbone] = json.loads(path.read_text())
    return results


def collect_analyses(study: StudyConfig, out: Path) -> dict[str, dict]:
    import json

    results = {}
    for backbone in study.backbones:
        path = analysis_dir(out, backbone) / "analysis.json"
        if path.is_file():
            results[backbone] = json.loads(path.read_text())
    return results
