"""The signal representation: what the network sees, as closed forms and lookup tables.

A camera pixel ``y`` (ADU, after the per-pixel part of the calibration) carries
Poisson–Gaussian noise whose variance is affine in its mean::

    var(y) = a · E[y] + b          a = 1/gain (ADU per e⁻),  b = σ_read²/gain² + 1/12 − offset/gain

The generalised Anscombe transform (GAT, Mäkitalo & Foi 2013) makes that noise unit
variance on every camera and at every light level::

    z(y) = (2/a) · sqrt(max(a·y + 3a²/8 + b, 0))

The network takes ``z`` as an unsigned ``in_bits`` code of fixed step ``in_step`` (σ = 1,
so step 0.25 adds ~0.5 % noise variance and 8 bits cover ~1000 e⁻ on any camera) and
predicts the *noise residual* ``z_noisy − z_clean`` as an unsigned ``out_bits`` code of step
``residual_step`` around ``residual_zero``. After the accelerator the clean value is
formed as an integer code ``c = ratio·q + residual_zero − r`` (``ratio = in_step /
residual_step``, ``c·residual_step = ẑ_clean``) and mapped back with the plain algebraic
inverse of the GAT (the network is trained on the transformed clean image, so that is the
right inverse)::

    y(z) = ((a·z/2)² − 3a²/8 − b) / a

Both directions are pure functions of one integer, so they are tables:
``in_lut[adu] -> q`` and ``out_lut[c] -> ADU`` (float). The FPGA's pixel-in / pixel-out
kernels and the host apply the same tables (:class:`SignalTables`).

Nothing clips silently: a pixel at the ADC maximum, or above the input code's range
(``q`` at its top code), is passed through unchanged and counted (:class:`CodeCounts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CodeCounts",
    "NoiseModel",
    "SignalSpec",
    "SignalTables",
    "gat",
    "inverse_gat",
]

_UINT16_MAX = 65535


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


@dataclass(frozen=True)
class NoiseModel:
    """Poisson–Gaussian noise of one camera in ADU: ``var(y) = a·E[y] + b``.

    Attributes:
        a: ADU per photoelectron, ``1/gain`` (> 0).
        b: variance at ``E[y] = 0``, ADU² (negative for any camera with an offset:
            ``σ_read²/gain² + 1/12 − offset/gain``).
        source: where the numbers come from: ``"calibration"``, ``"estimated"``
            (from the frames themselves) or ``"camera"`` (given parameters).
    """

    a: float
    b: float
    source: str = "camera"

    def __post_init__(self) -> None:
        """Validate."""
        object.__setattr__(self, "a", _positive("noise model a (ADU per e-)", self.a))
        if not math.isfinite(float(self.b)):
            raise ValueError(f"noise model b must be finite, got {self.b!r}")
        object.__setattr__(self, "b", float(self.b))

    @classmethod
    def from_camera(
        cls, gain_e_per_adu: float, offset_adu: float, read_noise_e: float,
        source: str = "camera",
    ) -> NoiseModel:
        """The noise model of a camera with known gain, offset and read noise.

        Includes the ADC rounding variance (1/12 ADU²).
        """
        g = _positive("gain_e_per_adu", gain_e_per_adu)
        return cls(1.0 / g, (read_noise_e / g) ** 2 + 1.0 / 12.0 - offset_adu / g, source)

    @classmethod
    def from_calibration(cls, cal: Any, extra_rounding: bool = False) -> NoiseModel:
        """From a ``Calibration``: PTC gain, median offset, rms read noise.

        The calibration's read-noise map is measured in ADU from darks, so it already
        holds the ADC rounding; ``b = rms(read_noise_adu)² − offset/gain``.

        Args:
            cal: the calibration.
            extra_rounding: add another 1/12 ADU² for frames that were re-rounded after a
                per-pixel offset/gain correction.
        """
        g = _positive("calibration gain", cal.gain_e_per_adu)
        read_var = float(np.mean(np.asarray(cal.read_noise_adu, dtype=np.float64) ** 2))
        b = read_var - float(np.median(cal.offset_adu)) / g
        return cls(1.0 / g, b + (1.0 / 12.0 if extra_rounding else 0.0), "calibration")

    @property
    def gain_e_per_adu(self) -> float:
        """Conversion gain, e⁻ per ADU (``1/a``)."""
        return 1.0 / self.a

    def zero_level(self) -> float:
        """ADU where the GAT's argument vanishes (``z = 0``): ``−(3a/8 + b/a)``."""
        return -(3.0 * self.a / 8.0 + self.b / self.a)

    def variance(self, mean_adu: np.ndarray | float) -> np.ndarray:
        """Predicted noise variance at a mean level, ADU²."""
        return self.a * np.asarray(mean_adu, dtype=np.float64) + self.b

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"a": self.a, "b": self.b, "source": self.source,
                "gain_e_per_adu": self.gain_e_per_adu}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoiseModel:
        """Inverse of :meth:`to_dict`."""
        return cls(float(d["a"]), float(d["b"]), str(d.get("source", "camera")))


def gat(y: np.ndarray | float, noise: NoiseModel) -> np.ndarray:
    """Generalised Anscombe transform of ADU values: unit-variance ``z`` (float64)."""
    a, b = noise.a, noise.b
    arg = a * np.asarray(y, dtype=np.float64) + 0.375 * a * a + b
    return (2.0 / a) * np.sqrt(np.maximum(arg, 0.0))


def inverse_gat(z: np.ndarray | float, noise: NoiseModel) -> np.ndarray:
    """Algebraic inverse of :func:`gat` (ADU, float64): right for a net trained on gat(clean)."""
    a, b = noise.a, noise.b
    z = np.asarray(z, dtype=np.float64)
    return ((a * z / 2.0) ** 2 - 0.375 * a * a - b) / a


@dataclass(frozen=True)
class SignalSpec:
    """The bundle's fixed representation (recorded in the manifest as ``signal``).

    Attributes:
        kind: ``"gat-residual"``: GAT input code, noise-residual output code.
        in_bits: unsigned input code width.
        in_step: GAT units (σ) per input code step.
        out_bits: unsigned network output (residual) code width.
        residual_step: GAT units per residual code step.
        residual_zero: residual code meaning "no noise".
        code_bits: width of the combined clean code ``c`` that indexes the output table.
    """

    kind: str = "gat-residual"
    in_bits: int = 8
    in_step: float = 0.25
    out_bits: int = 8
    residual_step: float = 1.0 / 32.0
    residual_zero: int = 128
    code_bits: int = 12

    def __post_init__(self) -> None:
        """Validate: the step ratio must be a power-of-two integer and ``c`` must fit."""
        if self.kind != "gat-residual":
            raise ValueError(f"unknown signal representation {self.kind!r}; known: gat-residual")
        if not 1 <= self.in_bits <= 16 or not 1 <= self.out_bits <= 16:
            raise ValueError(f"in_bits/out_bits must be 1..16, got {self.in_bits}/{self.out_bits}")
        ratio = self.in_step / self.residual_step
        if ratio != int(ratio) or int(ratio) < 1:
            raise ValueError(f"in_step / residual_step must be a positive integer, got {ratio}")
        top = int(ratio) * ((1 << self.in_bits) - 2) + self.residual_zero
        if top >= (1 << self.code_bits):
            raise ValueError(f"code_bits={self.code_bits} cannot hold the clean code up to {top}")
        if not 0 <= self.residual_zero < (1 << self.out_bits):
            raise ValueError(f"residual_zero must be a valid {self.out_bits}-bit code")

    @property
    def ratio(self) -> int:
        """Residual codes per input code (``in_step / residual_step``)."""
        return int(self.in_step / self.residual_step)

    @property
    def in_max(self) -> int:
        """Top input code: pixels coded here are above range and are passed through."""
        return (1 << self.in_bits) - 1

    @property
    def out_max(self) -> int:
        """Top residual code."""
        return (1 << self.out_bits) - 1

    def z_range(self) -> float:
        """Largest GAT value the input code represents below its top code."""
        return (self.in_max - 0.5) * self.in_step

    def input_code(self, z: np.ndarray) -> np.ndarray:
        """GAT values -> input codes (round half to even, clipped), uint8/uint16."""
        q = np.clip(np.rint(np.asarray(z, dtype=np.float64) / self.in_step), 0, self.in_max)
        return q.astype(np.uint8 if self.in_bits <= 8 else np.uint16)

    def residual_target(self, q: np.ndarray, z_clean: np.ndarray) -> np.ndarray:
        """Training target in residual codes (float, not rounded): ``ratio·q + zero − z/step``."""
        return (self.ratio * np.asarray(q, dtype=np.float64) + self.residual_zero
                - np.asarray(z_clean, dtype=np.float64) / self.residual_step)

    def combine(self, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Clean code ``c = clip(ratio·q + zero − r, 0, 2**code_bits − 1)`` (int32).

        This is the integer arithmetic of the pixel-out kernel: a shift, an add and a
        clip; ``c · residual_step`` is the clean GAT value.
        """
        c = (np.asarray(q, dtype=np.int32) * self.ratio + self.residual_zero
             - np.asarray(r, dtype=np.int32))
        return np.clip(c, 0, (1 << self.code_bits) - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignalSpec:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise ValueError(f"signal spec has unknown keys {sorted(extra)}")
        return cls(**dict(d))


@dataclass
class CodeCounts:
    """Pixels that did not go through the network unchanged, counted per frame or run.

    Attributes:
        pixels: pixels processed.
        saturated: pixels at the ADC maximum, passed through unchanged.
        above_range: pixels above the input code's range, passed through unchanged.
        residual_at_limit: pixels whose network output hit its lowest or highest code.
        clipped_output: output values clipped to the output dtype's range.
    """

    pixels: int = 0
    saturated: int = 0
    above_range: int = 0
    residual_at_limit: int = 0
    clipped_output: int = 0

    def add(self, other: CodeCounts) -> None:
        """Accumulate another count into this one."""
        for key in self.__dataclass_fields__:
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def to_dict(self) -> dict[str, int]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class SignalTables:
    """The lookup tables of one camera for one representation (pixel-in / pixel-out).

    Args:
        spec: the bundle's representation.
        noise: the camera's noise model (from a calibration or estimated).
        adc_max: ADC saturation value, ADU (pixels there pass through).

    Attributes:
        in_lut: ``uint8``/``uint16`` table of ``adc_max + 1`` entries: ADU -> input code.
        out_lut: ``float64`` table of ``2**code_bits`` entries: clean code -> ADU.
    """

    spec: SignalSpec
    noise: NoiseModel
    adc_max: int = _UINT16_MAX
    in_lut: np.ndarray = field(init=False, repr=False)
    out_lut: np.ndarray = field(init=False, repr=False)
    _pairs: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        """Build both tables from the closed forms."""
        if not 1 <= int(self.adc_max) <= _UINT16_MAX:
            raise ValueError(f"adc_max must be in 1..65535, got {self.adc_max!r}")
        self.adc_max = int(self.adc_max)
        adu = np.arange(self.adc_max + 1, dtype=np.float64)
        self.in_lut = self.spec.input_code(gat(adu, self.noise))
        codes = np.arange(1 << self.spec.code_bits, dtype=np.float64)
        self.out_lut = inverse_gat(codes * self.spec.residual_step, self.noise)

    def encode(self, adu: np.ndarray) -> np.ndarray:
        """ADU frame (unsigned integers) -> input codes, by table lookup."""
        adu = np.asarray(adu)
        if adu.dtype.kind != "u":
            raise ValueError(f"ADU frames must be unsigned integers, got {adu.dtype}")
        return np.take(self.in_lut, adu, mode="clip")  # above adc_max: the top entry

    def _pair_table(self, dtype: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Output value for every (input code, residual code) pair, and where it clips.

        Indexed by ``q << out_bits | r``: the pixel-out arithmetic and table folded into one
        lookup (``2**(in_bits + out_bits)`` entries). ``dtype`` None gives float64 ADU;
        ``"uint16"`` rounds half to even and clips (the second array flags clipped
        entries); ``"float32"`` keeps the value.
        """
        key = dtype or "float64"
        if key not in self._pairs:
            spec = self.spec
            q = np.arange(1 << spec.in_bits)[:, None]
            r = np.arange(1 << spec.out_bits)[None, :]
            values = self.out_lut[spec.combine(q, r)].ravel()
            clipped = None
            if key == "uint16":
                rounded = np.rint(values)
                clipped = (rounded < 0) | (rounded > _UINT16_MAX)
                values = np.clip(rounded, 0, _UINT16_MAX).astype(np.uint16)
            elif key == "float32":
                values = values.astype(np.float32)
            elif key != "float64":
                raise ValueError(f"unknown output dtype {dtype!r}")
            self._pairs[key] = (values, clipped)
        return self._pairs[key]

    def decode(
        self, adu: np.ndarray, q: np.ndarray, r: np.ndarray, counts: CodeCounts | None = None,
        dtype: str | None = None,
    ) -> np.ndarray:
        """Network residual codes -> restored ADU, passing saturated pixels through.

        One table lookup per pixel (:meth:`_pair_table`); the counts come from one
        histogram of the (q, r) pairs.

        Args:
            adu: the input frame (ADU, unsigned) the codes came from.
            q: its input codes (:meth:`encode`).
            r: the network's residual codes.
            counts: accumulates saturated, above-range and residual-at-limit pixels, and
                (``dtype="uint16"``) values clipped to the output range.
            dtype: None for float64 ADU (more maps to apply), or the final ``"uint16"`` /
                ``"float32"``.
        """
        spec = self.spec
        if spec.in_bits + spec.out_bits > 16:
            raise ValueError("pair tables need in_bits + out_bits <= 16")
        adu = np.asarray(adu)
        q = np.asarray(q)
        idx = (q.astype(np.uint16) << spec.out_bits) | np.asarray(r, dtype=np.uint16)
        table, clipped = self._pair_table(dtype)
        out = table[idx]
        saturated = adu >= self.adc_max
        passthrough = saturated | (q >= spec.in_max)
        n_pass = int(np.count_nonzero(passthrough))
        if n_pass:
            np.copyto(out, adu.astype(out.dtype), where=passthrough)
        if counts is not None:
            hist = np.bincount(idx.ravel(), minlength=table.size).reshape(
                1 << spec.in_bits, 1 << spec.out_bits)
            n_sat = int(np.count_nonzero(saturated))
            counts.pixels += int(q.size)
            counts.saturated += n_sat
            counts.above_range += n_pass - n_sat
            counts.residual_at_limit += int(hist[:, 0].sum() + hist[:, spec.out_max].sum())
            if clipped is not None:
                n_clip = int(hist.ravel()[clipped].sum())
                if n_pass and n_clip:
                    n_clip -= int(np.count_nonzero(clipped[idx[passthrough]]))
                counts.clipped_output += n_clip
        return out

    def max_adu(self) -> float:
        """Largest ADU value coded below the input code's top (brighter pixels pass through)."""
        return float(inverse_gat(self.spec.z_range(), self.noise))


class PixelMaps:
    """The per-pixel part of a calibration, applied before the tables and undone after.

    Maps raw ADU of a sensor with per-pixel offset and gain onto a uniform sensor with the
    median offset and the PTC gain (hot pixels repaired first), rounded to ``uint16`` so
    the pixel-in table can index it (the noise model then carries one extra ADC rounding,
    ``NoiseModel.from_calibration(cal, extra_rounding=True)``). Saturated pixels stay at
    ``adc_max``.

    Args:
        calibration: a ``Calibration`` (offset map, optional gain map, hot pixels).
        adc_max: ADC saturation value.
    """

    def __init__(self, calibration: Any, adc_max: int = _UINT16_MAX) -> None:
        self.calibration = calibration
        self.adc_max = int(adc_max)
        self.offset = np.asarray(calibration.offset_adu, dtype=np.float64)
        gain0 = float(calibration.gain_e_per_adu)
        gain = (np.asarray(calibration.gain_map_e_per_adu, dtype=np.float64)
                if calibration.gain_map_e_per_adu is not None else np.full(self.offset.shape,
                                                                          gain0))
        self.offset0 = float(np.median(self.offset))
        self.ratio = gain / gain0  # per-pixel gain relative to the PTC gain

    def to_uniform(self, frame: np.ndarray) -> np.ndarray:
        """Raw ADU frame → ADU of the uniform sensor (``uint16``)."""
        self.calibration.check_shape(np.shape(frame))
        repaired = self.calibration.repair_hot_pixels(frame).astype(np.float64)
        uniform = (repaired - self.offset) * self.ratio + self.offset0
        out = np.clip(np.rint(uniform), 0, self.adc_max).astype(np.uint16)
        out[np.asarray(frame) >= self.adc_max] = self.adc_max
        return out

    def from_uniform(self, values: np.ndarray) -> np.ndarray:
        """Uniform-sensor ADU (float) → this sensor's ADU (float64)."""
        return (np.asarray(values, dtype=np.float64) - self.offset0) / self.ratio + self.offset
