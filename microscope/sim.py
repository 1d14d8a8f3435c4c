"""Structured illumination microscopy (2-D SIM): illumination patterns and forward model.

Conventions (shared with :mod:`fluorofpga.microscope.sim_recon`):

* Grids. The specimen is given on a grid 2× finer than the camera (``specimen_2x``,
  shape ``(2Y, 2X)``): fine pixels ``(2i, 2i+1)`` are the two halves of camera pixel
  ``i``. ``pixel_size_nm`` is always the *camera* pixel size in the sample plane.
* Positions ``(y, x)`` are measured in camera pixels from the top-left *corner* of the
  image, so camera pixel ``j`` has its centre at ``j + 0.5`` and fine pixel ``i`` at
  ``(i + 0.5) / 2``.
* Illumination of frame ``(a, j)`` (angle ``a``, phase ``j``):
  ``I(r) = 1 + m cos(2π k_a · r + φ_aj)`` with wave vector
  ``k_a = |k| (cos θ_a, sin θ_a)`` as ``(kx, ky)`` in cycles per camera pixel, ``θ_a``
  measured from the +x (column) axis towards +y (rows, i.e. downwards on screen), and
  ``|k| = k_fraction · 2 NA / λ``: the pattern frequency as a fraction of the widefield
  OTF cut-off. Two-beam SIM: only the first harmonic, so the extended support reaches
  ``(1 + k_fraction)`` times the widefield cut-off.
* Stacks are ``"PYX"`` with ``P = n_angles × n_phases``, angles outermost: frame
  ``a * n_phases + j``. ``n_phases=1`` with 3 angles is the 3-frame acquisition used
  by deep-learning SIM; 1 angle × 3 phases is also valid (1-D resolution gain).

Public API:

* :class:`SimPattern` and :func:`make_pattern`: angles, phases (with optional random
  errors), pattern frequency and modulation depth.
* :class:`AngleParameters`: the illumination of one angle (wave vector, phase of its
  first frame, modulation), as a reconstruction estimates it.
* :func:`simulate_sim` → :class:`SimRawData`: raw sCMOS frame stacks.
* :func:`sim_ground_truth`: the specimen filtered by the extended SIM OTF, the target a
  SIM reconstruction should reproduce.
* :func:`ideal_otf`: the analytic incoherent OTF of a circular pupil.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import SCMOSCamera
from .optics import airy_psf, blur

SIM_AXES = "PYX"
_UPSAMPLE = 2  # the specimen / reconstruction grid is 2× finer than the camera
_FINE_CENTRE_PX = 0.5 / _UPSAMPLE  # camera-px position of fine pixel 0's centre
# PSF extent in the reduced coordinate v = 2π NA r / λ (≈ 11 Airy rings): SIM works next
# to the OTF cut-off, where the default 3-ring PSF overstates the MTF by ~4 %; this
# keeps the error ≲ 2 %.
_PSF_EXTENT_V = 35.0


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def cutoff_cycles_per_px(na: float, wavelength_nm: float, pixel_size_nm: float) -> float:
    """Widefield incoherent OTF cut-off ``2 NA / λ`` in cycles per (camera) pixel."""
    _check_positive(na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm)
    return 2.0 * na / wavelength_nm * pixel_size_nm


def ideal_otf(rho: np.ndarray, cutoff: float) -> np.ndarray:
    """Incoherent OTF of an aberration-free circular pupil.

    ``OTF(s) = (2/π) (arccos s − s √(1 − s²))`` for ``s = ρ / cutoff ≤ 1``, 0 beyond.

    Args:
        rho: radial spatial frequency, any shape, same unit as ``cutoff``.
        cutoff: cut-off frequency ``2 NA / λ`` (> 0).

    Returns:
        float64 array of ``rho``'s shape, 1 at ``rho = 0``.
    """
    _check_positive(cutoff=cutoff)
    s = np.clip(np.abs(np.asarray(rho, dtype=np.float64)) / cutoff, 0.0, 1.0)
    return (2.0 / np.pi) * (np.arccos(s) - s * np.sqrt(1.0 - s * s))


@dataclass(frozen=True)
class AngleParameters:
    """Sinusoidal illumination of one pattern angle.

    Attributes:
        kx, ky: wave vector in cycles per camera pixel (see the module conventions).
        phase_rad: phase ``φ`` of the first frame of this angle at the image corner.
            Later frames are assumed at ``phase_rad + 2π j / n_phases``.
        modulation: modulation depth ``m`` in ``I = 1 + m cos(...)``, in [0, 1] ideally.
    """

    kx: float
    ky: float
    phase_rad: float
    modulation: float

    @property
    def k_cycles_per_px(self) -> float:
        """Pattern frequency ``|k|`` in cycles per camera pixel."""
        return float(np.hypot(self.kx, self.ky))

    @property
    def angle_rad(self) -> float:
        """Direction of the wave vector, ``atan2(ky, kx)`` in (−π, π]."""
        return float(np.arctan2(self.ky, self.kx))

    def k_fraction(self, na: float, wavelength_nm: float, pixel_size_nm: float) -> float:
        """Pattern frequency as a fraction of the widefield cut-off ``2 NA / λ``."""
        return self.k_cycles_per_px / cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)


@dataclass(frozen=True)
class SimPattern:
    """Sinusoidal illumination patterns of a SIM acquisition.

    Attributes:
        angles_rad: direction ``θ_a`` of each angle's wave vector (radians).
        phases_rad: per angle, the phase of each frame at the image corner (radians).
        k_fraction: pattern frequency as a fraction of the widefield OTF cut-off
            ``2 NA / λ`` (typically 0.75–0.95; must be in (0, 2)).
        modulation: modulation depth ``m`` in [0, 1].
    """

    angles_rad: tuple[float, ...]
    phases_rad: tuple[tuple[float, ...], ...]
    k_fraction: float = 0.85
    modulation: float = 0.9

    def __post_init__(self) -> None:
        """Validate and normalise to tuples of floats."""
        angles = tuple(float(a) for a in self.angles_rad)
        phases = tuple(tuple(float(p) for p in row) for row in self.phases_rad)
        if not angles:
            raise ValueError("angles_rad must hold at least one angle")
        if len(phases) != len(angles):
            raise ValueError(
                f"phases_rad needs one row per angle: {len(angles)} angles, {len(phases)} rows"
            )
        if not phases[0] or any(len(row) != len(phases[0]) for row in phases):
            raise ValueError("every angle needs the same, non-zero number of phases")
        if not all(np.isfinite(v) for v in (*angles, *sum(phases, ()))):
            raise ValueError("angles_rad and phases_rad must be finite")
        if not (np.isfinite(self.k_fraction) and 0 < self.k_fraction < 2):
            raise ValueError(f"k_fraction must be in (0, 2), got {self.k_fraction!r}")
        if not (np.isfinite(self.modulation) and 0 <= self.modulation <= 1):
            raise ValueError(f"modulation must be in [0, 1], got {self.modulation!r}")
        object.__setattr__(self, "angles_rad", angles)
        object.__setattr__(self, "phases_rad", phases)

    @property
    def n_angles(self) -> int:
        """Number of pattern orientations."""
        return len(self.angles_rad)

    @property
    def n_phases(self) -> int:
        """Number of phase steps per orientation."""
        return len(self.phases_rad[0])

    @property
    def n_frames(self) -> int:
        """Frames per SIM image, ``n_angles × n_phases``."""
        return self.n_angles * self.n_phases

    def k_cycles_per_px(self, na: float, wavelength_nm: float, pixel_size_nm: float) -> float:
        """Pattern frequency ``k_fraction · 2 NA / λ`` in cycles per camera pixel."""
        return self.k_fraction * cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)

    def wave_vectors(self, na: float, wavelength_nm: float, pixel_size_nm: float) -> np.ndarray:
        """``(n_angles, 2)`` array of ``(kx, ky)`` in cycles per camera pixel."""
        k = self.k_cycles_per_px(na, wavelength_nm, pixel_size_nm)
        angles = np.asarray(self.angles_rad)
        return k * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def angle_parameters(
        self, na: float, wavelength_nm: float, pixel_size_nm: float
    ) -> list[AngleParameters]:
        """The true per-angle parameters (first-frame phase), e.g. to reconstruct with."""
        vectors = self.wave_vectors(na, wavelength_nm, pixel_size_nm)
        return [
            AngleParameters(float(kx), float(ky), row[0], self.modulation)
            for (kx, ky), row in zip(vectors, self.phases_rad, strict=True)
        ]


def make_pattern(
    n_angles: int = 3,
    n_phases: int = 3,
    k_fraction: float = 0.85,
    modulation: float = 0.9,
    *,
    start_angle_rad: float = np.pi / 12,
    phase_offsets_rad: float | tuple[float, ...] = 0.0,
    angle_error_rad: float = 0.0,
    phase_error_rad: float = 0.0,
    rng: np.random.Generator | None = None,
) -> SimPattern:
    """Equally spaced SIM pattern angles and phases, optionally with random errors.

    Nominal angles are ``start_angle_rad + π a / n_angles`` (the default start, 15°,
    keeps the stripes off the pixel axes, as in most instruments); nominal phases are
    ``phase_offsets_rad[a] + 2π j / n_phases``. Errors are Gaussian: one angle error
    per angle (std ``angle_error_rad``) and one phase error per frame (std
    ``phase_error_rad``), drawn from ``rng``.

    Args:
        n_angles: number of orientations (≥ 1); 3 for 2-D SIM.
        n_phases: phase steps per orientation (≥ 1); 3 for classical 2-D SIM, 1 for the
            3-frame (3 angles × 1 phase) variant used by deep-learning SIM.
        k_fraction: pattern frequency / widefield cut-off ``2 NA / λ``, in (0, 2).
        modulation: modulation depth in [0, 1].
        start_angle_rad: nominal direction of the first angle.
        phase_offsets_rad: phase of the first frame of each angle (scalar: all angles).
        angle_error_rad, phase_error_rad: standard deviations of the random errors (≥ 0).
        rng: random generator; required when an error is non-zero.

    Returns:
        the :class:`SimPattern`.
    """
    for name, count in (("n_angles", n_angles), ("n_phases", n_phases)):
        if isinstance(count, bool) or int(count) != count or count < 1:
            raise ValueError(f"{name} must be a positive integer, got {count!r}")
    n_angles, n_phases = int(n_angles), int(n_phases)
    for name, value in (("angle_error_rad", angle_error_rad), ("phase_error_rad", phase_error_rad)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be ≥ 0, got {value!r}")
    if (angle_error_rad > 0 or phase_error_rad > 0) and rng is None:
        raise ValueError("random angle/phase errors need an rng (np.random.default_rng(seed))")
    offsets = np.broadcast_to(np.asarray(phase_offsets_rad, dtype=np.float64), (n_angles,))
    angles = float(start_angle_rad) + np.pi * np.arange(n_angles) / n_angles
    phases = offsets[:, None] + 2 * np.pi * np.arange(n_phases)[None, :] / n_phases
    if angle_error_rad > 0:
        angles = angles + rng.normal(0.0, angle_error_rad, n_angles)
    if phase_error_rad > 0:
        phases = phases + rng.normal(0.0, phase_error_rad, phases.shape)
    return SimPattern(
        angles_rad=tuple(angles.tolist()),
        phases_rad=tuple(tuple(row) for row in phases.tolist()),
        k_fraction=float(k_fraction),
        modulation=float(modulation),
    )


@dataclass(frozen=True)
class SimRawData:
    """A simulated SIM acquisition.

    Attributes:
        raw: recorded frames, uint16 ADU, ``(P, Y, X)`` with ``P = n_angles × n_phases``,
            angles outermost.
        clean: noise-free expected ADU of the same frames, float64.
        photons: expected photons per camera pixel of each frame (incl. background).
        pattern: the true illumination.
        na, wavelength_nm, pixel_size_nm: optics (camera pixel size in the sample plane).
        camera: the camera that recorded ``raw`` (for ADU → photon conversion).
        axes: ``"PYX"``.
    """

    raw: np.ndarray
    clean: np.ndarray
    photons: np.ndarray
    pattern: SimPattern
    na: float
    wavelength_nm: float
    pixel_size_nm: float
    camera: SCMOSCamera
    axes: str = field(default=SIM_AXES)


def _check_specimen_2x(specimen_2x: np.ndarray) -> np.ndarray:
    specimen = np.asarray(specimen_2x, dtype=np.float64)
    if specimen.ndim != 2:
        raise ValueError(f"specimen_2x must be a 2-D (YX) array, got shape {specimen.shape}")
    if min(specimen.shape) < 2 or any(n % _UPSAMPLE for n in specimen.shape):
        raise ValueError(
            f"specimen_2x is on a grid {_UPSAMPLE}× finer than the camera, so both sides "
            f"must be even and ≥ {_UPSAMPLE}; got shape {specimen.shape}"
        )
    if not np.all(np.isfinite(specimen)):
        raise ValueError("specimen_2x must be finite (found NaN or inf)")
    if specimen.min() < 0:
        raise ValueError(f"specimen_2x must be non-negative, found minimum {specimen.min():g}")
    return specimen


def _fine_psf(na: float, wavelength_nm: float, pixel_size_nm: float) -> np.ndarray:
    """Airy PSF on the fine grid, wide enough for an accurate MTF near the cut-off."""
    fine_px = pixel_size_nm / _UPSAMPLE
    radius = _PSF_EXTENT_V * wavelength_nm / (2 * np.pi * na * fine_px)
    return airy_psf(na, wavelength_nm, fine_px, size=2 * int(np.ceil(radius)) + 1)


def bin_to_camera(image_2x: np.ndarray) -> np.ndarray:
    """Sum each 2 × 2 block of a fine-grid image onto its camera pixel."""
    h, w = image_2x.shape
    return image_2x.reshape(h // _UPSAMPLE, _UPSAMPLE, w // _UPSAMPLE, _UPSAMPLE).sum(axis=(1, 3))


def space_to_depth(fine: np.ndarray, factor: int = _UPSAMPLE) -> np.ndarray:
    """``(..., factor·H, factor·W)`` fine-grid image -> ``(..., factor², H, W)`` sub-pixels.

    Channel ``factor·dy + dx`` is fine pixel ``(factor·y + dy, factor·x + dx)``: how a
    network on the camera grid outputs a 2× image (the pixel-shuffle layout).
    """
    *lead, fh, fw = fine.shape
    if fh % factor or fw % factor:
        raise ValueError(f"fine-grid sides {fh}x{fw} are not multiples of {factor}")
    x = fine.reshape(*lead, fh // factor, factor, fw // factor, factor)
    x = np.moveaxis(x, (-3, -1), (-4, -3))  # (..., dy, dx, h, w)
    return x.reshape(*lead, factor * factor, fh // factor, fw // factor)


def depth_to_space(channels: np.ndarray, factor: int = _UPSAMPLE) -> np.ndarray:
    """Inverse of :func:`space_to_depth`: ``(..., factor², H, W)`` -> ``(..., fH, fW)``."""
    *lead, c, h, w = channels.shape
    if c != factor * factor:
        raise ValueError(f"expected {factor * factor} sub-pixel channels, got {c}")
    x = channels.reshape(*lead, factor, factor, h, w)
    x = np.moveaxis(x, (-4, -3), (-3, -1))  # (..., h, dy, w, dx)
    return x.reshape(*lead, h * factor, w * factor)


def illumination(
    shape_2x: tuple[int, int], kx: float, ky: float, phase_rad: float, modulation: float
) -> np.ndarray:
    """``1 + m cos(2π k·r + φ)`` at the fine-pixel centres of a ``shape_2x`` grid.

    ``kx, ky`` in cycles per camera pixel; positions as in the module conventions.
    """
    y = (np.arange(shape_2x[0]) + 0.5) / _UPSAMPLE
    x = (np.arange(shape_2x[1]) + 0.5) / _UPSAMPLE
    argument = 2 * np.pi * (ky * y[:, None] + kx * x[None, :]) + phase_rad
    return 1.0 + modulation * np.cos(argument)


def simulate_sim(
    specimen_2x: np.ndarray,
    pattern: SimPattern,
    *,
    na: float = 1.2,
    wavelength_nm: float = 520.0,
    pixel_size_nm: float = 65.0,
    peak_photons: float = 500.0,
    background_photons: float = 10.0,
    camera: SCMOSCamera | None = None,
    rng: np.random.Generator,
) -> SimRawData:
    """Simulate the raw frames of a SIM acquisition.

    For every frame the fluorophore density on the 2× grid is multiplied by the
    illumination (:func:`illumination`), blurred by the widefield Airy PSF sampled on
    the fine grid (:func:`~fluorofpga.microscope.optics.airy_psf`, ≈ 11 rings wide,
    mirror boundary),
    summed over 2 × 2 blocks onto camera pixels, scaled to photons, offset by the
    background and recorded by the sCMOS camera (shot noise, read noise, gain, offset).

    The photon scale is fixed by the widefield-equivalent image (uniform illumination
    ``I = 1``, the mean over equidistant phases): its brightest camera pixel holds
    ``peak_photons`` above background, as in
    :class:`~fluorofpga.microscope.simulate.WidefieldMicroscope`; raw frames reach up to
    about ``(1 + m)`` times that.

    Args:
        specimen_2x: fluorophore density, ``(2Y, 2X)``, finite, ≥ 0.
        pattern: the illumination, e.g. from :func:`make_pattern`.
        na: numerical aperture of the objective.
        wavelength_nm: emission wavelength (nm).
        pixel_size_nm: *camera* pixel size in the sample plane (nm).
        peak_photons: see above (≥ 0).
        background_photons: uniform background per camera pixel and frame (≥ 0).
        camera: the camera; default ``SCMOSCamera()``.
        rng: source of the noise.

    Returns:
        :class:`SimRawData` with ``raw`` ``(n_angles · n_phases, Y, X)``, axes ``"PYX"``.
    """
    specimen = _check_specimen_2x(specimen_2x)
    _check_positive(na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm)
    for name, value in (("peak_photons", peak_photons), ("background_photons", background_photons)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be ≥ 0, got {value!r}")
    if not isinstance(pattern, SimPattern):
        raise TypeError(f"pattern must be a SimPattern, got {type(pattern).__name__}")
    camera = SCMOSCamera() if camera is None else camera

    psf = _fine_psf(na, wavelength_nm, pixel_size_nm)
    widefield = bin_to_camera(np.clip(blur(specimen, psf), 0.0, None))
    peak = widefield.max()
    scale = peak_photons / peak if peak > 0 else 0.0

    vectors = pattern.wave_vectors(na, wavelength_nm, pixel_size_nm)
    photons = np.empty((pattern.n_frames, *widefield.shape), dtype=np.float64)
    for a, ((kx, ky), phases) in enumerate(zip(vectors, pattern.phases_rad, strict=True)):
        for j, phase in enumerate(phases):
            excited = specimen * illumination(specimen.shape, kx, ky, phase, pattern.modulation)
            emitted = bin_to_camera(np.clip(blur(excited, psf), 0.0, None))
            photons[a * pattern.n_phases + j] = scale * emitted + background_photons

    raw = np.stack([camera.acquire(frame, rng) for frame in photons])
    clean = camera.expected_adu(photons)
    for array in (raw, clean, photons):
        array.setflags(write=False)
    return SimRawData(
        raw=raw,
        clean=clean,
        photons=photons,
        pattern=pattern,
        na=float(na),
        wavelength_nm=float(wavelength_nm),
        pixel_size_nm=float(pixel_size_nm),
        camera=camera,
    )


def sim_ground_truth(
    specimen_2x: np.ndarray,
    *,
    na: float = 1.2,
    wavelength_nm: float = 520.0,
    pixel_size_nm: float = 65.0,
    k_fraction: float = 0.85,
    units: str = "peak",
) -> np.ndarray:
    """The specimen as an ideal 2-D SIM microscope would image it, on the 2× grid.

    Two-beam SIM extends the widefield OTF support ``2 NA / λ`` by the pattern
    frequency in every direction, to ``(1 + k_fraction) · 2 NA / λ``. The target is the
    specimen blurred by the Airy PSF of a virtual objective with aperture
    ``NA · (1 + k_fraction)``, whose OTF is the widefield OTF shape stretched to that
    support (the same shape :func:`~fluorofpga.microscope.sim_recon.wiener_sim` uses as
    its default apodisation), scaled so that its maximum is 1.

    Args:
        specimen_2x: fluorophore density, ``(2Y, 2X)``, finite, ≥ 0.
        na, wavelength_nm: objective aperture and emission wavelength (nm).
        pixel_size_nm: *camera* pixel size (nm); the fine grid has half of it.
        k_fraction: pattern frequency / widefield cut-off, in (0, 2).
        units: ``"peak"``: scaled to maximum 1; ``"widefield"``: in the units of the
            widefield camera image whose brightest pixel is 1 (the photon scale of
            :func:`simulate_sim` with ``peak_photons=1``): each fine pixel holds what a
            camera pixel would record if the specimen were everywhere like it there, so a
            uniform region has the same value in both images (the target of a learned
            reconstruction that outputs camera units).

    Returns:
        float64 ``(2Y, 2X)``, ≥ 0 (all zeros for an empty specimen).
    """
    specimen = _check_specimen_2x(specimen_2x)
    _check_positive(na=na, wavelength_nm=wavelength_nm, pixel_size_nm=pixel_size_nm)
    if not (np.isfinite(k_fraction) and 0 < k_fraction < 2):
        raise ValueError(f"k_fraction must be in (0, 2), got {k_fraction!r}")
    if units not in ("peak", "widefield"):
        raise ValueError(f"units must be 'peak' or 'widefield', got {units!r}")
    psf = _fine_psf(na * (1 + k_fraction), wavelength_nm, pixel_size_nm)
    target = np.clip(blur(specimen, psf), 0.0, None)
    if units == "widefield":
        wide = bin_to_camera(np.clip(blur(specimen, _fine_psf(na, wavelength_nm,
                                                              pixel_size_nm)), 0.0, None))
        peak = wide.max() / _UPSAMPLE**2
    else:
        peak = target.max()
    return target / peak if peak > 0 else target
