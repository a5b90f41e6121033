"""Helpers shared by the prediction and CLI tests (plain functions; the fixtures are in conftest.py).

The pixel-wise model (patch size 1, a 1x1 convolution as "backbone") is translation-equivariant and
cheap, so tiled and whole-slice predictions must agree exactly, and every test runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from emfm.backbones._base import Backbone, BackboneOutput
from emfm.models.checkpoint import CHECKPOINT_NAME, ModelInfo, save_checkpoint
from emfm.models.heads import create_head
from emfm.models.segmenter import Segmenter
from emfm.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import synthetic_slice


class PixelBackbone(Backbone):
    """A 1x1 convolution: features of a pixel depend on that pixel only. Counts the slices it sees."""

    name = "pixel-test"
    family = "test"
    patch_size = 1
    embed_dim = 4
    num_layers = 1
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    weights_id = "pixel-test-weights-1"
    lora_target_modules: list[str] = []

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Conv2d(3, 4, kernel_size=1)
        with torch.no_grad():  # channel 0 = brightness; the rest fixed small values
            self.model.weight.copy_(torch.linspace(-0.3, 0.3, 12).view(4, 3, 1, 1))
            self.model.weight[0] = 0.7
            self.model.bias.zero_()
        self.images_seen = 0

    def encode(self, pixels, layers=None):
        self.images_seen += int(pixels.shape[0])
        grid = torch.tanh(self.model(pixels))
        return BackboneOutput(patch_grid=grid, cls=grid.mean((2, 3)))


def make_pixel_run(run_dir: Path, resolution: int) -> Path:
    """A run directory whose checkpoint is the pixel-wise model: foreground = brighter than ~0.45."""
    head = create_head("linear", 4)
    with torch.no_grad():
        head.classifier.weight.zero_()
        head.classifier.bias.zero_()
        head.classifier.weight[1, 0] = 3.0
        head.classifier.weight[0, 0] = -3.0
    info = ModelInfo(
        backbone="pixel-test", backbone_name="pixel-test", weights_id=PixelBackbone.weights_id, head="linear",
        in_channels=4, adapter="frozen", resolution=resolution, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        patch_size=1,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir / CHECKPOINT_NAME, Segmenter(head.eval()), info)
    return run_dir


def synthetic_volume(n: int = 5, shape=(24, 32), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synthetic_slice(rng, shape)[0] for _ in range(n)])


def reference_masks(run_dir: Path, vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks and P(foreground) the way evaluation makes them: slice_logits + native_prediction per slice."""
    from emfm.evaluate.inference import native_prediction, slice_logits
    from emfm.models.checkpoint import load_checkpoint
    from emfm.transforms import logits_to_size

    segmenter, info = load_checkpoint(run_dir / CHECKPOINT_NAME, backbone=PixelBackbone())
    masks, probs = [], []
    for img in vol:
        logits = slice_logits(segmenter, img, info.preprocessing)
        masks.append(native_prediction(logits, img.shape))
        probs.append(logits_to_size(logits, img.shape).softmax(1)[0, 1].numpy())
    return np.stack(masks), np.stack(probs)


def write_input(kind: str, vol: np.ndarray, where: Path) -> str:
    """Write ``vol`` as one of the input formats; return the spec to pass as --input."""
    import tifffile
    import zarr
    from PIL import Image

    if kind == "tif":
        path = where / "vol.tif"
        tifffile.imwrite(path, vol, photometric="minisblack")
        return str(path)
    if kind in ("png", "webp", "tif-slices"):
        folder = where / f"slices_{kind}"
        folder.mkdir()
        for z, img in enumerate(vol):
            if kind == "tif-slices":
                tifffile.imwrite(folder / f"s{z:03d}.tif", img)
            else:
                Image.fromarray(img).save(folder / f"s{z:03d}.{kind}", lossless=True)
        return str(folder)
    if kind == "zarr":
        path = where / "vol.zarr"
        zarr.create_array(str(path), data=vol, chunks=(2, 16, 16))
        return str(path)
    if kind == "ome-zarr":
        path = where / "img.ome.zarr"
        g = zarr.open_group(str(path), mode="w")
        g.create_array("0", data=vol[None], chunks=(1, 2, 32, 32))
        g.attrs["ome"] = {"version": "0.5", "multiscales": [{
            "axes": [{"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "nanometer"},
                     {"name": "y", "type": "space", "unit": "nanometer"},
                     {"name": "x", "type": "space", "unit": "nanometer"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 50, 5, 5]}]}],
        }]}
        return str(path)
    if kind == "h5":
        import h5py

        path = where / "vol.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("em/raw", data=vol, chunks=(1, 24, 32))
        return f"{path}:em/raw"
    raise ValueError(kind)


def read_output(path: Path) -> np.ndarray:
    from emfm.data import open_volume

    with open_volume(str(path)) as v:
        return np.stack([v[z] for z in range(len(v))])


def read_any(path: Path) -> np.ndarray:
    """Any output (float16 probabilities too, which open_volume refuses)."""
    import tifffile
    import zarr

    p = str(path)
    if p.endswith((".tif", ".tiff")):
        return tifffile.imread(p)
    node = zarr.open(p, mode="r")
    return np.asarray(node["0"][:] if p.endswith(".ome.zarr") else node[:])


def make_vit_run(run_dir: Path, backbone_dir: Path, resolution: int = 56, seed: int = 0) -> Path:
    """A run directory over a tiny random DINOv2 with a random linear head (nothing is trained)."""
    from emfm.backbones import create_backbone

    bb = create_backbone(str(backbone_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = create_head("linear", bb.embed_dim).eval()
    info = ModelInfo(
        backbone=str(backbone_dir), backbone_name=bb.name, weights_id=bb.weights_id, head="linear",
        in_channels=bb.embed_dim, adapter="frozen", resolution=resolution, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        patch_size=bb.patch_size,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir / CHECKPOINT_NAME, Segmenter(head), info)
    return run_dir
