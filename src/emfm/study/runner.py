"""Run a study's grid: skip complete runs, run the rest here or on a cluster, then aggregate.

Resumability rests on three facts: a run directory is complete exactly when its ``metrics.json``
(written last and atomically by ``train_run``) parses and holds the results of the run's config
(:meth:`RunSpec.metrics`); an analysis is reused only when it was done with the study's settings; and
every file others read (results, report) is written atomically. A study killed at any moment, even by
SIGKILL, therefore leaves nothing that a rerun would mistake for complete; the rerun redoes only the
runs without metrics. A study directory belongs to one study: another study's ``--out`` is refused.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from emfm._io import atomic_write_text
from emfm.errors import Interrupted
from emfm.study.config import StudyConfig
from emfm.study.grid import RunSpec, analysis_dir, expand_grid

log = logging.getLogger(__name__)

Executor = Literal["local", "slurm", "submitit-local", "debug"]


def _run_one(spec: RunSpec, study_dir: str, on_epoch: Callable[[int, int, float | None], None] | None = None) -> str:
    """Train one run (top-level so that submitit can pickle it)."""
    from emfm.train.run import train_run

    train_run(spec.config, spec.directory(study_dir), overwrite=True, progress=False, on_epoch=on_epoch)
    return spec.run_id


def pending_runs(specs: Sequence[RunSpec], study_dir: str | Path) -> list[RunSpec]:
    return [s for s in specs if not _complete(s, study_dir)]


def _complete(spec: RunSpec, study_dir: str | Path) -> bool:
    return spec.metrics(study_dir) is not None


def run_study(
    study: StudyConfig,
    out: str | Path,
    *,
    executor: Executor = "local",
    executor_params: Mapping[str, Any] | None = None,
    wait: bool = True,
    aggregate_only: bool = False,
    on_run_done: Callable[[RunSpec], None] | None = None,
    overwrite: bool = False,
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
        overwrite: take over an ``out`` that holds another study (its runs stay; its ``study.yaml``
            and report are replaced).

    Returns:
        A summary: counts of runs done, skipped and pending, and the paths written.

    Raises:
        RunDirError: ``out`` holds another study (and not ``overwrite``).
        Interrupted: Ctrl-C; the runs complete by then are kept and a rerun resumes.
    """
    out = Path(out)
    specs = expand_grid(study)  # every run's config is checked before anything is written
    claim_study_dir(study, out, overwrite=overwrite)
    todo = [] if aggregate_only else pending_runs(specs, out)
    skipped = len(specs) - len(todo) if not aggregate_only else 0
    log.info("study %s: %d runs, %d complete, %d to run", study.name, len(specs), len(specs) - len(todo), len(todo))
    started = time.perf_counter()
    # The analysis goes first: it encodes every slice once with all the layers it probes, and the
    # frozen runs at the same resolution then read their final grids from those cache entries.
    from emfm.data.memo import splits_kept_in_memory

    try:
        # One process runs the analysis and every local run: each split is read from disk once.
        with splits_kept_in_memory():
            analysis = (run_analyses(study, out) if study.analysis and not aggregate_only
                        else collect_analyses(study, out))
            if todo and executor == "local":
                _run_locally(study, todo, out, on_run_done)
    except KeyboardInterrupt:
        done = len(specs) - len(pending_runs(specs, out))
        raise Interrupted(
            f"{done} of {len(specs)} runs of study {study.name} are complete and kept in {out / 'runs'}; "
            f"rerun the same command to resume"
        ) from None
    if todo and executor != "local":
        jobs = _submit(todo, out, executor, executor_params or {})
        if not wait:
            return {"runs": len(specs), "submitted": len(jobs), "skipped": skipped, "pending": len(todo)}
        from tqdm.auto import tqdm

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


def _run_locally(
    study: StudyConfig, todo: Sequence[RunSpec], out: Path, on_run_done: Callable[[RunSpec], None] | None
) -> None:
    """The pending runs one after another, under one bar that shows the run under way, its epoch, and
    how long is left of it and of the study."""
    from tqdm.auto import tqdm

    with tqdm(total=len(todo), desc=f"study {study.name}", unit="run") as bar:
        progress = StudyProgress(bar, len(todo))
        for spec in todo:
            progress.start(spec.run_id)
            _run_one(spec, str(out), on_epoch=progress.epoch)
            progress.finish()
            if on_run_done:
                on_run_done(spec)


class StudyProgress:
    """The study bar's postfix: ``RUN | epoch 3/100 | run <= 02:10 | study ~ 14:05``.

    The run's time left is an upper bound (early stopping may end it sooner): epochs left times the
    mean epoch so far. The study's is that plus the mean of the runs finished in this session (or, before
    the first has finished, the current run's whole projected time) for each run still to start.
    """

    def __init__(self, bar: Any, total: int) -> None:
        self.bar, self.total = bar, total
        self.finished: list[float] = []
        self.run_id, self.started = "", 0.0

    def start(self, run_id: str) -> None:
        self.run_id, self.started = run_id, time.perf_counter()
        self.bar.set_postfix_str(run_id[:48], refresh=True)

    def epoch(self, epoch: int, max_epochs: int, per_epoch: float | None) -> None:
        parts = [self.run_id[:40], f"epoch {epoch}/{max_epochs}"]
        if per_epoch is not None:
            run_left = (max_epochs - epoch + 1) * per_epoch
            elapsed = time.perf_counter() - self.started
            per_run = statistics.fmean(self.finished) if self.finished else elapsed + run_left
            still = self.total - len(self.finished) - 1
            parts += [f"run <= {_interval(run_left)}", f"study ~ {_interval(run_left + still * per_run)}"]
        self.bar.set_postfix_str(" | ".join(parts), refresh=True)

    def finish(self) -> None:
        self.finished.append(time.perf_counter() - self.started)
        self.bar.update(1)


def _interval(seconds: float) -> str:
    from tqdm import tqdm

    return tqdm.format_interval(max(0.0, seconds))


def claim_study_dir(study: StudyConfig, out: Path, *, overwrite: bool = False) -> None:
    """Write ``study.yaml`` into ``out``, unless ``out`` holds another study (a ``study.yaml`` of another
    name, or a report with no ``study.yaml``): its study file and report would be replaced by ours.

    The same study with a changed grid is not another study: its runs are kept, the new grid's are added.
    """
    import yaml

    from emfm.errors import RunDirError

    path = out / "study.yaml"
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; name a folder for the study")
    if not overwrite and out.is_dir():
        owner: Any = None
        if path.is_file():
            try:
                owner = repr((yaml.safe_load(path.read_text()) or {}).get("name"))
            except (yaml.YAMLError, OSError, UnicodeDecodeError, AttributeError):
                owner = "(an unreadable study.yaml)"
        elif any((out / name).exists() for name in ("report.md", "results.csv")):
            owner = "(a report without study.yaml)"
        else:
            owner = repr(study.name)
        if owner != repr(study.name):
            raise RunDirError(
                f"{out} holds another study, {owner}, not {study.name!r}: its study.yaml and report would be "
                f"replaced; choose another --out, or pass --overwrite to take it over (its runs are kept)"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, study.to_yaml())


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
    """The representation analysis once per backbone, with the data root and feature cache of the
    study's defaults; one already done is reused only if it was done with these settings."""
    import json

    from emfm.analysis import run_analysis

    results: dict[str, dict] = {}
    if study.analysis is None:
        return results
    for backbone in study.backbones:
        d, config = analysis_dir(out, backbone), backbone_analysis(study, backbone)
        result = finished_analysis(d, config)
        if result is None:
            run_analysis(config, d)
            result = json.loads((d / "analysis.json").read_text())  # as a resumed study reads it
        results[backbone] = result
    return results


def backbone_analysis(study: StudyConfig, backbone: str):
    """The study's ``analysis:`` settings for one backbone, with the study's data root and cache."""
    assert study.analysis is not None
    return study.analysis.replace(
        backbone=backbone, data_root=study.defaults.get("data_root"), cache_dir=study.defaults.get("cache_dir")
    )


#: Analysis settings that change where features are kept or how many are read at a time, not the numbers.
_ANALYSIS_LOGISTICS = ("use_cache", "cache_dir", "chunk_size")


def finished_analysis(directory: Path, config) -> dict[str, Any] | None:
    """``analysis.json`` of ``directory`` if it parses and its ``config.yaml`` has ``config``'s settings
    (where the cache is and how many slices are read at a time aside); None means it is to be (re)done."""
    import json

    from emfm.analysis.config import AnalysisConfig
    from emfm.errors import ConfigError

    path, saved = directory / "analysis.json", directory / "config.yaml"
    if not (path.is_file() and saved.is_file()):
        return None
    try:
        done = AnalysisConfig.from_yaml(saved)
        result = json.loads(path.read_text())
    except (ConfigError, OSError, UnicodeDecodeError, ValueError):
        log.warning("%s is damaged; the analysis is done again", directory)
        return None
    def settings(c) -> dict[str, Any]:
        return {k: v for k, v in c.to_dict().items() if k not in _ANALYSIS_LOGISTICS}

    if settings(done) != settings(config):
        log.info("%s was analysed with other settings; the analysis is done again", directory)
        return None
    return result if isinstance(result, dict) else None


def collect_analyses(study: StudyConfig, out: Path) -> dict[str, dict]:
    """The analyses already done with the study's settings (for ``--aggregate-only``)."""
    results = {}
    if study.analysis is None:
        return results
    for backbone in study.backbones:
        result = finished_analysis(analysis_dir(out, backbone), backbone_analysis(study, backbone))
        if result is not None:
            results[backbone] = result
    return results
