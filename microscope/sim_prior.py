"""The noise-to-signal prior of the automatic (MMSE) Wiener SIM filter.

The MMSE estimate of the specimen from the separated SIM bands is
``Σ_b g_b OTF_b* D_b / (Σ_b g_b |OTF_b|² + ε(|k|))``: every separated band carries the same
noise ``σ²`` per Fourier bin, so a ±1 band divided by ``m/2`` weighs ``g = (m/2)²`` against
band 0's 1, and ``ε = σ²/S`` is the noise over the specimen's power spectrum ``S``.
:class:`WienerPrior` is ``ε`` as a power law, measured on one acquisition's widefield
(band 0) spectrum: the noise beyond the optical cut-off (inside the camera's own band:
noise only), the specimen's power where the widefield carries signal, extrapolated to the
extended cut-off. ``ε`` is a ratio of powers per Fourier bin, so it is the same in ADU or
photons and for any frame size; it scales as ``1/photons``.

:func:`~fluorofpga.microscope.sim_recon.wiener_sim` measures it per stack
(``wiener_w="auto"``); a Wiener-SIM bundle's filter is designed with one
(:func:`~fluorofpga.microscope.sim_linear.design_wiener_filters`), saved with the
instrument's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["WienerPrior", "band_weight"]

_FIT_BAND = (0.08, 0.8)  # of the cut-off: rings the specimen power law is fitted on ...
_FIT_SNR = 2.0  # ... where the widefield power is this × its noise or more
_SLOPES = (-6.0, 0.0)  # the fitted exponent is kept in this range
_FLOOR = 1e-3  # specimen power at least this × the noise per bin (fallback)
_CAMERA_BAND = 0.45  # cycles per camera pixel: the noise region stays inside the camera band
# shared with the estimation (sim_recon) and the streaming design (sim_linear):
NOISE_REGION = 1.05  # noise measured beyond this × the cut-off ...
MIN_NOISE_BINS = 64  # ... when at least this many Fourier bins lie there
MIN_MODULATION = 0.2  # bands are not amplified by more than 2 / this


def band_weight(modulation: float) -> float:
    """MMSE weight ``(m/2)²`` of a ±1 band divided by ``m/2`` (``m`` floored at 0.2)."""
    return (0.5 * max(float(modulation), MIN_MODULATION)) ** 2


@dataclass(frozen=True)
class WienerPrior:
    """``ε(|k|) = σ²/S(|k|)``: noise over specimen power per Fourier bin, a power law.

    Attributes:
        ratio_at_cutoff: ``ε`` at the widefield cut-off (``> 0``; ∝ 1/photons).
        slope: exponent of the specimen's power spectrum, ``S ∝ |k|^slope`` (``≤ 0``).
        cutoff: the widefield cut-off ``2NA/λ``, cycles per camera pixel.
        rho_min: ``ε`` is held at its value here below this frequency (cycles per pixel).
    """

    ratio_at_cutoff: float
    slope: float
    cutoff: float
    rho_min: float

    def __post_init__(self) -> None:
        for name in ("ratio_at_cutoff", "cutoff", "rho_min"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"WienerPrior.{name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.slope) and _SLOPES[0] <= self.slope <= _SLOPES[1]):
            raise ValueError(f"WienerPrior.slope must be in {_SLOPES}, got {self.slope!r}")

    def __call__(self, rho: np.ndarray | float) -> np.ndarray:
        """``ε`` at the frequencies ``|k|`` = ``rho`` (cycles per camera pixel)."""
        r = np.maximum(np.asarray(rho, dtype=np.float64), self.rho_min)
        return self.ratio_at_cutoff * (r / self.cutoff) ** (-self.slope)

    def for_light(self, factor: float) -> WienerPrior:
        """The prior of the same specimen and camera with ``factor`` × the light."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"light factor must be > 0, got {factor!r}")
        return WienerPrior(self.ratio_at_cutoff / factor, self.slope, self.cutoff,
                           self.rho_min)

    def to_dict(self) -> dict[str, float]:
        """JSON form."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WienerPrior:
        """Inverse of :meth:`to_dict` (missing or bad values: ``ValueError``)."""
        try:
            return cls(**{k: float(d[k]) for k in ("ratio_at_cutoff", "slope", "cutoff",
                                                   "rho_min")})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a Wiener prior: {dict(d)!r} ({exc})") from None

    @classmethod
    def measure(cls, band0: np.ndarray, fy: np.ndarray, fx: np.ndarray, cutoff: float
                ) -> WienerPrior | None:
        """Measure the prior on the band-0 spectra of one acquisition.

        Args:
            band0: ``(n_angles, Y, X)`` complex band-0 spectra (each angle's widefield, on
                any grid whose frequencies ``fy``, ``fx`` are in cycles per camera pixel).
            fy, fx: broadcastable frequency grids of ``band0``'s last two axes.
            cutoff: the widefield cut-off, cycles per camera pixel.

        Returns:
            The prior, or None when too few Fourier bins lie beyond the cut-off inside the
            camera's band (the camera samples at the optical cut-off: no noise to measure).
        """
        fy, fx = np.broadcast_arrays(np.asarray(fy, float), np.asarray(fx, float))
        rho = np.hypot(fy, fx)
        n_angles = band0.shape[0]
        outside = ((np.abs(fy) < _CAMERA_BAND) & (np.abs(fx) < _CAMERA_BAND)
                   & (rho > NOISE_REGION * cutoff))
        if np.count_nonzero(outside) < MIN_NOISE_BINS:
            return None
        noise = float(np.mean(band0.real[:, outside] ** 2 + band0.imag[:, outside] ** 2))
        if not noise > 0:
            return None
        mean0 = band0.mean(axis=0)  # its noise: σ² / n_angles
        width = 2.0 / min(rho.shape)
        rings = int(cutoff / width)
        if rings < 2:
            return None
        ring = np.minimum((rho / width).astype(int), rings).ravel()
        count = np.maximum(np.bincount(ring, minlength=rings + 1), 1)[:rings]
        power = np.bincount(ring, (mean0.real**2 + mean0.imag**2).ravel(), rings + 1)[:rings]
        otf2 = np.bincount(ring, _ideal_otf2(rho, fy, fx, cutoff).ravel(), rings + 1)[:rings]
        power, otf2 = power / count, otf2 / count
        centres = (np.arange(rings) + 0.5) * width
        lo, hi = _FIT_BAND
        fit = ((centres > lo * cutoff) & (centres < hi * cutoff) & (otf2 > 0.01)
               & (power > _FIT_SNR * noise / n_angles))
        if np.count_nonzero(fit) >= 3:
            log_s = np.log((power[fit] - noise / n_angles) / otf2[fit])
            log_f = np.log(centres[fit])
            slope = float(np.clip(np.polyfit(log_f, log_s, 1)[0], *_SLOPES))
            intercept = float(np.mean(log_s - slope * log_f))
        else:  # the widefield is noise beyond its lowest rings: a steep, cautious prior
            first = max(int(lo * cutoff / width), 0)
            slope = _SLOPES[0] / 2
            level = max(power[first] - noise / n_angles, _FLOOR * noise) / max(
                otf2[first], 1e-6)
            intercept = math.log(level) - slope * math.log(centres[first])
        ratio = noise * math.exp(-(intercept + slope * math.log(cutoff)))
        return cls(ratio, slope, float(cutoff), float(centres[0]))


def _ideal_otf2(rho: np.ndarray, fy: np.ndarray, fx: np.ndarray, cutoff: float) -> np.ndarray:
    """Squared model OTF of the widefield band (optics × camera-pixel integration)."""
    from .sim import ideal_otf

    return (ideal_otf(rho, cutoff) * np.abs(np.sinc(fx) * np.sinc(fy))) ** 2
