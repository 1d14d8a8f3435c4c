"""sCMOS camera model: shot noise, read noise, gain, offset, quantisation and clipping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_BIT_DEPTH = 16  # output is uint16


def _check_photons(photons: np.ndarray) -> np.ndarray:
    photons = np.asarray(photons, dtype=np.float64)
    if not np.all(np.isfinite(photons)):
        raise ValueError("photons must be finite (found NaN or inf)")
    if photons.size and photons.min() < 0:
        raise ValueError(f"photons must be non-negative, found minimum {photons.min():g}")
    return photons


@dataclass(frozen=True)
class SCMOSCamera:
    """A single-gain sCMOS camera with spatially uniform parameters.

    Attributes:
        qe: quantum efficiency, electrons per incident photon, in (0, 1].
        gain_e_per_adu: conversion gain, electrons per ADU (> 0).
        offset_adu: dark offset (bias) added to every pixel, ADU (≥ 0).
        read_noise_e: read noise, rms electrons (≥ 0), Gaussian.
        bit_depth: ADC bits (1–16); output saturates at ``2**bit_depth - 1`` ADU.
    """

    qe: float = 0.82
    gain_e_per_adu: float = 0.46
    offset_adu: float = 100.0
    read_noise_e: float = 1.6
    bit_depth: int = 16

    def __post_init__(self) -> None:
        """Validate the parameters."""
        if not (np.isfinite(self.qe) and 0 < self.qe <= 1):
            raise ValueError(f"qe must be in (0, 1] electrons per photon, got {self.qe!r}")
        if not (np.isfinite(self.gain_e_per_adu) and self.gain_e_per_adu > 0):
            raise ValueError(f"gain_e_per_adu must be > 0, got {self.gain_e_per_adu!r}")
        if not (np.isfinite(self.read_noise_e) and self.read_noise_e >= 0):
            raise ValueError(f"read_noise_e must be ≥ 0 rms electrons, got {self.read_noise_e!r}")
        if isinstance(self.bit_depth, bool) or int(self.bit_depth) != self.bit_depth:
            raise ValueError(f"bit_depth must be an integer, got {self.bit_depth!r}")
        if not 1 <= self.bit_depth <= _MAX_BIT_DEPTH:
            raise ValueError(f"bit_depth must be in 1..{_MAX_BIT_DEPTH}, got {self.bit_depth}")
        if not (np.isfinite(self.offset_adu) and 0 <= self.offset_adu <= self.max_adu):
            raise ValueError(
                f"offset_adu must be in [0, {self.max_adu}] for {self.bit_depth} bits, "
                f"got {self.offset_adu!r}"
            )

    @property
    def max_adu(self) -> int:
        """Saturation value, ``2**bit_depth - 1`` ADU."""
        return (1 << int(self.bit_depth)) - 1

    def expected_adu(self, photons: np.ndarray) -> np.ndarray:
        """Noise-free mean ADU, ``qe · photons / gain + offset`` (float64, not clipped)."""
        photons = _check_photons(photons)
        return self.qe * photons / self.gain_e_per_adu + self.offset_adu

    def acquire(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Record one noisy frame from an expected photon image.

        ``electrons = Poisson(qe · photons) + Normal(0, read_noise_e)``;
        ``ADU = round(electrons / gain + offset)`` clipped to ``[0, 2**bit_depth - 1]``.

        Args:
            photons: expected photons per pixel (finite, ≥ 0), any shape.
            rng: source of the noise.

        Returns:
            uint16 array of ``photons.shape``.
        """
        photons = _check_photons(photons)
        electrons = rng.poisson(self.qe * photons).astype(np.float64)
        if self.read_noise_e > 0:
            electrons += rng.normal(0.0, self.read_noise_e, photons.shape)
        adu = np.rint(electrons / self.gain_e_per_adu + self.offset_adu)
        return np.clip(adu, 0, self.max_adu).astype(np.uint16)
