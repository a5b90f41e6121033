"""The analysis on the real data with the one real backbone here (slow: a ViT-S over ~350 slices on CPU).

dinov2-vits14-imgfocus is a DINOv2-architecture ViT-S/14 fine-tuned for saliency, NOT the official
DINOv2 (see ../shared/README.md); its numbers are reported under its own name. Run with
``python -m pytest -m slow tests/analysis/test_real_analysis.py``; the first run encodes ~350 slices
(about 10 minutes on 2 CPU cores), later runs read the feature cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emfm.analysis import AnalysisConfig, run_analysis

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
WEIGHTS = SHARED / "weights" / "dinov2-vits14-imgfocus"


@pytest.mark.slow
def test_lucchi_vs_vnc_with_dinov2_vits14_imgfocus(tmp_path):
    if not (SHARED / "data" / "lucchi_pp").is_dir() or not WEIGHTS.is_dir():
        pytest.skip(f"{SHARED} with the data and weights is not present")
    config = AnalysisConfig(
        backbone=str(WEIGHTS),
        datasets=["lucchi_pp", "vnc"],
        data_root=str(SHARED / "data"),
        resolution=518,
        layers=[5, 6, 11],
        cache_dir=None,  # the default feature cache ($EMFM_CACHE/features): a second run reads it
    )
    result = run_analysis(config, tmp_path / "analysis", progress=False)
    assert result["backbone"]["name"] == "dinov2-vits14-imgfocus"
    assert result["datasets"]["lucchi_pp"]["n_images"] == 165 and result["datasets"]["vnc"]["n_images"] == 17
    (pair,) = result["comparisons"]
    for name, fd in pair["frechet"].items():
        assert fd["value"] > 0 and fd["above_baselines"], name
    assert pair["frechet"]["full"]["singular"] is True
    assert pair["domain_probe"]["cross_validation"]["roc_auc_mean"] > 0.95
    lucchi = result["mitochondria_probe"]["lucchi_pp"]
    iou = dict(zip(lucchi["layers"], lucchi["iou"]))
    # ../shared/README.md: 0.63 from a middle layer, 0.48 from the last, 0.36 with random weights.
    assert max(iou[5], iou[6]) > 0.55 and iou[11] < max(iou[5], iou[6])
    assert all(v > 3 * lucchi["trivial_iou"] for v in iou.values())
