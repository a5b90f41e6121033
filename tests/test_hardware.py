"""emfm.hardware: precision from fabricated hardware records (never this machine's CPU), /proc/cpuinfo parsing,
the one-line summary, and this machine's own description."""

from __future__ import annotations

import json

import pytest
import torch

from emfm.errors import ConfigError
from emfm.hardware import (
    CPU_FLAGS,
    CPU_NO_BF16_NOTE,
    LIGHTNING_PRECISION,
    cpu_native_bf16,
    describe_hardware,
    hardware_summary,
    read_cpuinfo,
    resolve_precision,
)


def record(*flags: str, unknown: bool = False, gpu: dict | None = None) -> dict:
    """A describe_hardware-shaped record: a CPU with exactly ``flags`` (or unreadable ones) and maybe a GPU."""
    return {
        "cpu": {"model": "Test CPU", "machine": "x86_64", "cores": 2,
                "flags": {f: None if unknown else f in flags for f in CPU_FLAGS}, "torch_capability": "AVX2"},
        "torch": "2.0.0", "torch_threads": 2,
        "kernels": {"blas": "mkl", "mkl": "2024.2", "onednn": "v3.5.0", "onednn_bf16": None, "openmp": True},
        "gpu": gpu,
    }


AVX2 = record("avx2")
AVX512 = record("avx2", "avx512f")
GPU_BF16 = {"name": "A100", "count": 1, "capability": "8.0", "cuda": "12.4", "hip": None, "cudnn": 90100,
            "bf16": True}
GPU_NO_BF16 = {**GPU_BF16, "name": "V100", "capability": "7.0", "bf16": False}


@pytest.mark.parametrize("hardware", [AVX2, AVX512], ids=["avx2", "avx512f"])
def test_bf16_on_a_cpu_without_native_bf16_falls_back_to_fp32_with_the_note(hardware):
    assert not cpu_native_bf16(hardware)
    assert resolve_precision("bf16", "cpu", hardware) == ("32", CPU_NO_BF16_NOTE)


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_bf16_is_honoured_on_a_cpu_with_native_bf16(flag):
    hardware = record("avx2", "avx512f", flag)
    assert cpu_native_bf16(hardware)
    assert resolve_precision("bf16", "cpu", hardware) == ("bf16", None)
    assert resolve_precision("auto", "cpu", hardware) == ("bf16", None)


def test_amx_tile_alone_is_not_native_bf16():
    assert resolve_precision("bf16", "cpu", record("avx2", "amx_tile"))[0] == "32"


@pytest.mark.parametrize(
    ("device", "hardware", "expected"),
    [
        ("cuda", record("avx2", gpu=GPU_BF16), "bf16"),
        ("cuda:1", record("avx2", gpu=GPU_BF16), "bf16"),
        (torch.device("cuda", 0), record("avx2", gpu=GPU_BF16), "bf16"),
        ("cuda", record("avx2", gpu=GPU_NO_BF16), "16"),
        ("cpu", AVX2, "32"),
        ("cpu", record(unknown=True), "32"),
        ("mps", AVX2, "32"),
    ],
)
def test_auto_takes_what_the_device_does_natively_without_a_note(device, hardware, expected):
    assert resolve_precision("auto", device, hardware) == (expected, None)
    assert expected in LIGHTNING_PRECISION


def test_bf16_on_a_gpu_without_bf16_falls_back_and_names_the_gpu():
    precision, note = resolve_precision("bf16", "cuda", record("avx2", gpu=GPU_NO_BF16))
    assert precision == "32"
    assert "V100" in note and "compute capability 7.0" in note and "precision auto" in note
    assert resolve_precision("bf16", "cuda", record(gpu=GPU_BF16)) == ("bf16", None)


def test_fp32_is_always_honoured_and_never_reads_the_hardware(monkeypatch):
    def refuse():
        raise AssertionError("precision 32 asked about the hardware")

    monkeypatch.setattr("emfm.hardware.describe_hardware", refuse)
    assert resolve_precision("32", "cpu") == ("32", None)
    assert resolve_precision(32, "cuda") == ("32", None)  # type: ignore[arg-type]


def test_unreadable_cpu_flags_fall_back_with_their_own_note():
    precision, note = resolve_precision("bf16", "cpu", record(unknown=True))
    assert precision == "32" and note != CPU_NO_BF16_NOTE
    assert "cannot be read" in note and "computing in fp32" in note
    no_cpu = {**AVX2, "cpu": {}}
    assert resolve_precision("bf16", "cpu", no_cpu)[0] == "32"


def test_bf16_on_an_unchecked_device_falls_back_with_a_note():
    precision, note = resolve_precision("bf16", "mps", AVX2)
    assert precision == "32" and "mps" in note


@pytest.mark.parametrize("bad", ["16", "fp16", "bf16-mixed", ""])
def test_an_unknown_precision_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=rf"precision '{bad}' is not one of 32, bf16, auto"):
        resolve_precision(bad, "cpu", AVX2)
    assert issubclass(ConfigError, ValueError)


def test_the_default_hardware_is_this_machines(monkeypatch):
    monkeypatch.setattr("emfm.hardware.describe_hardware", lambda: record("amx_bf16"))
    assert resolve_precision("bf16", "cpu") == ("bf16", None)
    assert cpu_native_bf16()
    monkeypatch.setattr("emfm.hardware.describe_hardware", lambda: AVX2)
    assert resolve_precision("bf16", "cpu") == ("32", CPU_NO_BF16_NOTE)


def test_read_cpuinfo_x86(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n\n"
        "processor\t: 1\nmodel name\t: second core\nflags\t\t: fpu\n"
    )
    model, flags = read_cpuinfo(path)
    assert model == "AMD EPYC 9654"
    assert flags == {"fpu", "sse", "avx2", "avx512f", "avx512_bf16"}


def test_read_cpuinfo_arm_features_and_no_model(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16 sve\nCPU part\t: 0xd40\n")
    model, flags = read_cpuinfo(str(path))
    assert model is None and flags == {"fp", "asimd", "bf16", "sve"}


def test_read_cpuinfo_missing_file(tmp_path):
    assert read_cpuinfo(tmp_path / "absent") == (None, None)


def test_summary_of_a_cpu_only_machine():
    text = hardware_summary(AVX512)
    assert text == ("Test CPU (2 cores; avx2, avx512f; no avx512_bf16, amx_bf16, amx_tile), torch 2.0.0 on 2 threads, "
                    "BLAS mkl, MKL 2024.2, oneDNN v3.5.0")
    assert "GPU" not in text


def test_summary_of_a_gpu_machine_and_of_unknowns():
    text = hardware_summary(record("avx2", gpu=GPU_BF16))
    assert text.endswith("; GPU A100 x1 (compute capability 8.0, CUDA 12.4, cuDNN 90100, native bf16)")
    assert "no bf16)" in hardware_summary(record(gpu=GPU_NO_BF16))
    unknown = hardware_summary({**record(unknown=True), "kernels": {}})
    assert "flags unknown" in unknown and "no kernel library named" in unknown
    assert hardware_summary({}).startswith("unknown CPU")


def test_describe_hardware_is_json_ready_and_reads_threads_at_each_call():
    before = torch.get_num_threads()
    hw = describe_hardware()
    assert json.loads(json.dumps(hw)) == hw
    assert hw["torch_threads"] == torch.get_num_threads()
    assert hw["torch"] == torch.__version__
    assert set(hw["cpu"]["flags"]) == set(CPU_FLAGS)
    assert (hw["gpu"] is None) == (not torch.cuda.is_available())
    hw["cpu"]["model"] = "changed"  # the caller's own copy
    assert describe_hardware()["cpu"]["model"] != "changed"
    try:
        torch.set_num_threads(1)
        assert describe_hardware()["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
    assert isinstance(hardware_summary(hw), str)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("16", torch.float16)])
def test_precision_autocast_computes_in_the_resolved_dtype(precision, dtype):
    from emfm.hardware import precision_autocast

    layer = torch.nn.Linear(4, 4)
    with precision_autocast(precision, "cpu"):
        assert torch.is_autocast_enabled("cpu") and layer(torch.ones(1, 4)).dtype == dtype
    assert not torch.is_autocast_enabled("cpu")


def test_precision_autocast_leaves_fp32_alone_and_refuses_unresolved_names():
    from emfm.hardware import precision_autocast

    with precision_autocast("32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert torch.nn.Linear(4, 4)(torch.ones(1, 4)).dtype == torch.float32
    with pytest.raises(ConfigError, match="resolve 'auto'"):
        precision_autocast("auto", "cpu")
