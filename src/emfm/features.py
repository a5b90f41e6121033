"""Backbone features, computed once per image and cached on disk.

The backbone is the expensive step (design.md): with a frozen backbone, every epoch, head, seed and
analysis can reuse the same patch-token grids. An entry is keyed by everything that changes the
features (backbone weights digest, resolution, normalisation, intensity rule, the image's own digest)
and stores that key and a digest of its tensors in its metadata. On load both are checked, so a stale
entry (same file name, other inputs) or a corrupt one (truncated, bit-flipped) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emfm._io import atomic_path

if TYPE_CHECKING:
    import torch

    from emfm.backbones._base import Backbone
    from emfm.data._stack import SliceStack

log = logging.getLogger(__name__)

CACHE_FORMAT = 2


@dataclass(frozen=True)
class FeatureSpec:
    """Everything besides the image that determines a backbone's features."""

    backbone: str
    weights_id: str
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    intensity: str = "dtype"
    format: int = CACHE_FORMAT

    def key(self, image_digest: str) -> str:
        blob = json.dumps({**asdict(self), "image": image_digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """A directory of safetensors files, one per (spec, image)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str, names: Collection[str] | None = None) -> dict[str, torch.Tensor] | None:
        """The entry's tensors (only ``names`` if given), or None if absent, stale, corrupt or missing
        one of ``names``. A corrupt or stale file is removed.

        Each tensor carries its own digest, so a training run that needs only the final grid reads
        that grid, not every intermediate layer an analysis stored beside it.
        """
        from safetensors import safe_open

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                available = set(fh.keys())
                wanted = available if names is None else set(names)
                if not wanted <= available:
                    return None
                tensors = {name: fh.get_tensor(name) for name in wanted}
        except Exception as exc:  # safetensors raises several types for damaged files
            log.warning("feature cache entry %s is unreadable (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            return None
        bad = [n for n in tensors if meta.get(f"digest:{n}") != _tensor_digest({n: tensors[n]})]
        if meta.get("key") != key or bad:
            log.warning("feature cache entry %s does not match its key or checksum; recomputing it", path)
            path.unlink(missing_ok=True)
            return None
        return tensors

    def names(self, key: str) -> set[str]:
        """Tensor names an entry holds (empty if it is absent or unreadable), without reading them."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.path(key)), framework="pt") as fh:
                return set(fh.keys())
        except Exception:  # absent or damaged: nothing to keep
            return set()

    def save(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"key": key, **{f"digest:{n}": _tensor_digest({n: t}) for n, t in tensors.items()}}
        with atomic_path(self.path(key), suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=meta)


@dataclass
class StackFeatures:
    """Features of every slice of a stack, in the stack's order.

    Attributes:
        ids: slice ids.
        grids: final normalised patch tokens, one (C, h, w) tensor per slice.
        cls: class tokens, (N, C).
        layers: requested intermediate layers, block index -> one (C, h, w) tensor per slice.
        sizes: the (H, W) each slice was resized to before encoding.
        n_computed: slices that went through the backbone; n_cached: slices read from the cache.
    """

    ids: list[str]
    grids: list[torch.Tensor]
    cls: torch.Tensor
    layers: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0


def feature_spec(
    backbone: Backbone,
    resolution: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    intensity: str = "dtype",
) -> FeatureSpec:
    return FeatureSpec(
        backbone=backbone.name,
        weights_id=backbone.weights_id,
        resolution=int(resolution),
        mean=tuple(float(x) for x in (mean if mean is not None else backbone.mean)),
        std=tuple(float(x) for x in (std if std is not None else backbone.std)),
        intensity=intensity,
    )


def encode_stack(
    backbone: Backbone,
    stack: SliceStack,
    *,
    resolution: int,
    layers: Sequence[int] = (),
    cache: FeatureCache | None = None,
    batch_size: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    intensity: str = "dtype",
    progress: bool = True,
) -> StackFeatures:
    """Encode every slice of ``stack`` with a frozen backbone, through the cache when one is given.

    Args:
        backbone: the backbone; it is only called for slices the cache does not hold.
        stack: the slices.
        resolution: longest edge in pixels (see :func:`emfm.transforms.resized_shape`).
        layers: intermediate block indices to keep besides the final grid (negative from the end).
        cache: where to read and write features; None computes everything.
        batch_size: slices per backbone call (slices of one size are batched together).
        mean, std: normalisation; the backbone's own by default.
        intensity: see :func:`emfm.transforms.to_unit_float`.
        progress: show a progress bar.
    """
    import torch
    from tqdm.auto import tqdm

    from emfm.transforms import image_to_tensor, resized_shape

    spec = feature_spec(backbone, resolution, mean=mean, std=std, intensity=intensity)
    wanted_layers = sorted({int(i) for i in layers})
    n = len(stack)
    entries: list[dict[str, torch.Tensor] | None] = [None] * n
    sizes = [resized_shape(img.shape, resolution, backbone.patch_size) for img in stack.images]
    keys = [spec.key(stack.image_digest(i)) for i in range(n)]
    todo: list[int] = []
    names = ["grid", "cls", *(f"layer_{j}" for j in wanted_layers)]
    for i in range(n):
        entry = cache.load(keys[i], names) if cache is not None else None
        if entry is not None:
            entries[i] = entry
        else:
            todo.append(i)
    n_cached = n - len(todo)

    # Layers already cached for a slice are recomputed together with the new ones, so an entry only
    # ever grows and one backbone pass serves every request.
    by_size: dict[tuple[int, int], list[int]] = {}
    for i in todo:
        by_size.setdefault(sizes[i], []).append(i)
    bar = tqdm(total=len(todo), desc=f"encoding {stack.dataset}/{stack.split}", disable=not progress or not todo)
    was_training = backbone.training
    device = next(backbone.parameters()).device
    backbone.eval()
    with torch.inference_mode():
        for size, idxs in by_size.items():
            for start in range(0, len(idxs), batch_size):
                chunk = idxs[start : start + batch_size]
                kept = set(wanted_layers)
                if cache is not None:
                    for i in chunk:
                        kept |= {int(n[6:]) for n in cache.names(keys[i]) if n.startswith("layer_")}
                compute_layers = sorted(kept)
                pixels = torch.stack(
                    [image_to_tensor(stack.images[i], size, spec.mean, spec.std, intensity=intensity) for i in chunk]
                )
                out = backbone.encode(pixels.to(device), layers=compute_layers or None)
                for b, i in enumerate(chunk):
                    entry = {"grid": out.patch_grid[b].float().cpu().clone(), "cls": out.cls[b].float().cpu().clone()}
                    for j in compute_layers:
                        entry[f"layer_{j}"] = out.layers[j][b].float().cpu().clone()
                    if cache is not None:
                        cache.save(keys[i], entry)
                    entries[i] = {k: v for k, v in entry.items() if k in names}
                bar.update(len(chunk))
    bar.close()
    backbone.train(was_training)
    done = [e for e in entries if e is not None]
    return StackFeatures(
        ids=list(stack.ids),
        grids=[e["grid"] for e in done],
        cls=torch.stack([e["cls"] for e in done]) if done else torch.empty(0, backbone.embed_dim),
        layers={j: [e[f"layer_{j}"] for e in done] for j in wanted_layers},
        sizes=sizes,
        n_computed=len(todo),
        n_cached=n_cached,
    )
