"""LoRA's two layouts: ``fused-qkv`` (the study's LoRA on a packed ``attn.qkv``, written by hand) and
``separate`` (peft on q, k, v and the output projection, every earlier emfm run)."""

from __future__ import annotations

import json

import pytest
import torch

from emfm.adapters import create_adapter
from emfm.adapters.fused_qkv import GroupedLoraLinear, LowRankUpdate
from emfm.adapters.lora import LoraSettings, apply_lora, lora_param_count
from emfm.backbones import create_backbone
from emfm.backbones._testing import write_random_checkpoint
from emfm.errors import CheckpointFormatError, ConfigError

WIDTH, DEPTH, RANK, ALPHA = 32, 2, 4, 8.0
# Where each family keeps its attention: (blocks, attention module, q, k, v, output projection).
FAMILIES = {
    "dinov2": (lambda m: m.encoder.layer, "attention", "q_proj", "k_proj", "v_proj", "o_proj"),
    "dinov3": (lambda m: m.model.layer, "attention", "q_proj", "k_proj", "v_proj", "o_proj"),
    "openclip": (lambda m: m.encoder.layers, "self_attn", "q_proj", "k_proj", "v_proj", "out_proj"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("layout_bb")
    return {f: str(write_random_checkpoint(f, base / f, hidden_size=WIDTH, num_layers=DEPTH, num_heads=2))
            for f in FAMILIES}


def fused_backbone(path: str, layout: str = "fused-qkv", seed: int = 0):
    """A tiny random backbone in float64 with LoRA of ``layout`` whose A and B are random (B is zero at init)."""
    backbone = create_backbone(path).double()
    adapter = create_adapter("lora", {"rank": RANK, "alpha": ALPHA, "layout": layout})
    adapter.prepare(backbone)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return backbone.eval(), adapter


def attention_parts(model, family: str, block: int):
    blocks, attn, q, k, v, o = FAMILIES[family]
    attention = getattr(blocks(model)[block], attn)
    return attention, [getattr(attention, n) for n in (q, k, v)], getattr(attention, o)


def base_weights(linear) -> tuple[torch.Tensor, torch.Tensor]:
    layer = linear.base_layer if isinstance(linear, GroupedLoraLinear) else linear
    bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features, dtype=layer.weight.dtype)
    return layer.weight.detach().clone(), bias.detach().clone()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fused_qkv_equals_lora_on_one_fused_qkv_linear(family, checkpoints):
    """q, k and v of every block are LoRA on W_qkv = [W_q; W_k; W_v] with one update (alpha / r) B A, built by
    hand as one nn.Linear; the output projection an ordinary LoRA; the backbone's tokens agree to 1e-9."""
    backbone, _ = fused_backbone(checkpoints[family])
    reference = create_backbone(checkpoints[family]).double().eval()
    scale = ALPHA / RANK
    x = torch.randn(2, 5, WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for block in range(DEPTH):
        attention, (q, k, v), out = attention_parts(backbone.model, family, block)
        _, ref_qkv, ref_out = attention_parts(reference.model, family, block)
        update = attention.lora_qkv
        assert update.lora_A.weight.shape == (RANK, WIDTH) and update.lora_B.weight.shape == (3 * WIDTH, RANK)
        fused = torch.nn.Linear(WIDTH, 3 * WIDTH, dtype=torch.float64)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([base_weights(m)[0] for m in ref_qkv])
                               + scale * update.lora_B.weight @ update.lora_A.weight)
            fused.bias.copy_(torch.cat([base_weights(m)[1] for m in ref_qkv]))
        with torch.no_grad():
            want = fused(x).split(WIDTH, dim=-1)
            for got, expected in zip((q(x), k(x), v(x)), want):
                torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
            own = getattr(attention, f"lora_{FAMILIES[family][-1]}")
            w, b = base_weights(ref_out)
            plain_lora = x @ (w + scale * own.lora_B.weight @ own.lora_A.weight).T + b
            torch.testing.assert_close(out(x), plain_lora, atol=1e-12, rtol=0)
            for linear, rows in zip(ref_qkv, fused.weight.split(WIDTH)):  # the reference backbone: W_qkv packed
                linear.weight.copy_(rows)
            ref_out.weight.copy_(w + scale * own.lora_B.weight @ own.lora_A.weight)
    pixels = torch.randn(2, 3, 4 * backbone.patch_size, 4 * backbone.patch_size, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = backbone.encode(pixels, layers=[0]), reference.encode(pixels, layers=[0])
    torch.testing.assert_close(got.patch_grid, want.patch_grid, atol=1e-9, rtol=0)
    torch.testing.assert_close(got.layers[0], want.layers[0], atol=1e-9, rtol=0)
    assert got.patch_grid.abs().max() > 0 and not torch.allclose(  # the update changed the tokens
        got.patch_grid, create_backbone(checkpoints[family]).double().eval().encode(pixels).patch_grid)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_parameter_counts_of_both_layouts(family, checkpoints):
    fused = create_backbone(checkpoints[family])
    n_fused = create_adapter("lora", {"rank": RANK, "layout": "fused-qkv"}).prepare(fused)
    # per block: one A (r x d) and one B (3d x r) for q/k/v, and A, B (r x d, d x r) for the output projection
    assert n_fused == DEPTH * (RANK * (WIDTH + 3 * WIDTH) + RANK * (WIDTH + WIDTH))
    assert n_fused == lora_param_count(DEPTH, WIDTH, RANK, "fused-qkv")
    assert all(p.requires_grad == ("lora_" in n) for n, p in fused.named_parameters())
    separate = create_backbone(checkpoints[family])
    n_separate = create_adapter("lora", {"rank": RANK}).prepare(separate)  # the default, unchanged: peft's
    assert n_separate == DEPTH * 4 * (RANK * WIDTH + WIDTH * RANK) == lora_param_count(DEPTH, WIDTH, RANK, "separate")
    assert any(".lora_A.default." in n for n, _ in separate.named_parameters())
    assert all(p.requires_grad == ("lora_" in n) for n, p in separate.named_parameters())


def test_vit_l_counts_are_the_studys_2_36_m_against_3_15_m():
    """ViT-L (d 1024, 24 blocks, rank 16): 24 x 16 x (4096 + 2048) fused, 24 x 4 x 16 x 2048 separate, counted
    by arithmetic and on the real DINOv2-L architecture (built on the meta device: no memory, no weights)."""
    import transformers
    from peft import LoraConfig, inject_adapter_in_model

    from emfm.adapters.fused_qkv import add_fused_qkv_lora

    assert lora_param_count(24, 1024, 16, "fused-qkv") == 24 * 16 * (4096 + 2048) == 2_359_296
    assert lora_param_count(24, 1024, 16, "separate") == 24 * 4 * 16 * 2048 == 3_145_728
    config = transformers.Dinov2WithRegistersConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                                    num_register_tokens=4)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    counts = {}
    for layout in ("fused-qkv", "separate"):
        with torch.device("meta"):
            model = transformers.Dinov2WithRegistersModel(config)
        if layout == "fused-qkv":
            add_fused_qkv_lora(model, targets, LoraSettings(layout="fused-qkv"))
        else:
            inject_adapter_in_model(LoraConfig(r=16, lora_alpha=32, target_modules=targets), model)
        counts[layout] = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert counts == {"fused-qkv": 2_359_296, "separate": 3_145_728}


def test_fused_init_is_peft_s_kaiming_a_and_zero_b(checkpoints):
    backbone = create_backbone(checkpoints["dinov2"])
    create_adapter("lora", {"rank": RANK, "layout": "fused-qkv"}).prepare(backbone)
    update = backbone.model.encoder.layer[0].attention.lora_qkv
    assert torch.count_nonzero(update.lora_B.weight) == 0
    bound = 1 / WIDTH**0.5  # kaiming_uniform_(a=sqrt(5)) on fan_in d: U(-1/sqrt(d), 1/sqrt(d)), as nn.Linear and peft
    a = update.lora_A.weight
    assert a.abs().max() <= bound and a.abs().max() > 0.5 * bound and a.std() > 0.3 * bound


@pytest.mark.parametrize("layout", ["fused-qkv", "separate"])
def test_state_round_trips_into_a_fresh_backbone(layout, checkpoints):
    trained, adapter = fused_backbone(checkpoints["dinov3"], layout, seed=3)
    state = adapter.state(trained)
    assert state and all("lora_" in k for k in state)
    assert any(".lora_qkv." in k for k in state) == (layout == "fused-qkv")
    fresh = create_backbone(checkpoints["dinov3"]).double()
    again = create_adapter("lora", {"rank": RANK, "alpha": ALPHA, "layout": layout})
    again.prepare(fresh)
    again.load_state(fresh, state)
    pixels = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(fresh.eval().encode(pixels).patch_grid, trained.encode(pixels).patch_grid)


def test_a_checkpoint_of_the_other_layout_is_refused_in_one_line(checkpoints):
    _, separate = fused_backbone(checkpoints["dinov2"], "separate")
    separate_state = separate.state(_)
    backbone, fused = fused_backbone(checkpoints["dinov2"], "fused-qkv")
    with pytest.raises(CheckpointFormatError, match="separate layout but its settings say lora_layout fused-qkv"):
        fused.load_state(backbone, separate_state)
    other, adapter = fused_backbone(checkpoints["dinov2"], "separate")
    with pytest.raises(CheckpointFormatError, match="fused-qkv layout but its settings say lora_layout separate"):
        adapter.load_state(other, fused.state(backbone))
    wrong_rank = create_backbone(checkpoints["dinov2"]).double()
    adapter = create_adapter("lora", {"rank": 2, "layout": "fused-qkv"})
    adapter.prepare(wrong_rank)
    with pytest.raises(CheckpointFormatError, match="do not fit this backbone") as info:
        adapter.load_state(wrong_rank, fused.state(backbone))
    assert "\n" not in str(info.value)


def test_a_backbone_without_q_k_and_v_is_refused_in_one_line(checkpoints):
    for targets in (["o_proj"], ["q_proj", "o_proj"]):
        backbone = create_backbone(checkpoints["dinov2"])
        with pytest.raises(ConfigError, match="no separate q, k and v projections.*--lora-layout separate"):
            apply_lora(backbone, LoraSettings(layout="fused-qkv"), targets)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    from emfm.adapters.fused_qkv import add_fused_qkv_lora

    with pytest.raises(ConfigError, match="no separate q, k and v"):
        add_fused_qkv_lora(model, ["qkv"], LoraSettings(layout="fused-qkv"))


def test_the_older_dinov2_names_query_key_value_dense_are_grouped_too():
    """transformers before 5 named DINOv2's projections attention.attention.query/key/value and
    attention.output.dense: the groups come from the names, wherever the modules sit."""
    from emfm.adapters.fused_qkv import add_fused_qkv_lora, qkv_groups

    class SelfAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value = (torch.nn.Linear(8, 8) for _ in range(3))

    class Output(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = torch.nn.Linear(8, 8)

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention, self.output = SelfAttention(), Output()

    model = torch.nn.ModuleDict({"layer": torch.nn.ModuleList([Attention(), Attention()])})
    targets = ["query", "key", "value", "dense"]
    groups, outputs = qkv_groups(model, targets)
    assert groups == [(f"layer.{i}.attention", ["query", "key", "value"]) for i in (0, 1)]
    assert outputs == ["layer.0.output.dense", "layer.1.output.dense"]
    assert add_fused_qkv_lora(model, targets, LoraSettings(rank=2, layout="fused-qkv")) == 2
    assert isinstance(model["layer"][0].attention.lora_qkv, LowRankUpdate)
    assert isinstance(model["layer"][1].output.dense, GroupedLoraLinear)


def test_with_dropout_q_k_and_v_share_one_dropout_mask(checkpoints):
    """The packed layer drops one mask of x for q, k and v together; the hand-written layout does the same."""
    backbone = create_backbone(checkpoints["dinov2"])
    create_adapter("lora", {"rank": RANK, "dropout": 0.5, "layout": "fused-qkv"}).prepare(backbone)
    attention = backbone.model.encoder.layer[0].attention
    with torch.no_grad():
        attention.lora_qkv.lora_B.weight.fill_(1.0)
    attention.train()
    x = torch.randn(1, 3, WIDTH)
    update = attention.lora_qkv
    deltas = [m(x) - m.base_layer(x) for m in (attention.q_proj, attention.k_proj, attention.v_proj)]
    # B is all ones, so every member's update is s * sum over ranks of A(dropout(x)): the same for q, k and v
    torch.testing.assert_close(deltas[0], deltas[1])
    torch.testing.assert_close(deltas[0], deltas[2])
    assert update.scaling == 32 / RANK


def test_the_layout_is_a_config_key_and_a_flag_and_the_default_is_separate():
    from emfm.cli import build_parser
    from emfm.cli.train import build_config
    from emfm.config import TrainConfig

    assert TrainConfig.from_dict({"backbone": "b", "train": "x", "adapter": "lora"}).adapter_settings["layout"] == (
        "separate")
    config = TrainConfig.from_dict({"backbone": "b", "train": "x", "adapter": "lora", "lora_layout": "fused-qkv"})
    assert config.adapter_settings == {"rank": 16, "alpha": 32, "dropout": 0.0, "layout": "fused-qkv"}
    with pytest.raises(ConfigError, match="unknown lora_layout 'fused'; use one of 'fused-qkv', 'separate'"):
        TrainConfig.from_dict({"backbone": "b", "train": "x", "adapter": "lora", "lora_layout": "fused"})
    args = build_parser().parse_args(["train", "--backbone", "b", "--train", "x", "--adapter", "lora",
                                      "--lora-layout", "fused-qkv"])
    assert build_config(args).adapter_settings["layout"] == "fused-qkv"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--lora-layout", "packed"])
    frozen = TrainConfig.from_dict({"backbone": "b", "train": "x", "lora_layout": "fused-qkv"})
    assert frozen.adapter_settings == {}  # a study's shared defaults may set it for its frozen runs too


def test_run_ids_keep_separate_runs_and_give_fused_runs_their_own(monkeypatch):
    """Existing LoRA runs (separate) keep their ids, so a study resumes them; the published preset's runs are
    fused-qkv, with other ids, so a separate run is never taken for one."""
    import hashlib
    from pathlib import Path

    from emfm.config import TrainConfig
    from emfm.study.config import StudyConfig
    from emfm.study.grid import _ID_VERSION, _LATER_SETTINGS, _run_id, expand_grid

    separate = TrainConfig.from_dict({"backbone": "b", "train": "x", "adapter": "lora"})
    old = separate.to_dict()  # what the digest saw before the layout existed: no layout key
    old["adapter_settings"] = {k: v for k, v in old["adapter_settings"].items() if k != "layout"}
    # every setting added later is left out of the digest at its default
    old = {**{k: v for k, v in old.items() if k not in _LATER_SETTINGS}, "emfm_version": _ID_VERSION}
    digest = hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:8]
    assert _run_id(separate, "").endswith(digest)
    fused = separate.replace(adapter_settings={**separate.adapter_settings, "layout": "fused-qkv"})
    assert _run_id(fused, "") != _run_id(separate, "")

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    specs = expand_grid(StudyConfig.from_yaml(root / "configs" / "study.yaml"))
    lora = [s for s in specs if s.config.adapter == "lora"]
    assert lora and {s.config.adapter_settings["layout"] for s in lora} == {"fused-qkv"}
    assert all(s.config.adapter_settings == {"rank": 16, "alpha": 32, "dropout": 0.0, "layout": "fused-qkv"}
               for s in lora)


def test_a_separate_runs_metrics_never_complete_a_fused_config(tmp_path):
    from emfm import rundir
    from emfm.config import TrainConfig

    separate = TrainConfig.from_dict({"backbone": "b", "train": "x", "adapter": "lora"})
    fused = separate.replace(adapter_settings={**separate.adapter_settings, "layout": "fused-qkv"})
    metrics = {"run": {"seed": 0, "train_sets": ["x"], "adapter": "lora",
                       "adapter_settings": {"rank": 16, "alpha": 32, "dropout": 0.0}},  # written before the layout
               "test": {"x": {"fg_iou": 0.5}}}
    (tmp_path / rundir.METRICS_NAME).write_text(json.dumps(metrics))
    (tmp_path / rundir.CONFIG_NAME).write_text(fused.to_yaml())  # e.g. a config put there by hand
    assert rundir.complete_metrics(tmp_path, fused.to_yaml(), load=TrainConfig.from_dict) is None
    old_config = {**separate.to_dict(), "adapter_settings": {"rank": 16, "alpha": 32, "dropout": 0.0}}
    import yaml

    (tmp_path / rundir.CONFIG_NAME).write_text(yaml.safe_dump(old_config))  # an old run, as it was written
    assert rundir.complete_metrics(tmp_path, separate.to_yaml(), load=TrainConfig.from_dict) == metrics
    assert rundir.complete_metrics(tmp_path, fused.to_yaml(), load=TrainConfig.from_dict) is None


@pytest.fixture(scope="module")
def trained(tiny_backbone_dir, datasets, tmp_path_factory):
    """A tiny LoRA run of each layout (2 epochs at 56 px): their directories and metrics."""
    from emfm.config import TrainConfig
    from emfm.train.run import train_run

    base = tmp_path_factory.mktemp("layout_runs")
    a, _ = datasets
    out = {}
    for layout in ("fused-qkv", "separate"):
        config = TrainConfig.from_dict({
            "backbone": str(tiny_backbone_dir), "train": a, "cache_dir": str(base / "cache"), "epochs": 2,
            "resolution": 56, "lr": 1e-2, "min_steps": 0, "adapter": "lora", "lora_rank": RANK, "lora_layout": layout,
        })
        out[layout] = (base / layout, train_run(config, base / layout, progress=False))
    return out


@pytest.mark.parametrize("layout", ["fused-qkv", "separate"])
def test_a_tiny_run_of_each_layout_trains_records_its_layout_and_reloads_identically(layout, trained, datasets):
    from emfm.evaluate.run import evaluate_run
    from emfm.models.checkpoint import load_checkpoint, read_info
    from emfm.study.aggregate import rows_for
    from emfm.study.grid import RunSpec

    a, _ = datasets
    run_dir, metrics = trained[layout]
    assert metrics["run"]["lora_layout"] == layout and metrics["run"]["adapter_settings"]["layout"] == layout
    params = metrics["trainable_params"]
    assert params["adapter"] == lora_param_count(DEPTH, WIDTH, RANK, layout)  # tiny DINOv2: 2 blocks, width 32
    assert params["total"] == params["head"] + params["adapter"] and params["head"] > 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["run"]["lora_layout"] == layout and saved["trainable_params"] == params
    assert read_info(run_dir / "checkpoint.safetensors").adapter_settings["layout"] == layout
    segmenter, _ = load_checkpoint(run_dir / "checkpoint.safetensors")
    b = [p for n, p in segmenter.backbone.named_parameters() if "lora_B" in n]
    assert b and any(p.abs().sum() > 0 for p in b)  # trained away from the zero init
    assert any(isinstance(m, GroupedLoraLinear) for m in segmenter.backbone.modules()) == (layout == "fused-qkv")
    again = evaluate_run(run_dir, progress=False)
    assert again["test"][a]["fg_iou"] == metrics["test"][a]["fg_iou"]
    assert again["test"][a]["per_slice"] == metrics["test"][a]["per_slice"]
    (row,) = rows_for(RunSpec("r", None), metrics)  # type: ignore[arg-type]
    assert row["lora_layout"] == layout and row["adapter_params"] == params["adapter"]


def test_frozen_rows_have_no_layout_and_the_report_names_it_where_lora_appears(trained):
    from emfm.study.aggregate import rows_for
    from emfm.study.grid import RunSpec
    from emfm.study.report import results_table

    _, metrics = trained["fused-qkv"]
    frozen = {**metrics, "run": {**metrics["run"], "adapter": "frozen", "adapter_settings": {}, "lora_layout": None}}
    assert rows_for(RunSpec("f", None), frozen)[0]["lora_layout"] == ""  # type: ignore[arg-type]
    old = {**metrics, "run": {k: v for k, v in metrics["run"].items() if k != "lora_layout"}}
    old["run"]["adapter_settings"] = {"rank": 4, "alpha": 32, "dropout": 0.0}  # a LoRA run from before the layout
    assert rows_for(RunSpec("o", None), old)[0]["lora_layout"] == "separate"  # type: ignore[arg-type]
    rows = [*rows_for(RunSpec("f", None), frozen), *rows_for(RunSpec("l", None), metrics),  # type: ignore[arg-type]
            *rows_for(RunSpec("o", None), old)]  # type: ignore[arg-type]
    _, body, _ = results_table(rows)
    assert sorted(r[1] for r in body) == ["frozen", "lora (fused-qkv)", "lora (separate)"]


def test_an_exported_fused_run_is_merged_into_plain_layers_and_matches_the_run(trained, tmp_path):
    """The export merges q, k and v's row blocks of s B A into their weights: no adapter module is left, the
    architecture rebuilds the network from its configuration alone, and its output (PyTorch and ONNX
    Runtime) is the run's."""
    from emfm.export import export_run
    from emfm.export.architecture import build_segmenter
    from emfm.export.onnx_file import session
    from emfm.export.prepare import load_run
    from emfm.models.checkpoint import load_checkpoint
    from emfm.transforms import normalise

    run_dir, _ = trained["fused-qkv"]
    loaded = load_run(run_dir)
    assert not any(isinstance(m, (GroupedLoraLinear, LowRankUpdate)) for m in loaded.module.modules())
    assert not any("lora_" in k for k in loaded.module.state_dict())
    rebuilt = build_segmenter(**loaded.kwargs)
    rebuilt.load_state_dict(loaded.module.state_dict(), strict=True)
    segmenter, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    unit = torch.rand(2, 1, 28, 56, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = segmenter(torch.stack([normalise(u[0], info.mean, info.std) for u in unit]))
        got, again = loaded.module(unit)[2], rebuilt(unit)[2]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.equal(again, got)
    attention = loaded.module.segmenter.backbone.model.encoder.layer[0].attention
    original = segmenter.backbone.model.encoder.layer[0].attention
    update = original.lora_qkv
    torch.testing.assert_close(attention.k_proj.weight, original.k_proj.base_layer.weight + update.delta(1))
    export_run(run_dir, tmp_path / "fused.onnx", "onnx", license="MIT")
    logits = session(tmp_path / "fused.onnx").run(None, {"unit": unit.numpy()})[2]
    torch.testing.assert_close(torch.from_numpy(logits), want, atol=1e-4, rtol=0)
