"""Ctrl-C (SIGINT) in the middle of training, through the real command: `emfm train` and `emfm study`
exit 130 saying "interrupted" and what was kept, and a rerun of the same command ends where an
uninterrupted one does."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from tests.helpers import write_folder_dataset

#: A line emfm logs as a training epoch ends (emfm.train.module's History): training is under way.
EPOCH_END = "emfm.train.module: epoch 1:"


def emfm(*argv: str) -> list[str]:
    return [sys.executable, "-m", "emfm", *argv]


def interrupt_after(argv: list[str], marker: str, count: int = 1, timeout: float = 180) -> tuple[int, str]:
    """Run ``argv``, send SIGINT once ``marker`` has appeared ``count`` times on its stderr, and return
    its exit status and stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # A job started in the background of a non-interactive shell (nohup, `cmd &`) inherits SIGINT ignored, and
    # Python then never raises KeyboardInterrupt: restore the default so the test means the same everywhere.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if sum(marker in x for x in lines) >= count:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(timeout):
        proc.kill()
        raise AssertionError("the marker never appeared:\n" + "".join(lines[-20:]))
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    reader.join(timeout=10)
    return code, "".join(lines)


def run_both(*argvs: list[str]) -> list[tuple[int, str]]:
    """Run the commands side by side (the rerun and the uninterrupted reference); (status, stdout) each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) for a in argvs]
    return [(p.wait(timeout=300), p.stdout.read()) for p in procs]  # type: ignore[union-attr]


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines), stderr[-2000:]
    return lines[-1]


def test_sigint_in_training_exits_130_and_a_rerun_trains_it_to_the_same_metrics(tiny_backbone_dir, tmp_path):
    data = write_folder_dataset(tmp_path / "a", n_train=6, n_test=2, shape=(40, 56), seed=4)

    def train(out: Path) -> list[str]:
        return emfm("train", "--backbone", str(tiny_backbone_dir), "--train", data, "--resolution", "56",
                    "--epochs", "25", "--patience", "0", "--min-steps", "0", "--set", "lr=0.001",
                    "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress")

    out = tmp_path / "run"
    code, err = interrupt_after(train(out), EPOCH_END)
    assert code == 130
    line = last_line(err)
    assert line.startswith("emfm: interrupted: ") and f"the run in {out} did not finish" in line
    assert "rerun the same command" in line
    assert (out / "config.yaml").is_file() and not (out / "metrics.json").exists()
    clean = tmp_path / "clean"
    assert [code for code, _ in run_both(train(out), train(clean))] == [0, 0]
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (out, clean))
    assert got["epochs_run"] == want["epochs_run"] == 25
    for key in ("test", "train", "best_epoch", "best_val_loss"):
        assert got[key] == want[key], key


METRIC_COLUMNS = ("run_id", "test_set", "seed", "fg_iou", "dice", "fg_iou_resized", "epochs_run", "best_epoch")


def rows(path: Path) -> list[tuple]:
    with open(path) as fh:
        return sorted(tuple(r[c] for c in METRIC_COLUMNS) for r in csv.DictReader(fh))


def test_sigint_in_a_study_exits_130_keeps_finished_runs_and_a_rerun_resumes(tiny_backbone_dir, tmp_path):
    a = write_folder_dataset(tmp_path / "a", n_train=6, n_test=2, shape=(40, 56), seed=5)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tiny", "backbones": [str(tiny_backbone_dir)], "train_sets": [a], "test_sets": [a], "seeds": [0, 1],
        "defaults": {"epochs": 20, "patience": 0, "min_steps": 0, "resolution": 56, "lr": 1e-3,
                     "cache_dir": str(tmp_path / "cache")},
    }))
    out = tmp_path / "study"
    code, err = interrupt_after(emfm("study", str(cfg), "--out", str(out)), EPOCH_END, count=2)  # in the 2nd run
    assert code == 130, err[-2000:]
    line = last_line(err)
    assert line == (f"emfm: interrupted: 1 of 2 runs of study tiny are complete and kept in {out / 'runs'}; "
                    "rerun the same command to resume")
    assert len(list(out.glob("runs/*/metrics.json"))) == 1 and len(list(out.glob("runs/*/config.yaml"))) == 2
    assert not (out / "results.csv").exists()
    clean = tmp_path / "clean"
    (code, printed), (clean_code, _) = run_both(emfm("study", str(cfg), "--out", str(out)),
                                                emfm("study", str(cfg), "--out", str(clean)))
    assert code == clean_code == 0 and "(1 run now, 1 already complete, 0 pending)" in printed
    assert rows(out / "results.csv") == rows(clean / "results.csv") and len(rows(clean / "results.csv")) == 2
