"""Input-side alignment: each volume's intensities standardised before the model sees them.

A frozen backbone meets Lucchi++ and VNC through their stored grey values, so a set that is darker or
flatter lands elsewhere in feature space before a head or an alignment loss can act. These methods change
the pixels instead, in the same way for every slice a run trains, validates, tests or predicts on:

- ``volume-norm``: each volume stretched to its own percentile range (or z-scored and clipped), the usual
  per-image intensity normalisation of biomedical segmentation pipelines (nnU-Net, Isensee et al. 2021,
  Nature Methods), with the statistics of the whole volume, not of each slice, so that a slice darker
  than its neighbours stays darker.
- ``histogram-match``: each volume's grey-value distribution mapped onto a reference training set's,
  classical histogram specification (Gonzalez & Woods, "Digital Image Processing", ch. 3).
- ``fda``: Fourier domain adaptation (Yang & Soatto 2020, "FDA: Fourier Domain Adaptation for Semantic
  Segmentation", CVPR): each slice's low-frequency amplitude spectrum replaced by the reference set's
  mean, its phase (where the structures are) kept.

What a method learns from the training sets (:meth:`~emfm.align._base.Alignment.fit_inputs`) is JSON,
saved in the checkpoint (``ModelInfo.align_state``). What it needs of a volume (its percentiles, its
quantiles) comes from :func:`volume_sample`, at most :data:`SAMPLE_SLICES` evenly spaced slices and
:data:`SAMPLE_PIXELS` pixels of each, so ``emfm predict`` on a lazy zarr volume reads a few slices for it
and finds the same statistics that evaluation found on the same stack. A slice's output depends on its
own volume and the saved state only, never on which other sets a run holds. Every output is uint8.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emfm._settings import Settings, check_choice, check_number
from emfm.align._base import Alignment, register_alignment
from emfm.errors import ConfigError, DataError
from emfm.transforms import to_unit_float

if TYPE_CHECKING:
    from emfm.data._stack import SliceStack

#: Slices of a volume its statistics are taken from (evenly spaced; all of them in a shorter volume).
SAMPLE_SLICES = 32
#: Pixels of each sampled slice (drawn with a fixed seed per slice position; all of them in a smaller slice).
SAMPLE_PIXELS = 1 << 16
#: Quantile levels a histogram is kept at.
LEVELS = np.linspace(0.0, 1.0, 256)
#: The largest half-size of the FDA reference window kept in the checkpoint ((2k+1)^2 values).
FDA_MAX_HALF = 32


def sample_indices(n: int, k: int = SAMPLE_SLICES) -> list[int]:
    """Up to ``k`` evenly spaced slice numbers of an ``n``-slice volume, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def volume_sample(volume: Any) -> list[np.ndarray]:
    """The slices a volume's statistics come from: a list of slices or a lazy volume (``len``, ``v[z]``)."""
    return [volume[z] for z in sample_indices(len(volume))]


def pixel_sample(sample: Sequence[np.ndarray]) -> np.ndarray:
    """[0, 1] grey values (the dtype's range) of at most :data:`SAMPLE_PIXELS` pixels of each slice."""
    parts = []
    for k, image in enumerate(sample):
        flat = to_unit_float(image).ravel()
        if flat.size > SAMPLE_PIXELS:
            flat = flat[np.random.default_rng(k).integers(0, flat.size, SAMPLE_PIXELS)]
        parts.append(flat)
    if not parts:
        raise DataError("a volume without slices has no intensity statistics; give at least one slice")
    return np.concatenate(parts).astype(np.float64)


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """[0, 1] values (clipped) as 0-255."""
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def state_value(state: Mapping[str, Any], key: str, method: str) -> Any:
    if key not in state:
        raise ConfigError(f"the run's align_state has no {key!r}, which {method} needs; retrain the run")
    return state[key]


class InputStandardisation(Alignment, abc.ABC):
    """An input-side method: :meth:`volume_stats` of a volume's sample, then :meth:`transform` of its slices.

    The two steps are apart so that prediction can take the statistics of a whole lazy volume first and
    then transform it a batch of slices at a time; :meth:`standardise` is both at once.
    """

    input_side = True

    def volume_stats(self, sample: Sequence[np.ndarray]) -> dict[str, Any]:
        """What the method needs of a whole volume, from its :func:`volume_sample` (JSON-able)."""
        return {}

    @abc.abstractmethod
    def transform(
        self, images: Sequence[np.ndarray], state: Mapping[str, Any], stats: Mapping[str, Any]
    ) -> list[np.ndarray]:
        """Slices of one volume as the model sees them, given the fitted state and the volume's stats."""

    def standardise(self, images: Sequence[np.ndarray], state: Mapping[str, Any]) -> list[np.ndarray]:
        images = list(images)
        if not images:
            return []
        return self.transform(images, state, self.volume_stats(volume_sample(images)))


class ReferenceMethod(InputStandardisation):
    """A method that standardises towards one training set, ``reference`` (default: the first)."""

    def check(self, train_sets: Sequence[str]) -> None:
        ref = self.settings.reference  # type: ignore[attr-defined]
        if ref and ref not in train_sets:
            raise ConfigError(
                f"align reference {ref!r} is not a training set; use one of {', '.join(train_sets)} "
                f"(or leave it out for the first)"
            )

    def reference_images(self, train_images: Mapping[str, Sequence[np.ndarray]]) -> tuple[str, list[np.ndarray]]:
        """The reference set's name and the sample of its training slices that the state is fitted on."""
        if not train_images:
            raise ConfigError(f"align {self.name} needs at least one training set to take its reference from")
        name = self.settings.reference or next(iter(train_images))  # type: ignore[attr-defined]
        if name not in train_images:
            self.check(list(train_images))
        sample = volume_sample(list(train_images[name]))
        if not sample:
            raise DataError(f"the reference set {name} has no training slices; align {self.name} needs some")
        return name, sample


# --------------------------------------------------------------------------------------------------
# volume-norm
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeNormSettings(Settings):
    """``mode``: percentile (the ``low``..``high`` percentiles become 0..255) or zscore (mean 127.5, and
    ``clip`` standard deviations either side become 0 and 255)."""

    what = "align_settings"
    mode: Literal["percentile", "zscore"] = "percentile"
    low: float = 1.0
    high: float = 99.0
    clip: float = 3.0

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("percentile", "zscore"))
        check_number("low", self.low, minimum=0, maximum=100)
        check_number("high", self.high, minimum=0, maximum=100)
        check_number("clip", self.clip, minimum=0, exclusive_minimum=True)
        if self.low >= self.high:
            raise ConfigError(f"low {self.low} must be below high {self.high} (percentiles, e.g. low 1, high 99)")
        for key in ("low", "high", "clip"):
            object.__setattr__(self, key, float(getattr(self, key)))


@register_alignment
class VolumeNorm(InputStandardisation):
    """Each volume to its own percentile range (or z-score), with whole-volume statistics."""

    name = "volume-norm"
    summary = "each volume's intensities normalised with its own (whole-volume) percentiles or z-score"
    source = "per-volume intensity normalisation (nnU-Net, Isensee et al. 2021)"
    settings_type = VolumeNormSettings

    def volume_stats(self, sample: Sequence[np.ndarray]) -> dict[str, Any]:
        s: VolumeNormSettings = self.settings  # type: ignore[assignment]
        values = pixel_sample(sample)
        if s.mode == "percentile":
            lo, hi = np.percentile(values, [s.low, s.high])
        else:
            mean, std = values.mean(), values.std()
            lo, hi = mean - s.clip * std, mean + s.clip * std
        return {"low": float(lo), "high": float(hi)}

    def transform(
        self, images: Sequence[np.ndarray], state: Mapping[str, Any], stats: Mapping[str, Any]
    ) -> list[np.ndarray]:
        lo, hi = float(stats["low"]), float(stats["high"])
        span = max(hi - lo, 1e-6)  # a flat volume: everything above its one value is white
        return [to_uint8((to_unit_float(img).astype(np.float64) - lo) / span) for img in images]


# --------------------------------------------------------------------------------------------------
# histogram-match
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceSettings(Settings):
    """``reference``: the training set every volume is matched to; empty means the first training set."""

    what = "align_settings"
    reference: str = ""


def quantiles(values: np.ndarray) -> list[float]:
    return [float(q) for q in np.quantile(values, LEVELS)]


def levels_of(source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A volume's quantiles as a strictly increasing map from grey value to quantile level.

    Stored grey values are discrete, so many quantiles coincide (an 8-bit volume has at most 256
    values); each distinct value takes the mean level of the quantiles that share it, the midpoint of
    its step in the cumulative histogram.
    """
    values, inverse = np.unique(source, return_inverse=True)
    counts = np.bincount(inverse)
    return values, np.bincount(inverse, weights=LEVELS) / counts


@register_alignment
class HistogramMatch(ReferenceMethod):
    """Each volume's grey-value quantiles mapped onto the reference set's (monotone, piecewise linear)."""

    name = "histogram-match"
    summary = "each volume's intensity histogram matched to a reference training set's"
    source = "histogram specification (Gonzalez & Woods, Digital Image Processing)"
    settings_type = ReferenceSettings

    def fit_inputs(self, train_images: Mapping[str, Sequence[np.ndarray]]) -> dict[str, Any]:
        name, sample = self.reference_images(train_images)
        return {"reference": name, "quantiles": quantiles(pixel_sample(sample))}

    def volume_stats(self, sample: Sequence[np.ndarray]) -> dict[str, Any]:
        return {"quantiles": quantiles(pixel_sample(sample))}

    def transform(
        self, images: Sequence[np.ndarray], state: Mapping[str, Any], stats: Mapping[str, Any]
    ) -> list[np.ndarray]:
        reference = np.asarray(state_value(state, "quantiles", self.name), dtype=np.float64)
        values, levels = levels_of(np.asarray(stats["quantiles"], dtype=np.float64))
        out = []
        for img in images:
            level = np.interp(to_unit_float(img).astype(np.float64), values, levels)
            out.append(to_uint8(np.interp(level, LEVELS, reference)))
        return out


# --------------------------------------------------------------------------------------------------
# fda
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FDASettings(Settings):
    """``beta``: the swapped window's half-size as a fraction of the slice's shorter side (the official
    FDA code's ``L``: half-size floor(beta * min(H, W)), so 0.01 swaps 7 frequencies either side of zero
    on a 768-px side, and only the mean on a slice shorter than 100 px); ``reference`` as for
    histogram-match."""

    what = "align_settings"
    beta: float = 0.01
    reference: str = ""

    def __post_init__(self) -> None:
        # The paper finds larger windows bring visible artefacts (its beta goes up to 0.09); beyond a
        # quarter of the side the "low" frequencies would be most of the spectrum.
        check_number("beta", self.beta, minimum=0, exclusive_minimum=True, maximum=0.25)
        object.__setattr__(self, "beta", float(self.beta))


def half_window(shape: Sequence[int], beta: float) -> int:
    return int(np.floor(beta * min(int(shape[0]), int(shape[1]))))


def centred_amplitude(unit: np.ndarray) -> np.ndarray:
    """|FFT| divided by the pixel count, zero frequency at the centre (index h // 2, w // 2)."""
    return np.fft.fftshift(np.abs(np.fft.fft2(unit))) / unit.size


def low_window(amplitude: np.ndarray, half: int) -> np.ndarray:
    ch, cw = amplitude.shape[0] // 2, amplitude.shape[1] // 2
    return amplitude[ch - half : ch + half + 1, cw - half : cw + half + 1]


def resample_window(window: np.ndarray, half: int) -> np.ndarray:
    """A centred (2k+1)^2 amplitude window resized to (2 half + 1)^2, the zero frequency kept exactly.

    Resizing by window fraction treats the reference as if resized to the target's size, as FDA resizes
    both images to one size. scipy's linear zoom would blend the zero frequency (the mean, far larger
    than its neighbours) into the frequencies next to it, so it is smoothed over for the zoom and put
    back after; a 1x1 window (or target) holds the mean only.
    """
    from scipy.ndimage import zoom

    k = window.shape[0] // 2
    dc = float(window[k, k])
    if half == 0 or k == 0:
        return np.full((2 * half + 1, 2 * half + 1), dc) if k else np.array([[dc]])
    smooth = window.astype(np.float64).copy()
    smooth[k, k] = (window[k - 1 : k + 2, k - 1 : k + 2].sum() - dc) / 8.0
    factor = (2 * half + 1) / (2 * k + 1)
    out = zoom(smooth, (factor, factor), order=1, mode="nearest", grid_mode=False)
    out[half, half] = dc
    return out


def fda_slice(image: np.ndarray, reference: np.ndarray, beta: float) -> np.ndarray:
    """One slice with its low-frequency amplitude from ``reference`` and its own phase, as uint8."""
    unit = to_unit_float(image).astype(np.float64)
    spectrum = np.fft.fftshift(np.fft.fft2(unit))
    amplitude, phase = np.abs(spectrum), np.angle(spectrum)
    b, k = half_window(unit.shape, beta), reference.shape[0] // 2
    ch, cw = unit.shape[0] // 2, unit.shape[1] // 2
    if k == 0:  # the reference knows its mean only: swap the mean only
        b, reference = 0, reference[:1, :1]
    amplitude[ch - b : ch + b + 1, cw - b : cw + b + 1] = resample_window(reference, b) * unit.size
    mixed = np.fft.ifft2(np.fft.ifftshift(amplitude * np.exp(1j * phase)))
    return to_uint8(mixed.real)


@register_alignment
class FourierDomainAdaptation(ReferenceMethod):
    """Each slice's low-frequency amplitude spectrum replaced by the reference set's mean; phase kept."""

    name = "fda"
    summary = "each slice's low-frequency Fourier amplitude swapped for a reference training set's mean"
    source = "Yang & Soatto 2020, FDA: Fourier Domain Adaptation for Semantic Segmentation (CVPR)"
    settings_type = FDASettings

    def fit_inputs(self, train_images: Mapping[str, Sequence[np.ndarray]]) -> dict[str, Any]:
        """The reference's mean low-frequency amplitude at the smallest window of its slices (at most
        :data:`FDA_MAX_HALF`): each slice's window is only ever shrunk to it, never made up."""
        name, sample = self.reference_images(train_images)
        beta = self.settings.beta  # type: ignore[attr-defined]
        k = min(FDA_MAX_HALF, *(half_window(img.shape, beta) for img in sample))
        windows = [
            resample_window(low_window(centred_amplitude(to_unit_float(img).astype(np.float64)),
                                       half_window(img.shape, beta)), k)
            for img in sample
        ]
        return {"reference": name, "amplitude": np.mean(windows, axis=0).tolist()}

    def transform(
        self, images: Sequence[np.ndarray], state: Mapping[str, Any], stats: Mapping[str, Any]
    ) -> list[np.ndarray]:
        reference = np.asarray(state_value(state, "amplitude", self.name), dtype=np.float64)
        beta = self.settings.beta  # type: ignore[attr-defined]
        return [fda_slice(img, reference, beta) for img in images]


# --------------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------------


def standardise_stacks(
    alignment: Alignment, stacks: Sequence[SliceStack], state: Mapping[str, Any]
) -> list[SliceStack]:
    """``stacks`` standardised as one volume (a training set's train and val splits are one volume),
    each returned with its own ids and masks; the stacks themselves unchanged if the method is not input-side."""
    if not alignment.input_side:
        return list(stacks)
    images = alignment.standardise([img for s in stacks for img in s.images], state)
    out, start = [], 0
    for s in stacks:
        out.append(s.with_images(images[start : start + len(s)]))
        start += len(s)
    return out


def standardise_for_run(info: Any, stacks: Mapping[str, SliceStack]) -> dict[str, SliceStack]:
    """Test stacks as a saved run's model sees them (``info``: its :class:`~emfm.models.checkpoint.ModelInfo`)."""
    alignment = info.make_alignment()
    return {n: standardise_stacks(alignment, [s], info.align_state)[0] for n, s in stacks.items()}
