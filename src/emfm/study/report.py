"""The study report: results tables (Markdown and LaTeX), figures, protocol, splits and versions.

``report.md`` links its figures in ``figures/``; ``report.html`` is the same text with the figures
embedded, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markdown.treeprocessors import Treeprocessor

from emfm import rundir
from emfm._io import atomic_write_text
from emfm._plotting import new_figure, save_figure
from emfm.study.aggregate import summarise_cells
from emfm.study.config import Ablation, StudyConfig
from emfm.study.grid import RunSpec, analysis_dir

# The study's own figures (protocol.md): official DINOv2 with registers at 1022 px, deconv head.
REFERENCE = [
    ("DINOv2 ViT-S/14", "0.606 ± 0.008", "0.731 ± 0.007"),
    ("DINOv2 ViT-B/14", "0.716 ± 0.009", "0.774 ± 0.005"),
    ("DINOv2 ViT-L/14", "0.717 ± 0.006", "0.802 ± 0.007"),
    ("DINOv2 ViT-g/14", "0.783 ± 0.002", "0.852 ± 0.003"),
]


def _fmt(cell: dict[str, Any]) -> str:
    """``mean ± sd [t interval] (n=K)`` over K seeds; one seed: ``value [slice interval]† (n=1)``."""
    mean, sd, n = cell["mean"], cell["sd"], cell["n"]
    if sd is not None:
        interval = cell.get("interval")
        # a t interval of a few seeds can pass 0 or 1; an IoU cannot
        ci = f" [{max(0.0, interval[0]):.3f}, {min(1.0, interval[1]):.3f}]" if interval else ""
        return f"{mean:.3f} ± {sd:.3f}{ci} (n={n})"
    interval = cell.get("slice_interval")
    ci = f" [{interval[0]:.3f}, {interval[1]:.3f}]†" if interval else ""
    return f"{mean:.3f}{ci} (n={n})"


#: What the table's numbers are, for its caption and the section text.
TABLE_NOTE = (
    "mean ± sample SD over seeds with the 95% t interval over seeds in brackets, cut to [0, 1] (n = runs: seeds, "
    "times folds in a cross-validated cell); a cell of one run shows instead its 95% moving-block bootstrap "
    "interval over the test slices (†)"
)


def _px(size: Any) -> str:
    """``518 px`` for a whole-slice resize; ``native`` / ``scale 0.5`` as they are."""
    return f"{size} px" if str(size).isdigit() else str(size)


def _row_label(cell: dict[str, Any]) -> tuple[str, ...]:
    label = cell["ablation"] or ("balanced" if str(cell["balance"]) == "True" else "")
    if cell.get("align") not in (None, "", "none"):
        label = f"{label}, align {cell['align']}" if label else f"align {cell['align']}"
    if cell.get("label_budget"):
        budget = f"{cell['label_budget']} labelled slices"
        label = f"{label}, {budget}" if label else budget
    trained_on = cell["train_sets"].replace("+", " + ")
    adapter = f"{cell['adapter']} ({cell['lora_layout']})" if cell.get("lora_layout") else cell["adapter"]
    return (cell["backbone"], adapter, cell["head"], str(cell["resolution"]), trained_on, label)


def results_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[tuple[str, ...]]]:
    """Header, body (formatted cells) and row keys: one row per grid cell, one column per test set."""
    cells = summarise_cells(rows)
    tests: list[str] = []
    for c in cells:
        if c["test_set"] not in tests:
            tests.append(c["test_set"])
    tests.sort(key=lambda t: (t == "pooled", t))
    keyed: dict[tuple[str, ...], dict[str, str]] = {}
    for c in cells:
        keyed.setdefault(_row_label(c), {})[c["test_set"]] = _fmt(c)
    header = ["backbone", "adapter", "head", "px", "trained on", "variant", *[f"IoU {t}" for t in tests]]
    body = [[*key, *[vals.get(t, "–") for t in tests]] for key, vals in keyed.items()]
    return header, body, list(keyed)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def latex_table(header: Sequence[str], body: Sequence[Sequence[str]], caption: str) -> str:
    def esc(s: str) -> str:
        s = s.replace("±", "$\\pm$")
        return re.sub(r"([_&%#])", r"\\\1", s)

    cols = "l" * 6 + "c" * (len(header) - 6)
    lines = [
        "\\begin{table}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
        " & ".join(esc(h) for h in header) + " \\\\", "\\midrule",
        *[" & ".join(esc(c) for c in row) + " \\\\" for row in body],
        "\\bottomrule", "\\end{tabular}", f"\\caption{{{esc(caption)}}}", "\\end{table}",
    ]
    return "\n".join(lines)


def plot_by_train_set(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """IoU per test set (panels) and training set (groups), one bar per backbone/adapter/variant,
    with each seed as a dot and the sd as an error bar: single vs joint training at a glance."""
    import matplotlib
    import numpy as np

    cells = [c for c in summarise_cells(rows) if c["test_set"] != "pooled"]
    tests = sorted({c["test_set"] for c in cells})
    trains = list(dict.fromkeys(c["train_sets"] for c in cells))
    series = list(
        dict.fromkeys((c["backbone"], c["adapter"], c["head"], c["ablation"], c["resolution"]) for c in cells)
    )
    fig = new_figure(figsize=(max(5.5, 2.2 * len(trains)) * len(tests), 4.4), dpi=110)
    axes = fig.subplots(1, len(tests), squeeze=False)
    width = 0.8 / max(len(series), 1)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    many_backbones = len({t[0] for t in series}) > 1
    for ax, test in zip(axes[0], tests):
        labelled: set[int] = set()
        for k, ser in enumerate(series):
            label = " ".join(str(p) for p in (ser[1], ser[2], _px(ser[4]), ser[3]) if p)
            label += f" [{ser[0]}]" if many_backbones else ""
            for j, train in enumerate(trains):
                match = [c for c in cells if c["test_set"] == test and c["train_sets"] == train
                         and (c["backbone"], c["adapter"], c["head"], c["ablation"], c["resolution"]) == ser]
                if not match:
                    continue
                c = match[0]
                x = j - 0.4 + width * (k + 0.5)
                ax.bar(x, c["mean"], width * 0.9, yerr=c["sd"] or 0, capsize=3, color=colors[k % len(colors)],
                       label=None if k in labelled else label)
                labelled.add(k)
                ax.scatter(np.full(len(c["values"]), x), c["values"], s=10, color="black", zorder=3)
        ax.set_xticks(range(len(trains)), [t.replace("+", "\n+ ") for t in trains])
        ax.set_title(f"tested on {test}")
        ax.set_xlabel("trained on")
        ax.set_ylabel("foreground IoU (pooled)")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(uniq.values(), uniq.keys(), loc="upper center", ncol=min(len(uniq), 4), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    save_figure(fig, path, tight=False)


def plot_by_backbone(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """In-domain IoU (trained and tested on the same single set) by backbone and adapter, with seeds."""
    import numpy as np

    cells = [c for c in summarise_cells(rows) if c["train_sets"] == c["test_set"] and c["pairing"] == "by-number"]
    tests = sorted({c["test_set"] for c in cells})
    backbones = list(dict.fromkeys(c["backbone"] for c in cells))
    adapters = list(dict.fromkeys((c["adapter"], c["head"], c["resolution"]) for c in cells))
    fig = new_figure(figsize=(max(4.5, 1.8 * len(backbones) * len(adapters)) * max(len(tests), 1) / 1.5, 4.2), dpi=110)
    axes = fig.subplots(1, max(len(tests), 1), squeeze=False)
    width = 0.8 / max(len(adapters), 1)
    for ax, test in zip(axes[0], tests):
        for k, ad in enumerate(adapters):
            xs, means, sds = [], [], []
            for j, b in enumerate(backbones):
                m = [c for c in cells if c["test_set"] == test and c["backbone"] == b
                     and (c["adapter"], c["head"], c["resolution"]) == ad]
                if m:
                    x = j - 0.4 + width * (k + 0.5)
                    xs.append(x)
                    means.append(m[0]["mean"])
                    sds.append(m[0]["sd"] or 0)
                    ax.scatter(np.full(len(m[0]["values"]), x), m[0]["values"], s=10, color="black", zorder=3)
            ax.bar(xs, means, width * 0.9, yerr=sds, capsize=3, label=f"{ad[0]} + {ad[1]}, {_px(ad[2])}")
        ax.set_xticks(range(len(backbones)), backbones, rotation=15, ha="right")
        ax.set_title(f"trained and tested on {test}")
        ax.set_ylabel("foreground IoU (pooled)")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, tight=False)


def _read_json(path: Path) -> Any:
    """A run's JSON record, or None where it is missing or damaged: a report is written whatever a run left."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _splits_text(specs: Sequence[RunSpec], out: Path) -> str:
    seen: dict[str, str] = {}
    for spec in specs:
        splits = _read_json(spec.directory(out) / "splits.json")
        if not isinstance(splits, dict):
            continue
        for key, value in splits.items():
            if key.startswith("test:"):
                name = key[5:]
                ids = value["test"]
                listed = f": {', '.join(ids)}" if len(ids) <= 20 else f" ({ids[0]}..{ids[-1]})"
                seen.setdefault(f"{name} test", f"{len(ids)} slices" + listed)
            else:
                seen.setdefault(f"{key} train/val", f"{len(value['train'])} / {len(value['val'])} slices"
                                + (f" (val: {', '.join(value['val'])})" if len(value["val"]) <= 20 else ""))
    return "\n".join(f"- {k}: {v}" for k, v in seen.items())


def _versions(specs: Sequence[RunSpec], out: Path) -> str:
    """The software of the first finished run, then the hardware each finished run recorded (one line per
    distinct machine, with its run count: times are only comparable on one)."""
    from emfm.hardware import hardware_summary

    software = "no run has finished yet"
    for spec in specs:
        env = _read_json(spec.directory(out) / rundir.ENV_NAME)
        if isinstance(env, dict) and isinstance(env.get("libraries"), dict):
            libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
            software = (f"emfm {env['emfm']} (commit {env['git_commit']}), Python {env['python']}, {libs}; "
                        f"{env['platform']}")
            break
    machines: dict[str, int] = {}
    for spec in specs:
        metrics = _read_json(spec.directory(out) / rundir.METRICS_NAME)
        if isinstance(metrics, dict) and isinstance(metrics.get("hardware"), dict):
            line = hardware_summary(metrics["hardware"])
            machines[line] = machines.get(line, 0) + 1
    hardware = "".join(f"\n\nHardware ({n} run{'s' if n > 1 else ''}): {line}" for line, n in machines.items())
    return software + hardware


def _analysis_tables(result: dict[str, Any]) -> str:
    """The analysis numbers as Markdown tables: distances with intervals and baselines, probes, PCA."""
    nan = float("nan")
    out: list[str] = []
    for comp in result.get("comparisons", []):
        a, b = comp["datasets"]
        out.append(f"**{a} vs {b}** (95% bootstrap intervals; baseline = the same distance between two random "
                   "halves of one dataset, mean over repeats: the scale of \"no shift\")\n")
        out.append(f"| distance | estimator | value | 95% interval | baseline {a} | baseline {b} | samples | dim |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        rows = [("Fréchet", k, v) for k, v in comp.get("frechet", {}).items()]
        if "kid" in comp:
            rows.append(("KID", "unbiased MMD², cubic kernel", comp["kid"]))
        for dist, est, v in rows:
            iv = v.get("interval") or {}
            bl = v.get("baselines") or {}
            n = v.get("n_samples") or v.get("n_images") or {}
            note = " (singular covariance)" if v.get("singular") else ""
            out.append(
                f"| {dist} | {est}{note} | {v['value']:.2f} | {iv.get('low', nan):.2f} – {iv.get('high', nan):.2f} | "
                f"{(bl.get(a) or {}).get('mean', nan):.2f} | {(bl.get(b) or {}).get('mean', nan):.2f} | "
                f"{' / '.join(str(n[k]) for k in (a, b) if k in n)} | {v.get('dim', '')} |"
            )
        probe = comp.get("domain_probe")
        if probe:
            h, cv = probe.get("holdout", {}), probe.get("cross_validation", {})
            out.append(
                f"\nDomain probe (logistic regression on PCA-{probe.get('n_components')} features): hold-out accuracy "
                f"{h.get('accuracy', nan):.3f}, balanced accuracy {h.get('balanced_accuracy', nan):.3f}, "
                f"ROC-AUC {h.get('roc_auc', nan):.3f} (majority-class accuracy {h.get('majority_accuracy', nan):.3f}); "
                f"{cv.get('n_folds')}-fold CV balanced accuracy {cv.get('balanced_accuracy_mean', nan):.3f} ± "
                f"{cv.get('balanced_accuracy_std', nan):.3f}, AUC {cv.get('roc_auc_mean', nan):.3f}.\n"
            )
    probes = result.get("mitochondria_probe") or {}
    if probes:
        names = list(probes)
        layers = probes[names[0]].get("layers", [])
        out.append("Mitochondria probe: foreground IoU of test patches from a linear read-out of each block's tokens "
                   "(block index 0-based).\n")
        out.append("| block | " + " | ".join(names) + " |")
        out.append("|" + " --- |" * (len(names) + 1))
        for i, layer in enumerate(layers):
            out.append(f"| {layer} | " + " | ".join(f"{probes[n]['iou'][i]:.3f}" for n in names) + " |")
        trivial = " | ".join(f"{probes[n].get('trivial_iou', nan):.3f}" for n in names)
        out.append("| all patches foreground | " + trivial + " |")
    pca = result.get("pca") or {}
    if pca.get("explained_variance_ratio"):
        ev = pca["explained_variance_ratio"]
        out.append(f"\nPCA of the image embeddings: PC1 {100 * ev[0]:.1f}%, PC2 {100 * ev[1]:.1f}% of the variance; "
                   f"{len(ev)} components {100 * sum(ev):.1f}%.")
    return "\n".join(out)


def _analysis_section(analysis: dict[str, dict], out: Path, figures: Path) -> str:
    import shutil


    parts = []
    for backbone, result in analysis.items():
        meta = result.get("backbone")
        name = meta.get("name") if isinstance(meta, dict) else Path(backbone).name
        parts.append(f"### {name}\n")
        parts.append(_analysis_tables(result) + "\n")
        src = analysis_dir(out, backbone)
        for png in sorted(src.glob("*.png")):
            dest = figures / f"analysis_{src.name}_{png.name}"
            shutil.copyfile(png, dest)
            parts.append(f"![{png.stem}](figures/{dest.name})\n")
        parts.append(f"All numbers, with their protocols: `{src.relative_to(out) / 'analysis.json'}`.\n")
    return "\n".join(parts) if parts else "No analysis was run (add an `analysis:` section to the study config)."


def write_report(
    study: StudyConfig,
    specs: Sequence[RunSpec],
    rows: Sequence[dict[str, Any]],
    analysis: dict[str, dict],
    out: str | Path,
) -> dict[str, str]:
    """Write ``report.md``, ``report.html``, ``results.tex`` and ``figures/`` under ``out``.

    The table and figures are written first because the Markdown embeds the LaTeX and links the figures;
    the sections are then built in reading order (the analysis section copies its figures as it goes).
    """
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    header, body, _ = results_table(rows)
    caption = (
        f"Foreground IoU (pooled over each test set, native resolution), {TABLE_NOTE}; study {study.name}."
    )
    latex = latex_table(header, body, caption)
    atomic_write_text(out / "results.tex", latex + "\n")
    if rows:
        plot_by_train_set(rows, figures / "iou_by_train_set.png")
        plot_by_backbone(rows, figures / "iou_by_backbone.png")
    from emfm.study.alignment import alignment_text
    from emfm.study.comparisons import comparisons_text
    from emfm.study.crossval import crossval_text
    from emfm.study.label_efficiency import label_efficiency_text

    crossval = crossval_text(rows)
    comparisons = comparisons_text(rows)
    efficiency = label_efficiency_text(rows, figures)
    alignment = alignment_text(rows, figures)
    sections = [
        _title_section(study, specs, rows),
        *([_section("Label efficiency", efficiency)] if efficiency else []),
        *([_section("One model for several sets: domain alignment", alignment)] if alignment else []),
        _section("Results", _results_text(header, body, latex)),
        *([_section("Paired comparisons", comparisons)] if comparisons else []),
        *([_section("Cross-validation: the spread over folds beside the spread over seeds", crossval)]
          if crossval else []),
        _section("Ablations", _ablations_text(body)),
        _section("Reference: the published study", _reference_text()),
        _section("Representation analysis", _analysis_section(analysis, out, figures)),
        _section("Protocol", _protocol_text(study)),
        deviations_section(study, specs),
        _section("Splits", _splits_text(specs, out) or "No run has finished yet."),
        _section("Software", _versions(specs, out)),
    ]
    text = "\n".join(sections)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.html", _html_page(text, study.name, out))
    return {"report": str(out / "report.md"), "html": str(out / "report.html")}


def deviations_section(study: StudyConfig, specs: Sequence[RunSpec]) -> str:
    """Where the study's runs differ from the published protocol (:mod:`emfm.study.deviations`)."""
    from emfm.study.deviations import deviations_text

    return _section("Deviations from the published protocol", deviations_text([s.config for s in specs], study.seeds))


def _section(title: str, body: str) -> str:
    """One ``## title`` section; sections are joined by a blank line."""
    return f"## {title}\n\n{body}\n"


def _title_section(study: StudyConfig, specs: Sequence[RunSpec], rows: Sequence[dict[str, Any]]) -> str:
    """Title, description and how far the study is: a partial report must say it is partial."""
    done = len({r["run_id"] for r in rows})
    return f"""# emfm study: {study.name}

{study.description.strip()}

Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; {done} of {len(specs)} runs complete.
"""


def _results_text(header: Sequence[str], body: Sequence[Sequence[str]], latex: str) -> str:
    """The results table with what its numbers mean, the two figures, and the LaTeX for a paper."""
    return f"""Foreground IoU pooled over each test set (total intersection over total union of the foreground class,
at each mask's native resolution), {TABLE_NOTE}. "pooled" is the union of all test sets, dominated by the
larger one. Per-run numbers with each run's interval over slices (`fg_iou_low`, `fg_iou_high`), the slices
with no foreground in truth or prediction (`empty_slices`: no IoU of their own, counted, never dropped from a
mean), Dice and the study's resized-resolution IoU are in `results.csv`.

{markdown_table(header, body) if body else "No run has finished yet."}

![IoU by training set](figures/iou_by_train_set.png)

![IoU by backbone and adapter](figures/iou_by_backbone.png)

LaTeX (also in `results.tex`):

```latex
{latex}
```"""


def _ablations_text(body: Sequence[Sequence[str]]) -> str:
    """How to read the rows with a variant label (column 5), or that there are none."""
    if not any(row[5] for row in body):
        return "No ablation in this study."
    return (
        "Rows with a variant label are ablations. `text-sorted` pairs Lucchi++ images with masks by text-sorted "
        "file names, the data-composition mistake behind the study's ~0.05 joint-training figures, in the "
        "training data only: test sets are paired by number, so these rows measure the damage done to the model. "
        "`study-compose` is the study's exact setting: its compose script paired the Lucchi++ test set by sorted "
        "names too (2 of 165 slices meet their own mask) and it scored against those masks, pooled over both test "
        "sets (the `pooled` rows), so those rows measure the model and the wrong masks together. Compare each "
        "with the same row without the label."
    )


def _reference_text() -> str:
    """The published study's numbers, with the caveats that keep them from being compared one to one."""
    rows = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in REFERENCE)
    return (
        "Official DINOv2 with registers, 1022 px, deconv head, Lucchi++ (Fuster-Barceló and Uhlmann 2026, read "
        "from its\nrepository; mean ± SD over 5 seeds, IoU at the resized resolution). Not comparable one to one "
        "with backbones of other\nweights, heads or resolutions.\n\n"
        "| backbone | Lucchi++ frozen | Lucchi++ LoRA |\n| --- | --- | --- |\n" + rows
    )


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _ablation_text(ablation: Ablation) -> str:
    """One ablation: its settings and what it is restricted to (adapters, training sets, seeds)."""
    text = f"{ablation.name}: " + _settings(ablation.settings)
    if ablation.adapters:
        text += f" (adapters {', '.join(ablation.adapters)})"
    if ablation.train_sets:
        text += f" (trained on {', '.join('+'.join(t) for t in ablation.train_sets)})"
    if ablation.seeds:
        text += f" (seeds {', '.join(map(str, ablation.seeds))})"
    return text


def _protocol_text(study: StudyConfig) -> str:
    """What was run and how, so a reader can judge the numbers without opening the config."""
    shared = {k: v for k, v in study.defaults.items() if k not in ("data_root", "cache_dir")}
    per_adapter = "; ".join(f"{a}: " + _settings(o) for a, o in study.adapter_overrides.items())
    ablations = "; ".join(_ablation_text(a) for a in study.ablations)
    backbones = ", ".join(f"`{Path(b).name}`" for b in study.backbones)
    return f"""- Backbones: {backbones}. A backbone is reported under its own name;
  a local checkpoint is never called by the name of the model it was initialised from.
- Adapters: {", ".join(study.adapters)}; heads: {", ".join(study.heads)}; seeds: {", ".join(map(str, study.seeds))}.
- Shared settings: {_settings(shared) or "the defaults"}.
- Per-adapter settings: {per_adapter or "none"}.
- Ablations: {ablations or "none"}.
- Training: AdamW, Dice loss with softmax over both classes, gradient clipping, early stopping on validation
  loss; the weights of the best validation epoch are kept. Validation: 10% of each training set (seed 42),
  shipped as split files.
- Input: grey slices repeated to 3 channels, normalised, resized so the longest edge is the resolution and
  each side floored to a multiple of the patch size; logits resized bilinearly to each mask's native size
  before the argmax."""


def _own_figure(out: Path, src: str) -> Path | None:
    """The file ``src`` names if it is one of the study's own figures (a PNG under ``out/figures``)."""
    if not src or urlsplit(src).scheme or src.startswith(("/", "\\")):
        return None
    figures = (out / "figures").resolve()
    path = (out / src).resolve()
    return path if path.suffix == ".png" and path.is_relative_to(figures) and path.is_file() else None


class _SharedPage(Treeprocessor):
    """Embeds the study's own figures; turns other images into their alt text and unsafe links into text."""

    def __init__(self, md: Any, out: Path) -> None:
        super().__init__(md)
        self.out = out

    def run(self, root: Any) -> None:
        for element in root.iter():
            if element.tag == "img":
                path = _own_figure(self.out, element.get("src", ""))
                if path is not None:
                    element.set("src", "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode())
                else:
                    alt, tail = element.get("alt") or "image", element.tail
                    element.clear()
                    element.tag, element.text, element.tail = "span", f"[{alt}: image not embedded]", tail
            elif element.tag == "a" and urlsplit(element.get("href", "")).scheme not in _LINK_SCHEMES:
                element.attrib.pop("href", None)
                element.tag = "span"


#: Link schemes kept in the shared page ("" is a relative link, such as ``results.csv``).
_LINK_SCHEMES = ("", "http", "https", "mailto")


def _html_page(text: str, title: str, out: Path) -> str:
    """The Markdown as one self-contained HTML page meant to be shared: the study's own figures (under
    ``out/figures``) embedded as data URIs, and nothing else taken in.

    Text from the study config (its description, ablation names, settings) is text: raw HTML in it is
    escaped, not passed through (Python-Markdown passes it through by default), links keep only web
    and mail addresses and relative ones, and an image that is not one of the study's figures (an
    absolute path, ``../``) is shown as its alt text instead of inlining a file from the author's disk.
    """
    import html

    import markdown

    md = markdown.Markdown(extensions=["tables", "fenced_code"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_SharedPage(md, out), "emfm_shared_page", 0)  # after the inline patterns
    html_body = md.convert(text)
    title = html.escape(title)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>emfm study {title}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px}"
        "th{background:#f3f3f3}img{max-width:100%}pre{background:#f7f7f7;padding:0.8em;overflow-x:auto}"
        f"</style></head><body>{html_body}</body></html>"
    )
