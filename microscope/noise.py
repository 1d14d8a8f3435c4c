"""Poisson–Gaussian noise estimation from the frames themselves (no calibration file).

After Foi, Trimeche, Katkovnik & Egiazarian, "Practical Poissonian-Gaussian noise
modeling and fitting for single-image raw-data", IEEE TIP 17 (2008): a high-pass
residual of the image, whose variance equals the noise variance, is measured in
intensity bins of the smooth parts of the image, and the line ``var = a·mean + b`` is
fitted through the bins. Robust statistics (median absolute deviation in each bin,
only the flattest half of each bin's pixels, iterative bin rejection) keep edges and
texture out of the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .signal import NoiseModel

__all__ = ["NoiseEstimate", "NoiseEstimationError", "estimate_noise"]

# [1 -2 1] ⊗ [1 -2 1] / 6: zero mean, unit energy, blind to planes and bilinear ramps.
_HIGHPASS_1D = np.array([1.0, -2.0, 1.0])
_HIGHPASS_NORM = 6.0
_MAD_TO_SD = 1.4826
_MIN_PIXELS = 64 * 64
_MIN_BINS = 4
#: rms electrons assumed at the darkest level when the frames cannot show the Poisson slope
PRIOR_DARK_NOISE_E = 2.0
#: plausible conversion gains of scientific cameras, e⁻/ADU
MIN_GAIN_E_PER_ADU, MAX_GAIN_E_PER_ADU = 0.02, 50.0


class NoiseEstimationError(ValueError):
    """The frames cannot support a noise estimate (too small, flat, float, saturated)."""


@dataclass(frozen=True)
class NoiseEstimate:
    """A fitted noise model with the evidence behind it.

    Attributes:
        model: the fitted ``var = a·mean + b`` (``source="estimated"``); its ``dark_adu``
            is the darkest level used (about the camera's zero-signal level when the
            frames hold dark background, above it otherwise).
        levels: mean ADU of each intensity bin used.
        variances: measured noise variance of each bin, ADU².
        pixels_used: pixels behind the fit.
        frames_used: frames (single frame) or consecutive frame pairs (stack) behind the fit.
        slope_fitted: False when the frames held too little signal to measure the Poisson
            slope and it was set from a prior (the variance at the data is still fitted).
        frames_skipped: indices of frames left out: constant frames (a blank or dropped
            frame, all one value) and frames whose difference to their neighbour follows
            the image instead of being noise (a frame from another scene or exposure).
    """

    model: NoiseModel
    levels: np.ndarray
    variances: np.ndarray
    pixels_used: int
    frames_used: int
    slope_fitted: bool = True
    frames_skipped: tuple[int, ...] = ()

    def summary(self) -> dict[str, float | int | str]:
        """JSON-ready key numbers."""
        return {"a": self.model.a, "b": self.model.b,
                "gain_e_per_adu": self.model.gain_e_per_adu, "dark_adu": self.model.dark_adu,
                "bins": int(self.levels.size),
                "pixels_used": self.pixels_used, "frames_used": self.frames_used,
                "slope_fitted": self.slope_fitted,
                "frames_skipped": list(self.frames_skipped),
                "source": "estimated"}


def _highpass(x: np.ndarray) -> np.ndarray:
    d = ndimage.correlate1d(x, _HIGHPASS_1D, axis=0, mode="reflect")
    return ndimage.correlate1d(d, _HIGHPASS_1D, axis=1, mode="reflect") / _HIGHPASS_NORM


def _frame_samples(
    frame: np.ndarray, adc_max: int, other: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local mean, residual, flatness) of the usable pixels of one frame.

    With ``other`` (the next frame of a stack) the residual is the temporal difference
    ``(frame − other)/√2``: the fixed pattern of the sensor (per-pixel offsets) cancels,
    which a single frame cannot tell from noise. Otherwise it is the spatial high-pass.
    """
    x = frame.astype(np.float64)
    if other is None:
        d = _highpass(x)
    else:
        y = other.astype(np.float64)
        d = (x - y) / np.sqrt(2.0)
        x = (x + y) / 2.0
    mean = ndimage.uniform_filter(x, 5, mode="reflect")
    smooth = ndimage.gaussian_filter(x, 3.0, mode="reflect")
    gy, gx = np.gradient(smooth)
    flatness = np.hypot(gy, gx)
    unsaturated = frame < adc_max if other is None else (frame < adc_max) & (other < adc_max)
    valid = ndimage.minimum_filter(unsaturated, 5, mode="nearest")  # no saturated neighbour
    border = np.zeros_like(valid)
    border[3:-3, 3:-3] = True
    keep = valid & border
    return mean[keep], d[keep], flatness[keep]


#: |correlation| between a frame pair's difference and its local mean above which the
#: difference is taken for image, not noise (a blank, dropped or foreign frame gives ~1;
#: noise gives ~0; 5 % bleaching between frames at 500 photons about 0.4)
_FOLLOWS_IMAGE = 0.6


def _follows_image(mean: np.ndarray, d: np.ndarray) -> bool:
    """Whether the temporal difference ``d`` of a frame pair follows the image (``mean``):
    then the two frames do not show the same scene and their difference is no noise."""
    if mean.size < 2 or float(np.std(mean)) == 0 or float(np.std(d)) == 0:
        return False
    return abs(float(np.corrcoef(mean, d)[0, 1])) > _FOLLOWS_IMAGE


def _clipped_variance(d: np.ndarray) -> float:
    """Variance of ``d`` within ±4 robust σ (MAD start, two passes): edges out, no bias.

    The MAD alone is biased by up to 15 % on the discrete values of low-light frames; the
    plain variance inside ±4σ is not (a Gaussian loses 0.1 % of its variance there).
    """
    centre = float(np.median(d))
    sd = _MAD_TO_SD * float(np.median(np.abs(d - centre)))
    if sd == 0:
        sd = float(np.std(d))
    for _ in range(2):
        inside = d[np.abs(d - centre) <= 4 * sd]
        centre, sd = float(inside.mean()), float(inside.std())
    return sd * sd


def _fit_line(
    levels: np.ndarray, var: np.ndarray, counts: np.ndarray,
) -> tuple[float, float, float]:
    """Weighted least squares of ``var = a·level + b`` (weights ∝ n / var²); ``(a, b, se_a)``.

    ``se_a`` is the standard error of ``a`` from the weights (the relative error of a
    variance from ``n`` samples is ``sqrt(2/n)``, ×1.3 for the clipped estimator).
    """
    w = counts / (1.7 * np.maximum(var, 1e-12) ** 2)
    design = np.stack([levels, np.ones_like(levels)], axis=1)
    normal = design.T @ (design * w[:, None])
    a, b = np.linalg.solve(normal, design.T @ (w * var))
    se_a = float(np.sqrt(max(np.linalg.inv(normal)[0, 0], 0.0)))
    return float(a), float(b), se_a


def estimate_noise(
    frames: np.ndarray, adc_max: int = 65535, n_bins: int = 24, max_frames: int = 8,
) -> NoiseEstimate:
    """Estimate ``var(y) = a·E[y] + b`` (ADU) from one frame (``YX``) or a stack (``…YX``).

    Args:
        frames: unsigned-integer camera frames, raw ADU (not float, not rescaled).
        adc_max: ADC saturation value; pixels there (and their neighbours) are ignored.
        n_bins: intensity bins (quantiles of the local mean).
        max_frames: frame pairs of a stack to pool (evenly spaced). A stack is measured
            by temporal differences of consecutive frames (the sensor's fixed pattern, e.g.
            per-pixel offsets, cancels; motion is caught by the robust statistics); a single
            frame by its spatial high-pass, which counts the fixed pattern as noise.

    Raises:
        NoiseEstimationError: float input, fewer than 64×64 usable pixels, or an image
            whose intensities are too uniform to separate the Poisson from the
            Gaussian part.
    """
    arr = np.asarray(frames)
    if arr.dtype.kind != "u":
        raise NoiseEstimationError(
            f"noise estimation needs raw camera counts (unsigned integers), got {arr.dtype}: "
            "rescaled or float images have lost the photon statistics")
    if arr.ndim < 2:
        raise NoiseEstimationError(f"need a YX frame or a stack of them, got shape {arr.shape}")
    stack = arr.reshape(-1, *arr.shape[-2:])
    if min(stack.shape[-2:]) < 16:
        raise NoiseEstimationError(f"frames of {stack.shape[-2:]} are too small (need ≥ 16 px)")
    constant: dict[int, bool] = {}  # a blank or dropped frame is all one value

    def blank(i: int) -> bool:
        if i not in constant:  # only the frames sampled are looked at (stacks are long)
            constant[i] = bool(stack[i].min() == stack[i].max())
        return constant[i]

    skipped, doubtful, used = set(), set(), set()
    samples = []
    if len(stack) >= 2:  # temporal pairs: the sensor's fixed pattern cancels
        starts = np.unique(np.linspace(0, len(stack) - 2, min(max_frames, len(stack) - 1))
                           .astype(int))
        for i in starts:
            j = i + 1  # the next frame that is not blank
            while j < len(stack) and blank(j):
                j += 1
            if blank(i) or j == len(stack):
                continue
            m, d, f = _frame_samples(stack[i], adc_max, stack[j])
            if _follows_image(m, d):  # not noise: one of the two is another scene
                doubtful.update((int(i), j))
                continue
            used.update((int(i), j))
            samples.append((m, d, f))
    looked = sorted(constant) or [0]
    skipped = {i for i in looked if constant.get(i)} | (doubtful - used)
    if not samples:  # one frame, or no pair of alike frames: each frame's own high-pass
        single = [i for i in looked if not constant.get(i)] or looked  # all blank: as is
        samples = [_frame_samples(stack[i], adc_max) for i in single[:max_frames]]
        if all(constant.get(i) for i in looked):
            skipped = set()  # nothing but blank frames: measured (and found too uniform)
    means = [m for m, _, _ in samples]
    resid = [d for _, d, _ in samples]
    flat = [f for _, _, f in samples]
    mean, d, flatness = np.concatenate(means), np.concatenate(resid), np.concatenate(flat)
    if mean.size < _MIN_PIXELS:
        saturated = float(np.mean([np.mean(stack[i] >= adc_max) for i in looked]))
        if saturated > 0.05:
            raise NoiseEstimationError(
                f"only {mean.size} usable pixels (need ≥ {_MIN_PIXELS}): {saturated:.0%} of "
                f"the pixels are at the ADC maximum ({adc_max} ADU), and their neighbours "
                "are not used either: saturated frames, or an --adc-max below the camera's; "
                "give a calibration file")
        raise NoiseEstimationError(
            f"only {mean.size} usable pixels (need ≥ {_MIN_PIXELS}; a frame loses 3 px at "
            "each border, so at least 70×70 unsaturated pixels): record a larger field of "
            "view or give a calibration file")
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    levels, variances, counts = [], [], []
    for k in range(len(edges) - 1):
        sel = which == k
        if np.count_nonzero(sel) < 200:
            continue
        f = flatness[sel]
        flattest = f <= np.median(f)
        dk, mk = d[sel][flattest], mean[sel][flattest]
        levels.append(float(mk.mean()))
        variances.append(_clipped_variance(dk))
        counts.append(dk.size)
    lv, vr, ct = np.array(levels), np.array(variances), np.array(counts, dtype=np.float64)
    ok = np.ones(lv.size, bool)
    for _ in range(3):
        if np.count_nonzero(ok) < _MIN_BINS:
            break
        a, b, _ = _fit_line(lv[ok], vr[ok], ct[ok])
        pred = np.maximum(a * lv + b, 1e-12)
        # relative error of a variance from n samples is ~sqrt(2/n) (x ~1.6 for the MAD)
        z = np.abs(vr / pred - 1) / (1.6 * np.sqrt(2.0 / ct))
        new_ok = z < 4
        if np.array_equal(new_ok, ok):
            break
        ok = new_ok
    spread = lv[ok].max() - lv[ok].min() if np.count_nonzero(ok) else 0.0
    if np.count_nonzero(ok) < _MIN_BINS or spread <= 0:
        raise NoiseEstimationError(
            "the frames are too uniform to estimate the noise (intensities do not span "
            "enough levels): give a calibration file (`fluorofpga calibrate`)")
    lv, vr, ct = lv[ok], vr[ok], ct[ok]
    a, b, se_a = _fit_line(lv, vr, ct)
    slope_fitted = a > 0 and se_a < 0.5 * a
    if not slope_fitted:
        # Too little signal to see the Poisson slope: over this range the noise is nearly
        # Gaussian and any small slope stabilises it; take the one that puts the darkest
        # level at PRIOR_DARK_NOISE_E rms electrons (inside the training cameras' range).
        dark = int(np.argmin(lv))
        a = float(np.sqrt(vr[dark])) / PRIOR_DARK_NOISE_E
        b = float(vr[dark] - a * lv[dark])
    a = float(np.clip(a, 1.0 / MAX_GAIN_E_PER_ADU, 1.0 / MIN_GAIN_E_PER_ADU))
    if not slope_fitted:
        b = float(vr[int(np.argmin(lv))] - a * lv.min())
    # the darkest level the frames show (a bin of local means): the camera's zero-signal
    # level or a little above it, for the tables' dark-level shift (SignalSpec.max_dark_z)
    model = NoiseModel(a, b, "estimated", dark_adu=float(lv.min()))
    return NoiseEstimate(model, lv, vr, int(ct.sum()), len(samples), slope_fitted,
                         tuple(sorted(skipped)))
