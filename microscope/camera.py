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


def _as_map(value: np.ndarray | float, shape: tuple[int, int], name: str) -> np.ndarray:
    """Broadcast a scalar or a ``(Y, X)`` map to a read-only float64 map of ``shape``."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 0 and array.shape != shape:
        raise ValueError(f"{name} map has shape {array.shape}, the sensor is {shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    array = np.array(np.broadcast_to(array, shape), dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class SCMOSSensor:
    """An sCMOS sensor with per-pixel offset, gain, read noise and dark current.

    Every pixel has its own amplifier, so offset, conversion gain and read noise vary
    from pixel to pixel (Huang et al., Nat. Methods 10, 653 (2013)). Scalars given for a
    map are broadcast to ``shape``; all maps are stored read-only as float64 ``(Y, X)``.

    Attributes:
        offset_adu: dark offset (bias) map, ADU, within ``[0, max_adu]``.
        gain_e_per_adu: conversion gain map, electrons per ADU (> 0).
        read_noise_e: read noise map, rms electrons (≥ 0), Gaussian.
        dark_current_e_per_s: dark current map, electrons per second (≥ 0); hot pixels
            are pixels with a dark current far above the rest.
        qe: quantum efficiency, electrons per incident photon, in (0, 1].
        exposure_s: exposure time, seconds (> 0); sets the dark signal.
        bit_depth: ADC bits, 12 or 16; output saturates at ``2**bit_depth - 1`` ADU.
        line_time_us: rolling-shutter line time, µs per row; ``None`` means a global
            shutter (all rows start together).
        hot_pixels: boolean map of the hot pixels (the truth for tests; all False if
            not given).
        serial: camera serial string, copied into calibrations.
    """

    offset_adu: np.ndarray
    gain_e_per_adu: np.ndarray
    read_noise_e: np.ndarray
    dark_current_e_per_s: np.ndarray | float = 0.0
    qe: float = 0.82
    exposure_s: float = 0.01
    bit_depth: int = 16
    line_time_us: float | None = None
    hot_pixels: np.ndarray | None = None
    serial: str = "simulated"

    def __post_init__(self) -> None:
        """Validate the parameters and freeze the maps."""
        offset = np.asarray(self.offset_adu)
        if offset.ndim != 2 or offset.size == 0:
            raise ValueError(f"offset_adu must be a non-empty (Y, X) map, got shape {offset.shape}")
        shape = (int(offset.shape[0]), int(offset.shape[1]))
        if self.bit_depth not in (12, 16) or isinstance(self.bit_depth, bool):
            raise ValueError(f"bit_depth must be 12 or 16, got {self.bit_depth!r}")
        if not (np.isfinite(self.qe) and 0 < self.qe <= 1):
            raise ValueError(f"qe must be in (0, 1] electrons per photon, got {self.qe!r}")
        if not (np.isfinite(self.exposure_s) and self.exposure_s > 0):
            raise ValueError(f"exposure_s must be > 0 seconds, got {self.exposure_s!r}")
        if self.line_time_us is not None and not (
            np.isfinite(self.line_time_us) and self.line_time_us > 0
        ):
            raise ValueError(f"line_time_us must be > 0 or None, got {self.line_time_us!r}")
        maps = {
            "offset_adu": _as_map(self.offset_adu, shape, "offset_adu"),
            "gain_e_per_adu": _as_map(self.gain_e_per_adu, shape, "gain_e_per_adu"),
            "read_noise_e": _as_map(self.read_noise_e, shape, "read_noise_e"),
            "dark_current_e_per_s": _as_map(
                self.dark_current_e_per_s, shape, "dark_current_e_per_s"
            ),
        }
        if maps["gain_e_per_adu"].min() <= 0:
            raise ValueError("gain_e_per_adu must be > 0 everywhere")
        if maps["read_noise_e"].min() < 0:
            raise ValueError("read_noise_e must be ≥ 0 everywhere")
        if maps["dark_current_e_per_s"].min() < 0:
            raise ValueError("dark_current_e_per_s must be ≥ 0 everywhere")
        if maps["offset_adu"].min() < 0 or maps["offset_adu"].max() > self.max_adu:
            raise ValueError(f"offset_adu must be in [0, {self.max_adu}] for {self.bit_depth} bits")
        hot = np.zeros(shape, bool) if self.hot_pixels is None else np.asarray(self.hot_pixels)
        if hot.shape != shape or hot.dtype != np.bool_:
            raise ValueError(f"hot_pixels must be a bool map of shape {shape}")
        hot = hot.copy()
        hot.setflags(write=False)
        maps["hot_pixels"] = hot
        for name, value in maps.items():
            object.__setattr__(self, name, value)

    @classmethod
    def random(
        cls,
        shape: tuple[int, int],
        rng: np.random.Generator,
        *,
        offset_mean_adu: float = 100.0,
        offset_sd_adu: float = 2.0,
        gain_mean_e_per_adu: float = 0.46,
        gain_rel_sd: float = 0.03,
        read_noise_median_e: float = 1.4,
        read_noise_log_sd: float = 0.3,
        dark_current_e_per_s: float = 0.5,
        hot_pixel_fraction: float = 1e-3,
        hot_dark_current_e_per_s: float = 200.0,
        **kwargs: object,
    ) -> SCMOSSensor:
        """A sensor with realistic pixel-to-pixel spreads.

        Offsets are Normal(``offset_mean_adu``, ``offset_sd_adu``); gains
        Normal(``gain_mean_e_per_adu``, relative sd ``gain_rel_sd``); read noise is
        log-normal with median ``read_noise_median_e`` and log-sd ``read_noise_log_sd``
        (a long tail of noisy pixels, as in real sCMOS read-noise histograms); dark
        current is exponential with mean ``dark_current_e_per_s``, and a random
        ``hot_pixel_fraction`` of the pixels get ``hot_dark_current_e_per_s`` (×1–4).

        Args:
            shape: sensor shape ``(Y, X)``.
            rng: random generator for the maps.
            **kwargs: the other fields (``qe``, ``exposure_s``, ``bit_depth``,
                ``line_time_us``, ``serial``).
        """
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (Y, X) with positive sizes, got {shape!r}")
        if not 0 <= hot_pixel_fraction <= 1:
            raise ValueError(f"hot_pixel_fraction must be in [0, 1], got {hot_pixel_fraction!r}")
        shape = (int(shape[0]), int(shape[1]))
        offset = rng.normal(offset_mean_adu, offset_sd_adu, shape)
        gain = gain_mean_e_per_adu * np.clip(rng.normal(1.0, gain_rel_sd, shape), 0.5, 1.5)
        read_noise = read_noise_median_e * np.exp(rng.normal(0.0, read_noise_log_sd, shape))
        dark = rng.exponential(dark_current_e_per_s, shape) if dark_current_e_per_s > 0 else 0.0
        hot = rng.random(shape) < hot_pixel_fraction
        dark = np.where(hot, hot_dark_current_e_per_s * rng.uniform(1.0, 4.0, shape), dark)
        return cls(
            offset_adu=offset,
            gain_e_per_adu=gain,
            read_noise_e=read_noise,
            dark_current_e_per_s=dark,
            hot_pixels=hot,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Sensor shape ``(Y, X)``."""
        return (int(self.offset_adu.shape[0]), int(self.offset_adu.shape[1]))

    @property
    def max_adu(self) -> int:
        """Saturation value, ``2**bit_depth - 1`` ADU."""
        return (1 << int(self.bit_depth)) - 1

    @property
    def read_noise_adu(self) -> np.ndarray:
        """Read noise map in rms ADU (``read_noise_e / gain_e_per_adu``)."""
        return self.read_noise_e / self.gain_e_per_adu

    def _check_frame_photons(self, photons: np.ndarray) -> np.ndarray:
        photons = _check_photons(photons)
        if photons.ndim not in (2, 3) or photons.shape[-2:] != self.shape:
            raise ValueError(
                f"photons must be YX or TYX with YX = {self.shape} (the sensor), got shape "
                f"{photons.shape}"
            )
        return photons

    def dark_electrons(self) -> np.ndarray:
        """Expected dark signal per frame, electrons (``dark_current · exposure``)."""
        return self.dark_current_e_per_s * self.exposure_s

    def expected_adu(self, photons: np.ndarray) -> np.ndarray:
        """Noise-free mean ADU, ``(qe · photons + dark) / gain + offset`` (not clipped)."""
        photons = self._check_frame_photons(photons)
        electrons = self.qe * photons + self.dark_electrons()
        return electrons / self.gain_e_per_adu + self.offset_adu

    def acquire(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Record one frame (``YX`` photons) or a stack (``TYX`` photons).

        ``electrons = Poisson(qe · photons + dark_current · exposure) + Normal(0, read_noise)``
        per pixel; ``ADU = round(electrons / gain + offset)`` clipped to
        ``[0, 2**bit_depth - 1]``.

        Args:
            photons: expected photons per pixel (finite, ≥ 0), ``(Y, X)`` equal to the
                sensor shape, or ``(T, Y, X)`` for T independent frames.
            rng: source of the noise.

        Returns:
            uint16 array of ``photons.shape``.
        """
        photons = self._check_frame_photons(photons)
        electrons = rng.poisson(self.qe * photons + self.dark_electrons()).astype(np.float64)
        electrons += rng.standard_normal(photons.shape) * self.read_noise_e
        adu = np.rint(electrons / self.gain_e_per_adu + self.offset_adu)
        return np.clip(adu, 0, self.max_adu).astype(np.uint16)

    def row_times(self, frame_index: int = 0, frame_interval_s: float | None = None) -> np.ndarray:
        """Exposure start of every row of a frame, seconds from the start of frame 0.

        With a rolling shutter row ``y`` starts ``y · line_time_us`` after row 0; with a
        global shutter (``line_time_us is None``) all rows start together. Frame ``i``
        starts at ``i · frame_interval_s``, by default ``exposure_s`` plus the readout
        time ``Y · line_time_us`` (back-to-back frames).

        Returns:
            float64 array of length ``Y``.
        """
        if int(frame_index) != frame_index or frame_index < 0:
            raise ValueError(f"frame_index must be a non-negative integer, got {frame_index!r}")
        line_s = 0.0 if self.line_time_us is None else self.line_time_us * 1e-6
        if frame_interval_s is None:
            frame_interval_s = self.exposure_s + self.shape[0] * line_s
        if not (np.isfinite(frame_interval_s) and frame_interval_s > 0):
            raise ValueError(f"frame_interval_s must be > 0, got {frame_interval_s!r}")
        return int(frame_index) * frame_interval_s + np.arange(self.shape[0]) * line_s

    def timing_metadata(self) -> dict[str, object]:
        """Shutter timing as JSON-ready metadata (mode, line time, exposure, readout)."""
        rolling = self.line_time_us is not None
        line_us = float(self.line_time_us) if rolling else 0.0  # type: ignore[arg-type]
        return {
            "shutter": "rolling" if rolling else "global",
            "line_time_us": line_us if rolling else None,
            "exposure_s": float(self.exposure_s),
            "readout_s": self.shape[0] * line_us * 1e-6,
        }
