"""sCMOS calibration from real frames: offset and read-noise maps, photon transfer curve.

A dark stack (shutter closed, ``TYX``) gives each pixel's offset (temporal mean) and read
noise (temporal standard deviation). A flat-field series (several ``TYX`` stacks of a
uniform-ish light source at increasing intensity) gives the conversion gain by the
photon transfer curve: after offset subtraction, the temporal variance of a pixel
holding ``S`` ADU of signal is ``S / g + σ_read²`` (shot noise plus read noise) with
``g`` in electrons per ADU (Janesick, *Photon Transfer*, SPIE 2007). The fit is done on
the pixel-averaged mean and variance of every illumination level, which is insensitive to
fixed-pattern non-uniformity of the flat; a per-pixel gain map is fitted as well when the
frames suffice.

Stacks that cannot be a dark and flats of one camera are refused with a
:class:`CalibrationError` saying what to re-acquire: a flat not clearly brighter than the
dark (dark brighter than the flats, lit dark, unlit flat, files swapped), flat signals
spanning less than a factor ``MIN_PTC_SPREAD`` (all at one exposure: the slope, hence the
gain, is then noise), a curve that is not a line (relative residuals above
``MAX_PTC_RESIDUAL``, or fewer than ``MIN_PTC_USED_FRACTION`` of the levels on it), and a
line that does not meet the dark's temporal variance at zero signal (the read noise
measured two ways must agree).

The result is a :class:`Calibration`, saved as one self-describing ``.npz`` file (a JSON
header with ``format: fluorofpga-calibration`` and ``version: 1`` plus the maps), which
converts ADU ↔ electrons ↔ photons for the rest of the system.
"""

from __future__ import annotations

import datetime
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .io import atomic_write

PathLike = str | os.PathLike[str]

FORMAT = "fluorofpga-calibration"
VERSION = 1
MIN_DARK_FRAMES = 10  # a read-noise estimate from T frames has relative sd 1/sqrt(2(T-1))
MIN_FLAT_FRAMES = 2  # a temporal variance needs at least two frames
MIN_PTC_LEVELS = 3  # two points fix a line; the third checks it
SATURATED_FRACTION = 1e-4  # a level with more clipped samples than this is excluded
OUTLIER_REL_TOL = 0.05  # PTC points further than this (relative) from the line are dropped
GAIN_MAP_MAX_REL_ERROR = 0.1  # per-pixel gain map only when its rms error is predicted below
# Physical consistency of a flat-field series (each violation is a CalibrationError):
MIN_SIGNAL_SE = 5.0  # a flat's mean signal above the dark, in standard errors of that mean
MIN_PTC_SPREAD = 2.0  # brightest / dimmest usable flat signal: a line needs a lever arm
MAX_PTC_RESIDUAL = 0.1  # relative distance of any fitted point from the line
MIN_PTC_USED_FRACTION = 0.6  # of the unsaturated levels; fewer on the line = not linear
INTERCEPT_SD = 5.0  # the line at zero signal vs the dark's variance: standard errors ...
INTERCEPT_REL_TOL = 0.25  # ... plus this fraction of the dark's variance
#: the offset map's shrinkage never moves a pixel by more than this many of its standard
#: errors (Efron & Morris' limited translation: a pixel the prior does not describe keeps
#: close to its own measurement)
SHRINK_MAX_SE = 2.0


class CalibrationError(ValueError):
    """A calibration input or file is unusable; the message says what and why."""


def _check_stack(stack: np.ndarray, name: str, min_frames: int) -> np.ndarray:
    """Validate a ``TYX`` stack (uint16/int, or finite non-negative floats) → float64."""
    array = np.asarray(stack)
    if array.ndim != 3:
        raise CalibrationError(
            f"{name} must be a TYX stack (frames, rows, columns), got shape {array.shape}"
        )
    if array.dtype.kind not in "uif":
        raise CalibrationError(f"{name} must hold integer ADU or floats, got dtype {array.dtype}")
    if array.shape[0] < min_frames:
        raise CalibrationError(
            f"{name} has {array.shape[0]} frame(s); at least {min_frames} are needed"
        )
    if min(array.shape[1:]) < 1:
        raise CalibrationError(f"{name} has an empty frame shape {array.shape[1:]}")
    values = array.astype(np.float64)
    if array.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise CalibrationError(f"{name} holds NaN or inf pixels")
    if values.min() < 0:
        raise CalibrationError(f"{name} holds negative pixels (minimum {values.min():g} ADU)")
    return values


def _format_shape(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


def calibrate_dark(dark_stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset and read-noise maps from a dark stack.

    Args:
        dark_stack: ``(T, Y, X)`` frames taken without light, ADU (uint16, or finite
            non-negative floats), ``T ≥ 10``.

    Returns:
        ``(offset_adu, read_noise_adu)``: per-pixel temporal mean and temporal standard
        deviation (``ddof=1``), float64 ``(Y, X)``. The read noise includes the ADC
        quantisation (1/12 ADU²) and the dark-current shot noise of the exposure, as any
        measured read noise does.

    Raises:
        CalibrationError: not a TYX stack, NaN/inf/negative pixels, or too few frames.
    """
    dark = _check_stack(dark_stack, "dark stack", MIN_DARK_FRAMES)
    return dark.mean(axis=0), dark.std(axis=0, ddof=1)


def find_hot_pixels(
    offset_adu: np.ndarray, read_noise_adu: np.ndarray, threshold_sd: float = 6.0
) -> np.ndarray:
    """Defective pixels of a dark calibration: hot (high dark signal) or noisy (RTS).

    A pixel is flagged when its dark mean or its temporal noise lies more than
    ``threshold_sd`` robust standard deviations (1.4826 × MAD over the sensor) above the
    sensor's median. Returns a boolean ``(Y, X)`` map.
    """
    flagged = np.zeros(np.shape(offset_adu), dtype=bool)
    for values in (np.asarray(offset_adu, float), np.asarray(read_noise_adu, float)):
        median = np.median(values)
        sd = 1.4826 * np.median(np.abs(values - median))
        if sd > 0:
            flagged |= values > median + threshold_sd * sd
    return flagged


def shrink_offsets(
    offset_adu: np.ndarray, read_noise_adu: np.ndarray, n_frames: int,
    hot_pixels: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The offset map's minimum-mean-square-error estimate from its dark-stack means.

    A pixel's temporal mean over ``T`` darks carries an error of ``read_noise / √T``
    (0.8 e⁻ rms for 3.5 e⁻ read noise and 20 darks), which the restoration subtracts
    from the frame and adds back to the restored image: a fixed pattern as large as the
    whole signal of a 1-photon pixel. Pixel offsets of a real sensor scatter by a spread
    ``τ`` about a column/row structure (column ADCs); when ``τ`` is not much larger than
    the measurement error, each mean is pulled towards that structure by the empirical
    Bayes weight ``τ² / (τ² + s²)`` (James–Stein, with ``τ²`` from the robust spread of the
    means minus the measurement variance), never by more than :data:`SHRINK_MAX_SE`
    standard errors (limited translation, so an atypical pixel stays near its own
    measurement). Hot pixels are left as measured. A sensor whose offsets truly scatter
    far more than ``s`` keeps its map almost unchanged.

    Args:
        offset_adu: per-pixel temporal means of the darks (:func:`calibrate_dark`).
        read_noise_adu: per-pixel temporal standard deviations of the same darks.
        n_frames: dark frames behind the means (≥ 2).
        hot_pixels: optional defect map (:func:`find_hot_pixels`); those pixels are kept.

    Returns:
        ``(offset map, info)`` with ``info`` the JSON-ready numbers behind it: the prior's
        spread ``prior_sd_adu``, the median measurement error ``measurement_sd_adu`` and
        the mean weight kept on each pixel's own measurement ``mean_weight``.
    """
    offset = np.asarray(offset_adu, dtype=np.float64)
    if n_frames < 2:
        raise CalibrationError(f"offset shrinkage needs ≥ 2 dark frames, got {n_frames}")
    se2 = np.asarray(read_noise_adu, dtype=np.float64) ** 2 / n_frames
    typical = np.ones(offset.shape, bool) if hot_pixels is None else ~np.asarray(hot_pixels)
    if not typical.any():
        typical = np.ones(offset.shape, bool)
    # prior mean: the sensor's median plus its column and row structure (medians)
    centre = float(np.median(offset[typical]))
    dev = np.where(typical, offset - centre, np.nan)
    columns = np.nan_to_num(np.nanmedian(dev, axis=0))
    rows = np.nan_to_num(np.nanmedian(dev - columns[None, :], axis=1))
    prior = centre + columns[None, :] + rows[:, None]
    resid = (offset - prior)[typical]
    spread2 = (1.4826 * float(np.median(np.abs(resid - np.median(resid))))) ** 2
    tau2 = max(spread2 - float(np.median(se2[typical])), 0.0)
    weight = np.where(typical, tau2 / np.maximum(tau2 + se2, 1e-300), 1.0)
    step = np.clip((1.0 - weight) * (offset - prior), -SHRINK_MAX_SE * np.sqrt(se2),
                   SHRINK_MAX_SE * np.sqrt(se2))
    info = {"method": "empirical Bayes (James-Stein) towards column/row medians, "
                      f"limited translation ({SHRINK_MAX_SE:g} standard errors)",
            "prior_sd_adu": float(np.sqrt(tau2)),
            "measurement_sd_adu": float(np.sqrt(np.median(se2))),
            "mean_weight": float(np.mean(weight[typical])),
            "n_dark_frames": int(n_frames)}
    return offset - step, info


@dataclass(frozen=True)
class PTCResult:
    """Photon transfer curve and its fit ``variance = mean / gain + read_variance``.

    Attributes:
        mean_adu: per level, mean offset-subtracted signal over pixels and frames, ADU.
        variance_adu2: per level, temporal variance (``ddof=1``) averaged over pixels, ADU².
        n_frames: frames per level.
        saturated: per level, True when more than ``SATURATED_FRACTION`` of its samples
            reached ``saturation_adu`` (such levels are never used).
        used: per level, True when the point entered the final fit.
        residual_rel: per level, ``(variance - fit) / fit``.
        gain_e_per_adu: fitted conversion gain, electrons per ADU (1 / slope).
        gain_rel_error: standard error of the gain from the fit, relative.
        read_variance_adu2: fitted intercept, ADU².
        saturation_adu: clip level used to flag saturated levels, ADU.
    """

    mean_adu: np.ndarray
    variance_adu2: np.ndarray
    n_frames: np.ndarray
    saturated: np.ndarray
    used: np.ndarray
    residual_rel: np.ndarray
    gain_e_per_adu: float
    gain_rel_error: float
    read_variance_adu2: float
    saturation_adu: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy (lists instead of arrays)."""
        return {
            "mean_adu": self.mean_adu.tolist(),
            "variance_adu2": self.variance_adu2.tolist(),
            "n_frames": self.n_frames.tolist(),
            "saturated": self.saturated.tolist(),
            "used": self.used.tolist(),
            "residual_rel": self.residual_rel.tolist(),
            "gain_e_per_adu": self.gain_e_per_adu,
            "gain_rel_error": self.gain_rel_error,
            "read_variance_adu2": self.read_variance_adu2,
            "saturation_adu": self.saturation_adu,
        }


def _weighted_line(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """Weighted least squares ``y = a x + b`` → ``(a, b, standard error of a)``."""
    design = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(weights)[:, None]
    target = y * np.sqrt(weights)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    dof = len(x) - 2
    residual = target - design @ coef
    scale = float(residual @ residual) / dof if dof > 0 else 0.0
    covariance = np.linalg.pinv(design.T @ design) * scale
    return float(coef[0]), float(coef[1]), float(np.sqrt(max(covariance[0, 0], 0.0)))


def _default_saturation(stacks: Sequence[np.ndarray]) -> float:
    """Full scale of the smallest standard ADC (8 bit for 8-bit data, else 12 or 16 bit)
    that holds the data."""
    if stacks and all(np.asarray(s).dtype.itemsize == 1 for s in stacks):
        return 255.0
    peak = max((float(np.max(s)) for s in stacks if s.size), default=0.0)
    return 4095.0 if peak <= 4095 else 65535.0


def photon_transfer(
    flat_stacks: Sequence[np.ndarray],
    offset_adu: np.ndarray,
    *,
    saturation_adu: float | None = None,
    read_variance_adu2: float | None = None,
) -> PTCResult:
    """Photon transfer curve of a flat-field series and its robust linear fit.

    For every level the offset map is subtracted, the temporal variance of every pixel
    is taken over the frames (``ddof=1``) and averaged over pixels, and the signal is
    averaged over pixels and frames. Levels with clipped samples are excluded. The line
    ``variance = mean / gain + read_variance`` is fitted by least squares weighted by
    ``1 / variance²`` (the variance of a variance estimate grows with its square); while
    the worst point lies more than ``OUTLIER_REL_TOL`` (relative) off the line and more
    than ``MIN_PTC_LEVELS`` points remain, it is dropped and the line refitted.

    Physically inconsistent series are refused rather than fitted: every unsaturated
    flat's mean signal must lie ``MIN_SIGNAL_SE`` standard errors above the dark,
    the unsaturated (and the fitted) signals must span a factor ``MIN_PTC_SPREAD``, and
    the fitted points must lie within ``MAX_PTC_RESIDUAL`` of the line with at least
    ``MIN_PTC_USED_FRACTION`` of the unsaturated levels kept. With
    ``read_variance_adu2`` the line must also meet the dark's temporal variance at zero
    signal, within ``INTERCEPT_SD`` standard errors plus ``INTERCEPT_REL_TOL`` of it.

    Args:
        flat_stacks: one ``(T, Y, X)`` stack per illumination level (≥ 3 levels,
            ≥ 2 frames each), ADU, all with the same frame shape as ``offset_adu``.
        offset_adu: offset map from :func:`calibrate_dark`.
        saturation_adu: clip level; default 255 for 8-bit data, else 4095 if every sample
            fits 12 bits, else 65535.
        read_variance_adu2: the dark stack's temporal variance averaged over pixels (the
            mean square of :func:`calibrate_dark`'s read-noise map), if known.

    Raises:
        CalibrationError: bad stacks, shape mismatch, fewer than 2 usable levels, or a
            physically inconsistent series (see above); the message says what to
            re-acquire.
    """
    offset = np.asarray(offset_adu, dtype=np.float64)
    if isinstance(flat_stacks, np.ndarray) and flat_stacks.ndim == 3:
        raise CalibrationError(
            "flat_stacks must be a list of TYX stacks, one per illumination level, not one stack"
        )
    if len(flat_stacks) < MIN_PTC_LEVELS:
        raise CalibrationError(
            f"the photon transfer curve needs flats at ≥ {MIN_PTC_LEVELS} illumination "
            f"levels, got {len(flat_stacks)}"
        )
    stacks = [np.asarray(s) for s in flat_stacks]
    for i, stack in enumerate(stacks):
        if stack.ndim == 3 and stack.shape[1:] != offset.shape:
            raise CalibrationError(
                f"flat stack {i} has {_format_shape(stack.shape[1:])} frames but the dark "
                f"stack is {_format_shape(offset.shape)}"
            )
    saturation = _default_saturation(stacks) if saturation_adu is None else float(saturation_adu)
    means, variances, n_frames, saturated = [], [], [], []
    for i, raw in enumerate(stacks):  # one float64 copy at a time
        stack = _check_stack(raw, f"flat stack {i}", MIN_FLAT_FRAMES)
        saturated.append(float(np.mean(stack >= saturation)) > SATURATED_FRACTION)
        signal = stack - offset
        means.append(float(signal.mean()))
        variances.append(float(signal.var(axis=0, ddof=1).mean()))
        n_frames.append(stack.shape[0])
    mean = np.array(means)
    variance = np.array(variances)
    sat = np.array(saturated)
    usable = ~sat
    if usable.sum() < 2:
        raise CalibrationError(
            f"only {int(usable.sum())} of {len(stacks)} flat levels are below saturation "
            f"({saturation:g} ADU); use dimmer flats"
        )
    _check_flats_above_dark(mean, variance, np.array(n_frames) * int(np.prod(offset.shape)),
                            usable)  # fmt: skip
    _check_spread(mean, usable, "unsaturated")
    used = usable.copy()
    while True:
        slope, intercept, slope_se = _weighted_line(
            mean[used], variance[used], 1.0 / variance[used] ** 2
        )
        relative = np.where(used, np.abs(variance / (slope * mean + intercept) - 1.0), 0.0)
        worst = int(np.argmax(relative))
        if relative[worst] <= OUTLIER_REL_TOL or used.sum() <= MIN_PTC_LEVELS:
            break
        used[worst] = False
    if not slope > 0:
        raise CalibrationError(
            f"the photon transfer curve does not rise with signal (slope {slope:g}); "
            "check that the flats are lit and not saturated"
        )
    fit = slope * mean + intercept
    _check_linearity(mean, variance, fit, usable, used)
    if read_variance_adu2 is not None:
        pixels = int(np.prod(offset.shape))
        _check_intercept(mean, fit, np.array(n_frames), pixels, used, intercept,
                         float(read_variance_adu2))  # fmt: skip
    return PTCResult(
        mean_adu=mean,
        variance_adu2=variance,
        n_frames=np.array(n_frames),
        saturated=sat,
        used=used,
        residual_rel=(variance - fit) / fit,
        gain_e_per_adu=1.0 / slope,
        gain_rel_error=slope_se / slope,
        read_variance_adu2=float(intercept),
        saturation_adu=saturation,
    )


def _levels(indices: np.ndarray, mean: np.ndarray) -> str:
    return ", ".join(f"{i}: {mean[i]:.4g} ADU" for i in indices)


def _check_flats_above_dark(
    mean: np.ndarray, variance: np.ndarray, samples: np.ndarray, usable: np.ndarray
) -> None:
    """Every unsaturated flat must be significantly brighter than the dark.

    The standard error of a level's mean signal is ``sqrt(2 v / samples)``: its temporal
    variance ``v`` over its pixels × frames, doubled for the offset map's own error.
    """
    standard_error = np.sqrt(2.0 * np.maximum(variance, 0.0) / samples)
    dim = np.flatnonzero(usable & (mean <= MIN_SIGNAL_SE * standard_error))
    if dim.size == 0:
        return
    i = int(dim[np.argmin(mean[dim])])
    if mean[i] < -MIN_SIGNAL_SE * standard_error[i]:
        what = f"the dark stack is brighter than flat stack {i} (by {-mean[i]:.4g} ADU on average)"
    else:
        what = (
            f"flat stack {i} is not clearly brighter than the dark ({mean[i]:+.3g} ADU on "
            f"average, less than {MIN_SIGNAL_SE:g} standard errors of {standard_error[i]:.2g} ADU)"
        )
    raise CalibrationError(
        f"{what}: the dark is not clearly darker than the flats. Take the dark with the "
        "shutter closed (no light), light every flat, and check that dark and flat files "
        "are not swapped"
    )


def _check_spread(mean: np.ndarray, levels: np.ndarray, which: str) -> None:
    """The flat signals must span a factor ``MIN_PTC_SPREAD`` for the slope to mean anything."""
    signal = mean[levels]
    ratio = float(signal.max() / signal.min())
    if ratio < MIN_PTC_SPREAD:
        raise CalibrationError(
            f"the {which} flat signals above the dark span only a factor {ratio:.3g} "
            f"({signal.min():.4g} to {signal.max():.4g} ADU); the photon transfer fit needs "
            f"at least a factor {MIN_PTC_SPREAD:g}, or its slope (the gain) is noise. Take "
            "the flats at several exposures or light levels (e.g. 1x, 3x, 10x, 30x)"
        )


def _check_linearity(
    mean: np.ndarray, variance: np.ndarray, fit: np.ndarray, usable: np.ndarray,
    used: np.ndarray,
) -> None:
    """The fitted points must lie on the line, and most levels must be among them."""
    residual = np.abs(variance / fit - 1.0)
    worst = float(residual[used].max())
    needed = max(MIN_PTC_LEVELS, int(np.ceil(MIN_PTC_USED_FRACTION * usable.sum())))
    if worst > MAX_PTC_RESIDUAL or used.sum() < needed:
        off = np.flatnonzero(usable & (residual > OUTLIER_REL_TOL))
        raise CalibrationError(
            "the photon transfer curve is not a line (variance not proportional to signal "
            f"plus read noise): {int(used.sum())} of {int(usable.sum())} unsaturated levels "
            f"fit it, worst fitted point {100 * worst:.0f} % off; levels off the line: "
            f"{_levels(off, mean)}. The gain would be wrong: check for a non-linear camera "
            "mode (gain switching, noise filtering, compression), flicker, or light that "
            "changed during a stack"
        )
    _check_spread(mean, used, "fitted")


def _check_intercept(
    mean: np.ndarray, fit: np.ndarray, n_frames: np.ndarray, pixels: int, used: np.ndarray,
    intercept: float, dark_variance: float,
) -> None:
    """The line's value at zero signal must be the dark's temporal variance.

    The standard error of the intercept follows from the sampling variance of each
    level's pixel-averaged temporal variance, ``2 v² / ((T - 1) N)``.
    """
    weights = (n_frames[used] - 1) * pixels / (2.0 * fit[used] ** 2)
    design = np.stack([mean[used], np.ones(int(used.sum()))], axis=1)
    covariance = np.linalg.pinv(design.T @ (design * weights[:, None]))
    standard_error = float(np.sqrt(max(covariance[1, 1], 0.0)))
    tolerance = INTERCEPT_SD * standard_error + INTERCEPT_REL_TOL * dark_variance
    if abs(intercept - dark_variance) > tolerance:
        raise CalibrationError(
            f"the photon transfer line meets zero signal at a variance of {intercept:.4g} ADU² "
            f"but the dark frames' temporal variance is {dark_variance:.4g} ADU² (tolerance "
            f"{tolerance:.2g}): dark and flats do not behave like one linear camera. Take "
            "them in the same camera mode (gain, readout rate, binning, no noise filtering "
            "or compression) and check for light changing during the flats"
        )


def _gain_map(
    flat_stacks: Sequence[np.ndarray],
    offset_adu: np.ndarray,
    read_noise_adu: np.ndarray,
    ptc: PTCResult,
) -> tuple[np.ndarray | None, float]:
    """Per-pixel gain by a weighted fit through each pixel's (mean, variance) points.

    Each pixel's ``variance - read_noise²`` is fitted by ``mean / g`` (a line through the
    origin) over the levels the PTC used, weighted by ``(T - 1) / (2 v²)`` with ``v`` the
    pooled fit. The predicted relative rms error is ``1 / sqrt(Σ m² w) / slope``; the map
    is returned only when it is below ``GAIN_MAP_MAX_REL_ERROR``.
    """
    slope = 1.0 / ptc.gain_e_per_adu
    numerator = np.zeros_like(offset_adu)
    denominator = np.zeros_like(offset_adu)
    for stack, used in zip(flat_stacks, ptc.used, strict=True):
        if not used:
            continue
        signal = np.asarray(stack, dtype=np.float64) - offset_adu
        pixel_mean = signal.mean(axis=0)
        pixel_var = signal.var(axis=0, ddof=1) - read_noise_adu**2
        model_var = slope * pixel_mean + ptc.read_variance_adu2
        weight = (stack.shape[0] - 1) / (2.0 * np.maximum(model_var, 1e-12) ** 2)
        numerator += weight * pixel_mean * pixel_var
        denominator += weight * pixel_mean**2
    rel_error = float(np.median(1.0 / np.sqrt(denominator)) / slope)
    if rel_error > GAIN_MAP_MAX_REL_ERROR or np.any(numerator <= 0):
        return None, rel_error
    return denominator / numerator, rel_error


@dataclass
class Calibration:
    """Per-pixel sCMOS calibration: converts ADU ↔ electrons ↔ photons.

    ``electrons = (ADU - offset) · gain``; ``photons = electrons / qe`` (with ``qe``
    unknown, "photons" are photoelectrons).

    Attributes:
        offset_adu: offset map, ADU, float64 ``(Y, X)``.
        read_noise_adu: read-noise map, rms ADU, float64 ``(Y, X)``.
        gain_e_per_adu: conversion gain from the photon transfer curve, electrons/ADU.
        gain_map_e_per_adu: per-pixel gain map when the flats allowed it, else ``None``;
            conversions use it when present.
        qe: quantum efficiency (photons → electrons), or ``None`` if unknown.
        n_dark_frames, n_flat_frames: frames used.
        created: ISO 8601 time of the calibration (UTC).
        camera_serial: serial string of the camera.
        ptc: photon transfer curve data (``PTCResult.as_dict()``), if measured.
        gain_map_rel_error: predicted relative rms error of the gain map.
        hot_pixels: boolean ``(Y, X)`` map of defective pixels found in the darks (see
            :func:`find_hot_pixels`), or ``None``.
        offset_shrinkage: how the offset map was estimated from the darks' means
            (:func:`shrink_offsets`), or ``None`` for the plain means (older files).
    """

    offset_adu: np.ndarray
    read_noise_adu: np.ndarray
    gain_e_per_adu: float
    gain_map_e_per_adu: np.ndarray | None = None
    qe: float | None = None
    n_dark_frames: int = 0
    n_flat_frames: int = 0
    created: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
    )
    camera_serial: str = ""
    ptc: dict[str, Any] | None = None
    gain_map_rel_error: float | None = None
    hot_pixels: np.ndarray | None = None
    offset_shrinkage: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Validate the maps and constants."""
        if self.hot_pixels is not None:
            self.hot_pixels = np.asarray(self.hot_pixels, dtype=bool)
            if self.hot_pixels.shape != np.shape(self.offset_adu):
                raise CalibrationError(
                    f"hot-pixel map is {_format_shape(self.hot_pixels.shape)}, offset map is "
                    f"{_format_shape(np.shape(self.offset_adu))}"
                )
        self.offset_adu = np.asarray(self.offset_adu, dtype=np.float64)
        self.read_noise_adu = np.asarray(self.read_noise_adu, dtype=np.float64)
        if self.offset_adu.ndim != 2 or self.offset_adu.size == 0:
            raise CalibrationError(f"offset map must be (Y, X), got shape {self.offset_adu.shape}")
        maps = {"offset": self.offset_adu, "read noise": self.read_noise_adu}
        if self.gain_map_e_per_adu is not None:
            self.gain_map_e_per_adu = np.asarray(self.gain_map_e_per_adu, dtype=np.float64)
            maps["gain"] = self.gain_map_e_per_adu
        for name, array in maps.items():
            if array.shape != self.offset_adu.shape:
                raise CalibrationError(
                    f"{name} map is {_format_shape(array.shape)}, offset map is "
                    f"{_format_shape(self.offset_adu.shape)}"
                )
            if not np.all(np.isfinite(array)):
                raise CalibrationError(f"{name} map holds NaN or inf")
        if self.read_noise_adu.min() < 0:
            raise CalibrationError("read noise map must be ≥ 0")
        if self.gain_map_e_per_adu is not None and self.gain_map_e_per_adu.min() <= 0:
            raise CalibrationError("gain map must be > 0")
        if not (np.isfinite(self.gain_e_per_adu) and self.gain_e_per_adu > 0):
            raise CalibrationError(f"gain must be > 0 e⁻/ADU, got {self.gain_e_per_adu!r}")
        if self.qe is not None and not (np.isfinite(self.qe) and 0 < self.qe <= 1):
            raise CalibrationError(f"qe must be in (0, 1] or None, got {self.qe!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """Sensor shape ``(Y, X)``."""
        return (int(self.offset_adu.shape[0]), int(self.offset_adu.shape[1]))

    @property
    def gain(self) -> np.ndarray | float:
        """Gain used by the conversions: the map if present, else the PTC scalar."""
        if self.gain_map_e_per_adu is not None:
            return self.gain_map_e_per_adu
        return self.gain_e_per_adu

    @property
    def read_noise_e(self) -> np.ndarray:
        """Read-noise map in rms electrons."""
        return self.read_noise_adu * self.gain

    def check_shape(self, frame_shape: Sequence[int]) -> None:
        """Raise ``CalibrationError`` unless frames of ``frame_shape`` (``…YX``) fit the sensor."""
        frame_shape = tuple(int(n) for n in frame_shape)
        if len(frame_shape) < 2 or frame_shape[-2:] != self.shape:
            found = _format_shape(frame_shape[-2:]) if len(frame_shape) >= 2 else str(frame_shape)
            raise CalibrationError(
                f"calibration is for a {_format_shape(self.shape)} sensor but the frames are "
                f"{found}"
            )

    def _check_values(self, values: np.ndarray, unit: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        self.check_shape(array.shape)
        if not np.all(np.isfinite(array)):
            raise CalibrationError(f"{unit} values hold NaN or inf")
        return array

    def repair_hot_pixels(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` with every flagged pixel replaced by the median of its 3×3 neighbours."""
        if self.hot_pixels is None or not self.hot_pixels.any():
            return frame
        self.check_shape(np.shape(frame))
        frame = np.asarray(frame)
        # the 3×3 median at the flagged pixels only (same as scipy's median_filter with
        # mode="reflect", i.e. numpy's "symmetric" padding), not over the whole frame
        ys, xs = np.nonzero(self.hot_pixels)
        padded = np.pad(frame, 1, mode="symmetric")
        neighbours = np.stack([padded[ys + dy, xs + dx] for dy in range(3) for dx in range(3)])
        repaired = np.array(frame, copy=True)
        repaired[ys, xs] = np.median(neighbours, axis=0).astype(frame.dtype)
        return repaired

    def adu_to_electrons(self, adu: np.ndarray) -> np.ndarray:
        """``(adu - offset) · gain``, electrons, float64 (may be negative from read noise)."""
        adu = self._check_values(adu, "ADU")
        if adu.min() < 0:
            raise CalibrationError(f"ADU values must be ≥ 0, found {adu.min():g}")
        return (adu - self.offset_adu) * self.gain

    def adu_to_photons(self, adu: np.ndarray) -> np.ndarray:
        """ADU → photons (``electrons / qe``; photoelectrons when ``qe`` is None)."""
        return self.adu_to_electrons(adu) / (1.0 if self.qe is None else self.qe)

    def photons_to_adu(self, photons: np.ndarray) -> np.ndarray:
        """Photons → expected ADU, ``photons · qe / gain + offset`` (float64, unclipped)."""
        photons = self._check_values(photons, "photon")
        if photons.min() < 0:
            raise CalibrationError(f"photons must be ≥ 0, found {photons.min():g}")
        qe = 1.0 if self.qe is None else self.qe
        return photons * qe / self.gain + self.offset_adu

    def summary(self) -> dict[str, Any]:
        """Key numbers for printing (JSON-ready)."""
        summary: dict[str, Any] = {
            "sensor_shape": list(self.shape),
            "gain_e_per_adu": self.gain_e_per_adu,
            "gain_map": self.gain_map_e_per_adu is not None,
            "hot_pixels": int(self.hot_pixels.sum()) if self.hot_pixels is not None else None,
            "offset_adu_median": float(np.median(self.offset_adu)),
            "offset_adu_sd": float(self.offset_adu.std()),
            "read_noise_e_median": float(np.median(self.read_noise_e)),
            "read_noise_e_rms": float(np.sqrt(np.mean(self.read_noise_e**2))),
            "read_noise_e_p99": float(np.percentile(self.read_noise_e, 99)),
            "qe": self.qe,
            "n_dark_frames": self.n_dark_frames,
            "n_flat_frames": self.n_flat_frames,
            "created": self.created,
            "camera_serial": self.camera_serial,
        }
        if self.offset_shrinkage is not None:
            summary["offset_prior_sd_adu"] = self.offset_shrinkage["prior_sd_adu"]
            summary["offset_measurement_sd_adu"] = self.offset_shrinkage["measurement_sd_adu"]
            summary["offset_mean_weight"] = self.offset_shrinkage["mean_weight"]
        if self.ptc is not None:
            summary["ptc_levels_used"] = int(sum(self.ptc["used"]))
            summary["ptc_levels"] = len(self.ptc["used"])
            summary["gain_rel_error"] = self.ptc["gain_rel_error"]
        return summary

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "sensor_shape": list(self.shape),
            "gain_e_per_adu": self.gain_e_per_adu,
            "qe": self.qe,
            "n_dark_frames": self.n_dark_frames,
            "n_flat_frames": self.n_flat_frames,
            "created": self.created,
            "camera_serial": self.camera_serial,
            "ptc": self.ptc,
            "gain_map_rel_error": self.gain_map_rel_error,
            "offset_shrinkage": self.offset_shrinkage,
            "units": {"offset_adu": "ADU", "read_noise_adu": "ADU rms", "gain": "e-/ADU"},
        }

    def save(self, path: PathLike) -> None:
        """Write the calibration to ``path`` (an ``.npz``), atomically.

        The archive holds ``header`` (a JSON string) and the float64 maps ``offset_adu``,
        ``read_noise_adu`` and, if present, ``gain_map_e_per_adu``.
        """
        arrays = {
            "header": np.array(json.dumps(self._header())),
            "offset_adu": self.offset_adu,
            "read_noise_adu": self.read_noise_adu,
        }
        if self.gain_map_e_per_adu is not None:
            arrays["gain_map_e_per_adu"] = self.gain_map_e_per_adu
        if self.hot_pixels is not None:
            arrays["hot_pixels"] = self.hot_pixels
        atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_calibration(path: PathLike) -> Calibration:
    """Read a calibration written by :meth:`Calibration.save`.

    Raises:
        CalibrationError: missing file, not a calibration file, a newer format version,
            or maps inconsistent with the header.
    """
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise CalibrationError(f"{name}: no such calibration file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic != b"PK\x03\x04":  # every .npz is a zip archive
            kind = "a TIFF image" if magic[:2] in (b"II", b"MM") else "not an .npz archive"
            raise CalibrationError(
                f"{name}: not a fluorofpga calibration ({kind}); give the .npz file that "
                "`fluorofpga calibrate` wrote")
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CalibrationError(f"{name}: not a fluorofpga calibration (not an .npz archive)")
        with archive:
            if "header" not in archive.files:
                raise CalibrationError(f"{name}: not a fluorofpga calibration (no header)")
            header = json.loads(str(archive["header"][()]))
            arrays = {key: archive[key] for key in archive.files if key != "header"}
    except CalibrationError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{name}: not a readable calibration file ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CalibrationError(f"{name}: not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise CalibrationError(
            f"{name}: calibration format version {header.get('version')!r}; this fluorofpga "
            f"reads version {VERSION}"
        )
    for key in ("offset_adu", "read_noise_adu"):
        if key not in arrays:
            raise CalibrationError(f"{name}: calibration file lacks the {key} map")
    if list(arrays["offset_adu"].shape) != header.get("sensor_shape"):
        raise CalibrationError(
            f"{name}: header says a {header.get('sensor_shape')} sensor but the offset map is "
            f"{arrays['offset_adu'].shape}"
        )
    try:
        return Calibration(
            offset_adu=arrays["offset_adu"],
            read_noise_adu=arrays["read_noise_adu"],
            gain_e_per_adu=float(header["gain_e_per_adu"]),
            gain_map_e_per_adu=arrays.get("gain_map_e_per_adu"),
            qe=header.get("qe"),
            n_dark_frames=int(header.get("n_dark_frames", 0)),
            n_flat_frames=int(header.get("n_flat_frames", 0)),
            created=str(header.get("created", "")),
            camera_serial=str(header.get("camera_serial", "")),
            ptc=header.get("ptc"),
            gain_map_rel_error=header.get("gain_map_rel_error"),
            hot_pixels=arrays.get("hot_pixels"),
            offset_shrinkage=header.get("offset_shrinkage"),
        )
    except (KeyError, TypeError) as exc:
        raise CalibrationError(f"{name}: incomplete calibration header ({exc})") from exc
    except CalibrationError as exc:  # a map with NaN, a negative read noise, ...: which file
        raise CalibrationError(f"{name}: {exc}") from None


def calibrate(
    dark_stack: np.ndarray,
    flat_stacks: Sequence[np.ndarray],
    *,
    qe: float | None = None,
    camera_serial: str = "",
    saturation_adu: float | None = None,
) -> Calibration:
    """Full calibration: offset and read-noise maps from the darks, gain from the flats.

    Args:
        dark_stack: ``(T, Y, X)`` dark frames (≥ 10), ADU.
        flat_stacks: one ``(T, Y, X)`` stack (≥ 2 frames) per illumination level, ≥ 3
            levels, same frame shape as the darks.
        qe: quantum efficiency from the camera's datasheet, if known.
        camera_serial: recorded in the calibration.
        saturation_adu: clip level of the ADC (default: inferred, see
            :func:`photon_transfer`).

    Returns:
        The calibration; ``gain_map_e_per_adu`` is filled when the flats hold enough
        frames for a per-pixel gain with < 10 % predicted rms error; ``hot_pixels`` flags
        the defective pixels of the darks (:func:`find_hot_pixels`); the offset map is the
        darks' means shrunk by their measurement error (:func:`shrink_offsets`; the photon
        transfer curve and the gain map use the plain means).
    """
    offset, read_noise = calibrate_dark(dark_stack)
    ptc = photon_transfer(flat_stacks, offset, saturation_adu=saturation_adu,
                          read_variance_adu2=float(np.mean(read_noise**2)))
    gain_map, gain_map_error = _gain_map(flat_stacks, offset, read_noise, ptc)
    hot = find_hot_pixels(offset, read_noise)
    n_dark = int(np.asarray(dark_stack).shape[0])
    pixel_offsets, shrinkage = shrink_offsets(offset, read_noise, n_dark, hot)
    return Calibration(
        offset_adu=pixel_offsets,
        read_noise_adu=read_noise,
        gain_e_per_adu=ptc.gain_e_per_adu,
        gain_map_e_per_adu=gain_map,
        qe=qe,
        n_dark_frames=n_dark,
        n_flat_frames=int(sum(np.asarray(s).shape[0] for s in flat_stacks)),
        camera_serial=camera_serial,
        ptc=ptc.as_dict(),
        gain_map_rel_error=gain_map_error,
        hot_pixels=hot,
        offset_shrinkage=shrinkage,
    )
