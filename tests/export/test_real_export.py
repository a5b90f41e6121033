"""The real backbone (``dinov2-vits14-imgfocus``) on real data (Lucchi++): a tiny run, exported to both
formats, re-tested with bioimage.io.core, and checked against the run in ONNX Runtime and on a volume.

Slow (minutes on a CPU): run with ``pytest -m slow tests/export/test_real_export.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emfm.config import TrainConfig
from emfm.train.run import train_run
from tests.predict.helpers import read_output, write_input

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_run(shared_dir, tmp_path_factory):
    weights, data = shared_dir / "weights" / "dinov2-vits14-imgfocus", shared_dir / "data"
    if not weights.is_dir() or not (data / "lucchi_pp").is_dir():
        pytest.skip("the real backbone or Lucchi++ is not in ../shared")
    base = tmp_path_factory.mktemp("real_export")
    config = TrainConfig.from_dict({
        "backbone": str(weights), "train": "lucchi_pp", "data_root": str(data), "cache_dir": str(base / "cache"),
        "resolution": 224, "max_train_slices": 6, "epochs": 3, "min_steps": 0, "lr": 1e-2,
    })
    train_run(config, base / "run", progress=False)
    return base, data


def test_the_real_run_exports_and_passes_bioimageio_core(real_run):
    from bioimageio.core import test_model

    from emfm.export import export_run
    from emfm.export.onnx_file import session
    from emfm.export.samples import run_config, test_slices
    from emfm.models.checkpoint import load_checkpoint
    from emfm.predict import predict_volume

    base, _ = real_run

    run = base / "run"
    package = export_run(run, base / "imgfocus.zip", "bioimageio", license="MIT")
    assert package["dynamic"] and package["onnx_max_difference"] < 1e-4
    summary = test_model(package["output"])
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]

    onnx = export_run(run, base / "imgfocus.onnx", "onnx", license="MIT")
    segmenter, info = load_checkpoint(run / "checkpoint.safetensors")
    images = [s.image for s in test_slices(run_config(run), "test", limit=2)]
    image = images[0]
    for size in [info.preprocessing.network_size(image.shape), (518, 518), (238, 322)]:
        unit = info.preprocessing.unit(image, size)
        with torch.no_grad():
            want = segmenter(info.preprocessing.normalise(unit)[None]).numpy()
        got = session(onnx["output"]).run(["logits"], {"unit": unit[None, None].numpy()})[0]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

    spec = write_input("tif", np.stack(images), base)
    predict_volume(run, spec, base / "run.tif", progress=False)
    assert 0 < read_output(base / "run.tif").mean() < 1  # masks with something to agree on
    for kind in ("onnx", "zip"):
        predict_volume(base / f"imgfocus.{kind}", spec, base / f"{kind}.tif", progress=False)
        np.testing.assert_array_equal(read_output(base / f"{kind}.tif"), read_output(base / "run.tif"))
