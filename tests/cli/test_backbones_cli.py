"""`emfm backbones list` and `emfm backbones info`."""

from __future__ import annotations

import pytest

from emfm.cli import main


def test_list_is_offline_and_says_what_is_cached(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("download attempted"))
    assert main(["backbones", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header, *rows = out.strip().splitlines()
    assert header.split() == ["name", "family", "params", "patch", "width", "licence", "gated", "cached"]
    dinov3_l = next(r for r in rows if r.startswith("dinov3-l "))
    assert dinov3_l.split() == ["dinov3-l", "dinov3", "303.13", "M", "16", "1024", "DINOv3", "License", "yes", "no"]
    assert any(r.split()[:3] == ["openclip-l14", "openclip", "303.18"] for r in rows)


def test_info_of_the_real_checkpoint(shared_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = shared_dir / "weights" / "dinov2-vits14-imgfocus"
    assert main(["backbones", "info", str(path)]) == 0
    out = capsys.readouterr().out
    facts = dict(line.split(":", 1) for line in out.strip().splitlines())
    facts = {k.strip(): v.strip() for k, v in facts.items()}
    assert facts["name"] == "dinov2-vits14-imgfocus"
    assert facts["parameters"] == "22.06 M"
    assert (facts["patch"], facts["width"], facts["depth"]) == ("14", "384", "12")
    assert facts["mean"] == "0.485, 0.456, 0.406"
    assert facts["weights_id"].startswith("c1325d0c23f021d2")
    assert "local directory" in facts["source"] and "float16" in facts["source"]


def test_info_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["backbones", "info", "dinov2-lg"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emfm: error: unknown backbone 'dinov2-lg'. Did you mean 'dinov2-l'")
    assert err.count("\n") == 1
    assert main(["backbones", "info", "dinov3-b", "--cache-dir", str(tmp_path)]) == 2
    assert "are gated" in capsys.readouterr().err
