"""One adaptation end to end: check, load, adapt, write a run directory like any other.

Everything that can be refused is refused before anything is written, and all but what needs the model
before the backbone is loaded: an unknown method or setting, a missing run, an ``--out`` that is the source
run or holds something else, a target that is not there; then a run the method cannot adapt. The work is
done in memory; only then is ``--out`` created and written: ``config.yaml`` (the source's, verbatim, so
``emfm evaluate --run`` and ``emfm predict --run`` take the adapted run like any other), ``env.json``, the
checkpoint (the source's format, :func:`~emfm.models.checkpoint.save_checkpoint`: the head changed, the
adapter's backbone-side tensors as they were), the source's ``splits.json`` (the labelled slices behind the
model) and, last and atomically, ``adapt.json``: source run, method, settings, target, steps, seconds and
the method's record. The source run directory is read and never written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emfm import __version__, rundir
from emfm._io import atomic_write_json, atomic_write_text, finite_json
from emfm.adapt._base import ADAPT_METHODS, Adapted, AdaptMethod
from emfm.adapt.source import SPLITS_NAME, SourceRun, check_run_dir, load_source_run, standardise
from emfm.adapt.target import TargetSet, load_target
from emfm.errors import RunDirError

log = logging.getLogger(__name__)

ADAPT_NAME = "adapt.json"


def create_method(name: str, settings: Mapping[str, Any] | None = None) -> AdaptMethod:
    """A registered method with its settings; an unknown name lists the valid ones, a bad setting names itself."""
    return ADAPT_METHODS.get(name)(settings)


def _identity(record: Mapping[str, Any]) -> tuple:
    """What makes two adaptations the same job (a rerun into the same ``--out`` replaces it)."""
    target = record.get("target") or {}
    return (record.get("source_run"), record.get("method"), record.get("settings"), target.get("spec"),
            target.get("max_slices"))


def check_out(out: Path, run_dir: Path, wanted: Mapping[str, Any], *, overwrite: bool) -> None:
    """Refuse an ``--out`` that is (or is inside) the source run, is a file, or holds anything but an earlier
    run of this same adaptation, unless ``overwrite`` (the source run is refused even then)."""
    resolved = out.expanduser().resolve()
    if resolved == run_dir or run_dir in resolved.parents:
        raise RunDirError(
            f"--out {out} is inside the source run {run_dir}, which is never modified; choose another --out"
        )
    if resolved.exists() and not resolved.is_dir():
        raise RunDirError(f"--out {out} is a file, not a run directory; choose another --out")
    if overwrite or not resolved.is_dir() or not any(resolved.iterdir()):
        return
    try:
        previous = json.loads((resolved / ADAPT_NAME).read_text())
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict) or _identity(previous) != _identity(wanted):
        raise RunDirError(
            f"{out} already holds something else (not this adaptation of {run_dir}); choose another --out or pass "
            f"--overwrite"
        )


def adapt_run(
    run_dir: str | Path,
    target: str,
    method: str,
    out: str | Path,
    *,
    settings: Mapping[str, Any] | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    backbone: str | Path | None = None,
    max_slices: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Adapt the run in ``run_dir`` to the unlabelled ``target`` with ``method``; write the adapted run to ``out``.

    Args:
        run_dir: a finished run (``emfm train --out``, or an earlier ``emfm adapt --out``).
        target: a volume, ``folder:PATH`` or a dataset name (:func:`emfm.adapt.target.load_target`).
        method: a registered method name (``adabn``, ``self-training``).
        out: the adapted run's directory.
        settings: the method's settings (``--set KEY=VALUE``).
        data_root: where a target dataset lives (default: the run's data root).
        cache_dir: the feature cache (default: the run's).
        backbone: where the run's backbone weights are now, if they moved.
        max_slices: use at most this many target slices, spread evenly through it.
        overwrite: replace an ``--out`` that holds something else.
        progress: progress bars.

    Returns:
        The ``adapt.json`` record.
    """
    from emfm.config import TrainConfig, load_yaml

    started = time.perf_counter()
    chosen = create_method(method, settings)
    source_dir = check_run_dir(run_dir)
    wanted = {"source_run": str(source_dir), "method": chosen.name, "settings": chosen.settings_dict(),
              "target": {"spec": target, "max_slices": max_slices}}
    out = Path(out)
    check_out(out, source_dir, wanted, overwrite=overwrite)
    config = TrainConfig.from_dict(load_yaml(source_dir / rundir.CONFIG_NAME))
    data = load_target(target, data_root=data_root or config.data_root, max_slices=max_slices)  # before the backbone
    source = load_source_run(source_dir, backbone_path=backbone, cache_dir=cache_dir)
    chosen.check(source)
    seen = data.standardised(lambda images: standardise(source, list(images)))
    log.info("adapting %s to %s with %s", source_dir, data.description, chosen.name)
    adapted = chosen.adapt(source, seen, progress=progress)
    return write_adapted(out, source, data, chosen, adapted, wanted, started)


def write_adapted(
    out: Path, source: SourceRun, target: TargetSet, method: AdaptMethod, adapted: Adapted, wanted: Mapping[str, Any],
    started: float,
) -> dict[str, Any]:
    """Write the adapted run directory (``out`` was checked by :func:`check_out`); ``adapt.json`` last, so its
    presence says the run is whole."""
    from emfm.config import TrainConfig
    from emfm.models.checkpoint import CHECKPOINT_NAME, save_checkpoint

    out.expanduser().mkdir(parents=True, exist_ok=True)
    (out / ADAPT_NAME).unlink(missing_ok=True)
    (out / "evaluation.json").unlink(missing_ok=True)  # scores of an earlier model in this directory
    run_dir = rundir.prepare(out, source.config_yaml, overwrite=True, load=TrainConfig.from_dict)
    adapter = adapted.info.make_adapter()
    save_checkpoint(run_dir / CHECKPOINT_NAME, adapted.segmenter, adapted.info, adapter.state(source.backbone))
    splits = source.run_dir / SPLITS_NAME
    if splits.is_file():
        atomic_write_text(run_dir / SPLITS_NAME, splits.read_text())
    record = {
        "source_run": wanted["source_run"], "source_checkpoint_sha256": source.checkpoint_sha256,
        "method": method.name, "method_source": method.source, "settings": wanted["settings"],
        "target": {**target.record(), **wanted["target"]}, "steps": adapted.steps,
        "seconds": round(time.perf_counter() - started, 2), "summary": adapted.summary, "emfm_version": __version__,
        **adapted.record,
    }
    atomic_write_json(run_dir / ADAPT_NAME, finite_json(record))
    return record
