"""Classical 2-D SIM reconstruction: parameter estimation and generalised Wiener filter.

The baseline a learned SIM reconstructor has to beat, after fairSIM (Müller et al.,
Nat. Commun. 2016) and Gustafsson (Biophys. J. 2008). Conventions (grids, positions,
wave vectors in cycles per *camera* pixel, ``"PYX"`` stacks with angles outermost) are
those of :mod:`fluorofpga.microscope.sim`.

Pipeline:

1. Input: ``raw`` as photons/electrons (float, ≥ 0) or as uint16 ADU together with the
   ``camera`` that recorded it (then ``(ADU − offset) · gain / qe`` photons; pixels
   below the offset stay negative — that is read noise, not an error).
2. Borders are faded (cosine over ``border_px``) to the stack mean, so the periodic FFT
   sees no edge; each frame's spectrum is placed on the 2× grid (Fourier zero padding,
   aligned so that fine pixels ``2i, 2i+1`` halve camera pixel ``i``).
3. Band separation per angle, with the phase steps assumed equidistant
   (``2π j / n_phases``): the 0, +1 and −1 bands by linear unmixing.
4. Parameter estimation (:func:`estimate_parameters`): the +1 band is shifted back by a
   trial wave vector ``p`` and compared with the 0 band on the region where both
   OTF copies are non-zero, each weighted by the other's OTF so that both carry
   ``OTF(k) OTF(k+p) S(k)``. Coarse ``p``: the strongest local maxima of the FFT
   cross-correlation of the OTF-divided bands, normalised by their energies in the
   overlap (within the search
   range, or near a given guess); the candidate with the best normalised correlation
   coefficient wins. Fine ``p``: a shrinking 3 × 3 grid search of that coefficient down
   to 1/128 of a Fourier pixel. Phase and modulation: the complex regression
   coefficient ``α = (m/2) e^{iφ}`` of the shifted +1 band on the 0 band.
5. Generalised Wiener filter (:func:`wiener_sim`): bands normalised by ``(m/2) e^{±iφ}``
   and moved to their true position, combined as
   ``A(k) Σ OTF_b*(k) D_b(k) / (Σ |OTF_b(k)|² + w²)``, with apodisation ``A`` out to the
   extended cut-off ``2NA/λ + |p|``.

OTF model: the ideal incoherent OTF (:func:`~fluorofpga.microscope.sim.ideal_otf`)
times the camera-pixel transfer ``sinc(fx) sinc(fy)``. No out-of-focus background
model (2-D specimen), no OTF attenuation; per-frame phase refinement is not done.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from .camera import SCMOSCamera
from .sim import (
    _FINE_CENTRE_PX,
    _UPSAMPLE,
    AngleParameters,
    cutoff_cycles_per_px,
    ideal_otf,
)

Apodization = Literal["otf", "triangle", "cosine", "none"]

_MIN_PHASES = 3  # +1 and −1 bands need at least three phase steps to separate
_OTF_MASK_THRESHOLD = 0.02  # overlap region: both OTF copies above this
_DC_EXCLUSION = 0.1  # of the cut-off: the background-laden DC region is left out
_REFINE_LEVELS = 7  # grid step 0.5 → 1/128 Fourier pixel
_MIN_MODULATION = 0.2  # bands are not amplified by more than 2 / this
_COARSE_OTF_THRESHOLD = 0.1  # coarse search: bands divided by the OTF above this
_MIN_OVERLAP = 0.05  # coarse search: smallest overlap of the shifted OTF supports
_COARSE_CANDIDATES = 8  # correlation maxima checked with the normalised band fit
_MIN_SIDE = 8  # smallest frame side (pixels) the border fade and band search make sense on


def _check_layout(n_angles: int, n_phases: int) -> tuple[int, int]:
    """Validate the acquisition layout for classical reconstruction."""
    for name, count in (("n_angles", n_angles), ("n_phases", n_phases)):
        if isinstance(count, bool) or int(count) != count or count < 1:
            raise ValueError(f"{name} must be a positive integer, got {count!r}")
    if n_phases < _MIN_PHASES:
        raise ValueError(
            f"classical SIM reconstruction needs ≥ {_MIN_PHASES} phases per angle to "
            f"separate the bands, got n_phases={n_phases} (the 3-frame variant is for "
            "learned reconstruction only)"
        )
    return int(n_angles), int(n_phases)


def _to_photons(
    raw: np.ndarray, n_frames: int | None, camera: SCMOSCamera | None
) -> np.ndarray:
    """Validate a PYX stack (``n_frames`` frames if given) and return float64 photons."""
    array = np.asarray(raw)
    if array.ndim != 3:
        raise ValueError(
            f'raw must be a 3-D "PYX" stack (frames, rows, columns), got shape {array.shape}'
        )
    if n_frames is not None and array.shape[0] != n_frames:
        raise ValueError(
            f"raw has {array.shape[0]} frames but n_angles × n_phases = {n_frames}"
        )
    if array.shape[0] < 1 or min(array.shape[1:]) < _MIN_SIDE:
        raise ValueError(
            f"raw needs ≥ 1 frame of at least {_MIN_SIDE} × {_MIN_SIDE} pixels, "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(
        array.dtype, np.floating
    ):
        raise ValueError(f"raw must hold real numbers, got dtype {array.dtype}")
    data = array.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise ValueError("raw must be finite (found NaN or inf pixels)")
    if data.min() < 0:
        raise ValueError(
            f"raw must be non-negative (photons or ADU), found minimum {data.min():g}"
        )
    if camera is not None:
        data = (data - camera.offset_adu) * camera.gain_e_per_adu / camera.qe
    return data


def _border_window(shape: tuple[int, int], border_px: int) -> np.ndarray:
    """Separable window: 1 inside, cosine fall-off to 0 over ``border_px`` at each edge."""
    axes = []
    for n in shape:
        w = np.ones(n)
        b = min(int(border_px), n // 2)
        if b > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(b) + 0.5) / b)
            w[:b] = ramp
            w[n - b :] = ramp[::-1]
        axes.append(w)
    return axes[0][:, None] * axes[1][None, :]


def _fine_spectra(frames: np.ndarray, border_px: int) -> np.ndarray:
    """Border-faded frames → spectra on the 2× grid (FFT origin at fine pixel 0)."""
    p, h, w = frames.shape
    window = _border_window((h, w), border_px)
    level = frames.mean()
    faded = level + (frames - level) * window
    spectra = sfft.fft2(faded, axes=(1, 2))
    fy = sfft.fftfreq(h)
    fx = sfft.fftfreq(w)
    # Resample at fine-pixel centres: shift by (camera-pixel-0 centre − fine-pixel-0 centre).
    shift = 0.5 - _FINE_CENTRE_PX
    ramp = np.exp(-2j * np.pi * shift * (fy[:, None] + fx[None, :]))
    spectra *= ramp
    out = np.zeros((p, _UPSAMPLE * h, _UPSAMPLE * w), dtype=np.complex128)
    ky = np.concatenate([np.arange((h + 1) // 2), np.arange(-(h // 2), 0)])
    kx = np.concatenate([np.arange((w + 1) // 2), np.arange(-(w // 2), 0)])
    rows = ky % (_UPSAMPLE * h)
    cols = kx % (_UPSAMPLE * w)
    out[:, rows[:, None], cols[None, :]] = spectra
    if h % 2 == 0:  # the Nyquist row/column has no unique sign: drop it
        out[:, h // 2, :] = 0
    if w % 2 == 0:
        out[:, :, w // 2] = 0
    return out * _UPSAMPLE**2


def _separate_bands(spectra: np.ndarray, n_angles: int, n_phases: int) -> np.ndarray:
    """``(n_angles, 3, Y, X)`` bands 0, +1, −1 from equidistant phase steps.

    Frame ``j`` holds ``C0 + e^{iφj} C+1 + e^{−iφj} C−1`` with ``φj = 2πj/N``; the rows of
    the DFT matrix are orthogonal, so ``C_b = (1/N) Σ_j e^{−i b φj} D_j``.
    """
    phases = 2 * np.pi * np.arange(n_phases) / n_phases
    unmix = np.exp(-1j * np.outer([0, 1, -1], phases)) / n_phases  # (3, N)
    grouped = spectra.reshape(n_angles, n_phases, *spectra.shape[1:])
    return np.einsum("bj,ajyx->abyx", unmix, grouped)


class _Frequencies:
    """Frequency grid of the 2× reconstruction grid, in cycles per camera pixel."""

    def __init__(self, shape_2x: tuple[int, int], cutoff: float) -> None:
        self.shape = shape_2x
        self.cutoff = cutoff
        self.fy = sfft.fftfreq(shape_2x[0], d=1.0 / _UPSAMPLE)[:, None]
        self.fx = sfft.fftfreq(shape_2x[1], d=1.0 / _UPSAMPLE)[None, :]
        # Positions of the fine samples relative to the FFT origin, in camera pixels.
        self.y = (np.arange(shape_2x[0]) / _UPSAMPLE)[:, None]
        self.x = (np.arange(shape_2x[1]) / _UPSAMPLE)[None, :]
        self.rho = np.hypot(self.fy, self.fx)

    def otf(self, px: float = 0.0, py: float = 0.0) -> np.ndarray:
        """Model OTF evaluated at ``k + p`` (optics × camera-pixel integration)."""
        fx, fy = self.fx + px, self.fy + py
        return ideal_otf(np.hypot(fx, fy), self.cutoff) * np.abs(np.sinc(fx) * np.sinc(fy))

    def shift(self, band: np.ndarray, px: float, py: float) -> np.ndarray:
        """Spectrum ``B(k + p)`` of a band ``B`` (exact for band-limited, faded data)."""
        ramp = np.exp(-2j * np.pi * (px * self.x + py * self.y))
        return sfft.fft2(sfft.ifft2(band) * ramp)


class _BandFit:
    """Compares the +1 band, shifted back by a trial ``p``, with the 0 band of one angle."""

    def __init__(self, c0: np.ndarray, c1: np.ndarray, freq: _Frequencies) -> None:
        self.freq = freq
        self.c0 = c0
        self.c1_real_space = sfft.ifft2(c1)
        self.o0 = freq.otf()
        self.dc = _DC_EXCLUSION * freq.cutoff
        self.base_mask = (self.o0 > _OTF_MASK_THRESHOLD) & (freq.rho > self.dc)

    def __call__(self, px: float, py: float) -> tuple[float, complex]:
        """Normalised correlation and regression ``α = (m/2) e^{iφ}`` at shift ``p``."""
        freq = self.freq
        o1 = freq.otf(px, py)
        mask = (
            self.base_mask
            & (o1 > _OTF_MASK_THRESHOLD)
            & (np.hypot(freq.fx + px, freq.fy + py) > self.dc)
        )
        ramp = np.exp(-2j * np.pi * (px * freq.x + py * freq.y))
        shifted = sfft.fft2(self.c1_real_space * ramp)
        b0 = (self.c0 * o1)[mask]
        b1 = (shifted * self.o0)[mask]
        cross = np.vdot(b0, b1)
        p0 = np.vdot(b0, b0).real
        p1 = np.vdot(b1, b1).real
        if p0 <= 0 or p1 <= 0:
            return 0.0, 0j
        return float(abs(cross) / np.sqrt(p0 * p1)), complex(cross / p0)


def _correlate(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``Σ_k conj(f(k)) g(k + q)`` for every shift ``q`` (circular, FFT index order)."""
    return sfft.ifft2(np.conj(sfft.fft2(f)) * sfft.fft2(g))


def _coarse_peaks(
    c0: np.ndarray,
    c1: np.ndarray,
    freq: _Frequencies,
    allowed: np.ndarray,
) -> list[tuple[float, float]]:
    """Strongest local maxima of the normalised band correlation over ``allowed`` shifts.

    Both bands are divided by the OTF where it exceeds ``_COARSE_OTF_THRESHOLD`` (region
    ``M``), so at the true shift ``C+1(k+p) / OTF(k+p) = (m/2) e^{iφ} C0(k) / OTF(k)``;
    the correlation coefficient ``|Σ b0* b1(k+q)| / √(Σ |b0|² M(k+q) · Σ M |b1(k+q)|²)``
    then approaches 1 at ``q = p`` whatever the specimen, and stays small elsewhere.
    Shifts whose overlap is below ``_MIN_OVERLAP`` of ``M`` are not considered.
    """
    o = freq.otf()
    support = o > _COARSE_OTF_THRESHOLD
    inverse = np.where(support, 1.0 / np.maximum(o, _COARSE_OTF_THRESHOLD), 0.0)
    b0 = c0 * inverse * (freq.rho > _DC_EXCLUSION * freq.cutoff)
    b1 = c1 * inverse
    mask = support.astype(np.float64)
    cross = np.abs(_correlate(b0, b1))
    energy0 = _correlate(np.abs(b0) ** 2, mask).real
    energy1 = _correlate(mask, np.abs(b1) ** 2).real
    overlap = _correlate(mask, mask).real
    valid = allowed & (overlap >= _MIN_OVERLAP * mask.sum()) & (energy0 > 0) & (energy1 > 0)
    correlation = np.zeros(freq.shape)
    correlation[valid] = cross[valid] / np.sqrt(energy0[valid] * energy1[valid])
    peaks = (correlation == ndimage.maximum_filter(correlation, size=5, mode="wrap")) & (
        correlation > 0
    )
    index = np.flatnonzero(peaks)
    index = index[np.argsort(correlation.ravel()[index])[::-1][:_COARSE_CANDIDATES]]
    iy, ix = np.unravel_index(index, correlation.shape)
    return [(float(freq.fx[0, i]), float(freq.fy[j, 0])) for j, i in zip(iy, ix, strict=True)]


def _refine_peak(fit: _BandFit, px: float, py: float) -> tuple[float, float, complex]:
    """Shrinking 3 × 3 grid search of the normalised band correlation around ``p``."""
    step = 0.5 * abs(fit.freq.fx[0, 1])  # half a Fourier pixel
    best, alpha = fit(px, py)
    for _ in range(_REFINE_LEVELS):
        centre = (px, py)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dx == 0 and dy == 0:
                    continue
                qx, qy = centre[0] + dx * step, centre[1] + dy * step
                score, a = fit(qx, qy)
                if score > best:
                    best, alpha, px, py = score, a, qx, qy
        step /= 2
    return px, py, alpha


def _origin_phase_to_corner(phase: float, kx: float, ky: float) -> float:
    """Phase at the FFT origin (fine pixel 0 centre) → phase at the image corner."""
    corner = phase - 2 * np.pi * (kx + ky) * _FINE_CENTRE_PX
    return float(np.angle(np.exp(1j * corner)))


def _corner_phase_to_origin(phase: float, kx: float, ky: float) -> float:
    return phase + 2 * np.pi * (kx + ky) * _FINE_CENTRE_PX


def _default_border(shape: tuple[int, ...]) -> int:
    return max(4, min(shape) // 16)


def estimate_parameters(
    raw: np.ndarray,
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    n_angles: int = 3,
    n_phases: int = 3,
    camera: SCMOSCamera | None = None,
    k_fraction_range: tuple[float, float] = (0.3, 1.5),
    guess: list[AngleParameters] | None = None,
    guess_radius_fraction: float = 0.05,
    border_px: int | None = None,
) -> list[AngleParameters]:
    """Estimate each angle's pattern wave vector, phase and modulation from raw SIM data.

    See the module docstring for the method. The phase steps within an angle are
    assumed equidistant and increasing (``2π j / n_phases``); the estimated wave vector
    is the one whose +1 band carries ``e^{+iφ_j}``.

    Args:
        raw: ``"PYX"`` stack, ``P = n_angles × n_phases``, angles outermost; photons
            (float, ≥ 0) or, with ``camera``, ADU.
        na, wavelength_nm: objective aperture and emission wavelength (nm).
        pixel_size_nm: camera pixel size in the sample plane (nm).
        n_angles, n_phases: acquisition layout (``n_phases`` ≥ 3).
        camera: convert ADU to photons with this camera's offset, gain and QE.
        k_fraction_range: search range of ``|p|`` as a fraction of the cut-off ``2NA/λ``.
        guess: approximate wave vectors (one per angle, e.g. the instrument's nominal
            pattern): the search is then limited to ``guess_radius_fraction`` × cut-off
            around each. Needed for scenes whose spectrum is dominated by a few
            straight lines (along a line the pattern's component is unobservable).
        guess_radius_fraction: search radius around a guess, fraction of the cut-off.
        border_px: width of the border fade (camera pixels); default ``min(Y, X) // 16``.

    Returns:
        one :class:`~fluorofpga.microscope.sim.AngleParameters` per angle: ``kx, ky`` in
        cycles per camera pixel, ``phase_rad`` of the angle's first frame at the image
        corner, ``modulation`` ``m`` (``2 |α|``).
    """
    n_angles, n_phases = _check_layout(n_angles, n_phases)
    photons = _to_photons(raw, n_angles * n_phases, camera)
    cutoff = cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)
    lo, hi = k_fraction_range
    if not (0 < lo < hi <= 2):
        raise ValueError(
            f"k_fraction_range must satisfy 0 < low < high ≤ 2, got {k_fraction_range}"
        )
    if guess is not None and len(guess) != n_angles:
        raise ValueError(
            f"guess needs one AngleParameters per angle ({n_angles}), got {len(guess)}"
        )
    if not (np.isfinite(guess_radius_fraction) and guess_radius_fraction > 0):
        raise ValueError(f"guess_radius_fraction must be > 0, got {guess_radius_fraction!r}")
    border = _default_border(photons.shape[1:]) if border_px is None else int(border_px)
    spectra = _fine_spectra(photons, border)
    bands = _separate_bands(spectra, n_angles, n_phases)
    freq = _Frequencies(spectra.shape[1:], cutoff)
    in_range = (freq.rho >= lo * cutoff) & (freq.rho <= hi * cutoff)
    result = []
    for a, (c0, c1, _) in enumerate(bands):
        allowed = in_range
        if guess is not None:
            distance = np.hypot(freq.fx - guess[a].kx, freq.fy - guess[a].ky)
            allowed = distance <= max(guess_radius_fraction * cutoff, abs(freq.fx[0, 1]))
        fit = _BandFit(c0, c1, freq)
        candidates = _coarse_peaks(c0, c1, freq, allowed)
        if not candidates:
            raise ValueError("no pattern frequency candidate in the search range")
        px, py = max(candidates, key=lambda c: fit(*c)[0])
        px, py, alpha = _refine_peak(fit, px, py)
        phase = _origin_phase_to_corner(float(np.angle(alpha)), px, py)
        result.append(AngleParameters(px, py, phase, float(2 * abs(alpha))))
    return result


def _apodization(freq: _Frequencies, extended_cutoff: float, kind: Apodization) -> np.ndarray:
    s = freq.rho / extended_cutoff
    if kind == "otf":
        return ideal_otf(freq.rho, extended_cutoff)
    if kind == "triangle":
        return np.clip(1.0 - s, 0.0, None)
    if kind == "cosine":
        return np.where(s < 1, np.cos(0.5 * np.pi * np.clip(s, 0, 1)), 0.0)
    if kind == "none":
        return (s < 1).astype(np.float64)
    raise ValueError(
        f"apodization must be 'otf', 'triangle', 'cosine' or 'none', got {kind!r}"
    )


def wiener_sim(
    raw: np.ndarray,
    params: list[AngleParameters],
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    wiener_w: float = 0.05,
    apodization: Apodization = "otf",
    camera: SCMOSCamera | None = None,
    border_px: int | None = None,
    clip_negative: bool = True,
) -> np.ndarray:
    """Generalised Wiener SIM reconstruction on the 2× grid.

    Each angle's bands are separated, the ±1 bands divided by ``(m/2) e^{±iφ}`` (``m``
    floored at 0.2 so a weak pattern cannot amplify noise without bound) and moved by
    ``∓p`` to their true frequencies, then all ``3 × n_angles`` bands are combined as
    ``A(k) Σ_b OTF_b*(k) D_b(k) / (Σ_b |OTF_b(k)|² + w²)``. ``A`` is the apodisation out
    to the extended cut-off ``2NA/λ + max|p|``: ``"otf"`` (default) is the ideal OTF
    shape stretched to that cut-off, so the result approximates
    :func:`~fluorofpga.microscope.sim.sim_ground_truth`; ``"triangle"``, ``"cosine"``
    and ``"none"`` (hard cut-off, rings) are the usual alternatives.

    Args:
        raw: ``"PYX"`` stack, angles outermost; photons (float, ≥ 0) or ADU with
            ``camera``. ``n_phases`` is ``P / len(params)``.
        params: one :class:`~fluorofpga.microscope.sim.AngleParameters` per angle, e.g.
            from :func:`estimate_parameters`.
        na, wavelength_nm, pixel_size_nm: optics (camera pixel size, nm).
        wiener_w: Wiener parameter ``w`` (> 0); larger is smoother and less noisy.
        apodization: see above.
        camera: convert ADU to photons with this camera.
        border_px: border fade width (camera pixels); default ``min(Y, X) // 16``.
        clip_negative: clip the Wiener ringing below 0 (default), else return as is.

    Returns:
        float64 ``(2Y, 2X)`` image in photons per camera-pixel area (its mean is
        about the widefield mean), fine pixels ``2i, 2i+1`` halving camera pixel ``i``.
    """
    if len(params) < 1 or not all(isinstance(p, AngleParameters) for p in params):
        raise ValueError("params must be a non-empty list of AngleParameters, one per angle")
    n_angles = len(params)
    photons = _to_photons(raw, None, camera)
    if photons.shape[0] % n_angles:
        raise ValueError(
            f"raw has {photons.shape[0]} frames, not a multiple of the {n_angles} angles "
            "in params"
        )
    n_angles, n_phases = _check_layout(n_angles, photons.shape[0] // n_angles)
    if not (np.isfinite(wiener_w) and wiener_w > 0):
        raise ValueError(f"wiener_w must be > 0, got {wiener_w!r}")
    cutoff = cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)
    border = _default_border(photons.shape[1:]) if border_px is None else int(border_px)
    spectra = _fine_spectra(photons, border)
    bands = _separate_bands(spectra, n_angles, n_phases)
    freq = _Frequencies(spectra.shape[1:], cutoff)

    numerator = np.zeros(freq.shape, dtype=np.complex128)
    denominator = np.zeros(freq.shape, dtype=np.float64)
    for (c0, c_plus, c_minus), p in zip(bands, params, strict=True):
        o0 = freq.otf()
        numerator += o0 * c0
        denominator += o0**2
        phase = _corner_phase_to_origin(p.phase_rad, p.kx, p.ky)
        half_m = 0.5 * max(float(p.modulation), _MIN_MODULATION)
        for sign, band in ((1, c_plus), (-1, c_minus)):
            factor = half_m * np.exp(1j * sign * phase)
            shifted = freq.shift(band, sign * p.kx, sign * p.ky) / factor
            o = freq.otf(sign * p.kx, sign * p.ky)
            numerator += o * shifted
            denominator += o**2
    extended = cutoff + max(p.k_cycles_per_px for p in params)
    spectrum = numerator / (denominator + wiener_w**2) * _apodization(freq, extended, apodization)
    image = sfft.ifft2(spectrum).real
    return np.clip(image, 0.0, None) if clip_negative else image


def widefield_from_raw(raw: np.ndarray, camera: SCMOSCamera | None = None) -> np.ndarray:
    """Widefield-equivalent image (mean over all frames), upsampled 2× for comparison.

    Cubic-spline interpolation on pixel areas (``grid_mode``), so fine pixels
    ``2i, 2i+1`` halve camera pixel ``i`` as in :func:`wiener_sim`.

    Args:
        raw: ``"PYX"`` stack; photons (float, ≥ 0) or ADU with ``camera``.
        camera: convert ADU to photons with this camera.

    Returns:
        float64 ``(2Y, 2X)`` in photons per camera-pixel area.
    """
    mean = _to_photons(raw, None, camera).mean(axis=0)
    return ndimage.zoom(mean, _UPSAMPLE, order=3, mode="reflect", grid_mode=True)
