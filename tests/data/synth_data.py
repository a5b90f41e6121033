"""Builders of tiny synthetic datasets laid out like the real ones (imported by the data tests).

Every raw slice carries its index at pixel (0, 0) and its stack's code at (0, 1), and every mask spells
its index in binary along its first row, so a test can check that each image met its own mask.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from emfm.data._datasets import StackReference

H, W = 6, 8


def index_mask(i: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A 0/1 mask whose first row spells ``i`` in binary (so masks differ for different i)."""
    m = np.zeros(shape, dtype=np.uint8)
    bits = [(i >> b) & 1 for b in range(shape[1])]
    m[0, :] = bits
    m[-1, -1] = 1  # never blank
    return m


def index_image(i: int, code: int = 0, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A grey slice whose pixel (0, 0) is ``i`` and (0, 1) is ``code``; the rest is index-seeded noise."""
    img = np.random.default_rng(i).integers(0, 256, size=shape, dtype=np.uint8)
    img[0, 0] = i % 256
    img[0, 1] = code
    return img


def mask_index(mask: np.ndarray) -> int:
    return int(sum(int(v) << b for b, v in enumerate(mask[0, :])))


def save_grey(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_rgb_grey(path: Path, arr: np.ndarray) -> Path:
    """Grey stored as RGB with R = G = B (lossless for WebP, as in shared/data/lucchi_pp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"lossless": True} if path.suffix == ".webp" else {}
    Image.fromarray(np.stack([arr] * 3, axis=-1)).save(path, **extra)
    return path


def make_lucchi(root: Path, n: int = 12, raw_ext: str = ".png") -> Path:
    """A Lucchi++-like layout: Train_In/maskNNNN, Train_Out/N.png (L 0/255), Test_Out RGBA."""
    for code, stack in ((1, "Train"), (2, "Test")):
        for i in range(n):
            img = index_image(i, code)
            if raw_ext == ".webp":
                save_rgb_grey(root / f"{stack}_In" / f"mask{i:04d}.webp", img)
            else:
                save_grey(root / f"{stack}_In" / f"mask{i:04d}{raw_ext}", img)
            m = index_mask(i) * 255
            out = root / f"{stack}_Out" / f"{i}.png"
            if stack == "Train":
                save_grey(out, m)
            else:
                rgba = np.stack([m, m, m, np.full_like(m, 255)], axis=-1)
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgba, mode="RGBA").save(out)
    return root


def make_vnc(root: Path, n: int = 20, blank_mito: tuple[int, ...] = ()) -> Path:
    """A VNC-like layout: stack1/raw/NN.tif, stack1/labels/labelsNNNNNNNN.png, stack1/mitochondria/NN.png."""
    import tifffile

    for i in range(n):
        raw = root / "stack1" / "raw" / f"{i:02d}.tif"
        raw.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(raw, index_image(i, 3))
        m = index_mask(i)
        labels = np.where(m == 1, 191, 255).astype(np.uint8)
        labels[1, 0] = 32  # a membrane pixel
        save_grey(root / "stack1" / "labels" / f"labels{i:08d}.png", labels)
        mito = np.zeros_like(m) if i in blank_mito else m * 255
        save_grey(root / "stack1" / "mitochondria" / f"{i:02d}.png", mito)
    return root


def sha16(arrays: list[np.ndarray]) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.stack(arrays)).tobytes()).hexdigest()[:16]


def expected_lucchi(stack: str, n: int = 12) -> StackReference:
    """The decoded checksums of a make_lucchi stack, computed independently of emfm.data.check."""
    code = 1 if stack == "Train" else 2
    images = [index_image(i, code) for i in range(n)]
    masks = [index_mask(i) for i in range(n)]
    fg = f"{100 * np.mean(np.stack(masks)):.2f}%"
    return StackReference(shape=(n, 6, 8), raw=sha16(images), mask=sha16(masks), foreground=fg)
