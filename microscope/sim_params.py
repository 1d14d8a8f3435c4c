"""SIM illumination parameters as a saved, reusable artifact; frame-order and drift results.

A live instrument estimates the pattern once (:func:`~fluorofpga.microscope.sim_recon.
estimate_parameters`), saves it next to the data, reconstructs every following stack
with it (:func:`~fluorofpga.microscope.sim_recon.wiener_sim` with ``params=``) and
re-estimates only when :func:`~fluorofpga.microscope.sim_recon.check_parameters` reports
drift. This module holds the data types of that loop; the computations live in
:mod:`~fluorofpga.microscope.sim_recon`.

File format (JSON, ``format: fluorofpga-sim-parameters``, ``version: 1``)::

    {"format": ..., "version": 1,
     "optics": {"na", "wavelength_nm", "pixel_size_nm"},
     "layout": {"n_angles", "n_phases", "frame_order", "frame_shape"},
     "angles": [{"kx", "ky", "k_cycles_per_px", "angle_rad", "phase_rad",
                 "phase_step_rad", "phase_steps_rad", "modulation", "correlation"}, ...],
     "notes": [...]}

``kx, ky`` are in cycles per camera pixel, phases in radians at the image corner (the
conventions of :mod:`~fluorofpga.microscope.sim`); ``k_cycles_per_px``, ``angle_rad``
and ``phase_step_rad`` are written for the reader and recomputed on load.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from .io import atomic_write
from .sim import AngleParameters
from .sim_prior import WienerPrior

FORMAT = "fluorofpga-sim-parameters"
VERSION = 1

FrameOrder = Literal["angle-major", "phase-major"]
FRAME_ORDERS: tuple[str, ...] = ("angle-major", "phase-major")
# Relative tolerance when comparing the optics of stored parameters with the data's.
_OPTICS_REL_TOL = 1e-6


class SimParametersError(ValueError):
    """A SIM parameter file that cannot be read, or parameters that do not fit the data."""


class SimParametersMismatch(SimParametersError):
    """Stored parameters were estimated for other optics or another frame layout."""


class FrameOrderError(ValueError):
    """The raw frames are not in the order the reconstruction was told (or can repair).

    Attributes:
        found: what the frames look like, e.g. ``"phase-major"`` or ``"unknown"``.
        groups: frame indices that share one pattern angle, as detected (may be empty).
    """

    def __init__(self, message: str, found: str, groups: tuple[tuple[int, ...], ...] = ()):
        """Keep what was found next to the message."""
        super().__init__(message)
        self.found = found
        self.groups = groups


class NoPatternError(ValueError):
    """No angle of a raw stack shows an illumination pattern (widefield frames, frames
    of another instrument, optics that put the pattern outside the searched range, or
    far too little light): there is nothing to reconstruct from."""


class FrameOrderWarning(UserWarning):
    """The raw frames were reordered, or their order could not be verified (see message)."""


class WeakPatternWarning(UserWarning):
    """An angle's pattern is barely above the noise: its parameters are unreliable."""


class LightLevelWarning(WeakPatternWarning):
    """The data's light level is far from the one a Wiener-SIM bundle was designed for."""


def frame_permutation(n_angles: int, n_phases: int, order: str) -> tuple[int, ...]:
    """Raw-frame index of each angle-major slot ``a * n_phases + j`` for ``order``.

    ``"angle-major"`` (the documented order): frame ``a * n_phases + j``;
    ``"phase-major"``: frame ``j * n_angles + a``.
    """
    if order == "angle-major":
        return tuple(range(n_angles * n_phases))
    if order == "phase-major":
        return tuple(j * n_angles + a for a in range(n_angles) for j in range(n_phases))
    raise ValueError(f"frame_order must be one of {FRAME_ORDERS}, got {order!r}")


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise SimParametersError(f"{name} must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class SimParameters(Sequence[AngleParameters]):
    """Estimated illumination of a SIM acquisition, with what it was estimated for.

    Behaves as a sequence of :class:`~fluorofpga.microscope.sim.AngleParameters` (one per
    angle, ``kx, ky`` in cycles per camera pixel, ``phase_rad`` of the angle's first
    frame at the image corner, ``modulation`` ``m``), so code written for a plain list
    keeps working.

    Attributes:
        angles: one :class:`AngleParameters` per pattern angle.
        na, wavelength_nm, pixel_size_nm: optics the parameters were estimated for
            (camera pixel size in the sample plane, nm).
        n_phases: phase steps per angle; the reconstruction assumes steps of
            ``2π / n_phases``.
        frame_shape: ``(Y, X)`` of the frames; phases are referred to their corner.
        frame_order: layout of the raw stack: ``"angle-major"`` (documented, frame
            ``a * n_phases + j``) or ``"phase-major"`` (frame ``j * n_angles + a``);
            reconstructions with these parameters read stacks in this order.
        phase_steps_rad: per angle, the measured phase of each frame relative to the
            angle's first frame (nominally ``2π j / n_phases``); empty if not measured.
        correlation: per angle, the normalised correlation of the separated bands at the
            estimate (1 = perfect fit, ~0 = no pattern found); empty if not measured.
        notes: what the estimation did beyond the defaults (e.g. frames reordered).
        wiener_prior: the noise-to-signal prior of the MMSE Wiener filter measured on the
            stack the parameters came from (``fluorofpga sim --save-params``): a Wiener-SIM
            bundle's filter is designed with it, for that light level; None if not measured.
    """

    angles: tuple[AngleParameters, ...]
    na: float
    wavelength_nm: float
    pixel_size_nm: float
    n_phases: int
    frame_shape: tuple[int, int]
    frame_order: str = "angle-major"
    phase_steps_rad: tuple[tuple[float, ...], ...] = ()
    correlation: tuple[float, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)
    wiener_prior: WienerPrior | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        """Validate and normalise to tuples of plain floats and ints."""
        angles = tuple(self.angles)
        if not angles or not all(isinstance(a, AngleParameters) for a in angles):
            raise SimParametersError("angles must be a non-empty sequence of AngleParameters")
        for name in ("na", "wavelength_nm", "pixel_size_nm"):
            value = _finite(getattr(self, name), name)
            if value <= 0:
                raise SimParametersError(f"{name} must be > 0, got {value!r}")
            object.__setattr__(self, name, value)
        if isinstance(self.n_phases, bool) or int(self.n_phases) != self.n_phases or (
            self.n_phases < 1
        ):
            raise SimParametersError(f"n_phases must be a positive integer, got {self.n_phases!r}")
        shape = tuple(int(n) for n in self.frame_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise SimParametersError(f"frame_shape must be (Y, X), got {self.frame_shape!r}")
        if self.frame_order not in FRAME_ORDERS:
            raise SimParametersError(
                f"frame_order must be one of {FRAME_ORDERS}, got {self.frame_order!r}"
            )
        steps = tuple(tuple(float(s) for s in row) for row in self.phase_steps_rad)
        if steps and (len(steps) != len(angles) or any(len(r) != self.n_phases for r in steps)):
            raise SimParametersError("phase_steps_rad needs n_phases values per angle")
        correlation = tuple(float(c) for c in self.correlation)
        if correlation and len(correlation) != len(angles):
            raise SimParametersError("correlation needs one value per angle")
        object.__setattr__(self, "angles", angles)
        object.__setattr__(self, "n_phases", int(self.n_phases))
        object.__setattr__(self, "frame_shape", shape)
        object.__setattr__(self, "phase_steps_rad", steps)
        object.__setattr__(self, "correlation", correlation)
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        if self.wiener_prior is not None and not isinstance(self.wiener_prior, WienerPrior):
            raise SimParametersError(
                f"wiener_prior must be a WienerPrior or None, got {self.wiener_prior!r}")

    # -- sequence of AngleParameters
    @overload
    def __getitem__(self, index: int) -> AngleParameters: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[AngleParameters, ...]: ...

    def __getitem__(self, index: int | slice) -> AngleParameters | tuple[AngleParameters, ...]:
        """The parameters of angle ``index``."""
        return self.angles[index]

    def __len__(self) -> int:
        """Number of pattern angles."""
        return len(self.angles)

    def __iter__(self) -> Iterator[AngleParameters]:
        """Iterate over the angles."""
        return iter(self.angles)

    @property
    def n_angles(self) -> int:
        """Number of pattern angles."""
        return len(self.angles)

    @property
    def n_frames(self) -> int:
        """Raw frames per SIM image, ``n_angles × n_phases``."""
        return self.n_angles * self.n_phases

    def check_compatible(
        self,
        *,
        na: float,
        wavelength_nm: float,
        pixel_size_nm: float,
        n_frames: int | None = None,
        frame_shape: tuple[int, int] | None = None,
    ) -> None:
        """Raise :class:`SimParametersMismatch` unless these parameters fit the data.

        Args:
            na, wavelength_nm, pixel_size_nm: optics of the data (equal within 1e-6).
            n_frames: frames in the data's stack, ``n_angles × n_phases``.
            frame_shape: ``(Y, X)`` of the data's frames (phases refer to the corner).

        Raises:
            SimParametersMismatch: one message listing every difference.
        """
        problems = []
        for name, value, unit in (
            ("NA", na, ""),
            ("wavelength", wavelength_nm, " nm"),
            ("pixel size", pixel_size_nm, " nm"),
        ):
            stored = {"NA": self.na, "wavelength": self.wavelength_nm,
                      "pixel size": self.pixel_size_nm}[name]
            if not math.isclose(float(value), stored, rel_tol=_OPTICS_REL_TOL):
                problems.append(f"{name} {stored:g}{unit} (data: {float(value):g}{unit})")
        if n_frames is not None and n_frames != self.n_frames:
            problems.append(
                f"{self.n_frames} frames = {self.n_angles} angles × {self.n_phases} phases "
                f"(data: {n_frames} frames)"
            )
        if frame_shape is not None and tuple(frame_shape) != self.frame_shape:
            problems.append(
                f"frames of {self.frame_shape[0]} × {self.frame_shape[1]} pixels (data: "
                f"{frame_shape[0]} × {frame_shape[1]}; the phases refer to the frame corner)"
            )
        if problems:
            raise SimParametersMismatch(
                "these SIM parameters were estimated for " + "; ".join(problems)
                + ". Re-estimate them on this data (leave out --params) or use parameters "
                "saved for this optics and layout."
            )

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The JSON document written by :meth:`save` (see the module docstring)."""
        angles = []
        for a, p in enumerate(self.angles):
            entry: dict[str, Any] = {
                "kx": p.kx,
                "ky": p.ky,
                "k_cycles_per_px": p.k_cycles_per_px,
                "angle_rad": p.angle_rad,
                "phase_rad": p.phase_rad,
                "phase_step_rad": 2 * math.pi / self.n_phases,
                "modulation": p.modulation,
            }
            if self.phase_steps_rad:
                entry["phase_steps_rad"] = list(self.phase_steps_rad[a])
            if self.correlation:
                entry["correlation"] = self.correlation[a]
            angles.append(entry)
        return {
            "format": FORMAT,
            "version": VERSION,
            "optics": {
                "na": self.na,
                "wavelength_nm": self.wavelength_nm,
                "pixel_size_nm": self.pixel_size_nm,
            },
            "layout": {
                "n_angles": self.n_angles,
                "n_phases": self.n_phases,
                "frame_order": self.frame_order,
                "frame_shape": list(self.frame_shape),
            },
            "units": {"k": "cycles per camera pixel", "angles and phases": "rad",
                      "phase origin": "image corner"},
            "angles": angles,
            "notes": list(self.notes),
            **({} if self.wiener_prior is None else {
                "wiener_prior": self.wiener_prior.to_dict()}),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any], source: str = "parameters") -> SimParameters:
        """Parameters from a :meth:`to_dict` document.

        Raises:
            SimParametersError: not a SIM parameter document, another format version, or
                missing / inconsistent fields (``source`` names the file in the message).
        """
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise SimParametersError(f"{source}: not a {FORMAT} file")
        if document.get("version") != VERSION:
            raise SimParametersError(
                f"{source}: SIM parameter format version {document.get('version')!r}; this "
                f"fluorofpga reads version {VERSION}"
            )
        try:
            optics, layout, entries = document["optics"], document["layout"], document["angles"]
            if len(entries) != int(layout["n_angles"]):
                raise SimParametersError(
                    f"{source}: layout says {layout['n_angles']} angles but {len(entries)} "
                    "are listed"
                )
            angles = tuple(
                AngleParameters(
                    _finite(e["kx"], "kx"), _finite(e["ky"], "ky"),
                    _finite(e["phase_rad"], "phase_rad"), _finite(e["modulation"], "modulation"),
                )
                for e in entries
            )
            steps = tuple(tuple(e["phase_steps_rad"]) for e in entries if "phase_steps_rad" in e)
            correlation = tuple(e["correlation"] for e in entries if "correlation" in e)
            return cls(
                angles=angles,
                na=optics["na"],
                wavelength_nm=optics["wavelength_nm"],
                pixel_size_nm=optics["pixel_size_nm"],
                n_phases=layout["n_phases"],
                frame_shape=tuple(layout["frame_shape"]),
                frame_order=layout["frame_order"],
                phase_steps_rad=steps if len(steps) == len(angles) else (),
                correlation=correlation if len(correlation) == len(angles) else (),
                notes=tuple(document.get("notes", ())),
                wiener_prior=(WienerPrior.from_dict(document["wiener_prior"])
                              if document.get("wiener_prior") is not None else None),
            )
        except SimParametersError as exc:
            if str(exc).startswith(source):
                raise
            raise SimParametersError(f"{source}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise SimParametersError(f"{source}: incomplete SIM parameters ({exc!r})") from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters to ``path`` as JSON (atomically; see the module docstring)."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SimParameters:
        """Read parameters written by :meth:`save`.

        Raises:
            SimParametersError: missing or unreadable file, not SIM parameters, another
                format version, or incomplete fields.
        """
        name = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                document = json.load(fh)
        except FileNotFoundError as exc:
            raise SimParametersError(f"{name}: no such SIM parameter file") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SimParametersError(f"{name}: not a readable JSON file ({exc})") from exc
        return cls.from_dict(document, source=name)


def load_sim_parameters(path: str | os.PathLike[str]) -> SimParameters:
    """Read parameters written by :meth:`SimParameters.save` (same as ``SimParameters.load``)."""
    return SimParameters.load(path)


@dataclass(frozen=True)
class FrameOrderCheck:
    """What the raw frames look like (from ``detect_frame_order``).

    Attributes:
        found: ``"angle-major"`` / ``"phase-major"`` when the frames sharing a pattern
            angle match that layout, ``"unknown"`` when they are grouped otherwise,
            ``"undetermined"`` when the data cannot tell (one angle, no visible pattern).
        groups: frame indices sharing one angle, as detected (empty if undetermined).
        contrast: mean similarity of the pattern spectra within the detected groups
            minus between them (≈ 1 clear, ≈ 0 no pattern).
        expected_contrast: the same for the expected layout's groups.
    """

    found: str
    groups: tuple[tuple[int, ...], ...]
    contrast: float
    expected_contrast: float


@dataclass(frozen=True)
class ParameterCheck:
    """Do stored parameters still fit a new stack? (from ``check_parameters``).

    Attributes:
        ok: no drift beyond the tolerances: the stored parameters can be reused.
        reasons: one line per exceeded tolerance (empty when ``ok``).
        correlation_ratio: per angle, band correlation at the stored wave vector divided
            by that at the re-estimated one (1 = still optimal).
        frequency_drift: per angle, ``|k_now − k_stored| / |k_stored|`` (vector difference).
        drift_fourier_px: per angle, ``|k_now − k_stored|`` in Fourier pixels of the frame
            (``1/X``, ``1/Y`` cycles per pixel); a reconstruction with the stored vector
            has a phase error of ``π`` × this at the frame's edge.
        angle_drift_rad: per angle, change of the pattern direction.
        phase_drift_rad: per angle, change of the first frame's phase (wrapped to ±π).
        modulation: per angle, the re-estimated modulation depth.
        current: the parameters re-estimated on the new stack (seeded by the stored
            ones): use them when ``ok`` is False.
    """

    ok: bool
    reasons: tuple[str, ...]
    correlation_ratio: tuple[float, ...]
    frequency_drift: tuple[float, ...]
    drift_fourier_px: tuple[float, ...]
    angle_drift_rad: tuple[float, ...]
    phase_drift_rad: tuple[float, ...]
    modulation: tuple[float, ...]
    current: SimParameters
