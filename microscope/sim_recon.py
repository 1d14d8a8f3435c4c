"""Classical 2-D SIM reconstruction: parameter estimation and generalised Wiener filter.

The baseline a learned SIM reconstructor has to beat, after fairSIM (Müller et al.,
Nat. Commun. 2016) and Gustafsson (Biophys. J. 2008). Conventions (grids, positions,
wave vectors in cycles per *camera* pixel, ``"PYX"`` stacks with angles outermost) are
those of :mod:`fluorofpga.microscope.sim`.

Pipeline:

1. Input: ``raw`` as photons/electrons (float, ≥ 0) or as uint16 ADU together with the
   ``camera`` that recorded it (then ``(ADU − offset) · gain / qe`` photons; pixels
   below the offset stay negative — that is read noise, not an error).
2. Borders are faded (cosine over ``border_px``) to the stack mean so the periodic FFT
   sees no edge; band separation per angle with equidistant phase steps
   (``2π j / n_phases``): the 0, +1 and −1 bands by linear unmixing. The 0 band used
   for estimation is the widefield image (mean of all frames, least noise).
3. Frame order: the documented layout is angle-major (frame ``a * n_phases + j``).
   After the fit, every frame's pattern amplitude at its angle's wave vector is
   measured; when every frame clearly carries its angle's pattern the layout is right
   (no extra cost). Otherwise the frames are grouped by the peaks of their own
   correlation with the widefield (:func:`detect_frame_order`: the pattern part of a
   frame, frame minus widefield, peaks at ``±p`` of its own angle), and when single
   frames are too noisy for that, the layout whose fit carries clearly more pattern
   wins. A phase-major stack is reordered with a
   :class:`~fluorofpga.microscope.sim_params.FrameOrderWarning` (or refused with
   ``reorder=False``); any other grouping, or a frame without its angle's pattern,
   raises :class:`~fluorofpga.microscope.sim_params.FrameOrderError`; an order that
   cannot be verified gets a warning. With ≥ 4 phases the measured phases of the frames
   also reveal phases shuffled within an angle. Nothing is reconstructed silently.
4. Parameter estimation (:func:`estimate_parameters`), per angle:

   * coarse ``p``: the FFT cross-correlation of the 0 and +1 bands (each divided by
     ``√OTF``), normalised by their energies in the overlap of the shifted OTF supports,
     on a grid just fine enough that the correlation does not alias (camera rate for
     the usual optics); its local maxima in the search range, parabolic sub-bin
     positions, are tried in turn (one refinement round each) until one is significant:
     ``|R|`` (below) far above what unrelated bands give;
   * fine ``p``: with filters ``A(k) = OTF(k + p₀) h(k) / √D(k)`` on the 0 band and
     ``B(k + p₀) = OTF(k) h(k) / √D(k)`` on the +1 band (``h`` a smooth high-pass that
     removes the unmodulated background; ``D(k) = ρ OTF(k + p₀)² + OTF(k)² + ε(|k|)``
     makes the correlation weigh each frequency as the likelihood of the two noisy
     copies of the specimen does: ``ρ`` template over band noise, ``ε`` widefield noise
     over the specimen's power spectrum, :func:`_filters_on`), the filtered bands satisfy
     ``b₁(r) e^{−2πi p·r} = α b₀(r)`` at the true ``p`` when ``p₀ = p``, so
     ``R(q) = Σ_r w(r) b₀*(r) b₁(r) e^{−2πi q·r}`` is ``α Σ w |b₀|²`` there: the
     transform of a non-negative image, whose modulus is exactly maximal and symmetric
     at ``q = p`` — no interpolation bias. ``R`` is evaluated at any non-integer ``q``
     (a DFT at one frequency; the product is demodulated by ``p₀`` and block-summed so
     each evaluation is cheap) and maximised by Newton's method on ``|R|²`` with its
     analytic derivatives; ``p₀`` ← the maximum and repeat until it moves by less than
     10⁻³ Fourier pixel (two or three rounds). The weight ``w`` is zero over the faded
     border and a margin inside it, where the fade breaks the identity above (including
     it biases ``|p|`` by ~10⁻⁴), and inversely proportional to the local noise variance
     (shot noise is larger on bright structures; mapped from the spectrum beyond the OTF
     cut-off). At 100 photons (512², NA 1.2, ``|p|`` 0.85 of the cut-off) these weights
     and the narrower zero zone (:func:`_estimation_border`) halve the variance of the
     plain filters ``A = OTF(k + p₀) h``, ``B = OTF(k − p₀) h(k − p₀)`` with a uniform
     weight: ``|p|`` to ~0.004 % rms, about twice the Cramér-Rao bound for a *known*
     specimen (the widefield template is weak near ``−p``, where the +1 band is
     strongest, and no other band sees the specimen better there);
   * phase and modulation: ``α = (m/2) e^{iφ}`` is ``R(p)`` over ``Σ w |b₀|²`` minus its
     expected noise part (noise power from the spectrum beyond the OTF cut-off), scaled
     by the angle's own 0-band brightness relative to the widefield;
   * every frame's pattern amplitude at ``p`` (its pattern part projected on the
     widefield moved to ``p``): the grouping check (every frame of an angle carries its
     pattern) and the measured phase steps (to ~0.04 rad; checked against the order
     ``2π j / n_phases``, stored with the parameters).

5. Generalised Wiener filter (:func:`wiener_sim`): bands normalised by ``(m/2) e^{±iφ}``
   and moved to their true position on the 2× grid, combined as
   ``A(k) Σ OTF_b*(k) D_b(k) / (Σ |OTF_b(k)|² + w²)``, with apodisation ``A`` out to the
   extended cut-off ``2NA/λ + |p|``.

Parameters travel as :class:`~fluorofpga.microscope.sim_params.SimParameters` (save /
load as JSON with the optics and layout they were estimated for); :func:`wiener_sim`
reuses them without re-estimation and :func:`check_parameters` tells whether they still
fit a new stack (drift).

OTF model: the ideal incoherent OTF (:func:`~fluorofpga.microscope.sim.ideal_otf`)
times the camera-pixel transfer ``sinc(fx) sinc(fy)``. No out-of-focus background
model (2-D specimen), no OTF attenuation; the reconstruction assumes equidistant phases.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple

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
from .sim_params import (
    FRAME_ORDERS,
    FrameOrderCheck,
    FrameOrderError,
    FrameOrderWarning,
    NoPatternError,
    ParameterCheck,
    SimParameters,
    WeakPatternWarning,
    frame_permutation,
)
from .sim_prior import MIN_MODULATION as _MIN_MODULATION
from .sim_prior import MIN_NOISE_BINS as _MIN_NOISE_BINS
from .sim_prior import NOISE_REGION as _NOISE_REGION
from .sim_prior import WienerPrior

Apodization = Literal["otf", "triangle", "cosine", "none"]

_MIN_PHASES = 3  # +1 and −1 bands need at least three phase steps to separate
_MIN_SIDE = 8  # smallest frame side (pixels) the border fade and band search make sense on
# -- coarse search
_COARSE_OTF_THRESHOLD = 0.1  # bands divided by √OTF where the OTF exceeds this
_DC_EXCLUSION = 0.1  # of the cut-off: the background-laden DC region is left out
_MIN_OVERLAP = 0.05  # smallest overlap of the shifted OTF supports (fraction of one)
_COARSE_CANDIDATES = 24  # correlation maxima tried in turn (one refinement round each) ...
_SIGNIFICANT = 5.0  # ... until one has |R| this many times its chance level (noise: < 1)
_ALIAS_MARGIN = 1.02  # sampling rate above the alias-free minimum of the correlation
# -- refinement
_HIGHPASS_SIGMA = 0.05  # of the cut-off: Gaussian width of the background high-pass
# ρ of the refinement filters (template over +1-band noise) is this / n_angles: the
# widefield averages n_angles × more frames than a band; in theory this is |α|² = (m/2)²
# (0.2 for m = 0.9); on validation scenes 0.45-1.8 do equally well (flat there), 0.2 and
# 3.6 leave 5-7 % more |p| error
_TEMPLATE_NOISE = 0.9
_PRIOR_FLOOR = 1e-3  # specimen power per ring at least this × the noise per bin
_NOISE_MAP_SIGMA_PX = 4.0  # smoothing of the local noise-variance map (camera pixels)
_NOISE_MAP_FLOOR = 0.05  # of its mean: no pixel weighs more than 20 × the average
_REFINE_ROUNDS = 5  # filter updates at most (converges in 2-3)
_REFINE_TOL_BINS = 1e-3  # stop when p moves less than this (Fourier pixels)
_NEWTON_STEPS = 25
_NEWTON_TOL_BINS = 1e-7
_NEWTON_MAX_STEP_BINS = 0.25  # trust region of one Newton step
_LOCAL_SEARCH = np.linspace(-0.5, 0.5, 5)  # bins: start grid around the coarse peak
_MAX_BLOCK = 8  # the demodulated product is block-summed by up to this factor
_MIN_SIGNAL_FRACTION = 0.1  # noise correction never removes more than 90 % of Σ|b0|²
# -- automatic Wiener filter (wiener_w="auto")
WIENER_AUTO = "auto"
_FIXED_FALLBACK_W = 0.05  # w when the frames leave no noise-only region to measure
# -- frame order
_ORDER_MIN_CONTRAST = 0.5  # weaker grouping than this: the order cannot be told (noise
# alone reaches ~0.2)
_ORDER_TOLERANCE = 0.2  # a layout whose contrast is this close to the best one fits
_ORDER_NOISE_FACTOR = 2.0  # peak signature: ratio above this × ln(number of shifts)
_CONSISTENT_SNR = 8.0  # an angle whose strongest frame has this pattern SNR ...
_CONSISTENT_RATIO = 0.3  # ... must not have a frame below this fraction of it
_LAYOUT_SNR_GAIN = 1.5  # weak pattern: the other layout wins when its fit carries more
_VERIFIED_SNR = 5.0  # every frame's pattern SNR above this: the frame grouping is right
_WEAK_SNR = 3.0  # median pattern SNR of an angle's frames below this: unreliable fit
_MIRROR_EXCLUSION = 0.5  # per-frame phases: |k| below this × |p| left out
_ORDER_MIN_SHIFT = 0.3  # pattern frequencies looked for (fraction of the cut-off) ...
_ORDER_MAX_SHIFT = 1.5  # ... the default search range of the estimation
_SHUFFLE_GAIN = 1.5  # ≥ 4 phases: reordering by measured phase must gain this much
# -- drift check defaults
DRIFT_MIN_CORRELATION_RATIO = 0.9
DRIFT_MAX_FOURIER_PX = 0.05  # wave-vector change; a phase error of π × this at the edge
DRIFT_MAX_PHASE_RAD = 0.2



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


def _camera_spectra(frames: np.ndarray, border_px: int) -> np.ndarray:
    """Border-faded frames → spectra on the camera grid (FFT origin at pixel 0's centre)."""
    window = _border_window(frames.shape[1:], border_px)
    level = frames.mean()
    return sfft.fft2(level + (frames - level) * window, axes=(1, 2))


def _fine_spectra(spectra: np.ndarray) -> np.ndarray:
    """Camera-grid spectra → spectra on the 2× grid (FFT origin at fine pixel 0)."""
    p, h, w = spectra.shape
    fy = sfft.fftfreq(h)
    fx = sfft.fftfreq(w)
    # Resample at fine-pixel centres: shift by (camera-pixel-0 centre − fine-pixel-0 centre).
    shift = 0.5 - _FINE_CENTRE_PX
    ramp = np.exp(-2j * np.pi * shift * (fy[:, None] + fx[None, :]))
    out = np.zeros((p, _UPSAMPLE * h, _UPSAMPLE * w), dtype=np.complex128)
    ky = np.concatenate([np.arange((h + 1) // 2), np.arange(-(h // 2), 0)])
    kx = np.concatenate([np.arange((w + 1) // 2), np.arange(-(w // 2), 0)])
    rows = ky % (_UPSAMPLE * h)
    cols = kx % (_UPSAMPLE * w)
    out[:, rows[:, None], cols[None, :]] = spectra * ramp
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


def _corner_phase_to_origin(phase: float, kx: float, ky: float) -> float:
    """Phase at the image corner → phase at the 2×-grid FFT origin (fine pixel 0)."""
    return phase + 2 * np.pi * (kx + ky) * _FINE_CENTRE_PX


def _default_border(shape: tuple[int, ...]) -> int:
    """Border fade of the Wiener reconstruction (camera pixels)."""
    return max(4, min(shape) // 16)


def _estimation_border(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Border fade, zero-weight margin inside it and weight ramp of the estimation (px).

    A narrow fade and a correlation weight that is zero over it (plus a margin the
    filters' kernels reach across) keep the frequency estimate unbiased; every pixel
    of weight given up shortens the lever arm of the phase slope (512²: fade 8, margin
    4, ramp 8 px; margin 8 and ramp 16 left 9 % more |p| error, no less bias).
    """
    fade = int(np.clip(min(shape) // 32, 2, 8))
    return fade, max(fade // 2, 1), fade


def _wrap(angle: float) -> float:
    """Angle wrapped to (−π, π]."""
    return float(np.angle(np.exp(1j * angle)))


# ------------------------------------------------------------------ estimation grid


def _embed_index(n: int, size: int) -> np.ndarray:
    """Index on a ``size``-point FFT grid of each of ``n`` camera-grid frequency bins."""
    k = np.concatenate([np.arange((n + 1) // 2), np.arange(-(n // 2), 0)])
    return k % size


class _Grid:
    """Sampling grid of the band correlation, in camera-pixel units.

    The product of two bands limited to ``|k| < cutoff`` holds frequencies up to
    ``2 cutoff``; evaluated at shifts up to ``max_shift`` it does not alias when
    sampled at ≥ ``max_shift + 2 cutoff`` samples per camera pixel: the camera rate for
    the usual optics, else a zero-padded finer grid. Frequencies are spaced
    ``1 / (Y, X)`` (one Fourier pixel of the frame) whatever the grid.
    """

    def __init__(
        self, shape: tuple[int, int], cutoff: float, max_shift: float, camera_rate: bool = False
    ) -> None:
        rate = 1.0 if camera_rate else (max_shift + 2 * cutoff) * _ALIAS_MARGIN
        self.camera_shape = (int(shape[0]), int(shape[1]))
        self.shape = tuple(
            n if rate <= 1 else sfft.next_fast_len(int(math.ceil(n * rate)))
            for n in self.camera_shape
        )
        self.cutoff = cutoff
        (ny, nx), (ly, lx) = self.camera_shape, self.shape
        self.fy = sfft.fftfreq(ly, d=ny / ly)  # 1-D axes, cycles per camera pixel
        self.fx = sfft.fftfreq(lx, d=nx / lx)
        self.bins = (1.0 / nx, 1.0 / ny)  # one Fourier pixel along x, y
        # Sample positions relative to the image centre (camera pixels; pixel j's
        # centre is at j + 0.5 from the corner).
        self.centre = (nx / 2, ny / 2)
        self.y = 0.5 + np.arange(ly) * ny / ly - ny / 2
        self.x = 0.5 + np.arange(lx) * nx / lx - nx / 2
        self._rows = _embed_index(ny, ly)
        self._cols = _embed_index(nx, lx)

    @functools.cached_property
    def rho(self) -> np.ndarray:
        """``|k|`` on the grid (cycles per camera pixel; cached, do not modify)."""
        return np.hypot(self.fy[:, None], self.fx[None, :])

    def flip(self, values: np.ndarray) -> np.ndarray:
        """``values(−k)`` of an array ``values(k)`` on this grid."""
        return np.roll(values[::-1, ::-1], 1, axis=(0, 1))

    def embed(self, spectrum: np.ndarray) -> np.ndarray:
        """A camera-grid spectrum zero-padded onto this grid (Nyquist bins dropped)."""
        ny, nx = self.camera_shape
        if self.shape == self.camera_shape:
            out = spectrum.copy()
        else:
            out = np.zeros(self.shape, dtype=spectrum.dtype)
            out[self._rows[:, None], self._cols[None, :]] = spectrum
        if ny % 2 == 0:
            out[self._rows[ny // 2], :] = 0
        if nx % 2 == 0:
            out[:, self._cols[nx // 2]] = 0
        return out

    def otf(self, px: float, py: float) -> np.ndarray:
        """Model OTF at ``k + p`` (ideal pupil × camera-pixel sinc), zero off its support."""
        rows, cols, values, _ = self.otf_box(px, py)
        out = np.zeros(self.shape)
        out[np.ix_(rows, cols)] = values
        return out

    def otf_box(
        self, px: float, py: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`otf` on the rows and columns of the box around its support, and ``|k + p|``
        there."""
        fy, fx = self.fy + py, self.fx + px
        rows = np.flatnonzero(np.abs(fy) < self.cutoff)
        cols = np.flatnonzero(np.abs(fx) < self.cutoff)
        fy, fx = fy[rows], fx[cols]
        rho = np.hypot(fy[:, None], fx[None, :])
        radial = ideal_otf(rho, self.cutoff)
        return rows, cols, radial * np.outer(np.abs(np.sinc(fy)), np.abs(np.sinc(fx))), rho

    @functools.cached_property
    def otf0(self) -> np.ndarray:
        """:meth:`otf` at ``p = 0`` (cached)."""
        return self.otf(0.0, 0.0)

    def highpass(self, px: float, py: float) -> np.ndarray:
        """``1 − exp(−|k + p|² / 2σ²)``: removes the unmodulated background near ``−p``."""
        return self.highpass_box(slice(None), slice(None), px, py)

    def highpass_box(self, rows: np.ndarray | slice, cols: np.ndarray | slice, px: float,
                     py: float) -> np.ndarray:
        """:meth:`highpass` on the given rows and columns only."""
        sigma = _HIGHPASS_SIGMA * self.cutoff
        gy = np.exp(-0.5 * ((self.fy[rows] + py) / sigma) ** 2)
        gx = np.exp(-0.5 * ((self.fx[cols] + px) / sigma) ** 2)
        return 1.0 - np.outer(gy, gx)

    def inner_weight(self, start_px: float, ramp_px: float) -> np.ndarray:
        """0 within ``start_px`` of the frame edge, cosine ramp to 1 over ``ramp_px``."""
        axes = []
        for positions, n in ((self.y, self.camera_shape[0]), (self.x, self.camera_shape[1])):
            from_corner = positions + n / 2
            distance = np.minimum(from_corner, n - from_corner)
            t = np.clip((distance - start_px) / max(ramp_px, 1e-9), 0.0, 1.0)
            axes.append(0.5 - 0.5 * np.cos(np.pi * t))
        return np.outer(axes[0], axes[1])


# ------------------------------------------------------------------ coarse search


class _CoarseSearch:
    """Normalised cross-correlation of the 0 and +1 bands at every integer shift.

    Both bands are divided by ``√OTF`` where the OTF exceeds ``_COARSE_OTF_THRESHOLD``
    (region ``M``; half-way between the matched filter and full whitening, which ranks
    the true peak best at low photon counts) and compared through the correlation
    coefficient ``|Σ b0* b1(k+q)| / √(Σ |b0|² M(k+q) · Σ M |b1(k+q)|²)``: large at
    ``q = p`` whatever the specimen, small elsewhere, and independent of how much the
    shifted supports overlap. Every sum over ``k`` is the FFT of a product of inverse
    FFTs (single precision: only the peak's position to a Fourier pixel matters here).
    The local maxima are returned strongest first; the caller tries them in turn.
    """

    def __init__(self, grid: _Grid) -> None:
        self.grid = grid
        otf = grid.otf(0.0, 0.0)
        support = otf > _COARSE_OTF_THRESHOLD
        self.inverse = np.where(
            support, 1.0 / np.sqrt(np.maximum(otf, _COARSE_OTF_THRESHOLD)), 0.0
        )
        self.inverse_dc = self.inverse * (grid.rho > _DC_EXCLUSION * grid.cutoff)
        self.mask = sfft.rfft2(support.astype(np.float32))
        overlap = sfft.irfft2(np.conj(self.mask) * self.mask, s=grid.shape)
        self.enough_overlap = overlap >= _MIN_OVERLAP * overlap[0, 0]

    def candidates(self, c0: np.ndarray, c1: np.ndarray, allowed: np.ndarray) -> list[np.ndarray]:
        """Up to ``_COARSE_CANDIDATES`` shifts ``(px, py)`` (cycles/px), best first.

        ``Σ_k f*(k) g(k + q)`` for all ``q`` is the inverse FFT of ``F* G``.
        """
        grid = self.grid
        b0 = (grid.embed(c0) * self.inverse_dc).astype(np.complex64)
        b1 = (grid.embed(c1) * self.inverse).astype(np.complex64)
        cross = np.abs(sfft.ifft2(np.conj(sfft.fft2(b0)) * sfft.fft2(b1)))
        power0 = sfft.rfft2((b0.real**2 + b0.imag**2).astype(np.float32))
        power1 = sfft.rfft2((b1.real**2 + b1.imag**2).astype(np.float32))
        energy0 = sfft.irfft2(np.conj(power0) * self.mask, s=grid.shape)
        energy1 = sfft.irfft2(np.conj(self.mask) * power1, s=grid.shape)
        valid = allowed & self.enough_overlap & (energy0 > 0) & (energy1 > 0)
        correlation = np.zeros(grid.shape)
        correlation[valid] = cross[valid] / np.sqrt(energy0[valid] * energy1[valid])
        peaks = (correlation == ndimage.maximum_filter(correlation, size=3, mode="wrap")) & (
            correlation > 0
        )
        index = np.flatnonzero(peaks)
        if index.size == 0:
            return []
        values = correlation.ravel()[index]
        index = index[np.argsort(values)[::-1][:_COARSE_CANDIDATES]]
        return [self._subpixel(correlation, *np.unravel_index(i, grid.shape)) for i in index]

    def _subpixel(self, correlation: np.ndarray, iy: int, ix: int) -> np.ndarray:
        """Peak position with a parabola through each axis' three samples."""
        ly, lx = correlation.shape
        centre = correlation[iy, ix]
        offsets = []
        for before, after in (
            (correlation[iy, (ix - 1) % lx], correlation[iy, (ix + 1) % lx]),
            (correlation[(iy - 1) % ly, ix], correlation[(iy + 1) % ly, ix]),
        ):
            curvature = before - 2 * centre + after
            offsets.append(0.0 if curvature >= 0 else float(np.clip(
                0.5 * (before - after) / curvature, -0.5, 0.5)))
        bx, by = self.grid.bins
        return np.array([self.grid.fx[ix] + offsets[0] * bx, self.grid.fy[iy] + offsets[1] * by])


# ------------------------------------------------------------------ refinement


class _Fit:
    """Result of the refinement of one angle (see :meth:`_Refiner.fit`)."""

    def __init__(
        self, p: np.ndarray, r_centre: complex, energy0: float, energy1: float,
        noise0: float, rounds: int,
    ) -> None:
        self.p = p
        self.r_centre = r_centre
        self.energy0 = energy0
        self.energy1 = energy1
        self.noise0 = noise0
        self.rounds = rounds
        self.brightness = 1.0  # this angle's 0 band over the reference's (modulation scale)
        self.chance = 0.0  # |R| expected by chance (unrelated bands), see significance

    @property
    def significance(self) -> float:
        """``|R|`` over its chance level: ≫ 10 for a pattern, a few for noise."""
        return abs(self.r_centre) / self.chance if self.chance > 0 else 0.0

    @property
    def correlation(self) -> float:
        """Normalised correlation ``|R| / √(Σ w|b0|² Σ w|b1|²)`` in [0, 1]."""
        if self.energy0 <= 0 or self.energy1 <= 0:
            return 0.0
        return float(abs(self.r_centre) / math.sqrt(self.energy0 * self.energy1))

    def angle_parameters(self, centre: tuple[float, float]) -> AngleParameters:
        """Wave vector, corner phase and modulation ``2|α|`` (noise-corrected)."""
        signal0 = max(self.energy0 - self.noise0, _MIN_SIGNAL_FRACTION * self.energy0)
        alpha = self.r_centre / (signal0 * self.brightness) if signal0 > 0 else 0j
        px, py = (float(v) for v in self.p)
        phase = _wrap(float(np.angle(alpha)) - 2 * np.pi * (px * centre[0] + py * centre[1]))
        return AngleParameters(px, py, phase, float(2 * abs(alpha)))


def _demodulate(
    product: np.ndarray, grid: _Grid, p: np.ndarray, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``product · e^{−2πi p·r}`` summed over ``block × block`` tiles, with tile centres.

    Near ``p`` the demodulated product varies slowly, so ``R(p + δ)`` for ``|δ|`` of a
    few Fourier pixels is the DFT of the tile sums at the tile centres (the tile's own
    transfer, ``sinc(block · δ)`` ≈ 1 − 10⁻⁴, is symmetric and does not move the peak).
    """
    ey = np.exp(-2j * np.pi * p[1] * grid.y)
    ex = np.exp(-2j * np.pi * p[0] * grid.x)
    ly, lx = (n // block * block for n in product.shape)
    demodulated = (product[:ly, :lx] * ey[:ly, None]) * ex[None, :lx]
    tiles = demodulated.reshape(ly // block, block, lx // block, block).sum(axis=(1, 3))
    return (
        tiles,
        grid.y[:ly].reshape(-1, block).mean(axis=1),
        grid.x[:lx].reshape(-1, block).mean(axis=1),
    )


def _moments(
    tiles: np.ndarray, y: np.ndarray, x: np.ndarray, dx: float, dy: float
) -> np.ndarray:
    """``M[a, b] = Σ y^a x^b t(y, x) e^{−2πi (dx x + dy y)}`` for ``a, b`` in 0..2."""
    ex = np.exp(-2j * np.pi * dx * x)
    ey = np.exp(-2j * np.pi * dy * y)
    right = np.stack([ex, x * ex, x * x * ex], axis=0)  # (3, X)
    left = np.stack([ey, y * ey, y * y * ey], axis=0)  # (3, Y)
    # tiny products: plain numpy, not BLAS (whose threads cost more than the sums)
    columns = (tiles[None, :, :] * right[:, None, :]).sum(axis=2)  # (3, Y)
    return (left[:, None, :] * columns[None, :, :]).sum(axis=2)  # (3, 3)


def _dft_at(tiles: np.ndarray, y: np.ndarray, x: np.ndarray, dx: np.ndarray, dy: np.ndarray
            ) -> np.ndarray:
    """``R`` at every pair of offsets ``(dy[i], dx[j])``, shape ``(len(dy), len(dx))``."""
    ex = np.exp(-2j * np.pi * np.outer(dx, x))  # (J, X)
    ey = np.exp(-2j * np.pi * np.outer(dy, y))  # (I, Y)
    columns = (tiles[None, :, :] * ex[:, None, :]).sum(axis=2)  # (J, Y)
    return (ey[:, None, :] * columns[None, :, :]).sum(axis=2)


def _maximise(
    tiles: np.ndarray, y: np.ndarray, x: np.ndarray, bins: tuple[float, float]
) -> tuple[np.ndarray, complex]:
    """Offset ``δ`` maximising ``|R(δ)|`` (Newton on ``|R|²``, analytic derivatives).

    Starts from the best of a 5 × 5 grid of offsets within ±0.5 Fourier pixel.
    """
    bx, by = bins
    ox, oy = _LOCAL_SEARCH * bx, _LOCAL_SEARCH * by
    values = np.abs(_dft_at(tiles, y, x, ox, oy))
    iy, ix = np.unravel_index(int(np.argmax(values)), values.shape)
    delta = np.array([ox[ix], oy[iy]])
    scale = np.array([bx, by])
    c = -2j * np.pi
    for _ in range(_NEWTON_STEPS):
        m = _moments(tiles, y, x, *delta)
        r = m[0, 0]
        d1 = np.array([c * m[0, 1], c * m[1, 0]])
        d2 = c * c * np.array([[m[0, 2], m[1, 1]], [m[1, 1], m[2, 0]]])
        gradient = 2 * np.real(np.conj(r) * d1)
        hessian = 2 * np.real(np.conj(d1)[:, None] * d1[None, :] + np.conj(r) * d2)
        eigenvalues = np.linalg.eigvalsh(hessian)
        if eigenvalues.max() < 0:
            step = -np.linalg.solve(hessian, gradient)
        else:  # not yet in the concave peak: climb the gradient
            step = gradient / max(np.abs(eigenvalues).max(), 1e-300)
        size = float(np.hypot(*(step / scale)))
        if size > _NEWTON_MAX_STEP_BINS:
            step *= _NEWTON_MAX_STEP_BINS / size
        delta = delta + step
        if size < _NEWTON_TOL_BINS:
            break
    r = complex(_dft_at(tiles, y, x, delta[:1], delta[1:])[0, 0])
    return delta, r


class _Refiner:
    """Exact sub-pixel wave vector, phase and modulation of one angle (module docstring).

    ``weight`` is the border weight; with a ``local`` noise map (variance over its mean,
    :func:`_local_noise`) the correlation weighs every pixel by ``weight / local``
    (shot noise is larger on bright structures). ``noise_var`` is the widefield's noise
    per Fourier bin, ``ratio`` the filters' ``ρ`` (:func:`_filters_on`).
    """

    def __init__(
        self, grid: _Grid, weight: np.ndarray, noise_var: float, ratio: float,
        local: np.ndarray | None = None,
    ) -> None:
        self.grid = grid
        # the noise of b0 at r is ∝ local(r): Σ (weight / local) E|n0|² is Σ weight E|n0|²
        self.weight_sum = float(weight.sum())
        self.weight = weight if local is None else weight / local
        self.noise_var = noise_var
        self.ratio = ratio
        self.prior: _SpecimenPrior | None = None
        self.block = int(max(1, min(_MAX_BLOCK, min(grid.shape) // 32)))
        self._embedded: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def embed(self, spectrum: np.ndarray) -> np.ndarray:
        """``grid.embed(spectrum)``, remembered for the last few spectra (the widefield is
        used for every angle, each +1 band twice; the spectra are not modified)."""
        key = id(spectrum)
        if key not in self._embedded:
            if len(self._embedded) >= 4:
                self._embedded.pop(next(iter(self._embedded)))
            self._embedded[key] = (spectrum, self.grid.embed(spectrum))  # keeps id valid
        return self._embedded[key][1]

    def filters(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``A`` for the 0 band, ``B`` for the +1 band (:func:`_filters_on`)."""
        return _filters_on(self.grid, p, self.ratio, self.prior)

    def fit(self, c0: np.ndarray, c1: np.ndarray, p: np.ndarray, rounds: int) -> _Fit:
        """Refine ``p`` from a start within half a Fourier pixel (``rounds`` filter updates)."""
        grid = self.grid
        c0, c1 = self.embed(c0), self.embed(c1)
        p = np.asarray(p, dtype=np.float64)
        done = 0
        while done < rounds:
            done += 1
            a, b = self.filters(p)
            b0 = sfft.ifft2(c0 * a)
            b1 = sfft.ifft2(c1 * b)
            tiles, y, x = _demodulate(np.conj(b0) * b1 * self.weight, grid, p, self.block)
            delta, r = _maximise(tiles, y, x, grid.bins)
            p = p + delta
            if np.hypot(*(delta / np.array(grid.bins))) < _REFINE_TOL_BINS:
                break
        return self._result(p, r, b0, b1, a, done)

    def evaluate(self, c0: np.ndarray, c1: np.ndarray, p: np.ndarray) -> _Fit:
        """The fit quantities at a fixed ``p`` (no search)."""
        grid = self.grid
        p = np.asarray(p, dtype=np.float64)
        a, b = self.filters(p)
        b0 = sfft.ifft2(grid.embed(c0) * a)
        b1 = sfft.ifft2(grid.embed(c1) * b)
        ey = np.exp(-2j * np.pi * p[1] * grid.y)
        ex = np.exp(-2j * np.pi * p[0] * grid.x)
        r = complex(ey @ (np.conj(b0) * b1 * self.weight) @ ex)
        return self._result(p, r, b0, b1, a, 0)

    def _result(
        self, p: np.ndarray, r: complex, b0: np.ndarray, b1: np.ndarray, a: np.ndarray,
        rounds: int,
    ) -> _Fit:
        power0 = self.weight * (b0.real**2 + b0.imag**2)
        power1 = b1.real**2 + b1.imag**2
        energy0 = float(np.sum(power0))
        energy1 = float(np.sum(self.weight * power1))
        size = a.size
        noise0 = self.weight_sum * self.noise_var * float(np.sum(a * a)) / size**2
        fit = _Fit(p, r, energy0, energy1, noise0, rounds)
        # |R| of unrelated bands: a sum of terms with random phases
        fit.chance = math.sqrt(float(np.sum(power0 * self.weight * power1)))
        return fit


def _noise_variance(c0: np.ndarray, outside: np.ndarray) -> float:
    """Noise power per Fourier bin of a band, from the bins beyond the OTF cut-off."""
    if np.count_nonzero(outside) < _MIN_NOISE_BINS:
        return 0.0  # no noise-only region on this grid: no correction
    values = c0[outside]
    return float(np.mean(values.real**2 + values.imag**2))


def _filters_on(
    grid: _Grid, p: np.ndarray, ratio: float, prior: _SpecimenPrior | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Filters ``A`` for the 0 band and ``B`` for the +1 band (likelihood weights).

    With ``O0 = OTF(k)``, ``O1 = OTF(k + p)`` (zero where ``O0`` is: beyond the cut-off
    both bands hold noise only) and ``D(k) = ρ O1² + O0² + ε(|k|)`` (``ρ`` = ``ratio``,
    ``ε`` = ``prior``, or 0): ``A(k) = O1 h(k) / √D(k)`` and ``B(k + p) = O0 h(k) / √D(k)``.
    Then ``A O0 = B(· + p) O1``: the filtered bands are the same image at the true ``p``
    (no bias), and the correlation weighs each frequency ``k`` of the specimen by
    ``O0 O1 / D``, the cross term of the bands' likelihood: with the specimen a Gaussian
    of power ``P_S`` and white noise of powers ``σ0²`` (widefield) and ``σ1²`` (+1 band),
    ``ρ = |α|² σ0² / σ1²`` and ``ε = σ0² / P_S``. That is the matched filter ``O1 / O0``
    where the widefield template is clean, ``O0 / (ρ O1)`` where it is weak (near
    ``−p``, the +1 band's strongest part), and small where there is no signal.
    """
    rows, cols, o1, rho1 = grid.otf_box(p[0], p[1])  # zero outside this box
    box = np.ix_(rows, cols)
    o0 = grid.otf0[box]
    o1 = o1 * (o0 > 0)
    o0_square, o1_square = o0 * o0, o1 * o1
    d_a = ratio * o1_square + o0_square  # D(k)
    d_b = ratio * o0_square + o1_square  # D(−k − p), for B(−k)
    if prior is not None:
        d_a += prior.on(grid)[box]
        d_b += prior(rho1)
    empty = o1 <= 0  # filters 0 there: any positive denominator will do
    d_a[empty] = 1.0
    d_b[empty] = 1.0
    a = np.zeros(grid.shape)
    b_flipped = np.zeros(grid.shape)  # B(−k) = O(k + p) h(k + p) / √D(−k − p)
    a[box] = o1 / np.sqrt(d_a) * grid.highpass_box(rows, cols, 0.0, 0.0)
    b_flipped[box] = o1 / np.sqrt(d_b) * grid.highpass_box(rows, cols, p[0], p[1])
    return a, grid.flip(b_flipped)


def _local_noise(widefield: np.ndarray, outside: np.ndarray, grid: _Grid) -> np.ndarray | None:
    """Noise variance of the widefield per pixel over its mean, on ``grid`` (or None).

    The spectrum beyond the OTF cut-off (``outside``, camera grid) is noise only; its
    image, squared and smoothed (Gaussian, ``_NOISE_MAP_SIGMA_PX``), maps the local
    variance (shot noise follows the specimen). None when there are too few such bins
    or no noise at all.
    """
    if np.count_nonzero(outside) < _MIN_NOISE_BINS:
        return None
    ny, nx = widefield.shape
    half = nx // 2 + 1  # the frames are real: their spectra are Hermitian
    noise = sfft.irfft2(np.where(outside[:, :half], widefield[:, :half], 0.0), s=(ny, nx))
    power = noise * noise
    mean = float(power.mean())
    if not mean > 0:
        return None
    fy = sfft.fftfreq(ny)[:, None]
    width = -2 * (np.pi * _NOISE_MAP_SIGMA_PX) ** 2
    if grid.shape == grid.camera_shape:
        fx = sfft.rfftfreq(nx)[None, :]
        smooth = sfft.rfft2(power) * np.exp(width * (fy * fy + fx * fx))
        local = sfft.irfft2(smooth, s=(ny, nx))
    else:  # band-limited interpolation onto the finer grid
        fx = sfft.fftfreq(nx)[None, :]
        smooth = sfft.fft2(power) * np.exp(width * (fy * fy + fx * fx))
        local = sfft.ifft2(grid.embed(smooth)).real * (grid.shape[0] * grid.shape[1]) / (ny * nx)
    return np.maximum(local / mean, _NOISE_MAP_FLOOR)


def _make_refiner(
    grid: _Grid, widefield: np.ndarray, weight_zone: tuple[float, float], cutoff: float,
    n_angles: int,
) -> _Refiner:
    """The refiner of one stack: weight, local noise map and noise of ``widefield``."""
    camera_grid = grid if grid.shape == grid.camera_shape else _Grid(
        grid.camera_shape, cutoff, 0.0, camera_rate=True
    )
    outside = camera_grid.rho > _NOISE_REGION * cutoff
    refiner = _Refiner(
        grid, grid.inner_weight(*weight_zone), _noise_variance(widefield, outside),
        _TEMPLATE_NOISE / n_angles, _local_noise(widefield, outside, grid),
    )
    if refiner.noise_var > 0:
        refiner.prior = _SpecimenPrior(widefield, camera_grid, refiner.noise_var)
    return refiner


class _SpecimenPrior:
    """``ε(|k|) = σ0² / P_S(|k|)``: widefield noise over the specimen's power, by rings.

    ``P_S`` is the ring mean of ``|W|² − σ0²`` over that of ``OTF²`` (``W`` the widefield
    spectrum, floored at ``_PRIOR_FLOOR`` σ0²), in rings two Fourier pixels wide; calling
    the prior interpolates it at any ``|k|``.
    """

    def __init__(self, widefield: np.ndarray, camera_grid: _Grid, noise_var: float) -> None:
        width = 2 * max(camera_grid.bins)
        last = int(camera_grid.cutoff / width) + 1  # beyond the cut-off: one ring
        ring = np.minimum((camera_grid.rho / width).astype(int), last).ravel()
        count = np.maximum(np.bincount(ring, minlength=last + 1), 1)
        power = np.bincount(ring, (widefield.real**2 + widefield.imag**2).ravel(), last + 1)
        otf2 = np.bincount(ring, (camera_grid.otf0**2).ravel(), last + 1)
        signal = np.maximum(power / count - noise_var, _PRIOR_FLOOR * noise_var)
        self.centres = (np.arange(last + 1) + 0.5) * width
        self.values = noise_var * (otf2 / count) / signal
        self._on: tuple[_Grid, np.ndarray] | None = None

    def __call__(self, rho: np.ndarray) -> np.ndarray:
        """``ε`` at the frequencies ``|k|`` = ``rho``."""
        return np.interp(rho, self.centres, self.values)

    def on(self, grid: _Grid) -> np.ndarray:
        """``ε(|k|)`` on every point of ``grid`` (cached for the last grid)."""
        if self._on is None or self._on[0] is not grid:
            self._on = (grid, self(grid.rho))
        return self._on[1]


def _frame_amplitudes(
    modulated: np.ndarray,
    widefield_image: np.ndarray,
    p: np.ndarray,
    grid: _Grid,
    noise_var: float,
) -> tuple[np.ndarray, float]:
    """Pattern amplitude ``∝ e^{iφ_j}`` of each frame of one angle at ``p``, and its noise.

    Each frame's pattern part (``modulated``: frame − widefield spectra) holds the copy
    ``X(k) ∝ S(k − p) OTF(k)`` times ``e^{iφ_j}`` and its mirror around ``−p`` times
    ``e^{−iφ_j}``. It is projected on the matched template ``W(k − p) OTF(k) /
    OTF(k − p)`` ≈ ``S(k − p) OTF(k)`` (the widefield ``W`` moved to ``p``, from
    ``widefield_image`` = its inverse FFT times the correlation weight, so the border
    does not count; the OTF floored at 0.1), with ``|k|`` below ``|p| / 2`` left out:
    there the mirror copy carries the specimen's detail at ``|p|``, elsewhere it is
    small against the copy's centre ``S(0)``. The phases of the projections are the
    frames' phases to ~0.04 rad (what is left of the mirror copy, and of the pattern in
    ``W`` when the phases are not equidistant). The noise is the standard deviation of
    one projection for white noise of ``noise_var`` per Fourier bin.
    """
    ramp = np.outer(np.exp(2j * np.pi * p[1] * grid.y), np.exp(2j * np.pi * p[0] * grid.x))
    moved = sfft.fft2(widefield_image * ramp)  # W(k − p), weighted in real space
    distance2 = grid.fy[:, None] ** 2 + grid.fx[None, :] ** 2
    width = max(_MIRROR_EXCLUSION * float(np.hypot(*p)), 1e-12)
    mirror = np.exp(-0.5 * distance2 / width**2)
    floor = np.maximum(grid.otf(-p[0], -p[1]), _COARSE_OTF_THRESHOLD)
    kernel = (np.conj(moved) / floor * grid.otf(0.0, 0.0) * (1.0 - mirror)).ravel()
    amplitudes = modulated.reshape(modulated.shape[0], -1) @ kernel
    noise = math.sqrt(noise_var * float(np.sum(kernel.real**2 + kernel.imag**2)))
    return amplitudes, noise


def _brightness(
    c0: np.ndarray, reference: np.ndarray, a: np.ndarray, noise: float, reference_noise: float
) -> float:
    """Signal amplitude of an angle's 0 band relative to the reference (filtered by ``a``)."""
    a2 = a * a
    own = float(np.sum(a2 * (c0.real**2 + c0.imag**2))) - noise * float(a2.sum())
    ref = float(np.sum(a2 * (reference.real**2 + reference.imag**2)))
    ref -= reference_noise * float(a2.sum())
    return math.sqrt(own / ref) if own > 0 and ref > 0 else 1.0


def _check_consistent(amplitudes: np.ndarray, noise: float, angle: int, frames: list[int]
                      ) -> None:
    """Refuse an angle whose frames do not all carry its pattern (wrongly grouped frames)."""
    if noise <= 0:
        return
    snr = np.abs(amplitudes) / noise
    if snr.max() >= _CONSISTENT_SNR and snr.min() < _CONSISTENT_RATIO * snr.max():
        weak = [frames[j] for j in np.flatnonzero(snr < _CONSISTENT_RATIO * snr.max())]
        raise FrameOrderError(
            f"raw frames {weak} carry almost none of the pattern that the other frames of "
            f"angle {angle} (frames {frames}) carry (pattern signal-to-noise "
            + ", ".join(f"{v:.0f}" for v in snr)
            + "): the frames of an angle are not consecutive as documented (angle-major: "
            "frame = angle × n_phases + phase), or a frame lacks its pattern",
            found="inconsistent",
        )


def _phase_steps(amplitudes: np.ndarray) -> tuple[float, ...]:
    """Phase of each frame relative to the first, in [0, 2π) (the first is 0)."""
    relative = np.mod(np.angle(amplitudes * np.conj(amplitudes[0])), 2 * np.pi)
    relative[0] = 0.0
    return tuple(float(v) for v in relative)


def _check_phase_order(amplitudes: np.ndarray, angle: int) -> None:
    """≥ 4 phases: refuse frames whose measured phases are out of order within an angle."""
    n = amplitudes.shape[0]
    if n < 4:
        return  # any order of 3 equidistant phases is equidistant (maybe with −p)
    nominal = np.exp(-2j * np.pi * np.arange(n) / n)
    # steps of −2π/n are steps of +2π/n for the wave vector −p: not an error
    given = max(abs(np.sum(amplitudes * nominal)), abs(np.sum(amplitudes * np.conj(nominal))))
    relative = np.angle(amplitudes * np.conj(amplitudes[0]))
    slots = np.mod(np.rint(relative * n / (2 * np.pi)).astype(int), n)
    if sorted(slots.tolist()) != list(range(n)) or np.array_equal(slots, np.arange(n)):
        return
    measured = abs(np.sum(amplitudes * np.exp(-2j * np.pi * slots / n)))
    if measured > _SHUFFLE_GAIN * given:
        order = [int(np.flatnonzero(slots == s)[0]) for s in range(n)]
        raise FrameOrderError(
            f"angle {angle}: the measured phases put its frames in the order {order} "
            f"(frame j of the angle should carry phase 2πj/{n}); the phases are shuffled "
            "within the angle. Reorder the stack, e.g. raw[a * n_phases + order]",
            found="phases shuffled",
        )


# ------------------------------------------------------------------ frame order


def _pattern_maps(spectra: np.ndarray, cutoff: float) -> tuple[np.ndarray, _Grid, np.ndarray]:
    """Per frame, ``|correlation|²`` of its pattern part with the widefield at every shift.

    The pattern part of a frame (frame minus the mean of all frames, which is the
    widefield image ``W`` since the phases of every angle are equidistant) holds the
    specimen spectrum moved to ``±p`` of the frame's angle, so its cross-correlation
    with ``W`` (both OTF-divided, as in the coarse search) has sharp peaks at ``±p``,
    whatever the order of the frames. Returns the maps over the search annulus
    ``(P, shifts)``, the grid and the annulus mask.
    """
    grid = _Grid(spectra.shape[1:], cutoff, _ORDER_MAX_SHIFT * cutoff)
    search = _CoarseSearch(grid)
    rho = grid.rho
    annulus = (rho >= _ORDER_MIN_SHIFT * cutoff) & (rho <= _ORDER_MAX_SHIFT * cutoff)
    annulus &= search.enough_overlap
    widefield = spectra.mean(axis=0)
    reference = np.conj(sfft.fft2((grid.embed(widefield) * search.inverse_dc).astype(
        np.complex64)))
    maps = np.empty((spectra.shape[0], int(np.count_nonzero(annulus))), dtype=np.float32)
    for j, spectrum in enumerate(spectra):
        pattern = (grid.embed(spectrum - widefield) * search.inverse).astype(np.complex64)
        cross = sfft.ifft2(reference * sfft.fft2(pattern))[annulus]
        maps[j] = cross.real**2 + cross.imag**2
    return maps, grid, annulus


def _pattern_similarity(spectra: np.ndarray, cutoff: float) -> np.ndarray:
    """Similarity of the pattern parts of all frames, ``(P, P)``; ≈ 1 for one angle.

    Each frame's map (:func:`_pattern_maps`) is divided by the per-shift median over all
    frames (the common background: support overlap, specimen; fewer than half the frames
    share a peak); what exceeds the largest value noise reaches (``ln`` of the number of
    shifts) is the frame's peak signature, and frames with the same peaks share an angle.
    """
    maps, _, _ = _pattern_maps(spectra, cutoff)
    ratio = maps / np.maximum(np.median(maps, axis=0), 1e-30)
    signature = np.clip(ratio - _ORDER_NOISE_FACTOR * math.log(max(maps.shape[1], 2)), 0.0, None)
    norms = np.linalg.norm(signature, axis=1)
    norms[norms == 0] = 1.0
    unit = signature / norms[:, None]
    return unit @ unit.T


def _check_weak_angles_for_shuffles(
    results: list[_AngleResult],
    spectra: np.ndarray,
    n_phases: int,
    cutoff: float,
    weight_zone: tuple[float, float],
) -> None:
    """≥ 4 phases: an angle without a clear pattern may have its phases shuffled.

    Out-of-order phases move the pattern out of the +1 band (with a step of ``2h·π/N``
    entirely into band ``h``), so the fit finds nothing. The frames' own correlation
    maps, summed, still peak at ``±p``; the frames' phases measured there tell.
    """
    if n_phases < 4:
        return
    weak = [a for a, r in enumerate(results) if not _verified([r])]
    if not weak:
        return
    maps, grid, annulus = _pattern_maps(spectra, cutoff)
    iy, ix = np.nonzero(annulus)
    for a in weak:
        peak = int(np.argmax(maps[a * n_phases : (a + 1) * n_phases].sum(axis=0)))
        p = np.array([grid.fx[ix[peak]], grid.fy[iy[peak]]])
        frames = spectra[a * n_phases : (a + 1) * n_phases]  # their mean is the widefield
        found = _amplitudes_at(frames, [p], n_phases, cutoff, weight_zone)[0]
        if found.noise > 0 and np.abs(found.amplitudes).max() >= _CONSISTENT_SNR * found.noise:
            _check_phase_order(found.amplitudes, a)


def _contrast(similarity: np.ndarray, groups: list[tuple[int, ...]]) -> float:
    """Mean similarity within the groups minus mean similarity between them."""
    p = similarity.shape[0]
    label = np.empty(p, dtype=int)
    for g, members in enumerate(groups):
        label[list(members)] = g
    same = label[:, None] == label[None, :]
    off_diagonal = ~np.eye(p, dtype=bool)
    within, between = same & off_diagonal, ~same
    if not within.any() or not between.any():
        return 0.0
    return float(similarity[within].mean() - similarity[between].mean())


def _best_groups(similarity: np.ndarray, n_angles: int, n_phases: int) -> list[tuple[int, ...]]:
    """Greedy grouping into ``n_angles`` groups of ``n_phases`` alike frames, then swaps."""
    remaining = list(range(similarity.shape[0]))
    groups: list[list[int]] = []
    for _ in range(n_angles - 1):
        sub = similarity[np.ix_(remaining, remaining)].copy()
        np.fill_diagonal(sub, -np.inf)
        i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
        group = [remaining[i], remaining[j]]
        while len(group) < n_phases:
            others = [k for k in remaining if k not in group]
            scores = similarity[np.ix_(others, group)].mean(axis=1)
            group.append(others[int(np.argmax(scores))])
        groups.append(group)
        remaining = [k for k in remaining if k not in group]
    groups.append(remaining)
    improved = True
    while improved:  # swap pairs of frames between groups while that helps
        improved = False
        best = _contrast(similarity, [tuple(g) for g in groups])
        for g1 in range(n_angles):
            for g2 in range(g1 + 1, n_angles):
                for i1 in range(n_phases):
                    for i2 in range(n_phases):
                        groups[g1][i1], groups[g2][i2] = groups[g2][i2], groups[g1][i1]
                        score = _contrast(similarity, [tuple(g) for g in groups])
                        if score > best + 1e-12:
                            best, improved = score, True
                        else:
                            groups[g1][i1], groups[g2][i2] = groups[g2][i2], groups[g1][i1]
    return sorted(tuple(sorted(g)) for g in groups)


def _layout_groups(n_angles: int, n_phases: int, order: str) -> list[tuple[int, ...]]:
    permutation = frame_permutation(n_angles, n_phases, order)
    return [tuple(sorted(permutation[a * n_phases : (a + 1) * n_phases])) for a in range(n_angles)]


def _order_check(
    spectra: np.ndarray, n_angles: int, n_phases: int, cutoff: float, expected: str
) -> FrameOrderCheck:
    """Which layout the frames' pattern spectra fit (see :func:`detect_frame_order`)."""
    if n_angles < 2:
        return FrameOrderCheck("undetermined", (), 0.0, 0.0)
    similarity = _pattern_similarity(spectra, cutoff)
    best = _best_groups(similarity, n_angles, n_phases)
    best_contrast = _contrast(similarity, best)
    layouts = {order: _layout_groups(n_angles, n_phases, order) for order in FRAME_ORDERS}
    contrasts = {order: _contrast(similarity, groups) for order, groups in layouts.items()}
    expected_contrast = contrasts[expected]
    if best_contrast < _ORDER_MIN_CONTRAST:
        found = "undetermined"
    elif expected_contrast >= best_contrast - _ORDER_TOLERANCE:
        found = expected
    else:
        fitting = [o for o in FRAME_ORDERS if contrasts[o] >= best_contrast - _ORDER_TOLERANCE]
        found = max(fitting, key=contrasts.__getitem__) if fitting else "unknown"
    if found in layouts:
        best = layouts[found]
        best_contrast = contrasts[found]
    return FrameOrderCheck(found, tuple(best), best_contrast, expected_contrast)


def _describe(check: FrameOrderCheck, expected: str) -> str:
    groups = ", ".join("(" + ", ".join(str(i) for i in g) + ")" for g in check.groups)
    return (
        f"frames {groups} share a pattern angle (grouping contrast {check.contrast:.2f}, "
        f"{check.expected_contrast:.2f} for {expected})"
    )


def _resolve_order(
    check: FrameOrderCheck,
    expected: str,
    reorder: bool,
    n_phases: int,
    evidence: str,
) -> tuple[str, tuple[str, ...]]:
    """The layout to read the stack in, and a note if it differs from ``expected``.

    Raises:
        FrameOrderError: the frames fit the other layout and ``reorder`` is False, or
            they fit no known layout.
    """
    if check.found in (expected, "undetermined"):
        return expected, ()
    if check.found in FRAME_ORDERS:
        message = f"the raw frames are in {check.found} order, not {expected}: {evidence}"
        if not reorder:
            raise FrameOrderError(
                message + f"; reorder the stack or pass frame_order={check.found!r}",
                found=check.found, groups=check.groups,
            )
        note = message + f"; read as {check.found}"
        warnings.warn(note, FrameOrderWarning, stacklevel=4)  # the caller of the public API
        return check.found, (note,)
    raise FrameOrderError(
        f"the raw frames fit neither angle-major nor phase-major order: {evidence}; "
        f"reorder the stack to angle-major (frame = angle × {n_phases} + phase); if it is "
        "in that order already, its pattern is too weak to show it (a dim or small stack): "
        "estimate the parameters on a brighter acquisition of the same pattern and reuse "
        "them", found="unknown", groups=check.groups,
    )


def _angle_snr(r: _AngleResult) -> float:
    """Median pattern SNR of an angle's frames."""
    return float(np.median(np.abs(r.amplitudes))) / r.noise if r.noise > 0 else np.inf


def _refuse_patternless(results: list[_AngleResult], k_fractions: tuple[float, float]) -> None:
    """Raise :class:`NoPatternError` when no angle's frames show a pattern."""
    snrs = [_angle_snr(r) for r in results]
    if max(snrs) >= _WEAK_SNR:
        return
    lo, hi = k_fractions
    raise NoPatternError(
        "no illumination pattern found in any angle (median SNR per frame "
        + ", ".join(f"{s:.1f}" for s in snrs) + f"; a usable pattern shows {_WEAK_SNR:g} or "
        "more): these frames look like widefield images, not raw SIM frames. Check that "
        "the file holds the raw phase frames (not a reconstruction or a widefield stack), "
        f"that NA, wavelength and pixel size are right (the pattern is searched at {lo:g}–"
        f"{hi:g}× the cut-off 2NA/λ), and the light level; for very dim data, parameters "
        "estimated on a brighter acquisition of the same pattern (--params) still work")


#: one instrument's angles share one grating period: an angle whose blind estimate is
#: this far (relative) from the others' median |k| is noted, and refused beyond the error
_PERIOD_SPREAD_WARN, _PERIOD_SPREAD_ERROR = 0.03, 0.10


def _unequal_periods(results: list[_AngleResult], cutoff: float) -> tuple[str, ...]:
    """Warn about (note) an angle whose pattern frequency differs from the others';
    raise :class:`NoPatternError` when it is so far off that it cannot be the pattern."""
    ks = [float(np.hypot(*r.fit.p)) for r in results if r.fit is not None]
    if len(ks) < 3:
        return ()
    median = float(np.median(ks))
    worst = max(range(len(ks)), key=lambda a: abs(ks[a] / median - 1))
    off = abs(ks[worst] / median - 1)
    if off <= _PERIOD_SPREAD_WARN:
        return ()
    text = (f"angle {worst}: pattern frequency {ks[worst] / cutoff:.3f}× the cut-off "
            f"2NA/λ, the angles' median {median / cutoff:.3f}× ({off:.0%} apart), but one "
            "instrument's angles share one grating period")
    if off > _PERIOD_SPREAD_ERROR:
        raise NoPatternError(
            text + ": that estimate is not the pattern (a small field of view or too little "
            "light); estimate on a larger field or a brighter acquisition and pass those "
            "parameters (--params)")
    note = text + ": check that angle's reconstruction"
    warnings.warn(note, WeakPatternWarning, stacklevel=3)
    return (note,)


def _weak_angles(results: list[_AngleResult]) -> tuple[str, ...]:
    """Warn about (and note) angles whose frames barely show the pattern."""
    notes = []
    for a, r in enumerate(results):
        snr = _angle_snr(r)
        if snr < _WEAK_SNR:
            correlation = f", band correlation {r.fit.correlation:.2f}" if r.fit else ""
            note = (
                f"angle {a}: the pattern is barely above the noise (median SNR per frame "
                f"{snr:.1f}{correlation}); its parameters are unreliable: more photons, a "
                "larger field of view or a guess may help"
            )
            warnings.warn(note, WeakPatternWarning, stacklevel=3)
            notes.append(note)
    return tuple(notes)


def _pattern_snr(results: list[_AngleResult]) -> float:
    """Total pattern signal-to-noise of all frames at their angles' wave vectors."""
    return float(sum(np.abs(r.amplitudes).sum() / r.noise for r in results if r.noise > 0))


# ------------------------------------------------------------------ public API


def _check_order_name(frame_order: str) -> str:
    if frame_order not in FRAME_ORDERS:
        raise ValueError(f"frame_order must be one of {FRAME_ORDERS}, got {frame_order!r}")
    return frame_order


class _AngleResult(NamedTuple):
    """Fit of one angle (None for given parameters), pattern amplitudes of its frames and
    their noise (:func:`_frame_amplitudes`)."""

    fit: _Fit | None
    amplitudes: np.ndarray
    noise: float


def _amplitudes_at(
    spectra: np.ndarray, ps: list[np.ndarray], n_phases: int, cutoff: float,
    weight_zone: tuple[float, float], fits: list[_Fit] | None = None,
) -> list[_AngleResult]:
    """Pattern amplitudes of every frame at its angle's wave vector ``ps[a]``."""
    grid = _Grid(spectra.shape[1:], cutoff, 0.0, camera_rate=True)
    weight = grid.inner_weight(*weight_zone)
    outside = grid.rho > _NOISE_REGION * cutoff
    frame_noise = float(np.mean([_noise_variance(f, outside) for f in spectra]))
    widefield = spectra.mean(axis=0)
    modulated = spectra - widefield
    widefield_image = sfft.ifft2(widefield) * weight
    results = []
    for a, p in enumerate(ps):
        amplitudes, noise = _frame_amplitudes(
            modulated[a * n_phases : (a + 1) * n_phases], widefield_image, p, grid,
            frame_noise,
        )
        results.append(_AngleResult(None if fits is None else fits[a], amplitudes, noise))
    return results


def _verified(results: list[_AngleResult]) -> bool:
    """Every frame of every angle clearly carries its angle's pattern (grouping right)."""
    for r in results:
        if r.noise <= 0:
            return False
        snr = np.abs(r.amplitudes) / r.noise
        if snr.min() < _VERIFIED_SNR or snr.min() < _CONSISTENT_RATIO * snr.max():
            return False
    return True


def _fit_in_order(
    fit: Callable[[str], list[_AngleResult]],
    spectra: np.ndarray,
    n_angles: int,
    n_phases: int,
    cutoff: float,
    expected: str,
    reorder: bool,
) -> tuple[str, tuple[str, ...], list[_AngleResult]]:
    """Fit in the expected layout; if its frames do not verify, find the stack's layout.

    ``fit(layout)`` fits (or evaluates) the stack read in ``layout``. When not every
    frame clearly carries its angle's pattern, the frames' pattern signatures
    (:func:`_order_check`) decide; when single frames are too noisy for that, the layout
    whose fit carries clearly more pattern signal wins. A layout other than ``expected``
    is used with a warning (``reorder``) or refused (:func:`_resolve_order`).
    """
    try:
        results = fit(expected)
    except ValueError:
        results = None  # e.g. no pattern found: maybe the frames are grouped wrongly
    if results is not None and (n_angles < 2 or _verified(results)):
        return expected, (), results
    check = _order_check(spectra, n_angles, n_phases, cutoff, expected)
    if check.found not in (expected, "undetermined"):
        order, notes = _resolve_order(check, expected, reorder, n_phases,
                                      _describe(check, expected))
        return order, notes, fit(order)
    if results is None:
        results = fit(expected)  # raises the error again
    if check.found == expected or n_angles < 2:
        return expected, (), results
    # Single frames too noisy to group: compare the fits of both layouts instead.
    other = next(o for o in FRAME_ORDERS if o != expected)
    try:
        alternative = fit(other)
    except ValueError:
        alternative = []
    snr, other_snr = _pattern_snr(results), _pattern_snr(alternative)
    plausible = bool(alternative) and all(
        r.noise > 0 and np.median(np.abs(r.amplitudes)) >= _WEAK_SNR * r.noise
        for r in alternative
    )
    if plausible and other_snr > _LAYOUT_SNR_GAIN * snr:
        found = FrameOrderCheck(other, tuple(_layout_groups(n_angles, n_phases, other)),
                                check.contrast, check.expected_contrast)
        order, notes = _resolve_order(
            found, expected, reorder, n_phases,
            f"read that way the frames carry a total pattern SNR of {other_snr:.0f} against "
            f"{snr:.0f}",
        )
        return order, notes, alternative
    note = (
        f"frame order not verified: the pattern is too weak in single frames; the {expected} "
        f"reading carries a total pattern SNR of {snr:.0f}, {other} {other_snr:.0f}"
    )
    warnings.warn(note, FrameOrderWarning, stacklevel=3)
    return expected, (note,), results


def _check_frames(
    results: list[_AngleResult], n_angles: int, n_phases: int, order: str
) -> None:
    """Every frame of every angle carries that angle's pattern, phases in order."""
    permutation = frame_permutation(n_angles, n_phases, order)
    for a, result in enumerate(results):
        frames = list(permutation[a * n_phases : (a + 1) * n_phases])
        _check_consistent(result.amplitudes, result.noise, a, frames)
        _check_phase_order(result.amplitudes, a)


def _bands01(spectra: np.ndarray, n_angles: int, n_phases: int) -> np.ndarray:
    """``(n_angles, 2, Y, X)``: the 0 and +1 bands (see :func:`_separate_bands`)."""
    phases = 2 * np.pi * np.arange(n_phases) / n_phases
    unmix = np.exp(-1j * np.outer([0, 1], phases)) / n_phases
    grouped = spectra.reshape(n_angles, n_phases, *spectra.shape[1:])
    return np.einsum("bj,ajyx->abyx", unmix, grouped)


def _weight_zone(shape: tuple[int, ...], fade: int) -> tuple[float, float]:
    """Zero zone (fade + margin) and ramp of the correlation weight, camera pixels."""
    _, margin, ramp = _estimation_border(shape)
    return float(fade + margin), float(ramp)


def _estimation_spectra(
    photons: np.ndarray, border_px: int | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Camera-grid spectra with the estimation's border fade, and the weight's zero zone."""
    fade = _estimation_border(photons.shape[1:])[0]
    if border_px is not None:
        if int(border_px) < 0:
            raise ValueError(f"border_px must be ≥ 0, got {border_px!r}")
        fade = int(border_px)
    return _camera_spectra(photons, fade), _weight_zone(photons.shape[1:], fade)


def _fit_angles(
    spectra: np.ndarray,
    n_angles: int,
    n_phases: int,
    cutoff: float,
    weight_zone: tuple[float, float],
    *,
    allowed: list[np.ndarray] | None = None,
    coarse_grid: _Grid | None = None,
    starts: list[np.ndarray] | None = None,
) -> list[_AngleResult]:
    """Fit every angle: coarse search over ``allowed`` (or from ``starts``), refinement.

    Returns per angle the fit, the complex pattern amplitudes of its frames and their
    noise (:func:`_frame_amplitudes`).
    """
    shape = spectra.shape[1:]
    bands = _bands01(spectra, n_angles, n_phases)
    if starts is None:
        assert allowed is not None and coarse_grid is not None
        search = _CoarseSearch(coarse_grid)
        candidates = []
        reference = spectra.mean(axis=0)
        for a in range(n_angles):
            found = search.candidates(reference, bands[a, 1], allowed[a])
            if not found:
                raise ValueError(
                    f"angle {a}: no pattern frequency candidate in the search range (no "
                    "structure in the frames, or a k_fraction_range / guess that excludes it)"
                )
            candidates.append(found)
    else:
        candidates = [[np.asarray(s, dtype=np.float64)] for s in starts]
    largest = max(float(np.hypot(*c)) for found in candidates for c in found)
    grid = _Grid(shape, cutoff, largest + 4 * max(1.0 / n for n in shape))
    camera_grid = grid if grid.shape == grid.camera_shape else _Grid(
        shape, cutoff, 0.0, camera_rate=True
    )
    outside = camera_grid.rho > _NOISE_REGION * cutoff
    widefield = spectra.mean(axis=0)  # the 0 band of every angle, with the least noise
    refiner = _make_refiner(grid, widefield, weight_zone, cutoff, n_angles)
    fits = []
    for a, found in enumerate(candidates):
        c1 = bands[a, 1]
        start = found[0]
        if len(found) > 1:
            best = None
            for candidate in found:  # strongest first, until one is clearly the pattern
                trial = refiner.fit(widefield, c1, candidate, rounds=1)
                if best is None or trial.significance > best.significance:
                    best = trial
                if best.significance >= _SIGNIFICANT:
                    break
            start = best.p
        fit = refiner.fit(widefield, c1, start, rounds=_REFINE_ROUNDS)
        fit.brightness = _brightness(
            bands[a, 0], widefield, _filters_on(camera_grid, fit.p, refiner.ratio)[0],
            _noise_variance(bands[a, 0], outside), refiner.noise_var,
        )
        fits.append(fit)
    return _amplitudes_at(spectra, [f.p for f in fits], n_phases, cutoff, weight_zone, fits)


def _parameters(
    results: list[_AngleResult],
    centre: tuple[float, float],
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    n_phases: int,
    frame_shape: tuple[int, int],
    frame_order: str,
    notes: tuple[str, ...],
) -> SimParameters:
    return SimParameters(
        angles=tuple(r.fit.angle_parameters(centre) for r in results),
        na=na,
        wavelength_nm=wavelength_nm,
        pixel_size_nm=pixel_size_nm,
        n_phases=n_phases,
        frame_shape=frame_shape,
        frame_order=frame_order,
        phase_steps_rad=tuple(_phase_steps(r.amplitudes) for r in results),
        correlation=tuple(r.fit.correlation for r in results),
        notes=notes,
    )


def _reordered(spectra: np.ndarray, n_angles: int, n_phases: int, order: str) -> np.ndarray:
    if order == "angle-major":
        return spectra
    return spectra[list(frame_permutation(n_angles, n_phases, order))]


def detect_frame_order(
    raw: np.ndarray,
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    n_angles: int = 3,
    n_phases: int = 3,
    camera: SCMOSCamera | None = None,
    expected: str = "angle-major",
) -> FrameOrderCheck:
    """Tell from the data which frames share a pattern angle, hence the stack's layout.

    The pattern part of each frame (frame − mean of all frames) correlates with the
    widefield image at ``±p`` of the frame's angle; frames whose correlation maps peak
    at the same shifts share an angle. The frames are grouped by that similarity and
    the grouping compared with the angle-major (frame ``a * n_phases + j``) and
    phase-major (frame ``j * n_angles + a``) layouts. It needs the pattern to stand out
    in single frames (``"undetermined"`` otherwise; :func:`estimate_parameters` then
    compares the fits of both layouts). Phases within an angle are not checked here
    (:func:`estimate_parameters` does with ≥ 4 phases; any order of 3 equidistant
    phases is equidistant, possibly for the wave vector ``−p``).

    Args:
        raw: ``"PYX"`` stack, ``P = n_angles × n_phases``; photons or ADU with ``camera``.
        na, wavelength_nm, pixel_size_nm: optics (sets the OTF cut-off).
        n_angles, n_phases: acquisition layout.
        camera: convert ADU to photons with this camera.
        expected: the layout reported when it fits as well as the best grouping.

    Returns:
        :class:`~fluorofpga.microscope.sim_params.FrameOrderCheck`.
    """
    n_angles, n_phases = _check_layout(n_angles, n_phases)
    expected = _check_order_name(expected)
    photons = _to_photons(raw, n_angles * n_phases, camera)
    cutoff = cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)
    spectra, _ = _estimation_spectra(photons, None)
    return _order_check(spectra, n_angles, n_phases, cutoff, expected)


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
    guess: list[AngleParameters] | SimParameters | None = None,
    guess_radius_fraction: float = 0.05,
    border_px: int | None = None,
    frame_order: str = "angle-major",
    reorder: bool = True,
) -> SimParameters:
    """Estimate each angle's pattern wave vector, phase and modulation from raw SIM data.

    See the module docstring for the method (coarse FFT correlation, then an exact
    sub-pixel maximisation of the filtered band correlation). The phase steps within an
    angle are assumed equidistant and increasing (``2π j / n_phases``); the estimated
    wave vector is the one whose +1 band carries ``e^{+iφ_j}``. The stack's layout is
    checked first (:func:`detect_frame_order`).

    Args:
        raw: ``"PYX"`` stack, ``P = n_angles × n_phases``, in ``frame_order``; photons
            (float, ≥ 0) or, with ``camera``, ADU.
        na, wavelength_nm: objective aperture and emission wavelength (nm).
        pixel_size_nm: camera pixel size in the sample plane (nm).
        n_angles, n_phases: acquisition layout (``n_phases`` ≥ 3).
        camera: convert ADU to photons with this camera's offset, gain and QE.
        k_fraction_range: search range of ``|p|`` as a fraction of the cut-off ``2NA/λ``.
        guess: approximate wave vectors (one per angle, e.g. the instrument's nominal
            pattern or earlier parameters): the search is then limited to
            ``guess_radius_fraction`` × cut-off around each. Needed for scenes whose
            spectrum is dominated by a few straight lines (along a line the pattern's
            component is unobservable).
        guess_radius_fraction: search radius around a guess, fraction of the cut-off.
        border_px: width of the border fade (camera pixels); default
            ``clip(min(Y, X) // 32, 2, 8)``.
        frame_order: the stack's layout, ``"angle-major"`` (documented: frame
            ``a * n_phases + j``) or ``"phase-major"`` (frame ``j * n_angles + a``).
        reorder: when the frames clearly fit the other layout, read them in that one
            with a :class:`~fluorofpga.microscope.sim_params.FrameOrderWarning` (default)
            instead of raising :class:`~fluorofpga.microscope.sim_params.FrameOrderError`.

    Returns:
        :class:`~fluorofpga.microscope.sim_params.SimParameters`, a sequence of one
        :class:`~fluorofpga.microscope.sim.AngleParameters` per angle (``kx, ky`` in
        cycles per camera pixel, ``phase_rad`` of the angle's first frame at the image
        corner, ``modulation`` ``m``), with the measured phase steps, the band
        correlation, the optics, frame shape and the layout the stack was read in.

    Raises:
        FrameOrderError: frames in no known layout, in the other layout with
            ``reorder=False``, or (≥ 4 phases) shuffled within an angle.
        ValueError: bad input, or no pattern found in the search range.
    """
    n_angles, n_phases = _check_layout(n_angles, n_phases)
    frame_order = _check_order_name(frame_order)
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
    shape = photons.shape[1:]
    spectra, weight_zone = _estimation_spectra(photons, border_px)
    if guess is None:
        grid = _Grid(shape, cutoff, hi * cutoff)
        allowed = [(grid.rho >= lo * cutoff) & (grid.rho <= hi * cutoff)] * n_angles
    else:
        radius = guess_radius_fraction * cutoff
        grid = _Grid(shape, cutoff, max(g.k_cycles_per_px for g in guess) + radius)
        reach = max(radius, 1.5 * max(grid.bins))
        allowed = [
            np.hypot(grid.fy[:, None] - g.ky, grid.fx[None, :] - g.kx) <= reach for g in guess
        ]

    def fit(layout: str) -> list[_AngleResult]:
        return _fit_angles(
            _reordered(spectra, n_angles, n_phases, layout), n_angles, n_phases, cutoff,
            weight_zone, allowed=allowed, coarse_grid=grid,
        )

    order, notes, results = _fit_in_order(
        fit, spectra, n_angles, n_phases, cutoff, frame_order, reorder
    )
    _check_weak_angles_for_shuffles(
        results, _reordered(spectra, n_angles, n_phases, order), n_phases, cutoff, weight_zone
    )
    _check_frames(results, n_angles, n_phases, order)
    if guess is None:  # (with a guess the user vouches for the pattern: weak notes only)
        _refuse_patternless(results, k_fraction_range)
        notes += _unequal_periods(results, cutoff)
    notes += _weak_angles(results)
    return _parameters(
        results, _Grid(shape, cutoff, 0.0, camera_rate=True).centre,
        na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm, n_phases=n_phases,
        frame_shape=shape, frame_order=order, notes=notes,
    )


def check_parameters(
    raw: np.ndarray,
    params: SimParameters,
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    camera: SCMOSCamera | None = None,
    border_px: int | None = None,
    min_correlation_ratio: float = DRIFT_MIN_CORRELATION_RATIO,
    max_drift_fourier_px: float = DRIFT_MAX_FOURIER_PX,
    max_phase_drift_rad: float = DRIFT_MAX_PHASE_RAD,
) -> ParameterCheck:
    """Do stored parameters still fit a new stack? (drift detection for live SIM).

    Re-estimates every angle starting at the stored wave vector (no blind search) and
    compares: the band correlation at the
    stored wave vector against the re-estimated one, the change of the wave vector and
    of the phase. The wave-vector tolerance is in Fourier pixels of the frame
    (``1 / Y``, ``1 / X`` cycles per pixel), because that is what a reconstruction
    feels: a change ``δ`` turns into a phase error of ``π δ`` at the frame's edge
    (0.05 → 0.16 rad), whatever the frame size; it is well above the estimation noise
    (~0.01 Fourier pixel at 100 photons). A live instrument estimates once, then calls
    this per stack (or every few stacks) and switches to ``check.current`` when
    ``check.ok`` is False.

    Args:
        raw: ``"PYX"`` stack in the layout of ``params``; photons or ADU with ``camera``.
        params: the stored parameters (e.g. :meth:`SimParameters.load`).
        na, wavelength_nm, pixel_size_nm: optics of ``raw`` (must match ``params``).
        camera: convert ADU to photons with this camera.
        border_px: border fade width as in :func:`estimate_parameters`.
        min_correlation_ratio: drift when correlation(stored) / correlation(now) is lower.
        max_drift_fourier_px: drift when the wave vector moved by more (Fourier pixels).
        max_phase_drift_rad: drift when the first frame's phase moved by more.

    Returns:
        :class:`~fluorofpga.microscope.sim_params.ParameterCheck`.

    Raises:
        SimParametersMismatch: ``params`` were estimated for other optics or layout.
        FrameOrderError: the stack is not in the layout of ``params``.
    """
    if not isinstance(params, SimParameters):
        raise TypeError(
            f"params must be SimParameters (estimate_parameters or SimParameters.load), "
            f"got {type(params).__name__}"
        )
    photons = _to_photons(raw, None, camera)
    params.check_compatible(
        na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm,
        n_frames=photons.shape[0], frame_shape=photons.shape[1:],
    )
    n_angles, n_phases = _check_layout(params.n_angles, params.n_phases)
    cutoff = cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)
    shape = photons.shape[1:]
    spectra, weight_zone = _estimation_spectra(photons, border_px)
    stored = [np.array([p.kx, p.ky]) for p in params]

    def fit(layout: str) -> list[_AngleResult]:
        return _fit_angles(
            _reordered(spectra, n_angles, n_phases, layout), n_angles, n_phases, cutoff,
            weight_zone, starts=stored,
        )

    _, _, results = _fit_in_order(
        fit, spectra, n_angles, n_phases, cutoff, params.frame_order, reorder=False
    )
    spectra = _reordered(spectra, n_angles, n_phases, params.frame_order)
    grid = _Grid(shape, cutoff, max(p.k_cycles_per_px for p in params) * 1.05)
    bands = _bands01(spectra, n_angles, n_phases)
    widefield = spectra.mean(axis=0)
    ratios = []
    _check_frames(results, n_angles, n_phases, params.frame_order)
    refiner = _make_refiner(grid, widefield, weight_zone, cutoff, n_angles)
    for a, result in enumerate(results):
        now = result.fit.correlation
        at_stored = refiner.evaluate(widefield, bands[a, 1], stored[a])
        ratios.append(at_stored.correlation / now if now > 0 else 0.0)
    if min(ratios) < min_correlation_ratio:  # far off: search around the stored vectors
        results = _fit_angles(
            spectra, n_angles, n_phases, cutoff, weight_zone,
            allowed=[
                np.hypot(grid.fy[:, None] - s[1], grid.fx[None, :] - s[0]) <= 0.05 * cutoff
                for s in stored
            ],
            coarse_grid=grid,
        )
    current = _parameters(
        results, grid.centre, na=na, wavelength_nm=wavelength_nm,
        pixel_size_nm=pixel_size_nm, n_phases=n_phases, frame_shape=shape,
        frame_order=params.frame_order, notes=(),
    )
    frequency, pixels, direction, phase, reasons = [], [], [], [], []
    for a, (old, new) in enumerate(zip(params, current, strict=True)):
        dx, dy = new.kx - old.kx, new.ky - old.ky
        frequency.append(float(np.hypot(dx, dy) / old.k_cycles_per_px))
        pixels.append(float(np.hypot(dx * shape[1], dy * shape[0])))
        direction.append(_wrap(new.angle_rad - old.angle_rad))
        phase.append(_wrap(new.phase_rad - old.phase_rad))
        if ratios[a] < min_correlation_ratio:
            reasons.append(
                f"angle {a}: band correlation at the stored wave vector is {ratios[a]:.2f} of "
                f"the re-estimated one (< {min_correlation_ratio:g})"
            )
        if pixels[a] > max_drift_fourier_px:
            reasons.append(
                f"angle {a}: wave vector moved by {pixels[a]:.3f} Fourier pixel "
                f"(> {max_drift_fourier_px:g}; {100 * frequency[a]:.4f} % of |k|, turned by "
                f"{np.rad2deg(direction[a]) * 1e3:.1f} mdeg)"
            )
        if abs(phase[a]) > max_phase_drift_rad:
            reasons.append(
                f"angle {a}: phase moved by {phase[a]:.3f} rad (> {max_phase_drift_rad:g} rad)"
            )
    return ParameterCheck(
        ok=not reasons,
        reasons=tuple(reasons),
        correlation_ratio=tuple(float(r) for r in ratios),
        frequency_drift=tuple(frequency),
        drift_fourier_px=tuple(pixels),
        angle_drift_rad=tuple(direction),
        phase_drift_rad=tuple(phase),
        modulation=tuple(p.modulation for p in current),
        current=current,
    )


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



def check_wiener_w(wiener_w: float | str | WienerPrior) -> float | str | WienerPrior:
    """``"auto"``, a :class:`WienerPrior`, or a finite Wiener parameter ``w > 0`` (a
    number or its text).

    Raises:
        ValueError: anything else, naming both choices.
    """
    if isinstance(wiener_w, WienerPrior):
        return wiener_w
    if isinstance(wiener_w, str):
        text = wiener_w.strip().lower()
        if text == WIENER_AUTO:
            return WIENER_AUTO
        try:
            wiener_w = float(text)
        except ValueError:
            raise ValueError(f"wiener_w must be 'auto' or a number > 0, got {wiener_w!r}") from None
    value = float(wiener_w)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"wiener_w must be 'auto' or a number > 0, got {wiener_w!r}")
    return value



def wiener_label(wiener_w: float | str | WienerPrior) -> float | str:
    """A Wiener setting for reports (JSON): ``w``, ``"auto"``, or ``"auto (designed prior)"``."""
    if isinstance(wiener_w, WienerPrior):
        return "auto (designed prior)"
    return wiener_w if isinstance(wiener_w, str) else float(wiener_w)


def measure_wiener_prior(
    raw: np.ndarray,
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    camera: SCMOSCamera | None = None,
    n_angles: int = 3,
    frame_order: str = "angle-major",
    border_px: int | None = None,
) -> WienerPrior | None:
    """The noise-to-signal prior of the MMSE Wiener filter, measured on one raw stack.

    What ``wiener_sim(wiener_w="auto")`` measures on each stack; saved with the
    instrument's parameters, it designs a Wiener-SIM bundle's filter for that light
    level. Only the per-angle widefield (band 0) enters: no pattern parameters needed.

    Args:
        raw: ``"PYX"`` stack of ``n_angles × n_phases`` frames, photons or ADU with
            ``camera`` (the prior is a ratio: the same either way).
        na, wavelength_nm, pixel_size_nm: optics.
        camera: convert ADU to photons with this camera.
        n_angles: pattern angles.
        frame_order: the stack's layout.
        border_px: border fade (camera pixels), as ``wiener_sim``.

    Returns:
        The prior, or None when the camera leaves no frequencies beyond the optical
        cut-off to measure the noise on.
    """
    photons = _to_photons(raw, None, camera)
    if photons.shape[0] % int(n_angles):
        raise ValueError(f"raw has {photons.shape[0]} frames, not a multiple of "
                         f"{n_angles} angles")
    n_angles, n_phases = _check_layout(int(n_angles), photons.shape[0] // int(n_angles))
    cutoff = cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)
    border = _default_border(photons.shape[1:]) if border_px is None else int(border_px)
    spectra = _fine_spectra(_reordered(_camera_spectra(photons, border), n_angles, n_phases,
                                       _check_order_name(frame_order)))
    freq = _Frequencies(spectra.shape[1:], cutoff)
    band0 = spectra.reshape(n_angles, n_phases, *spectra.shape[1:]).mean(axis=1)
    return WienerPrior.measure(band0, freq.fy, freq.fx, cutoff)


def wiener_sim(
    raw: np.ndarray,
    params: SimParameters | list[AngleParameters] | None = None,
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    wiener_w: float | str | WienerPrior = WIENER_AUTO,
    apodization: Apodization = "otf",
    camera: SCMOSCamera | None = None,
    border_px: int | None = None,
    clip_negative: bool = True,
    n_angles: int = 3,
    frame_order: str | None = None,
    reorder: bool = True,
) -> np.ndarray:
    """Generalised Wiener SIM reconstruction on the 2× grid.

    Each angle's bands are separated, the ±1 bands divided by ``(m/2) e^{±iφ}`` (``m``
    floored at 0.2 so a weak pattern cannot amplify noise without bound) and moved by
    ``∓p`` to their true frequencies, then all ``3 × n_angles`` bands are combined.

    ``wiener_w="auto"`` (default): the MMSE (Wiener) estimate from the data's own noise
    and specimen spectrum, ``A(k) Σ_b g_b OTF_b* D_b / (Σ_b g_b |OTF_b|² + σ²/S(|k|))``:
    every separated band carries the same noise ``σ²`` per Fourier bin (measured beyond
    the OTF cut-off), so the ±1 bands, divided by ``m/2``, weigh ``g = (m/2)²`` against
    band 0's 1; ``S`` is a power law fitted to the widefield spectrum and extrapolated to
    the extended cut-off. Nothing to tune: at low light it smooths towards widefield, at
    high light it keeps the full extended resolution. Frames sampled so coarsely that no
    noise-only frequencies exist fall back to ``w = 0.05``. A
    :class:`~fluorofpga.microscope.sim_prior.WienerPrior` (e.g. measured on another stack
    of the same instrument) gives the MMSE filter with that ``ε`` instead of measuring it.

    A number ``w``: the classical generalised Wiener filter with equal band weights,
    ``A(k) Σ_b OTF_b*(k) D_b(k) / (Σ_b |OTF_b(k)|² + w²)`` (what the hardware Wiener
    bundle implements; larger ``w`` is smoother). ``A`` is the apodisation out
    to the extended cut-off ``2NA/λ + max|p|``: ``"otf"`` (default) is the ideal OTF
    shape stretched to that cut-off, so the result approximates
    :func:`~fluorofpga.microscope.sim.sim_ground_truth`; ``"triangle"``, ``"cosine"``
    and ``"none"`` (hard cut-off, rings) are the usual alternatives.

    The stack's layout is checked (:func:`detect_frame_order`) before anything else: a
    stack in the other layout is reordered with a
    :class:`~fluorofpga.microscope.sim_params.FrameOrderWarning` (or refused with
    ``reorder=False``), frames in no known layout raise
    :class:`~fluorofpga.microscope.sim_params.FrameOrderError`.

    Args:
        raw: ``"PYX"`` stack; photons (float, ≥ 0) or ADU with ``camera``.
        params: :class:`~fluorofpga.microscope.sim_params.SimParameters` (reused without
            re-estimation after checking they were estimated for this optics, frame
            count and shape; their ``frame_order`` is the stack's layout), a list of
            :class:`~fluorofpga.microscope.sim.AngleParameters` (one per angle;
            ``n_phases = P / len(params)``), or None to estimate them from ``raw``
            (:func:`estimate_parameters`).
        na, wavelength_nm, pixel_size_nm: optics (camera pixel size, nm).
        wiener_w: ``"auto"``, a ``WienerPrior`` or a Wiener parameter ``w`` (> 0); see
            above.
        apodization: see above.
        camera: convert ADU to photons with this camera.
        border_px: border fade width (camera pixels); default ``min(Y, X) // 16``.
        clip_negative: clip the Wiener ringing below 0 (default), else return as is.
        n_angles: number of angles when ``params`` is None.
        frame_order: the stack's layout (``"angle-major"`` or ``"phase-major"``); default
            that of ``params``, else angle-major.
        reorder: see above.

    Returns:
        float64 ``(2Y, 2X)`` image in photons per camera-pixel area (its mean is
        about the widefield mean), fine pixels ``2i, 2i+1`` halving camera pixel ``i``.

    Raises:
        SimParametersMismatch: ``params`` estimated for other optics, frame count or shape.
        FrameOrderError: see above.
    """
    photons = _to_photons(raw, None, camera)
    wiener_w = check_wiener_w(wiener_w)
    if params is None:
        params = estimate_parameters(
            raw, camera=camera, na=na, wavelength_nm=wavelength_nm,
            pixel_size_nm=pixel_size_nm,
            n_angles=n_angles, n_phases=max(photons.shape[0] // max(int(n_angles), 1), 1),
            frame_order=frame_order or "angle-major", reorder=reorder,
        )
        frame_order = None
    if isinstance(params, SimParameters):
        params.check_compatible(
            na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm,
            n_frames=photons.shape[0], frame_shape=photons.shape[1:],
        )
        if frame_order is not None and frame_order != params.frame_order:
            raise FrameOrderError(
                f"frame_order={frame_order!r} but the parameters were estimated on a "
                f"{params.frame_order} stack; pass that layout or re-estimate",
                found=str(frame_order),
            )
        expected = params.frame_order
    else:
        params = list(params)
        if len(params) < 1 or not all(isinstance(p, AngleParameters) for p in params):
            raise ValueError("params must be a non-empty list of AngleParameters, one per angle")
        expected = _check_order_name(frame_order or "angle-major")
    n_angles = len(params)
    if photons.shape[0] % n_angles:
        raise ValueError(
            f"raw has {photons.shape[0]} frames, not a multiple of the {n_angles} angles "
            "in params"
        )
    n_angles, n_phases = _check_layout(n_angles, photons.shape[0] // n_angles)
    cutoff = cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)
    border = _default_border(photons.shape[1:]) if border_px is None else int(border_px)
    camera_spectra = _camera_spectra(photons, border)
    vectors = [np.array([p.kx, p.ky]) for p in params]

    zone = _weight_zone(photons.shape[1:], border)

    def evaluate(layout: str) -> list[_AngleResult]:
        return _amplitudes_at(
            _reordered(camera_spectra, n_angles, n_phases, layout), vectors, n_phases, cutoff,
            zone,
        )

    order, _, checked = _fit_in_order(
        evaluate, camera_spectra, n_angles, n_phases, cutoff, expected, reorder
    )
    _check_frames(checked, n_angles, n_phases, order)
    spectra = _fine_spectra(_reordered(camera_spectra, n_angles, n_phases, order))
    bands = _separate_bands(spectra, n_angles, n_phases)
    freq = _Frequencies(spectra.shape[1:], cutoff)

    prior = wiener_w if isinstance(wiener_w, WienerPrior) else None
    if isinstance(wiener_w, str):  # auto: measured on this stack
        prior = WienerPrior.measure(bands[:, 0], freq.fy, freq.fx, cutoff)
    if wiener_w == WIENER_AUTO and prior is None:
        warnings.warn(
            f"wiener_w='auto': the frames have no noise-only frequencies beyond the optical "
            f"cut-off (the camera samples at or below Nyquist), so the noise cannot be "
            f"measured; using w = {_FIXED_FALLBACK_W:g}", WeakPatternWarning, stacklevel=2)
        wiener_w = _FIXED_FALLBACK_W
    numerator = np.zeros(freq.shape, dtype=np.complex128)
    denominator = np.zeros(freq.shape, dtype=np.float64)
    o0 = freq.otf()
    for (c0, c_plus, c_minus), p in zip(bands, params, strict=True):
        numerator += o0 * c0
        denominator += o0**2
        phase = _corner_phase_to_origin(p.phase_rad, p.kx, p.ky)
        half_m = 0.5 * max(float(p.modulation), _MIN_MODULATION)
        # MMSE: a band divided by m/2 carries (2/m)² times band 0's noise
        weight = 1.0 if prior is None else half_m**2
        for sign, band in ((1, c_plus), (-1, c_minus)):
            factor = half_m * np.exp(1j * sign * phase)
            shifted = freq.shift(band, sign * p.kx, sign * p.ky) / factor
            o = freq.otf(sign * p.kx, sign * p.ky)
            numerator += weight * o * shifted
            denominator += weight * o**2
    extended = cutoff + max(p.k_cycles_per_px for p in params)
    regulariser = float(wiener_w) ** 2 if prior is None else prior(freq.rho)
    spectrum = numerator / (denominator + regulariser) * _apodization(freq, extended, apodization)
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
