"""Segment a whole volume with a trained run, slice by slice, in bounded memory, resumably.

The model is 2-D, so a volume is a sequence of slices. Each slice goes through the run's own
preprocessing (:class:`~emfm.models.checkpoint.ModelInfo`: resolution, patch size, mean/std,
intensity rule) in one of two ways:

- ``resize`` (default): the whole slice is resized to the run's resolution, exactly as in training
  and evaluation, and the logits are resized back to the slice's size; the masks are those
  ``emfm evaluate`` would produce (:func:`~emfm.evaluate.inference.slice_logits` and
  :func:`~emfm.evaluate.inference.native_prediction`, batched; bit for bit at batch size 1).
- ``tile``: the slice is brought to the pixel size the run was trained at (``scale`` network pixels
  per input pixel) and covered with overlapping tiles whose logits are blended
  (:mod:`emfm.predict.tiling`), then resized back. Large slices keep their detail this way.

Slices are read a batch at a time (the next batch is read while the current one runs) and each is
written as soon as it is predicted, so memory does not grow with the number of slices. The output
records which slices are done (:mod:`emfm.predict.volume_io`), so a rerun finishes an interrupted job.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emfm import __version__
from emfm.data.readers import split_container
from emfm.errors import ConfigError, RunDirError
from emfm.predict.tiling import check_tiling, default_halo, tiled_logits
from emfm.predict.volume_io import PredictionOutputs, check_disk_space, input_pixel_scale, output_kind

log = logging.getLogger(__name__)

Mode = Literal["resize", "tile"]
ProbabilityDtype = Literal["float16", "uint8"]
MODES = ("resize", "tile")
PROBABILITY_DTYPES = ("float16", "uint8")


# --------------------------------------------------------------------------------------------------
# The model side: slices in, native-size logits out
# --------------------------------------------------------------------------------------------------


class SlicePredictor:
    """A run's segmenter with its preprocessing: 2-D slices in, masks and probabilities out.

    Args:
        segmenter: the loaded model (in eval mode).
        info: the run's :class:`~emfm.models.checkpoint.ModelInfo`.
        mode: ``resize`` or ``tile`` (see the module docstring).
        tile, halo: tile edge and fading border in network pixels (tile mode).
        scale: network pixels per input pixel (tile mode).
        batch_size: slices (resize) or tiles (tile) per backbone call.
        bf16: run the model under bfloat16 autocast.
        device: where the model runs.
    """

    def __init__(
        self,
        segmenter,
        info,
        *,
        mode: Mode = "resize",
        tile: int | None = None,
        halo: int | None = None,
        scale: float | None = None,
        batch_size: int = 4,
        bf16: bool = False,
        device: str = "cpu",
    ) -> None:
        self.segmenter = segmenter
        self.info = info
        self.mode = mode
        self.tile = tile
        self.halo = halo
        self.scale = scale
        self.batch_size = batch_size
        self.bf16 = bf16
        self.device = device

    def _autocast(self):
        import torch

        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)

    def _forward(self, pixels):
        """Logits (B, K, H, W) for preprocessed pixels (B, 3, H, W), as float32 on the CPU."""
        import torch

        with torch.inference_mode(), self._autocast():
            return self.segmenter(pixels.to(self.device)).float().cpu()

    def native_logits(self, images: Sequence[np.ndarray]) -> list:
        """Logits (1, K, H, W) at each slice's own size."""
        import torch

        from emfm.transforms import image_to_tensor, logits_to_size, resized_shape

        info = self.info
        out: list[Any] = [None] * len(images)
        if self.mode == "resize":
            # Batch slices of one size; each is preprocessed exactly as slice_logits does it.
            by_shape: dict[tuple[int, int], list[int]] = {}
            for i, img in enumerate(images):
                by_shape.setdefault(tuple(img.shape), []).append(i)
            for shape, idx in by_shape.items():
                size = resized_shape(shape, info.resolution, info.patch_size)
                for s in range(0, len(idx), self.batch_size):
                    part = idx[s : s + self.batch_size]
                    pixels = torch.stack(
                        [image_to_tensor(images[i], size, info.mean, info.std, intensity=info.intensity) for i in part]
                    )
                    logits = self._forward(pixels)
                    for b, i in enumerate(part):
                        out[i] = logits_to_size(logits[b : b + 1], shape)
            return out
        for i, img in enumerate(images):
            h, w = img.shape
            net = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
            pixels = image_to_tensor(img, net, info.mean, info.std, intensity=info.intensity)
            logits = tiled_logits(self._forward, pixels, tile=self.tile, halo=self.halo, batch_size=self.batch_size)
            out[i] = logits_to_size(logits[None], (h, w))
        return out

    def predict(
        self, images: Sequence[np.ndarray], *, probability: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """``(mask, p)`` per slice: uint8 0/1 masks, and float32 foreground probabilities if asked."""
        from emfm.evaluate.inference import native_prediction

        results = []
        for img, logits in zip(images, self.native_logits(images)):
            mask = native_prediction(logits, img.shape)
            p = logits.softmax(1)[0, 1].numpy() if probability else None
            results.append((mask, p))
        return results


def encode_probability(p: np.ndarray, dtype: ProbabilityDtype) -> np.ndarray:
    """float16 as is, or uint8 ``round(255 * p)``."""
    if dtype == "uint8":
        return np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)
    return p.astype(np.float16)


# --------------------------------------------------------------------------------------------------
# Planning: everything that can be checked before the model is loaded
# --------------------------------------------------------------------------------------------------


def checkpoint_path(run_dir: str | Path) -> Path:
    """The run's checkpoint, or a RunDirError saying what is wrong with the run directory."""
    from emfm.models.checkpoint import CHECKPOINT_NAME

    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist; pass --run the --out folder of `emfm train`")
    ckpt = run / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise RunDirError(
            f"{run} has no {CHECKPOINT_NAME}: it is not a trained run (or training did not finish); "
            f"pass --run the --out folder of a finished `emfm train`"
        )
    return ckpt


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resolved_spec(spec: str) -> str:
    """The input spec with its file part made absolute (``file.h5:key`` keeps its key)."""
    file, key = split_container(spec)
    return str(file.resolve()) + (f":{key}" if key else "")


def training_scale(run_dir: str | Path, info) -> float:
    """Network pixels per input pixel at which the run was trained.

    Training resized each slice so that its longest edge became ``info.resolution``; the first
    training slice of each training set tells that edge. Joint runs whose sets were trained at
    different scales have no single answer, and neither does a run whose data are gone: both ask
    for ``--scale``.

    Raises:
        ConfigError: the scale cannot be worked out.
    """
    from emfm import rundir
    from emfm.config import TrainConfig, load_yaml
    from emfm.data import get_dataset, read_image
    from emfm.errors import EmfmError
    from emfm.paths import dataset_root

    run = Path(run_dir)
    hint = (
        "pass --scale S, the network pixels per input pixel (the run's resolution "
        f"{info.resolution} divided by the longest edge of its training slices)"
    )
    try:
        config = TrainConfig.from_dict(load_yaml(run / rundir.CONFIG_NAME))
        scales = {}
        for name in config.train:
            ds = get_dataset(name)
            root = ds.resolve_root(dataset_root(name, config.data_root))
            stack, ids = ds.split_ids(root, "train")
            first = next(s for s in ds.list_slices(root, stack) if s.id == ids[0])
            shape = read_image(first.image).shape
            scales[name] = info.resolution / max(shape)
    except (EmfmError, OSError, StopIteration, IndexError) as exc:
        raise ConfigError(f"cannot tell the pixel size run {run} was trained at ({exc}); {hint}") from None
    values = sorted(set(round(v, 9) for v in scales.values()))
    if len(values) > 1:
        listed = ", ".join(f"{k}: {v:.4f}" for k, v in scales.items())
        raise ConfigError(f"run {run} was trained at several pixel scales ({listed}); {hint}")
    return values[0]


@dataclass
class PredictJob:
    """A checked prediction job: what to read, how to predict, where to write, what is left."""

    run_dir: Path
    checkpoint: Path
    checkpoint_sha256: str
    info: Any
    input: str
    shape: tuple[int, int, int]
    dtype: str
    mode: Mode
    tile: int | None
    halo: int | None
    scale: float | None
    batch_size: int
    bf16: bool
    device: str
    probability_dtype: ProbabilityDtype
    outputs: PredictionOutputs | None
    done: np.ndarray
    overwrite: bool
    job_record: dict[str, Any] = field(default_factory=dict)

    @property
    def todo(self) -> np.ndarray:
        return np.flatnonzero(~self.done)

    def predictor_settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "tile": self.tile, "halo": self.halo, "scale": self.scale,
            "batch_size": self.batch_size, "bf16": self.bf16, "device": self.device,
        }


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def plan_prediction(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path | None,
    *,
    mode: Mode = "resize",
    tile: int | None = None,
    halo: int | None = None,
    scale: float | None = None,
    batch_size: int = 4,
    probabilities: str | Path | None = None,
    probability_dtype: ProbabilityDtype = "float16",
    bf16: bool = False,
    overwrite: bool = False,
    device: str | None = None,
) -> PredictJob:
    """Check a job before any compute and find what is left to do; see :func:`predict_volume`.

    With ``output=None`` only the run, the input and the settings are checked (a lazy prediction
    that the caller writes itself); the job then has no outputs and every slice is to do.
    """
    from emfm.data import open_volume
    from emfm.models.checkpoint import read_info
    from emfm.transforms import resized_shape

    if mode not in MODES:
        raise ConfigError(f"unknown --mode {mode!r}; use 'resize' (as in training) or 'tile'")
    if probability_dtype not in PROBABILITY_DTYPES:
        raise ConfigError(f"unknown probability dtype {probability_dtype!r}; use 'float16' or 'uint8'")
    if int(batch_size) < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    if output is not None:
        output_kind(output)
    if probabilities is not None:
        output_kind(probabilities)
    ckpt = checkpoint_path(run_dir)
    info = read_info(ckpt)
    spec = str(input)
    with open_volume(spec) as volume:
        shape = tuple(int(s) for s in volume.shape)
        dtype = volume.dtype.name
    if min(shape) < 1:
        from emfm.errors import DataError

        raise DataError(f"{spec}: volume of shape {shape} is empty; expected at least one slice")
    in_file = split_container(spec)[0].resolve()
    for out in [output, probabilities]:
        if out is not None and Path(out).resolve() == in_file:
            raise ConfigError(f"output {out} is the input itself; write the prediction to another path")

    if mode == "resize":
        resized_shape(shape[1:], info.resolution, info.patch_size)  # a slice too small raises here
        tile = halo = scale = None
    else:
        tile = int(tile) if tile else (info.resolution // info.patch_size) * info.patch_size
        halo = default_halo(tile) if halo is None else int(halo)
        check_tiling(tile, halo, info.patch_size)
        scale = float(scale) if scale is not None else training_scale(run_dir, info)
        if scale <= 0:
            raise ConfigError(f"--scale must be positive, got {scale}")
    device = device or default_device()
    if bf16 and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"--bf16: the GPU ({torch.cuda.get_device_name()}) has no bfloat16 support; drop --bf16")

    sha = _sha256(ckpt)
    job_record = {
        "run": str(Path(run_dir).resolve()),
        "checkpoint_sha256": sha,
        "input": _resolved_spec(spec),
        "input_shape": list(shape),
        "input_dtype": dtype,
        "mode": mode,
        "tile": tile,
        "halo": halo,
        "scale": scale,
        "bf16": bool(bf16),
        "probabilities": str(Path(probabilities).resolve()) if probabilities else None,
        "probability_dtype": probability_dtype if probabilities else None,
        "emfm_version": __version__,
    }
    outputs = None
    done = np.zeros(shape[0], dtype=bool)
    if output is not None:
        outputs = PredictionOutputs(
            output, shape, job_record, probability=probabilities, probability_dtype=probability_dtype,
            ome_scale=input_pixel_scale(spec),
        )
        done = outputs.inspect(overwrite=overwrite)
        check_disk_space(outputs.targets, shape, int((~done).sum()))
    return PredictJob(
        run_dir=Path(run_dir), checkpoint=ckpt, checkpoint_sha256=sha, info=info, input=spec, shape=shape,
        dtype=dtype, mode=mode, tile=tile, halo=halo, scale=scale, batch_size=int(batch_size), bf16=bool(bf16),
        device=device, probability_dtype=probability_dtype, outputs=outputs, done=done, overwrite=overwrite,
        job_record=job_record,
    )


def load_predictor(job: PredictJob, backbone=None) -> SlicePredictor:
    """Load the run's model onto the job's device and wrap it with the job's settings."""
    from emfm.models.checkpoint import load_checkpoint

    segmenter, info = load_checkpoint(job.checkpoint, backbone=backbone)
    segmenter.to(job.device).eval()
    return SlicePredictor(segmenter, info, **job.predictor_settings())


def summary(job: PredictJob, computed: Sequence[int], seconds: float, loop_seconds: float, complete: bool) -> dict:
    n = len(computed)
    return {
        "output": str(job.outputs.mask.path),
        "probabilities": str(job.outputs.probability.path) if job.outputs.probability else None,
        "probability_dtype": job.probability_dtype if job.outputs.probability else None,
        "input": job.input,
        "shape": list(job.shape),
        "mode": job.mode,
        "tile": job.tile,
        "halo": job.halo,
        "scale": job.scale,
        "bf16": job.bf16,
        "device": job.device,
        "resumed": job.outputs.resumed,
        "slices": job.shape[0],
        "computed": n,
        "skipped": int(job.done.sum()),
        "computed_slices": [int(z) for z in computed],
        "complete": complete,
        "seconds": round(seconds, 3),
        "slices_per_second": round(n / loop_seconds, 4) if loop_seconds > 0 and n else None,
    }


# --------------------------------------------------------------------------------------------------
# The sequential runner
# --------------------------------------------------------------------------------------------------


def predict_volume(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path,
    *,
    mode: Mode = "resize",
    tile: int | None = None,
    halo: int | None = None,
    scale: float | None = None,
    batch_size: int = 4,
    probabilities: str | Path | None = None,
    probability_dtype: ProbabilityDtype = "float16",
    bf16: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    max_slices: int | None = None,
    progress: bool = True,
    backbone=None,
) -> dict[str, Any]:
    """Predict a mask for every slice of a volume with a trained run and write it to ``output``.

    Args:
        run_dir: a run directory written by ``emfm train`` (it needs ``checkpoint.safetensors``).
        input: a 3-D TIFF, a folder of 2-D slices, ``store.zarr[:array]`` (OME-Zarr too) or
            ``file.h5:dataset``; uint8 or uint16.
        output: ``.zarr``, ``.ome.zarr`` or ``.tif``/``.tiff``; a uint8 0/1 volume of the input's shape.
        mode: ``resize`` (the whole slice at the run's resolution, as in evaluation) or ``tile``.
        tile: tile mode: tile edge in network pixels (a multiple of the patch size; default the run's
            resolution floored to one).
        halo: tile mode: fading border of each tile in network pixels (default tile // 8).
        scale: tile mode: network pixels per input pixel (default: the scale the run was trained at).
        batch_size: slices (resize) or tiles (tile) per backbone call; also slices read at a time.
            ``1`` reproduces ``emfm evaluate`` bit for bit; larger batches can flip the odd near-tied
            pixel, because batched matrix products round differently (2 of 130 M pixels on the
            Lucchi++ test volume at 4, a change of 1e-7 in its IoU).
        probabilities: also write the foreground probability here (same format rules).
        probability_dtype: ``float16`` (P in [0, 1]) or ``uint8`` (``round(255 * P)``).
        bf16: run the model under bfloat16 autocast (faster on recent hardware; masks may then differ
            from evaluation at a few near-tied pixels).
        overwrite: replace existing outputs. Without it, a partial output of this same job is resumed
            and anything else is refused.
        device: ``cpu``, ``cuda``...; default CUDA when available.
        max_slices: compute at most this many of the missing slices, then return (the output stays
            resumable): for time-limited jobs.
        progress: show a progress bar.
        backbone: an already created backbone (tests, notebooks); else the run's is loaded.

    Returns:
        A summary: paths, shape, settings, slices computed and skipped (``computed_slices`` lists
        them), whether the output is complete, seconds and slices per second.

    Raises:
        RunDirError: no run or no checkpoint at ``run_dir``.
        DataError: the input is missing, unreadable, not uint8/uint16, or not 2-D/3-D.
        ConfigError: unknown output extension, mode or setting; tiling that does not fit.
        OutputExistsError: the output exists and is not a partial prediction of this same job.
        DiskSpaceError: the output's disk has less free space than the output may need.
    """
    from tqdm.auto import tqdm

    from emfm.data import open_volume

    started = time.perf_counter()
    job = plan_prediction(
        run_dir, input, output, mode=mode, tile=tile, halo=halo, scale=scale, batch_size=batch_size,
        probabilities=probabilities, probability_dtype=probability_dtype, bf16=bf16, overwrite=overwrite,
        device=device,
    )
    todo = job.todo
    if max_slices is not None:
        todo = todo[: max(0, int(max_slices))]
    if job.outputs.resumed:
        log.info("resuming %s: %d of %d slices already done", output, int(job.done.sum()), job.shape[0])
    predictor = load_predictor(job, backbone) if len(todo) else None
    job.outputs.open(overwrite=overwrite)
    want_p = job.outputs.probability is not None
    step = job.batch_size
    batches = [todo[i : i + step] for i in range(0, len(todo), step)]
    computed: list[int] = []
    loop_started = time.perf_counter()
    with open_volume(job.input) as volume, ThreadPoolExecutor(1) as reader, tqdm(
        total=len(todo), desc="predicting", unit="slice", disable=not progress
    ) as bar:
        # The next batch is decoded in a background thread while this one runs through the model.
        read = lambda zs: [volume[int(z)] for z in zs]  # noqa: E731
        pending = reader.submit(read, batches[0]) if batches else None
        for k, zs in enumerate(batches):
            images = pending.result()
            pending = reader.submit(read, batches[k + 1]) if k + 1 < len(batches) else None
            for z, (mask, p) in zip(zs, predictor.predict(images, probability=want_p)):
                job.outputs.write(int(z), mask, encode_probability(p, job.probability_dtype) if want_p else None)
                job.outputs.mark_done(int(z))
                computed.append(int(z))
            bar.update(len(zs))
    loop_seconds = time.perf_counter() - loop_started
    complete = bool(job.outputs.done().all())
    if complete:
        job.outputs.finish(progress=progress)
    out = summary(job, computed, time.perf_counter() - started, loop_seconds, complete)
    log.info("predicted %d slices in %.1f s -> %s", len(computed), out["seconds"], output)
    return out
