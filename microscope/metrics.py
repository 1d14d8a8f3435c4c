"""Image quality metrics: PSNR/SSIM (scikit-image), CARE's NRMSE, Fourier ring correlation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import windows
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _prepare(
    reference: np.ndarray, image: np.ndarray, data_range: float | None
) -> tuple[np.ndarray, np.ndarray, float]:
    reference = np.asarray(reference, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape:
        raise ValueError(
            f"reference and image shapes differ: {reference.shape} vs {image.shape}"
        )
    if data_range is None:
        data_range = float(reference.max() - reference.min())
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(
            f"data_range must be > 0 (got {data_range!r}); a constant reference needs an "
            "explicit data_range"
        )
    return reference, image, float(data_range)


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference``.

    ``data_range`` defaults to ``reference.max() - reference.min()``. Both arrays are cast
    to float64 and must have the same shape; any number of dimensions.
    """
    reference, image, data_range = _prepare(reference, image, data_range)
    return float(peak_signal_noise_ratio(reference, image, data_range=data_range))


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity of ``image`` against ``reference``.

    ``data_range`` defaults to ``reference.max() - reference.min()`` (of the whole
    array). Both arrays are cast to float64 and must have the same shape. 2-D arrays are
    compared as one image; for 3-D arrays (a ``TYX`` stack) the result is the mean of the
    per-frame SSIMs. Each image must be at least 7 × 7 pixels.
    """
    reference, image, data_range = _prepare(reference, image, data_range)
    if reference.ndim == 2:
        return float(structural_similarity(reference, image, data_range=data_range))
    if reference.ndim == 3:
        scores = [
            structural_similarity(ref, img, data_range=data_range)
            for ref, img in zip(reference, image, strict=True)
        ]
        return float(np.mean(scores))
    raise ValueError(f"ssim needs a YX image or a TYX stack, got shape {reference.shape}")


def _check_pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, ...]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} shapes differ: {a.shape} vs {b.shape}")
    for name, array in zip(names, (a, b), strict=True):
        if array.size == 0:
            raise ValueError(f"{name} is empty")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds NaN or inf")
    return a, b


def nrmse_affine(
    reference: np.ndarray,
    image: np.ndarray,
    percentiles: tuple[float, float] = (0.1, 99.9),
) -> float:
    """NRMSE after CARE's normalisation (Weigert et al., Nat. Methods 15, 1090 (2018)).

    The reference is percentile-normalised, ``r = (reference - p_lo) / (p_hi - p_lo)``
    with ``p_lo``, ``p_hi`` its ``percentiles`` (default 0.1 % and 99.9 %, so that
    ``r`` spans about [0, 1]). The image is then mapped by the affine transform
    ``a · image + b`` that minimises the mean squared error to ``r`` (closed form:
    ``a = cov(image, r) / var(image)``, ``b = mean(r) - a · mean(image)``; ``a = 0``
    for a constant image), and the result is ``sqrt(mean((r - a · image - b)²))``.
    Hence the value is unchanged by any affine change of the image's intensities
    (``image → c · image + d``, ``c ≠ 0``) and is expressed in units of the reference's
    percentile range. Any number of dimensions; the fit is global over all pixels.

    Raises:
        ValueError: shapes differ, NaN/inf values, or a reference with no range between
            its percentiles.
    """
    reference, image = _check_pair(reference, image, ("reference", "image"))
    low, high = np.percentile(reference, percentiles)
    if not high > low:
        raise ValueError(
            f"reference is constant between its {percentiles} percentiles; cannot normalise"
        )
    target = (reference - low) / (high - low)
    x = image - image.mean()
    variance = float(np.mean(x * x))
    scale = float(np.mean(x * (target - target.mean()))) / variance if variance > 0 else 0.0
    residual = target - target.mean() - scale * x
    return float(np.sqrt(np.mean(residual * residual)))


@dataclass(frozen=True)
class FRCResult:
    """Fourier ring correlation of two images.

    Attributes:
        frequencies: ring centre frequencies, cycles per pixel (or per nm when a pixel
            size was given), from the first ring above DC up to Nyquist.
        correlation: FRC value of every ring.
        n_pixels: Fourier pixels in every ring.
        threshold: the fixed threshold used (1/7 by default).
        resolution_frequency: frequency where the smoothed curve first drops below the
            threshold (linear interpolation); the Nyquist frequency if it never does;
            0 if it starts below.
        resolution: ``1 / resolution_frequency`` in pixels (or nm); ``inf`` for 0.
        crossed: whether the curve crossed the threshold below Nyquist.
    """

    frequencies: np.ndarray
    correlation: np.ndarray
    n_pixels: np.ndarray
    threshold: float
    resolution_frequency: float
    resolution: float
    crossed: bool


def _apodisation(shape: tuple[int, int], window: str, alpha: float) -> np.ndarray:
    if window == "none":
        return np.ones(shape)
    if window == "hann":
        rows, cols = windows.hann(shape[0], sym=False), windows.hann(shape[1], sym=False)
    elif window == "tukey":
        rows = windows.tukey(shape[0], alpha, sym=False)
        cols = windows.tukey(shape[1], alpha, sym=False)
    else:
        raise ValueError(f"window must be 'tukey', 'hann' or 'none', got {window!r}")
    return np.outer(rows, cols)


def frc(
    image1: np.ndarray,
    image2: np.ndarray,
    pixel_size_nm: float | None = None,
    *,
    threshold: float = 1.0 / 7.0,
    window: str = "hann",
    tukey_alpha: float = 0.25,
    smooth_rings: int = 3,
) -> FRCResult:
    """Fourier ring correlation between two independent noisy images of the same scene.

    ``FRC(k) = Re Σ F1 F2* / sqrt(Σ|F1|² Σ|F2|²)`` over rings of width ``1/N`` cycles
    per pixel (``N = min(Y, X)``; frequencies are radial in cycles/pixel, so
    rectangular images work). Each image has its mean removed and is multiplied by an
    apodisation window (Hann by default, or Tukey with ``tukey_alpha``, or ``"none"``
    for periodic images) so that the image edges do not add a correlated cross to both
    spectra. The window's spectral leakage shifts a sharp band edge up by about one
    ring (``1/N``), i.e. the resolution is biased a few per cent low. The resolution is where
    the curve, smoothed by a ``smooth_rings`` moving average, first drops below the
    fixed ``threshold`` (1/7: Nieuwenhuizen et al., Nat. Methods 10, 557 (2013)).

    Args:
        image1, image2: ``(Y, X)`` images of equal shape (≥ 16 pixels a side), finite.
        pixel_size_nm: if given, frequencies are in cycles/nm and resolution in nm.

    Raises:
        ValueError: not 2-D, shapes differ, too small, NaN/inf values, bad window.
    """
    a, b = _check_pair(image1, image2, ("image1", "image2"))
    if a.ndim != 2:
        raise ValueError(f"frc needs YX images, got shape {a.shape}")
    if min(a.shape) < 16:
        raise ValueError(f"frc needs images of at least 16×16 pixels, got {a.shape}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if pixel_size_nm is not None and not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm!r}")
    if int(smooth_rings) != smooth_rings or smooth_rings < 1:
        raise ValueError(f"smooth_rings must be a positive integer, got {smooth_rings!r}")
    apod = _apodisation(a.shape, window, tukey_alpha)
    f1 = np.fft.rfft2((a - a.mean()) * apod)
    f2 = np.fft.rfft2((b - b.mean()) * apod)
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.rfftfreq(a.shape[1])[None, :]
    n = min(a.shape)
    ring = np.rint(np.hypot(fy, fx) * n).astype(np.int64).ravel()
    # rfft holds the x ≥ 0 half-plane; columns 0 (and X/2 for even X) are not mirrored,
    # the rest stand for two Fourier pixels each.
    weight = np.full(f1.shape, 2.0)
    weight[:, 0] = 1.0
    if a.shape[1] % 2 == 0:
        weight[:, -1] = 1.0
    weight = weight.ravel()
    n_rings = n // 2 + 1
    keep = ring < n_rings
    ring, weight = ring[keep], weight[keep]
    cross = np.bincount(ring, weight * (f1 * np.conj(f2)).real.ravel()[keep], n_rings)
    power1 = np.bincount(ring, weight * (np.abs(f1) ** 2).ravel()[keep], n_rings)
    power2 = np.bincount(ring, weight * (np.abs(f2) ** 2).ravel()[keep], n_rings)
    counts = np.bincount(ring, weight, n_rings)
    denominator = np.sqrt(power1 * power2)
    correlation = np.divide(cross, denominator, out=np.zeros_like(cross), where=denominator > 0)
    frequencies = np.arange(n_rings) / n
    # Drop DC (ring 0): the means were removed.
    frequencies, correlation, counts = frequencies[1:], correlation[1:], counts[1:]
    k = int(smooth_rings)
    padded = np.pad(correlation, (k // 2, k - 1 - k // 2), mode="edge")
    smooth = np.convolve(padded, np.ones(k) / k, mode="valid")
    below = np.flatnonzero(smooth < threshold)
    if below.size == 0:
        crossing, crossed = float(frequencies[-1]), False
    elif below[0] == 0:
        crossing, crossed = 0.0, True
    else:
        i = int(below[0])
        y0, y1 = smooth[i - 1], smooth[i]
        crossing = float(
            frequencies[i - 1]
            + (y0 - threshold) / (y0 - y1) * (frequencies[i] - frequencies[i - 1])
        )
        crossed = True
    scale = 1.0 if pixel_size_nm is None else 1.0 / float(pixel_size_nm)
    return FRCResult(
        frequencies=frequencies * scale,
        correlation=correlation,
        n_pixels=counts,
        threshold=float(threshold),
        resolution_frequency=crossing * scale,
        resolution=float(np.inf) if crossing == 0 else 1.0 / (crossing * scale),
        crossed=crossed,
    )


def frc_resolution(
    image1: np.ndarray, image2: np.ndarray, pixel_size_nm: float | None = None, **kwargs: object
) -> float:
    """FRC resolution (pixels, or nm with ``pixel_size_nm``) of two noise realisations.

    Shorthand for ``frc(image1, image2, pixel_size_nm, **kwargs).resolution``.
    """
    return frc(image1, image2, pixel_size_nm, **kwargs).resolution  # type: ignore[arg-type]
