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

The network learned what the dark end of a frame looks like from its training cameras:
zero signal sits at ``z₀ = 2·sqrt(σ_read² + 3/8)`` (σ_read in electrons), at most
``SignalSpec.max_dark_z`` for them. A camera with more read noise (a CCD, a cheap CMOS)
puts its dark level higher, where the network has only seen bright signal, and it then
smooths too little. When the dark level is known (a calibration, the camera's parameters,
or — without either — the darkest level of the frames), the tables shift such a camera's
GAT values down by ``z₀ − max_dark_z`` before the input code and add the shift back after
the output code: unit noise, the network's own dark level, the same algebraic inverse.

Both directions are pure functions of one integer, so they are tables:
``in_lut[adu] -> q`` and ``out_lut[c] -> ADU`` (float). The FPGA's pixel-in / pixel-out
kernels and the host apply the same tables (:class:`SignalTables`).

Nothing clips silently: a pixel at the ADC maximum, or above the input code's range
(``q`` at its top code), is passed through unchanged and counted (:class:`CodeCounts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import _pixkernels

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


#: Elements per chunk of a table lookup: the chunk's ``intp`` index stays in cache.
_CHUNK = 1 << 17
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _in_parts(fn: Callable[[int, int], Any], n: int, threads: int) -> list[Any]:
    """``fn(start, stop)`` over ``range(n)`` cut into up to ``threads`` chunk-aligned parts.

    The parts run on a shared thread pool (numpy releases the GIL inside its loops); one
    part runs on the calling thread.
    """
    chunks = -(-n // _CHUNK)
    parts = max(1, min(int(threads), chunks))
    if parts == 1:
        return [fn(0, n)]
    per = -(-chunks // parts) * _CHUNK
    bounds = [(i, min(i + per, n)) for i in range(0, n, per)]
    pool = _POOLS.get(len(bounds) - 1)
    if pool is None:
        pool = _POOLS[len(bounds) - 1] = ThreadPoolExecutor(
            len(bounds) - 1, thread_name_prefix="fluorofpga-lookup")
    futures = [pool.submit(fn, *b) for b in bounds[1:]]
    first = fn(*bounds[0])
    return [first] + [f.result() for f in futures]


def _out_array(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``out`` checked (C-contiguous, this shape and dtype), or a new array."""
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    return out


def _codes(a: Any) -> np.ndarray:
    """Codes as uint8 / uint16 (other integer types wrap to uint16, as a cast does)."""
    a = np.asarray(a)
    return a if a.dtype in (np.uint8, np.uint16) else a.astype(np.uint16)


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def _encode_range(table: np.ndarray, adu: np.ndarray, out: np.ndarray, start: int,
                  stop: int) -> None:
    """``out[i] = table[adu[i]]`` for ``i`` in ``[start, stop)`` (flat arrays), clipped index.

    numpy gathers need ``intp`` indices; converting a whole frame at once writes (and
    page-faults) eight bytes per pixel, so each chunk's index goes through a small buffer.
    """
    kernels = _pixkernels.kernels()
    if kernels is not None:
        kernels.encode_range(table, adu, out, start, stop)
        return
    buf = np.empty(min(_CHUNK, stop - start), np.intp)
    for i in range(start, stop, _CHUNK):
        j = min(i + _CHUNK, stop)
        idx = buf[: j - i]
        np.copyto(idx, adu[i:j], casting="unsafe")
        np.take(table, idx, out=out[i:j], mode="clip")


def _codes_fit(codes: np.ndarray, bits: int) -> bool:
    """Whether every code is below ``2**bits`` (checked only when the dtype is wider)."""
    return codes.dtype.itemsize * 8 <= bits or codes.size == 0 or int(codes.max()) < (
        1 << bits)


def _pair_index(q: np.ndarray, r: np.ndarray, shift: int, pair: np.ndarray,
                idx: np.ndarray) -> None:
    """``idx = q << shift | r``: formed in uint16 (``in_bits + out_bits <= 16``), then
    widened to intp once (mixed-type ufuncs writing intp cost several times more)."""
    np.copyto(pair, q)
    np.left_shift(pair, shift, out=pair)
    np.bitwise_or(pair, r, out=pair, dtype=np.uint16)
    np.copyto(idx, pair)


def _decode_range(table: np.ndarray, q: np.ndarray, r: np.ndarray, adu: np.ndarray,
                  out: np.ndarray, spec: SignalSpec, adc_max: int, start: int,
                  stop: int) -> np.ndarray:
    """Pixel-out for flat ``[start, stop)``: pair-table lookup, pass-through, counts.

    ``out[i] = table[q[i] << out_bits | r[i]]``, or ``adu[i]`` where ``q`` is at its top
    code or ``adu`` at ``adc_max``. Pass-through values are blended in with modular
    integer arithmetic on the value bits (``out + (adu − out)·hit``, exact; a masked copy
    branches on every pixel and costs several times as much). Returns ``[saturated,
    passed through, residual 0, residual top]``, all computed one chunk at a time while it
    is in cache.
    """
    kernels = _pixkernels.kernels()
    if kernels is not None:
        return kernels.decode_range(table, q, r, adu, out, spec.out_bits, spec.out_max,
                                    spec.in_max, adc_max, start, stop)
    size = min(_CHUNK, stop - start)
    idx, pair = np.empty(size, np.intp), np.empty(size, np.uint16)
    hit, flag = np.empty(size, bool), np.empty(size, bool)
    bits = np.dtype(f"u{out.dtype.itemsize}")
    same = out.dtype == adu.dtype  # uint16 out: blend adu itself, else its value's bits
    diff = np.empty(size, bits)
    src = None if same else np.empty(size, out.dtype)
    out_bits = out.view(bits)
    counts = np.zeros(4, np.int64)
    for i in range(start, stop, _CHUNK):
        j = min(i + _CHUNK, stop)
        m = j - i
        qc, rc, ac = q[i:j], r[i:j], adu[i:j]
        _pair_index(qc, rc, spec.out_bits, pair[:m], idx[:m])
        np.take(table, idx[:m], out=out[i:j], mode="clip")
        np.equal(rc, 0, out=flag[:m])
        counts[2] += np.count_nonzero(flag[:m])
        np.equal(rc, spec.out_max, out=flag[:m])
        counts[3] += np.count_nonzero(flag[:m])
        np.greater_equal(ac, adc_max, out=flag[:m])
        n_sat = np.count_nonzero(flag[:m])
        np.greater_equal(qc, spec.in_max, out=hit[:m])
        if n_sat:
            counts[0] += n_sat
            hit[:m] |= flag[:m]
        n_pass = np.count_nonzero(hit[:m])
        if not n_pass:
            continue
        counts[1] += n_pass
        if same:
            value = ac
        else:
            np.copyto(src[:m], ac, casting="unsafe")
            value = src[:m].view(bits)
        np.subtract(value, out_bits[i:j], out=diff[:m], dtype=bits)  # modulo 2**bits
        np.multiply(diff[:m], hit[:m], out=diff[:m], dtype=bits)
        np.add(out_bits[i:j], diff[:m], out=out_bits[i:j], dtype=bits)
    return counts


@dataclass(frozen=True)
class NoiseModel:
    """Poisson–Gaussian noise of one camera in ADU: ``var(y) = a·E[y] + b``.

    Attributes:
        a: ADU per photoelectron, ``1/gain`` (> 0).
        b: variance at ``E[y] = 0``, ADU² (negative for any camera with an offset:
            ``σ_read²/gain² + 1/12 − offset/gain``).
        source: where the numbers come from: ``"calibration"``, ``"estimated"``
            (from the frames themselves) or ``"camera"`` (given parameters).
        dark_adu: the ADU of zero signal (the camera's offset) when it is known (from a
            calibration or the camera's parameters); for a model estimated from the frames
            the darkest level they show (about the zero-signal level when they hold dark
            background: ``b`` holds the offset and the read noise together); ``None``
            when not known.
    """

    a: float
    b: float
    source: str = "camera"
    dark_adu: float | None = None

    def __post_init__(self) -> None:
        """Validate."""
        object.__setattr__(self, "a", _positive("noise model a (ADU per e-)", self.a))
        if not math.isfinite(float(self.b)):
            raise ValueError(f"noise model b must be finite, got {self.b!r}")
        object.__setattr__(self, "b", float(self.b))
        if self.dark_adu is not None:
            if not math.isfinite(float(self.dark_adu)):
                raise ValueError(f"noise model dark_adu must be finite, got {self.dark_adu!r}")
            object.__setattr__(self, "dark_adu", float(self.dark_adu))

    @classmethod
    def from_camera(
        cls, gain_e_per_adu: float, offset_adu: float, read_noise_e: float,
        source: str = "camera",
    ) -> NoiseModel:
        """The noise model of a camera with known gain, offset and read noise.

        Includes the ADC rounding variance (1/12 ADU²).
        """
        g = _positive("gain_e_per_adu", gain_e_per_adu)
        return cls(1.0 / g, (read_noise_e / g) ** 2 + 1.0 / 12.0 - offset_adu / g, source,
                   float(offset_adu))

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
        offset = float(np.median(cal.offset_adu))
        return cls(1.0 / g, read_var - offset / g + (1.0 / 12.0 if extra_rounding else 0.0),
                   "calibration", offset)

    @property
    def gain_e_per_adu(self) -> float:
        """Conversion gain, e⁻ per ADU (``1/a``)."""
        return 1.0 / self.a

    def zero_level(self) -> float:
        """ADU where the GAT's argument vanishes (``z = 0``): ``−(3a/8 + b/a)``."""
        return -(3.0 * self.a / 8.0 + self.b / self.a)

    def dark_z(self) -> float | None:
        """GAT value of zero signal (``2·sqrt(σ_dark² + 3/8)`` in electrons), or ``None``
        when the dark level is not known."""
        if self.dark_adu is None:
            return None
        return float(gat(self.dark_adu, self))

    def variance(self, mean_adu: np.ndarray | float) -> np.ndarray:
        """Predicted noise variance at a mean level, ADU²."""
        return self.a * np.asarray(mean_adu, dtype=np.float64) + self.b

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d: dict[str, Any] = {"a": self.a, "b": self.b, "source": self.source,
                             "gain_e_per_adu": self.gain_e_per_adu}
        if self.dark_adu is not None:
            d["dark_adu"] = self.dark_adu
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoiseModel:
        """Inverse of :meth:`to_dict`."""
        dark = d.get("dark_adu")
        return cls(float(d["a"]), float(d["b"]), str(d.get("source", "camera")),
                   None if dark is None else float(dark))


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


SIGNAL_KINDS = ("gat-residual", "gat-direct")


@dataclass(frozen=True)
class SignalSpec:
    """The bundle's fixed representation (recorded in the manifest as ``signal``).

    Attributes:
        kind: ``"gat-residual"``: GAT input code, noise-residual output code (the
            denoiser); ``"gat-direct"``: GAT input code, the network outputs the clean GAT
            code itself (a SIM reconstructor, whose output lives on another grid than
            its input, so there is no input pixel to form a residual against).
        in_bits: unsigned input code width.
        in_step: GAT units (σ) per input code step.
        out_bits: unsigned network output code width.
        residual_step: GAT units per output-table code step (``gat-residual``: per
            residual code step; ``gat-direct``: per output code step, the output code is
            the table index).
        residual_zero: residual code meaning "no noise" (``gat-direct``: 0, unused).
        code_bits: width of the combined clean code ``c`` that indexes the output table
            (``gat-direct``: ``out_bits``).
        max_dark_z: the largest GAT value of zero signal the network was trained on
            (``2·sqrt(σ_read² + 3/8)`` at the training cameras' highest read noise), or
            ``None``. A camera whose dark level lies above it (read noise beyond the
            training range) has its GAT values shifted down by the difference in the
            tables, so the network sees a dark level it knows; the output table adds
            the shift back (:class:`SignalTables`).
    """

    kind: str = "gat-residual"
    in_bits: int = 8
    in_step: float = 0.25
    out_bits: int = 8
    residual_step: float = 1.0 / 32.0
    residual_zero: int = 128
    code_bits: int = 12
    max_dark_z: float | None = None

    def __post_init__(self) -> None:
        """Validate: the step ratio must be a power-of-two integer and ``c`` must fit."""
        if self.kind not in SIGNAL_KINDS:
            raise ValueError(f"unknown signal representation {self.kind!r}; known: "
                             + ", ".join(SIGNAL_KINDS))
        if not 1 <= self.in_bits <= 16 or not 1 <= self.out_bits <= 16:
            raise ValueError(f"in_bits/out_bits must be 1..16, got {self.in_bits}/{self.out_bits}")
        if self.max_dark_z is not None and not (math.isfinite(self.max_dark_z)
                                                and self.max_dark_z > 0):
            raise ValueError(f"max_dark_z must be finite and > 0, got {self.max_dark_z!r}")
        if self.kind == "gat-direct":
            if self.code_bits != self.out_bits or self.residual_zero != 0:
                raise ValueError("gat-direct: code_bits must equal out_bits and residual_zero "
                                 "must be 0 (the output code indexes the table)")
            if not self.residual_step > 0:
                raise ValueError(f"residual_step must be > 0, got {self.residual_step}")
            return
        ratio = self.in_step / self.residual_step
        if ratio != int(ratio) or int(ratio) < 1:
            raise ValueError(f"in_step / residual_step must be a positive integer, got {ratio}")
        top = int(ratio) * ((1 << self.in_bits) - 2) + self.residual_zero
        if top >= (1 << self.code_bits):
            raise ValueError(f"code_bits={self.code_bits} cannot hold the clean code up to {top}")
        if not 0 <= self.residual_zero < (1 << self.out_bits):
            raise ValueError(f"residual_zero must be a valid {self.out_bits}-bit code")

    @classmethod
    def direct(cls, out_step: float = 0.5, in_step: float = 0.5, bits: int = 8) -> SignalSpec:
        """A ``gat-direct`` spec: the network outputs the clean GAT value in steps of
        ``out_step``. For SIM both steps are 0.5 σ (8 bits cover ~4000 e⁻; adds 2 % noise
        variance): raw SIM frames reach (1 + m) times the widefield peak, and the 0.25 σ
        input step of the denoiser (~1000 e⁻) clipped raw frames at 2000 photons."""
        return cls(kind="gat-direct", in_bits=bits, in_step=in_step, out_bits=bits,
                   residual_step=out_step, residual_zero=0, code_bits=bits)

    def direct_target(self, z_clean: np.ndarray) -> np.ndarray:
        """``gat-direct`` training target in output codes (float, not rounded)."""
        return np.asarray(z_clean, dtype=np.float64) / self.residual_step

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
        if self.kind == "gat-direct":
            return np.broadcast_to(np.asarray(r, dtype=np.int32), np.broadcast_shapes(
                np.shape(q), np.shape(r))).copy()
        c = (np.asarray(q, dtype=np.int32) * self.ratio + self.residual_zero
             - np.asarray(r, dtype=np.int32))
        return np.clip(c, 0, (1 << self.code_bits) - 1)

    def dark_shift(self, noise: NoiseModel, dark_adu: float | None = None) -> float:
        """GAT units a camera's values are shifted down by before the input code: how far
        its dark level (``dark_adu``, default ``noise.dark_adu``) lies above
        :attr:`max_dark_z`; 0 when it does not, or when either is unknown."""
        level = noise.dark_adu if dark_adu is None else dark_adu
        if level is None or self.max_dark_z is None:
            return 0.0
        return max(0.0, float(gat(level, noise)) - self.max_dark_z)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``max_dark_z`` only when set: older readers do not know it)."""
        d = asdict(self)
        if d["max_dark_z"] is None:
            del d["max_dark_z"]
        return d

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
        dark_shift: GAT units subtracted before the input code and added back after the
            output code: how far the camera's dark level lies above the spec's
            ``max_dark_z`` (0 when it does not, or when either is unknown).
    """

    spec: SignalSpec
    noise: NoiseModel
    adc_max: int = _UINT16_MAX
    in_lut: np.ndarray = field(init=False, repr=False)
    out_lut: np.ndarray = field(init=False, repr=False)
    dark_shift: float = field(init=False, default=0.0)
    _pairs: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        """Build both tables from the closed forms."""
        if not 1 <= int(self.adc_max) <= _UINT16_MAX:
            raise ValueError(f"adc_max must be in 1..65535, got {self.adc_max!r}")
        self.adc_max = int(self.adc_max)
        self.dark_shift = self.spec.dark_shift(self.noise)
        adu = np.arange(self.adc_max + 1, dtype=np.float64)
        self.in_lut = self.spec.input_code(gat(adu, self.noise) - self.dark_shift)
        codes = np.arange(1 << self.spec.code_bits, dtype=np.float64)
        self.out_lut = self.clean_adu(codes * self.spec.residual_step)

    def clean_adu(self, z: np.ndarray | float) -> np.ndarray:
        """Clean GAT values of the network's (shifted) domain -> ADU (float64): the
        algebraic inverse with :attr:`dark_shift` added back."""
        return inverse_gat(np.asarray(z, dtype=np.float64) + self.dark_shift, self.noise)

    def encode(self, adu: np.ndarray, out: np.ndarray | None = None,
               threads: int = 1) -> np.ndarray:
        """ADU frame (unsigned integers) -> input codes, by table lookup.

        Args:
            adu: unsigned-integer ADU values, any shape; values above ``adc_max`` get the
                top entry.
            out: optional C-contiguous array of ``adu``'s shape and ``in_lut``'s dtype to
                write the codes into (reused between frames, it saves an allocation).
            threads: split the lookup over this many threads.
        """
        adu = np.asarray(adu)
        if adu.dtype.kind != "u":
            raise ValueError(f"ADU frames must be unsigned integers, got {adu.dtype}")
        out = _out_array(out, adu.shape, self.in_lut.dtype)
        if adu.dtype.itemsize > 2:  # keep wide values from wrapping as (32-bit) intp
            adu = np.minimum(adu, self.in_lut.size - 1).astype(np.uint16)
        flat_adu, flat_out = _flat(adu), out.reshape(-1)
        _in_parts(lambda i, j: _encode_range(self.in_lut, flat_adu, flat_out, i, j),
                  flat_out.size, threads)
        return out

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

    def _clip_flags(self, dtype: str | None) -> tuple[np.ndarray | None, tuple[int, ...]]:
        """The pair table's clipped-entry flags and the output values clipping leads to.

        ``(None, ())`` when no entry clips (the usual case: nothing to count).
        """
        key = ("clip", dtype or "float64")
        if key not in self._pairs:
            table, clipped = self._pair_table(dtype)
            if clipped is None or not clipped.any():
                self._pairs[key] = (None, ())
            else:
                ends = tuple(int(v) for v in np.unique(table[clipped]))
                self._pairs[key] = (clipped, ends)
        return self._pairs[key]

    def decode(
        self, adu: np.ndarray, q: np.ndarray, r: np.ndarray, counts: CodeCounts | None = None,
        dtype: str | None = None, out: np.ndarray | None = None, threads: int = 1,
    ) -> np.ndarray:
        """Network residual codes -> restored ADU, passing saturated pixels through.

        One table lookup per pixel (:meth:`_pair_table`, index ``q << out_bits | r``
        formed chunk by chunk) and the counts from comparisons on the same chunk while it
        is in cache; clipped outputs are searched only among pixels at a clipped value.

        Args:
            adu: the input frame (ADU, unsigned) the codes came from.
            q: its input codes (:meth:`encode`).
            r: the network's residual codes.
            counts: accumulates saturated, above-range and residual-at-limit pixels, and
                (``dtype="uint16"``) values clipped to the output range.
            dtype: None for float64 ADU (more maps to apply), or the final ``"uint16"`` /
                ``"float32"``.
            out: optional C-contiguous array of ``q``'s shape and the output dtype to write
                into.
            threads: split the work over this many threads.
        """
        spec = self.spec
        if spec.in_bits + spec.out_bits > 16:
            raise ValueError("pair tables need in_bits + out_bits <= 16")
        adu, q, r = np.asarray(adu), _codes(q), _codes(r)
        if not adu.shape == q.shape == r.shape:
            adu, q, r = np.broadcast_arrays(adu, q, r)
        table, _ = self._pair_table(dtype)
        out = _out_array(out, q.shape, table.dtype)
        flat = (_flat(q), _flat(r), _flat(adu), out.reshape(-1))
        n_sat, n_pass, n_r0, n_rtop = (int(v) for v in sum(_in_parts(
            lambda i, j: _decode_range(table, *flat, spec, self.adc_max, i, j),
            q.size, threads)))
        if counts is not None:
            counts.pixels += int(q.size)
            counts.saturated += n_sat
            counts.above_range += n_pass - n_sat
            counts.residual_at_limit += n_r0 + n_rtop
            clipped, ends = self._clip_flags(dtype)
            if clipped is not None:  # clipped entries hold the clip bounds: search there
                candidates = np.isin(out, ends)
                if n_pass:
                    candidates &= ~((q >= spec.in_max) | (adu >= self.adc_max))
                if candidates.any():
                    idx = (q[candidates].astype(np.intp) << spec.out_bits) | r[candidates]
                    counts.clipped_output += int(np.count_nonzero(clipped[idx]))
        return out

    def max_adu(self) -> float:
        """Largest ADU value coded below the input code's top (brighter pixels pass through)."""
        return float(self.clean_adu(self.spec.z_range()))


class PixelMaps:
    """The per-pixel part of a calibration, applied before the tables and undone after.

    Maps raw ADU of a sensor with per-pixel offset and gain onto a uniform sensor with the
    median offset and the PTC gain (hot pixels repaired first; the offset map and the gain
    ratio held as float32, the arithmetic in float64), rounded to ``uint16`` so
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
        # the maps are held in float32 (an offset of 1000 ADU to 6e-5 ADU, a gain ratio to
        # 6e-8): half the memory a frame's two passes read; the arithmetic is float64
        self.offset = np.asarray(calibration.offset_adu, dtype=np.float64).astype(np.float32)
        gain0 = float(calibration.gain_e_per_adu)
        gain = (np.asarray(calibration.gain_map_e_per_adu, dtype=np.float64)
                if calibration.gain_map_e_per_adu is not None else np.full(self.offset.shape,
                                                                          gain0))
        self.offset0 = float(np.median(self.offset.astype(np.float64)))
        # per-pixel gain relative to the PTC gain
        self.ratio = (gain / gain0).astype(np.float32)
        # x * 1.0 and x / 1.0 are exact: without a gain map the ratio steps are skipped
        self._flat_ratio = None if np.all(self.ratio == 1.0) else self.ratio.reshape(-1)
        self._flat_offset = self.offset.reshape(-1)
        self._hot = self._hot_neighbours()

    def _hot_neighbours(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Flat indices of the hot pixels and of their 3×3 neighbourhoods (edges repeated).

        ``Calibration.repair_hot_pixels`` pads symmetrically by one pixel, i.e. repeats
        the edge: the neighbour indices are clipped to the frame.
        """
        hot = getattr(self.calibration, "hot_pixels", None)
        if hot is None or not np.any(hot) or np.ndim(hot) != 2:
            return None
        h, w = np.shape(hot)
        ys, xs = np.nonzero(hot)
        near = [np.clip(ys + dy, 0, h - 1) * w + np.clip(xs + dx, 0, w - 1)
                for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        return ys * w + xs, np.stack(near)

    def _repaired(self, frame: np.ndarray) -> np.ndarray:
        """``Calibration.repair_hot_pixels`` with the neighbourhoods found once (flat)."""
        flat = frame.reshape(-1)
        if self._hot is None:
            return flat
        at, near = self._hot
        repaired = flat.copy()
        repaired[at] = np.median(flat[near], axis=0).astype(frame.dtype)
        return repaired

    def to_uniform(self, frame: np.ndarray, out: np.ndarray | None = None,
                   threads: int = 1) -> np.ndarray:
        """Raw ADU frame → ADU of the uniform sensor (``uint16``).

        Args:
            frame: raw ``(Y, X)`` ADU of this sensor.
            out: optional C-contiguous ``uint16`` array of the frame's shape to write into.
            threads: split the arithmetic over this many threads.
        """
        self.calibration.check_shape(np.shape(frame))
        frame = np.asarray(frame)
        if frame.ndim != 2 or frame.dtype.kind != "u" or frame.shape != self.offset.shape:
            repaired = self.calibration.repair_hot_pixels(frame).astype(np.float64)
            uniform = (repaired - self.offset) * self.ratio + self.offset0
            result = np.clip(np.rint(uniform), 0, self.adc_max).astype(np.uint16)
            result[frame >= self.adc_max] = self.adc_max
            if out is not None:
                out[...] = result
                return out
            return result
        out = _out_array(out, frame.shape, np.dtype(np.uint16))
        kernels = _pixkernels.kernels()
        if kernels is not None:  # one compiled pass; hot pixels from their repaired value
            raw, flat_out = _flat(frame), out.reshape(-1)
            if self._hot is None:
                hot_at, hot_value = np.zeros(0, np.intp), raw[:0]
            else:
                hot_at = self._hot[0]
                hot_value = np.median(raw[self._hot[1]], axis=0).astype(frame.dtype)
            ratio, has_ratio = self._kernel_ratio()
            _in_parts(lambda i, j: kernels.to_uniform_range(
                raw, hot_at, hot_value, self._flat_offset, ratio, has_ratio, self.offset0,
                self.adc_max, flat_out, i, j), frame.size, threads)
            return out
        raw, repaired, flat_out = _flat(frame), self._repaired(np.ascontiguousarray(frame)), (
            out.reshape(-1))

        def part(start: int, stop: int) -> None:
            v = np.empty(min(_CHUNK, stop - start), np.float64)
            flag = np.empty(v.size, bool)
            for i in range(start, stop, _CHUNK):
                j = min(i + _CHUNK, stop)
                c = v[: j - i]
                np.copyto(c, repaired[i:j])
                c -= self._flat_offset[i:j]  # (repaired - offset) * ratio + offset0
                if self._flat_ratio is not None:
                    c *= self._flat_ratio[i:j]
                c += self.offset0
                np.rint(c, out=c)
                np.clip(c, 0, self.adc_max, out=c)
                np.copyto(flat_out[i:j], c, casting="unsafe")
                np.greater_equal(raw[i:j], self.adc_max, out=flag[: j - i])
                if flag[: j - i].any():  # saturated stays saturated
                    np.copyto(flat_out[i:j], self.adc_max, where=flag[: j - i])

        _in_parts(part, frame.size, threads)
        return out

    def _kernel_ratio(self) -> tuple[np.ndarray, bool]:
        """The flat gain ratio for the compiled kernels (a dummy when there is none)."""
        if self._flat_ratio is None:
            return np.ones(1, np.float32), False
        return self._flat_ratio, True

    def from_uniform(self, values: np.ndarray) -> np.ndarray:
        """Uniform-sensor ADU (float) → this sensor's ADU (float64)."""
        return (np.asarray(values, dtype=np.float64) - self.offset0) / self.ratio + self.offset

    def decode(
        self, tables: SignalTables, frame: np.ndarray, uniform: np.ndarray, q: np.ndarray,
        r: np.ndarray, counts: CodeCounts | None = None, dtype: str = "uint16",
        out: np.ndarray | None = None, threads: int = 1,
    ) -> np.ndarray:
        """Pixel-out through the maps: residual codes → this sensor's ADU in ``dtype``.

        Per pixel, one chunk at a time: the pair table's float64 ADU of the uniform sensor
        (:meth:`SignalTables.decode`), mapped back (:meth:`from_uniform`); saturated and
        above-range pixels take the raw ``frame`` value; ``"uint16"`` rounds half to even
        and clips (clipped values counted), ``"float32"`` rounds to float32.

        Args:
            tables: the camera's tables (for the uniform sensor).
            frame: the raw frame; ``uniform``: :meth:`to_uniform` of it; ``q``: its codes;
                ``r``: the network's residual codes (all of one 2-D shape).
            counts: accumulates what :meth:`SignalTables.decode` counts, and clipping.
            dtype: ``"uint16"`` or ``"float32"``.
            out: optional C-contiguous array to write into.
            threads: split the work over this many threads.
        """
        if dtype not in ("uint16", "float32"):
            raise ValueError(f"unknown output dtype {dtype!r}")
        spec = tables.spec
        arrays = [np.asarray(a) for a in (frame, uniform, q, r)]
        if len({a.shape for a in arrays}) != 1 or arrays[0].shape != self.offset.shape:
            raise ValueError(f"frame, uniform, q and r must all be {self.offset.shape}, got "
                             f"{[a.shape for a in arrays]}")
        raw, uni, qf, rf = (_flat(a) for a in arrays[:2] + [_codes(a) for a in arrays[2:]])
        out = _out_array(out, arrays[0].shape, np.dtype(dtype))
        flat_out = out.reshape(-1)
        kernels = _pixkernels.kernels()
        if kernels is not None and not _codes_fit(rf, spec.out_bits):
            kernels = None  # residual codes wider than out_bits: the pair table's numpy loop
        if kernels is not None:
            ratio, has_ratio = self._kernel_ratio()
            direct = spec.kind == "gat-direct"
            kernel = kernels.maps_decode[has_ratio, dtype == "uint16", direct]
            mul, zero = (0, 0) if direct else (spec.ratio, spec.residual_zero)
            found = sum(_in_parts(lambda i, j: kernel(
                tables.out_lut, mul, zero, (1 << spec.code_bits) - 1, qf, rf, raw, uni,
                self._flat_offset, ratio, self.offset0, spec.out_max, spec.in_max,
                tables.adc_max, flat_out, i, j), flat_out.size, threads))
            return self._counted(found, flat_out.size, counts, out)
        table, _ = tables._pair_table(None)  # the numpy loop's one lookup per pixel

        def part(start: int, stop: int) -> np.ndarray:
            size = min(_CHUNK, stop - start)
            idx, v, src = np.empty(size, np.intp), np.empty(size, np.float64), np.empty(
                size, np.float64)
            pair = np.empty(size, np.uint16)
            hit, flag = np.empty(size, bool), np.empty(size, bool)
            diff = np.empty(size, np.uint64)
            found = np.zeros(5, np.int64)  # saturated, passed, residual 0, top, clipped
            for i in range(start, stop, _CHUNK):
                j = min(i + _CHUNK, stop)
                m = j - i
                c, qc, rc = v[:m], qf[i:j], rf[i:j]
                _pair_index(qc, rc, spec.out_bits, pair[:m], idx[:m])
                np.take(table, idx[:m], out=c, mode="clip")
                c -= self.offset0  # (values - offset0) / ratio + offset
                if self._flat_ratio is not None:
                    c /= self._flat_ratio[i:j]
                c += self._flat_offset[i:j]
                np.equal(rc, 0, out=flag[:m])
                found[2] += np.count_nonzero(flag[:m])
                np.equal(rc, spec.out_max, out=flag[:m])
                found[3] += np.count_nonzero(flag[:m])
                np.greater_equal(uni[i:j], tables.adc_max, out=flag[:m])
                n_sat = np.count_nonzero(flag[:m])
                np.greater_equal(qc, spec.in_max, out=hit[:m])
                if n_sat:
                    found[0] += n_sat
                    hit[:m] |= flag[:m]
                n_pass = np.count_nonzero(hit[:m])
                if n_pass:  # the raw value, blended in on the bits (exact)
                    found[1] += n_pass
                    np.copyto(src[:m], raw[i:j])
                    bits = c.view(np.uint64)
                    np.subtract(src[:m].view(np.uint64), bits, out=diff[:m])
                    np.multiply(diff[:m], hit[:m], out=diff[:m], dtype=np.uint64)
                    np.add(bits, diff[:m], out=bits)
                if dtype == "uint16":
                    np.rint(c, out=c)
                    np.less(c, 0, out=flag[:m])
                    found[4] += np.count_nonzero(flag[:m])
                    np.greater(c, _UINT16_MAX, out=flag[:m])
                    found[4] += np.count_nonzero(flag[:m])
                    np.clip(c, 0, _UINT16_MAX, out=c)
                np.copyto(flat_out[i:j], c, casting="unsafe")
            return found

        return self._counted(sum(_in_parts(part, flat_out.size, threads)), flat_out.size,
                             counts, out)

    @staticmethod
    def _counted(found: np.ndarray, pixels: int, counts: CodeCounts | None,
                 out: np.ndarray) -> np.ndarray:
        """Add ``found`` (saturated, passed, residual 0, residual top, clipped) to counts."""
        n_sat, n_pass, n_r0, n_rtop, n_clip = (int(x) for x in found)
        if counts is not None:
            counts.pixels += int(pixels)
            counts.saturated += n_sat
            counts.above_range += n_pass - n_sat
            counts.residual_at_limit += n_r0 + n_rtop
            counts.clipped_output += n_clip
        return out
