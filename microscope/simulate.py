"""Widefield fluorescence microscope simulator: specimen → optics → sCMOS camera.

Randomness is split by purpose so that every stream is reproducible on its own: the
specimen comes from ``SeedSequence([seed, 0])`` and the noise of frame ``i`` from
``SeedSequence([seed, 1, i])``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .camera import SCMOSCamera
from .optics import airy_psf, blur
from .specimen import render_specimen

_SPECIMEN_STREAM = 0
_NOISE_STREAM = 1


@dataclass
class Frame:
    """One recorded frame.

    Attributes:
        index: frame number within the acquisition, from 0.
        noisy: recorded image, uint16 ADU.
        clean_adu: noise-free expected ADU of the same scene, float64 (read-only, shared
            by all frames of a microscope).
    """

    index: int
    noisy: np.ndarray
    clean_adu: np.ndarray


@dataclass
class WidefieldMicroscope:
    """A widefield fluorescence microscope imaging a fixed synthetic specimen.

    Attributes:
        shape: camera image shape ``(Y, X)``, pixels.
        na: numerical aperture of the objective.
        wavelength_nm: emission wavelength, nm.
        pixel_size_nm: camera pixel size in the sample plane, nm.
        peak_photons: expected photons per pixel (above background) at the brightest
            pixel of the blurred image.
        background_photons: uniform expected background, photons per pixel.
        camera: the sCMOS camera recording the image.
        seed: non-negative integer seeding the specimen and the noise.
        filaments, puncta, nuclei: specimen structure counts (see ``render_specimen``).
        specimen_oversample: fine-grid factor the specimen is drawn on.
    """

    shape: tuple[int, int] = (512, 512)
    na: float = 1.2
    wavelength_nm: float = 520.0
    pixel_size_nm: float = 65.0
    peak_photons: float = 40.0
    background_photons: float = 3.0
    camera: SCMOSCamera = field(default_factory=SCMOSCamera)
    seed: int = 0
    filaments: int = 30
    puncta: int = 200
    nuclei: int = 3
    specimen_oversample: int = 2
    _photons: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the parameters that the components do not check themselves."""
        if not (np.isfinite(self.peak_photons) and self.peak_photons >= 0):
            raise ValueError(f"peak_photons must be ≥ 0, got {self.peak_photons!r}")
        if not (np.isfinite(self.background_photons) and self.background_photons >= 0):
            raise ValueError(f"background_photons must be ≥ 0, got {self.background_photons!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        """Set a field; changing any field discards the cached photon image."""
        if name != "_photons":
            object.__setattr__(self, "_photons", None)
        object.__setattr__(self, name, value)

    def psf(self) -> np.ndarray:
        """The PSF on camera pixels (see ``airy_psf``)."""
        return airy_psf(self.na, self.wavelength_nm, self.pixel_size_nm)

    def photons(self) -> np.ndarray:
        """Expected photons per pixel of the blurred scene plus background (cached, read-only).

        The specimen is blurred by the PSF and scaled so that its brightest pixel holds
        ``peak_photons``; ``background_photons`` is then added everywhere.
        """
        if self._photons is None:
            rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), _SPECIMEN_STREAM]))
            specimen = render_specimen(
                tuple(self.shape),
                rng,
                filaments=self.filaments,
                puncta=self.puncta,
                nuclei=self.nuclei,
                oversample=self.specimen_oversample,
            )
            blurred = np.clip(blur(specimen, self.psf()), 0.0, None)
            peak = blurred.max()
            scale = self.peak_photons / peak if peak > 0 else 0.0
            photons = blurred * scale + self.background_photons
            photons.setflags(write=False)
            self._photons = photons
        return self._photons

    def clean_adu(self) -> np.ndarray:
        """Noise-free expected ADU, the ground truth a restoration should reproduce."""
        clean = self.camera.expected_adu(self.photons())
        clean.setflags(write=False)
        return clean

    def frames(self, n: int, start: int = 0) -> Iterator[Frame]:
        """Yield ``n`` frames, each an independent noise realisation of the same scene.

        Frame ``i`` depends only on ``seed`` and ``i``, so the same seed gives the same
        sequence and ``frames(1, start=i)`` reproduces frame ``i`` of a longer run.
        """
        if int(n) != n or n < 0 or int(start) != start or start < 0:
            raise ValueError(f"n and start must be non-negative integers, got {n!r}, {start!r}")
        photons = self.photons()
        clean = self.clean_adu()
        for index in range(int(start), int(start) + int(n)):
            rng = np.random.default_rng(
                np.random.SeedSequence([int(self.seed), _NOISE_STREAM, index])
            )
            yield Frame(index=index, noisy=self.camera.acquire(photons, rng), clean_adu=clean)


def simulate_pairs(
    n: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
    peak_photons: tuple[float, float] = (10.0, 100.0),
    camera: SCMOSCamera | None = None,
    **microscope_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate ``n`` independent (noisy, clean) training pairs.

    Each pair is a new random specimen (seed drawn from ``rng``) imaged at a peak photon
    level drawn log-uniformly from ``peak_photons``.

    Args:
        n: number of pairs.
        shape: image shape ``(Y, X)``.
        rng: random generator for seeds and photon levels.
        peak_photons: ``(low, high)`` range of ``WidefieldMicroscope.peak_photons``.
        camera: camera model; default ``SCMOSCamera()``.
        **microscope_kwargs: other ``WidefieldMicroscope`` fields (``na``, ``puncta``, ...).

    Returns:
        ``(noisy, clean)``: uint16 ``(n, Y, X)`` ADU and float32 ``(n, Y, X)`` expected ADU.
    """
    low, high = peak_photons
    if not (0 < low <= high and np.isfinite(high)):
        raise ValueError(f"peak_photons must satisfy 0 < low ≤ high, got {peak_photons!r}")
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    for reserved in ("shape", "peak_photons", "camera", "seed"):
        if reserved in microscope_kwargs:
            raise ValueError(f"{reserved!r} is set by simulate_pairs; do not pass it")
    camera = SCMOSCamera() if camera is None else camera
    noisy = np.empty((int(n), *shape), dtype=np.uint16)
    clean = np.empty((int(n), *shape), dtype=np.float32)
    for i in range(int(n)):
        microscope = WidefieldMicroscope(
            shape=tuple(shape),
            peak_photons=float(np.exp(rng.uniform(np.log(low), np.log(high)))),
            camera=camera,
            seed=int(rng.integers(0, 2**63 - 1, dtype=np.int64)),
            **microscope_kwargs,
        )
        frame = next(microscope.frames(1))
        noisy[i] = frame.noisy
        clean[i] = frame.clean_adu
    return noisy, clean
