"""run_study in-process: results.csv, report.md / report.html / results.tex with figures, the ablation label,
the analysis section, and skipping of complete runs."""

from __future__ import annotations

import csv
import json

from emfm import rundir
from emfm.hardware import hardware_summary
from emfm.study.config import StudyConfig
from emfm.study.grid import expand_grid
from emfm.study.report import write_report
from emfm.study.runner import run_study


def test_study_writes_table_report_and_skips_complete_runs(tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    study = StudyConfig.from_dict({
        "name": "tiny", "backbones": [str(tiny_backbone_dir)], "adapters": ["frozen"], "heads": ["linear"],
        "train_sets": [a, f"{a},{b}"], "test_sets": [a, b], "seeds": [0, 1],
        "defaults": {"epochs": 2, "resolution": 56, "lr": 1e-3, "cache_dir": str(tmp_path / "cache")},
        "ablations": [{"name": "text-sorted", "pairing": "text-sorted", "train_sets": [f"{a},{b}"]}],
        "analysis": {"datasets": [a, b], "resolution": 56, "n_boot": 10, "layers": [-1], "baseline_repeats": 5},
    })
    done = []
    out = tmp_path / "study"
    summary = run_study(study, out, on_run_done=done.append)
    assert summary["runs"] == 6 and summary["ran"] == 6 and summary["pending"] == 0 and len(done) == 6
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 * 3
    assert {r["ablation"] for r in rows} == {"", "text-sorted"}
    assert {r["pairing"] for r in rows if r["ablation"]} == {"text-sorted"}
    assert all(0.0 <= float(r["fg_iou"]) <= 1.0 for r in rows)
    report = (out / "report.md").read_text()
    assert "± " in report and "(n=2)" in report and "text-sorted" in report
    assert "figures/iou_by_train_set.png" in report and (out / "figures" / "iou_by_train_set.png").stat().st_size > 0
    assert "Representation analysis" in report and "analysis_" in report
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="figures/' not in html
    tex = (out / "results.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex
    again = run_study(study, out, on_run_done=done.append)
    assert again["ran"] == 0 and again["skipped"] == 6 and len(done) == 6


def test_report_prints_a_hardware_line_per_machine_with_its_run_count(tmp_path):
    """From the hardware each run's metrics.json recorded; no training needed, so the runs are written by hand."""
    study = StudyConfig.from_dict({
        "name": "hw", "backbones": ["dinov2-s"], "adapters": ["frozen"], "heads": ["linear"],
        "train_sets": ["lucchi_pp"], "test_sets": ["lucchi_pp"], "seeds": [0, 1, 2, 3],
    })
    specs = expand_grid(study)
    flags = {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": False, "amx_tile": False}
    laptop = {"cpu": {"model": "Test CPU", "cores": 2, "flags": flags}, "torch": "2.0.0", "torch_threads": 2,
              "kernels": {"blas": "mkl"}, "gpu": None}
    server = {**laptop, "gpu": {"name": "A100", "count": 1, "capability": "8.0", "cuda": "12.4", "cudnn": 9,
                                "bf16": True}}
    for spec, hardware in zip(specs, (laptop, laptop, server, None)):  # the last run has not finished
        if hardware:
            spec.directory(tmp_path).mkdir(parents=True)
            (spec.directory(tmp_path) / rundir.METRICS_NAME).write_text(json.dumps({"hardware": hardware}))
    write_report(study, specs, [], {}, tmp_path)
    software = (tmp_path / "report.md").read_text().split("## Software", 1)[1]
    assert f"Hardware (2 runs): {hardware_summary(laptop)}" in software
    assert f"Hardware (1 run): {hardware_summary(server)}" in software
    assert software.count("Hardware (") == 2 and "A100" in hardware_summary(server)


def test_a_cell_shows_its_t_interval_cut_to_0_1_or_for_one_seed_its_slice_interval():
    from emfm.study.report import _fmt

    two = {"mean": 0.2, "sd": 0.1, "n": 2, "interval": (-0.7, 1.1), "slice_interval": None}
    assert _fmt(two) == "0.200 ± 0.100 [0.000, 1.000] (n=2)"
    one = {"mean": 0.5, "sd": None, "n": 1, "interval": None, "slice_interval": (0.45, 0.56)}
    assert _fmt(one) == "0.500 [0.450, 0.560]† (n=1)"
    assert _fmt({**one, "slice_interval": None}) == "0.500 (n=1)"
