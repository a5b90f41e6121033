"""Backbone features, computed once per image and cached on disk.

The backbone is the expensive step (design.md): with a frozen backbone, every epoch, head, seed and
analysis can reuse the same patch-token grids. An entry is keyed by everything that changes the
features (backbone weights digest, its architecture config, the version of the code that prepares and
encodes a slice, resolution, normalisation, intensity rule, the image's own digest) and stores that key
and a digest of its tensors in its metadata. On load both are checked, so a stale entry (same file name,
other inputs) or a corrupt one (truncated, bit-flipped) is rebuilt, never used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emfm._io import atomic_path
from emfm.distributed import launcher_share
from emfm.errors import CacheError, ConfigError
from emfm.hardware import precision_autocast

if TYPE_CHECKING:
    import torch

    from emfm.backbones._base import Backbone
    from emfm.data._stack import SliceStack
    from emfm.transforms import Preprocessing

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
#: Slices of one size, or tiles of one slice, per backbone call when encoding for the cache: one big call
#: keeps a GPU busy where a slice or tile alone leaves it idle between launches, for a few slices' memory.
ENCODE_BATCH = 4


@dataclass(frozen=True)
class FeatureSpec:
    """Everything besides the image that determines a backbone's features.

    ``tiling`` (native-scale tiles), ``variant`` (a flipped or rotated slice) and ``precision`` (an encode
    under bf16 or fp16 autocast, whose features differ from fp32's in the third digit) are left out of the
    key when unused, so whole-slice fp32 entries keep the keys they had before any of them existed.
    """

    backbone: str
    weights_id: str
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    intensity: str = "dtype"
    format: int = CACHE_FORMAT
    tiling: dict | None = None
    variant: str = "identity"
    config_id: str = "none"
    code_id: str = ""
    precision: str = "32"

    def key(self, image_digest: str) -> str:
        fields = asdict(self)
        if fields["tiling"] is None:
            del fields["tiling"]
        if fields["variant"] == "identity":
            del fields["variant"]
        if fields["precision"] == "32":
            del fields["precision"]
        blob = json.dumps({**fields, "image": image_digest}, sort_keys=True)
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

    def head_grids(self, i: int, layers: Sequence[int]) -> list[torch.Tensor]:
        """Slice ``i``'s grids for a head that reads ``layers`` (0-based), in that order: an
        intermediate block where one was encoded, else the final grid (the last block)."""
        if not layers:
            return [self.grids[i]]
        return [self.layers[j][i] if j in self.layers else self.grids[i] for j in layers]


#: The modules whose code decides what a cached entry holds: slice preparation (resize, intensity,
#: normalisation, geometric variants), tiling and stitching, and the backbones' encode path.
FEATURE_CODE = ("emfm.transforms", "emfm.tiled", "emfm.backbones._base", "emfm.backbones._vit")


@functools.lru_cache(maxsize=1)
def feature_code_id() -> str:
    """A digest of the source of :data:`FEATURE_CODE`, so that a change there makes new cache entries.

    A hand-bumped format number would be forgotten one day and stale features served silently; the
    digest changes with any edit of those modules (comments too: a cache refilled once is the safe side).
    """
    import importlib

    digest = hashlib.sha256()
    for name in FEATURE_CODE:
        module = importlib.import_module(name)
        digest.update(name.encode())
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def feature_spec(
    backbone: Backbone, preprocessing: Preprocessing, variant: str = "identity", precision: str = "32"
) -> FeatureSpec:
    fields = preprocessing.cache_fields()
    return FeatureSpec(
        backbone=backbone.name, weights_id=backbone.weights_id, resolution=fields["resolution"],
        mean=fields["mean"], std=fields["std"], intensity=fields["intensity"], tiling=fields.get("tiling"),
        variant=variant, config_id=getattr(backbone, "config_id", "none"), code_id=feature_code_id(),
        precision=str(precision),
    )


def encode_slice(
    backbone: Backbone, pixels: torch.Tensor, preprocessing: Preprocessing, layers: Sequence[int] = (),
    batch_size: int = ENCODE_BATCH,
):
    """Encode one preprocessed slice (3, H, W) as a batch of one: in one pass, or through overlapping
    tiles (:func:`emfm.tiled.encode_tiled`, ``batch_size`` tiles per backbone call) when the preprocessing
    is tiled and the slice exceeds a tile.

    The one encoding path of frozen caching, live (LoRA) evaluation and prediction.
    """
    prep = preprocessing
    if prep.tiled and max(pixels.shape[-2:]) > int(prep.tile or 0):
        from emfm.tiled import encode_tiled

        return encode_tiled(backbone, pixels, tile=int(prep.tile or 0), overlap=int(prep.overlap or 0),
                            layers=tuple(layers), batch_size=batch_size)
    return backbone.encode(pixels[None], layers=list(layers) or None)


def _load_cached(cache, keys, names) -> tuple[list, list[int]]:
    entries: list = [None] * len(keys)
    todo = []
    for i, key in enumerate(keys):
        entry = cache.load(key, names) if cache is not None else None
        if entry is None:
            todo.append(i)
        else:
            entries[i] = entry
    return entries, todo


#: How long a rank waits for the other ranks' share of the cache (seconds; ``EMFM_CACHE_WAIT`` overrides).
CACHE_WAIT = 3600.0


def _wait_for_entries(cache, keys, names, indices: list[int], entries: list, what: str) -> None:
    """Fill ``entries`` at ``indices`` from the cache as the other ranks write them, or fail after the wait."""
    import os
    import time

    deadline = time.monotonic() + float(os.environ.get("EMFM_CACHE_WAIT", CACHE_WAIT))
    left = list(indices)
    while left:
        for i in left:
            entries[i] = cache.load(keys[i], names)
        left = [i for i in left if entries[i] is None]
        if not left:
            return
        if time.monotonic() > deadline:
            raise CacheError(
                f"{what}: {len(left)} slice(s) the other ranks were to encode never reached the feature cache "
                f"{cache.root}; check that every rank runs and shares that folder (or set EMFM_CACHE_WAIT)"
            )
        time.sleep(0.5)


def _batches(todo: Sequence[int], sizes: Sequence[tuple[int, int]], batch_size: int, tiled: bool):
    """Slices to encode together: one size per batch; tiled slices one at a time (their tiles batch)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i in todo:
        by_size.setdefault(sizes[i], []).append(i)
    step = 1 if tiled else batch_size
    for idxs in by_size.values():
        for start in range(0, len(idxs), step):
            yield idxs[start : start + step]


def encode_stack(
    backbone: Backbone,
    stack: SliceStack,
    *,
    resolution: int | None = None,
    preprocessing: Preprocessing | None = None,
    variant: str = "identity",
    layers: Sequence[int] = (),
    cache: FeatureCache | None = None,
    batch_size: int = ENCODE_BATCH,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    intensity: str = "dtype",
    precision: str = "32",
    progress: bool = True,
) -> StackFeatures:
    """Encode every slice of ``stack`` with a frozen backbone, through the cache when one is given.

    Args:
        backbone: the backbone; it is only called for slices the cache does not hold.
        stack: the slices.
        preprocessing: how slices become input (resize or tiles at a pixel scale); or give the
            shorthand ``resolution`` (+ ``mean``, ``std``, ``intensity``) for the whole-slice resize.
        variant: a flip or rotation applied to each slice before encoding (augmentation), see
            :func:`emfm.transforms.geometric_variant`; cached separately.
        layers: intermediate block indices to keep besides the final grid (negative from the end).
        cache: where to read and write features; None computes everything.
        batch_size: slices per backbone call (slices of one size are batched together); a tiled slice
            goes alone, its tiles ``batch_size`` per call.
        precision: a resolved precision (:func:`emfm.hardware.resolve_precision`): ``"32"`` encodes in
            fp32; ``"bf16"`` or ``"16"`` under that autocast, into cache entries of their own.
        progress: show a progress bar.

    Raises:
        ConfigError: a batch size below 1, or a precision that is not a resolved one.
    """
    import torch
    from tqdm.auto import tqdm

    from emfm.transforms import Preprocessing, geometric_variant

    if preprocessing is None:
        if resolution is None:
            raise TypeError("encode_stack needs preprocessing= or resolution=")
        m, s = (mean or backbone.mean), (std or backbone.std)
        preprocessing = Preprocessing(int(resolution), backbone.patch_size, m, s, intensity)  # type: ignore[arg-type]
    prep = preprocessing
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1 slice per backbone call, got {batch_size}")
    device = next(backbone.parameters()).device
    autocast = precision_autocast(precision, device)  # checks the precision before any work
    spec = feature_spec(backbone, prep, variant, precision)
    wanted_layers = sorted({int(i) for i in layers})
    names = ["grid", "cls", *(f"layer_{j}" for j in wanted_layers)]
    images = [geometric_variant(img, variant) for img in stack.images] if variant != "identity" else stack.images
    sizes = [prep.network_size(img.shape) for img in images]
    keys = [spec.key(stack.image_digest(i)) for i in range(len(stack))]
    entries, todo = _load_cached(cache, keys, names)
    # Started together by a launcher (srun, torchrun), the ranks share the encoding: each takes every
    # world-th missing slice, writes it to the shared cache (atomically), then reads the others' entries.
    rank, world = launcher_share() if cache is not None else (0, 1)
    theirs = [i for i in todo if i % world != rank]
    todo = [i for i in todo if i % world == rank]
    bar = tqdm(total=len(todo), desc=f"encoding {stack.dataset}/{stack.split}", disable=not progress or not todo)
    was_training = backbone.training
    backbone.eval()
    with torch.inference_mode(), autocast:
        for chunk in _batches(todo, sizes, batch_size, prep.tiled):
            _encode_chunk(backbone, chunk, images, sizes, prep, cache, keys, names, wanted_layers, entries, batch_size)
            bar.update(len(chunk))
    bar.close()
    backbone.train(was_training)
    if theirs:
        _wait_for_entries(cache, keys, names, theirs, entries, f"{stack.dataset}/{stack.split}")
    return _stack_features(stack, entries, wanted_layers, sizes, len(todo), backbone.embed_dim)


def _encode_chunk(backbone, chunk, images, sizes, prep, cache, keys, names, wanted_layers, entries, batch_size) -> None:
    """Encode the slices ``chunk`` (one size) in one backbone call, or one tiled slice tile batch by tile batch;
    write each to the cache and fill its ``entries``.

    Layers already cached for a slice are recomputed with the new ones, so an entry only ever grows and one
    backbone pass serves every request.
    """
    import torch

    kept = set(wanted_layers)
    if cache is not None:
        for i in chunk:
            kept |= {int(n[6:]) for n in cache.names(keys[i]) if n.startswith("layer_")}
    compute = sorted(kept)
    device = next(backbone.parameters()).device
    pixels = torch.stack([prep.pixels(images[i], sizes[i]) for i in chunk]).to(device)
    if len(chunk) == 1:
        out = encode_slice(backbone, pixels[0], prep, compute, batch_size=batch_size)
    else:
        out = backbone.encode(pixels, layers=compute or None)
    for b, i in enumerate(chunk):
        entry = {"grid": out.patch_grid[b].float().cpu().clone(), "cls": out.cls[b].float().cpu().clone()}
        entry.update({f"layer_{j}": out.layers[j][b].float().cpu().clone() for j in compute})
        if cache is not None:
            cache.save(keys[i], entry)
        entries[i] = {k: v for k, v in entry.items() if k in names}


def _stack_features(stack, entries, wanted_layers, sizes, n_computed: int, dim: int) -> StackFeatures:
    import torch

    done = [e for e in entries if e is not None]
    return StackFeatures(
        ids=list(stack.ids),
        grids=[e["grid"] for e in done],
        cls=torch.stack([e["cls"] for e in done]) if done else torch.empty(0, dim),
        layers={j: [e[f"layer_{j}"] for e in done] for j in wanted_layers},
        sizes=list(sizes),
        n_computed=n_computed,
        n_cached=len(entries) - n_computed,
    )
