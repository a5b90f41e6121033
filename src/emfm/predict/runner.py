"""Segment a whole volume with a trained run, slice by slice, in bounded memory, resumably.

The model is 2-D, so a volume is a sequence of slices. Each slice goes through the run's own
preprocessing (``ModelInfo.preprocessing``, a :class:`~emfm.transforms.Preprocessing`: resolution,
patch size, mean/std, intensity rule) in one of two ways, chosen by
:class:`~emfm.predict.settings.PredictSettings`:

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

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emfm import __version__
from emfm._io import file_sha256
from emfm._settings import check_number
from emfm.data.readers import split_container
from emfm.errors import ConfigError, RunDirError
from emfm.predict.fingerprint import input_fingerprint
from emfm.predict.settings import DEFAULT_SETTINGS, PredictSettings, ProbabilityDtype
from emfm.predict.standardise import VolumeStandardisation
from emfm.predict.tiling import check_tiling, default_halo, tiled_logits
from emfm.predict.volume_io import PredictionOutputs, check_disk_space, input_pixel_scale, output_kind

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# The model side: slices in, native-size logits out
# --------------------------------------------------------------------------------------------------


class SlicePredictor:
    """A run's segmenter with its preprocessing: 2-D slices in, masks and probabilities out.

    Every slice goes through the run's own :class:`~emfm.transforms.Preprocessing`
    (``info.preprocessing``), the same definition evaluation uses, so the masks cannot drift from
    those ``emfm evaluate`` reports.

    Args:
        segmenter: the loaded model (in eval mode).
        info: the run's :class:`~emfm.models.checkpoint.ModelInfo`.
        settings: how to predict. In tile mode ``scale`` must be given (planning fills it in from the
            run's training data); a missing ``tile`` or ``halo`` takes the run's default, and a missing
            ``device`` is CUDA when available.
    """

    def __init__(self, segmenter, info, settings: PredictSettings = DEFAULT_SETTINGS) -> None:
        self.segmenter = segmenter
        self.info = info
        self.preprocessing = info.preprocessing
        # what a slice becomes at the network's size: the run's pixels, or an exported model's own input
        self.model_input = getattr(segmenter, "model_input", None) or self.preprocessing.pixels
        self.settings = resolve_tiling(settings, info)
        self.device = self.settings.device or default_device()

    def _autocast(self):
        import torch

        if not self.settings.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)

    def _forward(self, pixels):
        """Logits (B, K, H, W) for preprocessed pixels (B, 3, H, W), as float32 on the CPU."""
        import torch

        with torch.inference_mode(), self._autocast():
            return self.segmenter(pixels.to(self.device)).float().cpu()

    def native_logits(self, images: Sequence[np.ndarray]) -> list:
        """Logits (1, K, H, W) at each slice's own size."""
        if self.settings.mode == "resize":
            return self._resized_logits(images)
        return [self._tiled_logits(img) for img in images]

    def _resized_logits(self, images: Sequence[np.ndarray]) -> list:
        """Resize mode: slices of one size go through the model together, ``batch_size`` at a time."""
        import torch

        from emfm.transforms import logits_to_size

        pre, step = self.preprocessing, self.settings.batch_size
        out: list[Any] = [None] * len(images)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        for shape, idx in by_shape.items():
            size = pre.network_size(shape)
            for s in range(0, len(idx), step):
                part = idx[s : s + step]
                logits = self._forward(torch.stack([self.model_input(images[i], size) for i in part]))
                for b, i in enumerate(part):
                    out[i] = logits_to_size(logits[b : b + 1], shape)
        return out

    def _tiled_logits(self, image: np.ndarray):
        """Tile mode: the slice at ``scale`` network pixels per input pixel, through blended tiles."""
        from emfm.transforms import logits_to_size

        s = self.settings
        h, w = image.shape
        size = (max(1, round(h * s.scale)), max(1, round(w * s.scale)))
        pixels = self.model_input(image, size)
        logits = tiled_logits(self._forward, pixels, tile=s.tile, halo=s.halo, batch_size=s.batch_size)
        return logits_to_size(logits[None], (h, w))

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
    """The run's checkpoint (or the exported model itself, ``emfm export``'s .onnx or .zip), or a
    RunDirError saying what is wrong with the run directory."""
    from emfm.export import is_exported_model
    from emfm.models.checkpoint import CHECKPOINT_NAME

    if is_exported_model(run_dir):
        if not Path(run_dir).is_file():
            raise RunDirError(f"no exported model at {run_dir}; pass --model a file written by `emfm export`")
        return Path(run_dir)
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
    from emfm.data import read_image, resolve_dataset
    from emfm.errors import EmfmError

    if info.scale is not None:  # a tiled run records the pixel scale it was trained at
        return float(info.scale)
    from emfm.export import exported_training_scale, is_exported_model

    if is_exported_model(run_dir):  # an export records it
        return exported_training_scale(run_dir)
    run = Path(run_dir)
    hint = (
        "pass --scale S, the network pixels per input pixel (the run's resolution "
        f"{info.resolution} divided by the longest edge of its training slices)"
    )
    try:
        config = TrainConfig.from_dict(load_yaml(run / rundir.CONFIG_NAME))
        scales = {}
        for name in config.train:
            ds, root = resolve_dataset(name, config.data_root)
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
    """A checked prediction job: what to read, how to predict, where to write, what is left.

    ``settings`` are resolved against the run: the device is chosen, and in tile mode ``tile``,
    ``halo`` and ``scale`` hold the values used (defaults filled in); in resize mode those three are
    ``None``, since they do not apply.
    """

    run_dir: Path
    checkpoint: Path
    checkpoint_sha256: str
    info: Any
    input: str
    shape: tuple[int, int, int]
    dtype: str
    settings: PredictSettings
    outputs: PredictionOutputs | None
    done: np.ndarray
    overwrite: bool = False
    job_record: dict[str, Any] = field(default_factory=dict)
    # the run's input-side alignment for this volume (emfm.predict.standardise); None: slices as read
    standardisation: VolumeStandardisation | None = None

    @property
    def todo(self) -> np.ndarray:
        return np.flatnonzero(~self.done)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_tiling(settings: PredictSettings, info, run_dir: str | Path | None = None) -> PredictSettings:
    """The settings checked against the run, with the run's defaults filled in for tile mode.

    Resize mode drops ``tile``, ``halo`` and ``scale`` (they do not apply, and the job record should
    not differ by them). Tile mode defaults the tile to the run's resolution floored to a patch
    multiple, the halo to an eighth of the tile, and the scale to the one the run was trained at,
    which only its training data in ``run_dir`` can tell.

    Raises:
        ConfigError: a tile that is not a patch multiple, a halo that leaves no stride, or a scale that
            is neither given nor to be worked out.
    """
    if settings.mode == "resize":
        return settings.replace(tile=None, halo=None, scale=None)
    tile = settings.tile if settings.tile is not None else (info.resolution // info.patch_size) * info.patch_size
    halo = default_halo(tile) if settings.halo is None else settings.halo
    check_tiling(tile, halo, info.patch_size)
    scale = settings.scale
    if scale is None:
        if run_dir is None:
            raise ConfigError("tile mode needs scale, the network pixels per input pixel; set scale=S")
        scale = training_scale(run_dir, info)
    return settings.replace(tile=tile, halo=halo, scale=scale)


def resolve_device(settings: PredictSettings) -> PredictSettings:
    """The settings with their device chosen (CUDA when available unless given) and checked here, so a
    device this machine does not have is one line before any compute, not a traceback after loading."""
    import torch

    device = settings.device or default_device()
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:1'") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: this machine has no usable CUDA GPU; use device 'cpu'")
        count = torch.cuda.device_count()
        if kind.index is not None and kind.index >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        if settings.bf16 and not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name(kind)
            raise ConfigError(f"bf16: the GPU ({name}) has no bfloat16 support; drop --bf16")
    return settings.replace(device=device)


def _check_output_kinds(output: str | Path | None, probabilities: str | Path | None) -> None:
    for path in (output, probabilities):
        if path is not None:
            output_kind(path)  # an unknown extension raises before anything is read


def _read_input(spec: str, outputs: Sequence[str | Path | None]) -> tuple[tuple[int, int, int], str]:
    """The input volume's shape and dtype; refuse an empty volume and outputs that are the input."""
    from emfm.data import open_volume
    from emfm.errors import DataError

    with open_volume(spec) as volume:
        shape = tuple(int(s) for s in volume.shape)
        dtype = volume.dtype.name
    if min(shape) < 1:
        raise DataError(f"{spec}: volume of shape {shape} is empty; expected at least one slice")
    in_file = split_container(spec)[0].resolve()
    for out in outputs:
        if out is not None and Path(out).resolve() == in_file:
            raise ConfigError(f"output {out} is the input itself; write the prediction to another path")
    return shape, dtype  # type: ignore[return-value]


def _job_record(
    run_dir: str | Path, sha: str, spec: str, shape: tuple[int, int, int], dtype: str,
    settings: PredictSettings, probabilities: str | Path | None,
) -> dict[str, Any]:
    """What a partial output records of its job, so that only the same job resumes it."""
    return {
        "run": str(Path(run_dir).resolve()),
        "checkpoint_sha256": sha,
        "input": _resolved_spec(spec),
        "input_shape": list(shape),
        "input_dtype": dtype,
        # The same path, shape and dtype may hold other data after a rewrite: resume only onto the same bytes.
        "input_fingerprint": input_fingerprint(spec),
        "mode": settings.mode,
        "tile": settings.tile,
        "halo": settings.halo,
        "scale": settings.scale,
        "bf16": settings.bf16,
        "probabilities": str(Path(probabilities).resolve()) if probabilities else None,
        "probability_dtype": settings.probability_dtype if probabilities else None,
        "emfm_version": __version__,
    }


def plan_prediction(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path | None,
    settings: PredictSettings = DEFAULT_SETTINGS,
    *,
    probabilities: str | Path | None = None,
    overwrite: bool = False,
) -> PredictJob:
    """Check a job before any compute and find what is left to do; see :func:`predict_volume`.

    With ``output=None`` only the run, the input and the settings are checked (a lazy prediction
    that the caller writes itself); the job then has no outputs and every slice is to do.
    """
    from emfm.export import exported_info, is_exported_model
    from emfm.models.checkpoint import read_info

    _check_output_kinds(output, probabilities)
    ckpt = checkpoint_path(run_dir)
    info = exported_info(ckpt) if is_exported_model(ckpt) else read_info(ckpt)
    spec = str(input)
    shape, dtype = _read_input(spec, [output, probabilities])
    if settings.mode == "resize":
        info.preprocessing.network_size(shape[1:])  # a slice too small for the run's resolution raises here
    settings = resolve_device(resolve_tiling(settings, info, run_dir))
    sha = file_sha256(ckpt)
    record = _job_record(run_dir, sha, spec, shape, dtype, settings, probabilities)
    outputs = None
    done = np.zeros(shape[0], dtype=bool)
    if output is not None:
        outputs = PredictionOutputs(
            output, shape, record, probability=probabilities, probability_dtype=settings.probability_dtype,
            ome_scale=input_pixel_scale(spec),
        )
        done = outputs.inspect(overwrite=overwrite)
        check_disk_space(outputs.targets, shape, int((~done).sum()))
    return PredictJob(
        run_dir=Path(run_dir), checkpoint=ckpt, checkpoint_sha256=sha, info=info, input=spec, shape=shape,
        dtype=dtype, settings=settings, outputs=outputs, done=done, overwrite=overwrite, job_record=record,
        standardisation=VolumeStandardisation.plan(info, spec),
    )


def load_predictor(job: PredictJob, backbone=None) -> SlicePredictor:
    """Load the run's model onto the job's device and wrap it with the job's settings (an exported
    model runs on the CPU, through ONNX Runtime or bioimage.io.core)."""
    return load_model(job.checkpoint, job.settings, backbone)


def load_model(checkpoint: Path, settings: PredictSettings, backbone=None) -> SlicePredictor:
    """:func:`load_predictor` for a checkpoint (or exported model) and resolved settings, without a job:
    what callers that predict arrays in memory (:mod:`emfm.predict.arrays`) load."""
    from emfm.export import is_exported_model, load_exported
    from emfm.models.checkpoint import load_checkpoint

    if is_exported_model(checkpoint):
        model = load_exported(checkpoint)
        return SlicePredictor(model, model.info, settings)
    segmenter, info = load_checkpoint(checkpoint, backbone=backbone)
    segmenter.to(settings.device).eval()
    return SlicePredictor(segmenter, info, settings)


def summary(job: PredictJob, computed: Sequence[int], seconds: float, loop_seconds: float, complete: bool) -> dict:
    n, s, outputs = len(computed), job.settings, job.outputs
    return {
        "output": str(outputs.mask.path),
        "probabilities": str(outputs.probability.path) if outputs.probability else None,
        "probability_dtype": s.probability_dtype if outputs.probability else None,
        "input": job.input,
        "shape": list(job.shape),
        "mode": s.mode,
        "tile": s.tile,
        "halo": s.halo,
        "scale": s.scale,
        "bf16": s.bf16,
        "device": s.device,
        "resumed": outputs.resumed,
        "slices": job.shape[0],
        "computed": n,
        "skipped": int(job.done.sum()),
        "computed_slices": [int(z) for z in computed],
        "complete": complete,
        "seconds": round(seconds, 3),
        "slices_per_second": round(n / loop_seconds, 4) if loop_seconds > 0 and n else None,
    }


def finish_job(job: PredictJob, computed: Sequence[int], started: float, loop_seconds: float, progress: bool) -> dict:
    """Turn a complete output into its final form (a partial one stays resumable); the summary."""
    complete = bool(job.outputs.done().all())
    if complete:
        job.outputs.finish(progress=progress)
    out = summary(job, computed, time.perf_counter() - started, loop_seconds, complete)
    log.info("predicted %d slices in %.1f s -> %s", len(computed), out["seconds"], out["output"])
    return out


# --------------------------------------------------------------------------------------------------
# The sequential runner
# --------------------------------------------------------------------------------------------------


def predict_volume(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path,
    settings: PredictSettings = DEFAULT_SETTINGS,
    *,
    probabilities: str | Path | None = None,
    overwrite: bool = False,
    max_slices: int | None = None,
    progress: bool = True,
    backbone=None,
) -> dict[str, Any]:
    """Predict a mask for every slice of a volume with a trained run and write it to ``output``.

    Args:
        run_dir: a run directory written by ``emfm train`` (it needs ``checkpoint.safetensors``), or a
            model written by ``emfm export`` (``.onnx`` or bioimage.io ``.zip``), run the same way.
        input: a 3-D TIFF, a folder of 2-D slices, ``store.zarr[:array]`` (OME-Zarr too) or
            ``file.h5:dataset``; uint8 or uint16.
        output: ``.zarr``, ``.ome.zarr`` or ``.tif``/``.tiff``; a uint8 0/1 volume of the input's shape.
        settings: how to predict (:class:`~emfm.predict.settings.PredictSettings`: mode, tiling,
            scale, batch size, probability dtype, bf16, device).
        probabilities: also write the foreground probability here (same format rules).
        overwrite: replace existing outputs. Without it, a partial output of this same job is resumed
            and anything else is refused.
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
        ConfigError: unknown output extension or device, a bad ``max_slices``, tiling that does not fit.
        OutputExistsError: the output exists and is not a partial prediction of this same job.
        DiskSpaceError: the output's disk has less free space than the output may need.
    """
    started = time.perf_counter()
    if max_slices is not None:
        check_number("max_slices", max_slices, minimum=0, integer=True)
    job = plan_prediction(run_dir, input, output, settings, probabilities=probabilities, overwrite=overwrite)
    todo = job.todo if max_slices is None else job.todo[:max_slices]
    if job.outputs.resumed:
        log.info("resuming %s: %d of %d slices already done", output, int(job.done.sum()), job.shape[0])
    predictor = load_predictor(job, backbone) if len(todo) else None
    job.outputs.open(overwrite=overwrite)
    loop_started = time.perf_counter()
    computed = _predict_slices(job, predictor, todo, progress) if len(todo) else []
    return finish_job(job, computed, started, time.perf_counter() - loop_started, progress)


def _predict_slices(job: PredictJob, predictor: SlicePredictor, todo: np.ndarray, progress: bool) -> list[int]:
    """Predict and write the ``todo`` slices a batch at a time, flagging each done once written.

    The next batch is decoded in a background thread while this one runs through the model.
    """
    from tqdm.auto import tqdm

    from emfm.data import open_volume

    want_p = job.outputs.probability is not None
    pdtype = job.settings.probability_dtype
    computed: list[int] = []
    with open_volume(job.input) as volume, tqdm(
        total=len(todo), desc="predicting", unit="slice", disable=not progress
    ) as bar:
        batches = predict_batches(
            volume, predictor, todo, job.settings.batch_size, standardise=job.standardisation, probability=want_p
        )
        for zs, results in batches:
            for z, (mask, p) in zip(zs, results):
                job.outputs.write(int(z), mask, encode_probability(p, pdtype) if want_p else None)
                job.outputs.mark_done(int(z))
                computed.append(int(z))
            bar.update(len(zs))
    return computed


def predict_batches(
    volume, predictor: SlicePredictor, todo: Sequence[int], batch_size: int, *,
    standardise: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None, probability: bool = False,
) -> Iterator[tuple[Sequence[int], list[tuple[np.ndarray, np.ndarray | None]]]]:
    """``(slice indices, [(mask, p), ...])`` per batch of ``batch_size`` of the ``todo`` slices of ``volume``.

    Anything indexable by slice number serves as ``volume`` (an opened file, or an
    :class:`~emfm.data.readers.ArrayVolume` over an array in memory). The next batch is read (and
    standardised) in a background thread while this one runs through the model. The one loop that
    :func:`predict_volume` and :mod:`emfm.predict.arrays` both drive, so their masks cannot differ.
    """
    standardise = standardise or list
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    if not batches:
        return
    read = lambda zs: standardise([volume[int(z)] for z in zs])  # noqa: E731
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(read, batches[0])
        for k, zs in enumerate(batches):
            images = pending.result()
            if k + 1 < len(batches):
                pending = reader.submit(read, batches[k + 1])
            yield zs, predictor.predict(images, probability=probability)
