"""Widefield optics: Airy point-spread function, optical transfer function, blurring.

Units: wavelengths and pixel sizes in nanometres in the sample plane; frequencies in
cycles per camera pixel. A PSF array is centred on its middle pixel (``size // 2``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import fft as sfft
from scipy import special

# Zeros of J1 (the Airy dark rings) in the reduced optical coordinate v = 2π NA r / λ.
_FOURTH_AIRY_ZERO_V = 13.3237
_MIN_PSF_SIZE = 3


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def default_psf_size(na: float, wavelength_nm: float, pixel_size_nm: float) -> int:
    """Odd PSF size (pixels) that holds the central disc and three Airy rings."""
    _check_positive(na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm)
    radius_px = _FOURTH_AIRY_ZERO_V * wavelength_nm / (2 * np.pi * na * pixel_size_nm)
    return max(_MIN_PSF_SIZE, 2 * int(np.ceil(radius_px)) + 1)


def _psf_grid(
    na: float, wavelength_nm: float, pixel_size_nm: float, size: int | None, oversample: int
) -> tuple[int, int]:
    """Validated (size, oversample) of a PSF; ``size`` defaults to three Airy rings."""
    if size is None:
        size = default_psf_size(na, wavelength_nm, pixel_size_nm)
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size!r}")
    if int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    return int(size), int(oversample)


def airy_psf(
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    size: int | None = None,
    oversample: int = 4,
) -> np.ndarray:
    """Widefield 2-D PSF of a circular pupil (Airy pattern) integrated over camera pixels.

    ``I(r) = [2 J1(v) / v]^2`` with ``v = 2π NA r / λ`` is sampled at the centres of an
    ``oversample`` × ``oversample`` sub-grid of every camera pixel and averaged, which
    approximates the integral of the intensity over the pixel area.

    Args:
        na: numerical aperture of the objective.
        wavelength_nm: emission wavelength (nm).
        pixel_size_nm: camera pixel size projected into the sample plane (nm).
        size: odd side length of the output in pixels; default holds three Airy rings.
        oversample: sub-samples per pixel and axis (≥ 1).

    Returns:
        ``(size, size)`` float64 array, centred on ``size // 2``, summing to 1.
    """
    _check_positive(na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm)
    size, oversample = _psf_grid(na, wavelength_nm, pixel_size_nm, size, oversample)

    # Sub-pixel sample positions (in pixels), symmetric about the central pixel centre.
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    coords = (np.arange(size) - size // 2)[:, None] + sub[None, :]
    coords = coords.ravel() * pixel_size_nm
    r = np.hypot(coords[:, None], coords[None, :])
    v = 2 * np.pi * na * r / wavelength_nm
    with np.errstate(invalid="ignore", divide="ignore"):
        amplitude = np.where(v > 0, 2 * special.j1(v) / v, 1.0)
    fine = amplitude**2
    binned = fine.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return (binned / binned.sum()).astype(np.float64)


def pupil_psf(
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    *,
    n_immersion: float = 1.518,
    defocus_nm: float = 0.0,
    size: int | None = None,
    oversample: int = 4,
) -> np.ndarray:
    """Widefield 2-D PSF from a scalar pupil function, optionally defocused.

    The pupil is the disc ``|k| <= NA/λ`` carrying the defocus phase
    ``exp(2πi z sqrt((n/λ)² - |k|²))``; the amplitude PSF is its Fourier transform on a grid
    ``oversample``× finer than the camera, the intensity is binned onto camera pixels.
    In focus it equals :func:`airy_psf` up to discretisation.

    Args:
        na: numerical aperture (must be < ``n_immersion``).
        wavelength_nm: emission wavelength (nm).
        pixel_size_nm: camera pixel size projected into the sample plane (nm).
        n_immersion: refractive index of the immersion medium (1.518 oil, 1.33 water).
        defocus_nm: axial distance of the emitter from the focal plane (nm).
        size: odd side length in camera pixels; default as :func:`airy_psf`.
        oversample: sub-samples per pixel and axis (≥ 1).

    Returns:
        ``(size, size)`` float64 array, centred on ``size // 2``, summing to 1.
    """
    _check_positive(na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm,
                    n_immersion=n_immersion)
    if na >= n_immersion:
        raise ValueError(f"NA {na} must be smaller than the immersion index {n_immersion}")
    size, oversample = _psf_grid(na, wavelength_nm, pixel_size_nm, size, oversample)
    dx = pixel_size_nm / oversample
    if na / wavelength_nm >= 1.0 / (2.0 * dx):
        raise ValueError("pixel_size_nm / oversample too coarse to sample the pupil")
    crop = size * oversample
    n_fft = int(2 ** np.ceil(np.log2(4 * crop)))
    k = sfft.fftfreq(n_fft, d=dx)
    kr2 = k[:, None] ** 2 + k[None, :] ** 2
    inside = kr2 <= (na / wavelength_nm) ** 2
    kz = np.sqrt(np.maximum((n_immersion / wavelength_nm) ** 2 - kr2, 0.0))
    pupil = np.where(inside, np.exp(2j * np.pi * defocus_nm * kz), 0.0)
    if crop % 2 == 0:
        # sub-pixel centres sit half a fine sample off the grid: sample I(x + dx/2) instead
        pupil = pupil * np.exp(1j * np.pi * (k[:, None] + k[None, :]) * dx)
    intensity = np.abs(sfft.fftshift(sfft.ifft2(pupil))) ** 2
    c = n_fft // 2 - crop // 2
    fine = intensity[c : c + crop, c : c + crop]
    binned = fine.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return (binned / binned.sum()).astype(np.float64)


def otf(psf: np.ndarray) -> np.ndarray:
    """Modulation transfer |OTF| of a centred PSF, fftshifted, normalised to 1 at DC.

    The PSF centre is taken to be at ``shape // 2`` along each axis; the zero frequency
    of the result is at ``shape // 2`` too. Frequencies along axis ``k`` are
    ``np.fft.fftshift(np.fft.fftfreq(psf.shape[k]))`` in cycles per pixel.
    """
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2:
        raise ValueError(f"psf must be 2-D, got shape {psf.shape}")
    total = psf.sum()
    if not np.isfinite(total) or total == 0:
        raise ValueError("psf must have a finite, non-zero sum")
    spectrum = np.abs(sfft.fft2(sfft.ifftshift(psf)))
    return sfft.fftshift(spectrum / spectrum[0, 0])


def _kernel_on_grid(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Place a centred PSF on a periodic grid of ``shape`` with its centre at [0, 0]."""
    kernel = np.zeros(shape, dtype=np.float64)
    ky, kx = psf.shape
    rows = (np.arange(ky) - ky // 2) % shape[0]
    cols = (np.arange(kx) - kx // 2) % shape[1]
    np.add.at(kernel, (rows[:, None], cols[None, :]), psf)
    return kernel


def blur(
    image: np.ndarray,
    psf: np.ndarray,
    *,
    boundary: Literal["reflect", "periodic"] = "reflect",
) -> np.ndarray:
    """Convolve a 2-D image with a centred PSF using FFTs; output has the image's shape.

    Boundary handling:

    * ``"reflect"`` (default): the image is mirrored (``np.pad(mode="symmetric")``,
      edge pixel repeated) by the PSF half-width on every side before a linear
      convolution, then cropped. Light blurred out of the field is mirrored back in, so
      total flux is conserved exactly for PSFs symmetric under ``x → −x`` and
      ``y → −y`` (every PSF from :func:`airy_psf`), and approximately otherwise.
    * ``"periodic"``: circular convolution; conserves flux exactly for any PSF, but
      structures near one edge bleed into the opposite edge.

    The PSF is normalised to unit sum before use, so flux is the image's own.

    Returns:
        float64 array of ``image.shape``.
    """
    image = np.asarray(image, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2 or psf.ndim != 2:
        raise ValueError(f"image and psf must be 2-D, got {image.shape} and {psf.shape}")
    total = psf.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("psf must have a finite, positive sum")
    psf = psf / total

    if boundary == "periodic":
        kernel = _kernel_on_grid(psf, image.shape)
        return sfft.irfft2(sfft.rfft2(image) * sfft.rfft2(kernel), s=image.shape)
    if boundary != "reflect":
        raise ValueError(f"boundary must be 'reflect' or 'periodic', got {boundary!r}")

    ky, kx = psf.shape
    pad_y, pad_x = ky // 2, kx // 2
    padded = np.pad(image, ((pad_y, pad_y), (pad_x, pad_x)), mode="symmetric")
    # Periodic convolution on a grid large enough that no wrap-around reaches the crop.
    grid = (
        sfft.next_fast_len(padded.shape[0] + ky, real=True),
        sfft.next_fast_len(padded.shape[1] + kx, real=True),
    )
    kernel = _kernel_on_grid(psf, grid)
    out = sfft.irfft2(sfft.rfft2(padded, s=grid) * sfft.rfft2(kernel), s=grid)
    return out[pad_y : pad_y + image.shape[0], pad_x : pad_x + image.shape[1]]
