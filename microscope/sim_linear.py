"""Classical Wiener SIM as streaming filters: the form an accelerator can run live.

With the pattern parameters fixed, the generalised Wiener reconstruction of
:func:`~fluorofpga.microscope.sim_recon.wiener_sim` is linear in the raw frames. In real
space it splits into a part that depends on the pixel position and a shift-invariant part:

1. **Demodulation** (per camera pixel ``q``, per angle ``a``; the position-dependent
   part): the angle's three frames ``u0, u1, u2`` give the widefield ``c0 = (u0+u1+u2)/3``
   and the +1 band ``c₊ = (A + i√3 B) / 6`` with ``A = 2u0 − u1 − u2`` and
   ``B = u2 − u1`` (equidistant phase steps); the band is moved to its true frequency and
   normalised: ``z = (2/m) c₊ e^{−iθ(q)}`` with ``θ(q) = 2π k·r_q + φ`` (``r_q`` the
   pixel centre, corner origin). Three real channels per angle: ``c0, Re z, Im z``.
2. **Filtering** (shift-invariant, on the camera grid): the 2× image's four sub-pixels
   ``(dy, dx)`` are ``R = Σ_a h₀ ⊗ c0_a + 2 (h_r ⊗ Re z_a − h_i ⊗ Im z_a)``, with
   ``h₀ = F⁻¹[G·OTF]`` and ``h = F⁻¹[G·OTF(f + k_a)]`` evaluated at the sub-pixel
   offsets, ``G = A / (Σ_b |OTF_b|² + w²)`` the Wiener denominator and apodisation of
   ``wiener_sim``. The demodulated band lives around ``−k``, beyond the camera grid's
   Nyquist frequency, but the filter passes only the disc of radius ``2NA/λ`` around
   ``−k``: the coarse samples determine the result exactly (no upsampling needed).
   Fitted by weighted least squares to ``K × K`` camera pixels (default 9: it fits a
   1024² camera at 30 reconstructions/s on the KV260), this is one 9 → 4 channel
   convolution — what FINN compiles.

The integer form the hardware runs: 8-bit linear pixel codes in (``code = (ADU −
zero)/step + in_zero``, the step chosen per acquisition), :func:`demodulate_int` (phase
accumulators, a 1024-entry sine table, 18-bit gains, rounding and saturation exactly as
``hw/rtl/sim_demod.sv``) to 9 unsigned 8-bit channels with zero point 128, then the
quantized convolution to four 8-bit sub-pixel codes. The pixel position enters only
through the phase accumulators, whose registers (:class:`DemodRegisters`) are computed
from the measured parameters at run time; the filter is compiled for a design pattern
(frequencies, optics, ``w``) and holds while the measured frequencies stay within
:data:`DESIGN_TOLERANCE` of it.

Borders: the convolution sees zeros beyond the frame (no border fade): the outer
``K // 2`` camera pixels ring more than ``wiener_sim``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .sim import AngleParameters, cutoff_cycles_per_px, depth_to_space, ideal_otf
from .sim_prior import MIN_MODULATION as _MIN_MODULATION
from .sim_prior import WienerPrior, band_weight

__all__ = [
    "DESIGN_TOLERANCE",
    "DemodRegisters",
    "LinearSimCodes",
    "demodulate_float",
    "demodulate_int",
    "design_wiener_filters",
    "fit_output_gain",
    "integer_weights",
    "sine_tables",
    "wiener_realspace",
]

#: relative change of a pattern frequency the compiled filter tolerates (its pass band
#: moves by this fraction of |k|: 0.5 % is ~0.1 % of the extended support)
DESIGN_TOLERANCE = 0.005
PHASE_BITS = 32
TABLE_BITS = 10  # sine table entries: 2**TABLE_BITS
TABLE_ONE = 1 << 14  # sine table scale
GAIN_BITS = 18
GAIN_SHIFT = 30
CHANNEL_ZERO = 128  # zero point of the demodulated channels
_SQRT3 = float(np.sqrt(3.0))


@dataclass(frozen=True)
class LinearSimCodes:
    """The integer representation of a Wiener-SIM bundle (manifest ``signal``).

    Attributes:
        in_zero: input code of zero signal (``code = (ADU − zero)/step + in_zero``): room
            for read noise below zero.
        wide_gain: widefield channel code (``c0``) per input code.
        wide_zero: widefield channel code of zero signal.
        channel_gain: code of the demodulated band (``Re z, Im z``, zero point 128) per
            input code.
        out_gain: output code per input code of the reconstruction.
        out_zero: output code of zero signal (room for Wiener ringing below zero).
        bits: code width of input, channels and output.
    """

    in_zero: int = 16
    wide_gain: float = 1.0
    wide_zero: int = 8
    channel_gain: float = 0.75
    out_gain: float = 0.8
    out_zero: int = 16
    bits: int = 8

    @property
    def code_max(self) -> int:
        """Largest code."""
        return (1 << self.bits) - 1

    def channel_gains(self, angles: int) -> np.ndarray:
        """Code per input code of each demodulated channel (``c0, Re z, Im z`` per angle)."""
        return np.tile([self.wide_gain, self.channel_gain, self.channel_gain], angles)

    def channel_zeros(self, angles: int) -> np.ndarray:
        """Code of zero signal of each demodulated channel (uint8)."""
        return np.tile([self.wide_zero, CHANNEL_ZERO, CHANNEL_ZERO], angles).astype(np.uint8)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form (``kind: "linear-sim"``)."""
        return {"kind": "linear-sim", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearSimCodes:
        """Inverse of :meth:`to_dict`; unknown kinds are refused."""
        if d.get("kind") != "linear-sim":
            raise ValueError(f"not a linear-sim signal: kind {d.get('kind')!r}")
        return cls(**{k: d[k] for k in ("in_zero", "wide_gain", "wide_zero",
                                         "channel_gain", "out_gain", "out_zero", "bits")})

    def step_for(self, adu_above_zero: np.ndarray, headroom: float = 1.1) -> float:
        """Input step (ADU per code) that puts a group's 99.99th percentile, times
        ``headroom``, at the top code. Chosen once per acquisition, then fixed."""
        top = float(np.percentile(np.asarray(adu_above_zero, dtype=np.float64), 99.99))
        return max(top * headroom, 1.0) / (self.code_max - self.in_zero)

    def encode(self, adu_above_zero: np.ndarray, step: float) -> np.ndarray:
        """Linear input codes (uint8) of ADU above the zero level."""
        q = np.rint(np.asarray(adu_above_zero, dtype=np.float64) / step) + self.in_zero
        return np.clip(q, 0, self.code_max).astype(np.uint8)

    def decode(self, codes: np.ndarray, step: float) -> np.ndarray:
        """Output codes -> ADU above the zero level (float64)."""
        return (np.asarray(codes, dtype=np.float64) - self.out_zero) / self.out_gain * step


# ------------------------------------------------------------------ float design
def _otf(fx: np.ndarray, fy: np.ndarray, cutoff: float) -> np.ndarray:
    """Model OTF of wiener_sim: ideal incoherent OTF × camera-pixel integration."""
    return ideal_otf(np.hypot(fx, fy), cutoff) * np.abs(np.sinc(fx) * np.sinc(fy))


def design_wiener_filters(
    params: Sequence[AngleParameters],
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    wiener_w: float | WienerPrior = 0.05,
    kernel: int = 9,
    method: str = "least-squares",
    samples: int = 128,
) -> np.ndarray:
    """The shift-invariant part as a ``(4, 3·n_angles, K, K)`` cross-correlation kernel.

    Output channel ``2·dy + dx`` is fine pixel ``(2y+dy, 2x+dx)``; input channels per
    angle ``c0, Re z, Im z`` (in any common unit: the output is in that unit per
    camera-pixel area, as ``wiener_sim``'s). Weight ``[d, c, ty, tx]`` multiplies input
    pixel ``(y + ty − K//2, x + tx − K//2)`` (PyTorch ``conv2d`` orientation). The
    target is ``wiener_sim``'s filter (default apodisation: the ideal OTF stretched to the
    extended cut-off) for each band, ``H = G · OTF(f + b·k)`` at the sub-pixel offset:
    with a number ``w`` the classical ``G = A / (Σ_b |OTF_b|² + w²)``; with a
    :class:`~fluorofpga.microscope.sim_prior.WienerPrior` the MMSE filter of
    ``wiener_sim(wiener_w=prior)``, ``G_b = A g_b / (Σ_b g_b |OTF_b|² + ε(|f|))`` with the
    ±1 bands weighted ``g = (m/2)²`` by the design pattern's modulation.

    ``method``:

    * ``"least-squares"`` (default): the ``K × K`` kernel whose response is closest to
      ``H`` over one period of the camera grid centred on the band, weighted by where the
      signal is — a specimen spectrum ``1/(|f|² + 0.05²)`` through the band's OTF, plus a
      white floor of 1 % (the noise everywhere in the period, where the ideal response is
      0) — with the zero frequency held (every band reaches it: the image's mean).
      On validation scenes at 2000 photons this 9 × 9 kernel is 0.9 dB from the FFT
      Wiener where the truncated one is 1.7 dB away (and the truncated 11 × 11 1.2 dB).
    * ``"truncated"``: the ideal kernel sampled at the ``K × K`` offsets.

    Args:
        params: one per angle (frequencies in cycles per camera pixel; phases unused).
        na, wavelength_nm, pixel_size_nm: optics.
        wiener_w: Wiener parameter ``w`` (> 0), or the noise-to-signal prior of the
            MMSE filter.
        kernel: odd kernel side ``K`` (camera pixels).
        method: ``"least-squares"`` or ``"truncated"``.
        samples: frequency samples per axis over one period (least squares), or over
            ``[−1, 1)`` × 4 (truncation).
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd number of pixels, got {kernel}")
    prior = wiener_w if isinstance(wiener_w, WienerPrior) else None
    if prior is None and not (np.isfinite(wiener_w) and wiener_w > 0):
        raise ValueError(f"wiener_w must be > 0 or a WienerPrior, got {wiener_w!r}")
    if method not in ("least-squares", "truncated"):
        raise ValueError(f"method must be 'least-squares' or 'truncated', got {method!r}")
    cutoff = cutoff_cycles_per_px(na, wavelength_nm, pixel_size_nm)
    if cutoff >= 0.5:
        raise ValueError(
            f"the camera undersamples the widefield image (cut-off {cutoff:.3f} cycles "
            "per pixel ≥ 0.5): the streaming Wiener needs Nyquist-sampled raw frames")
    extended = cutoff + max(p.k_cycles_per_px for p in params)

    # MMSE: the ±1 bands of each angle weigh (m/2)² against band 0's 1 (classical: all 1)
    gains = {(float(p.kx), float(p.ky)): 1.0 if prior is None else band_weight(p.modulation)
             for p in params}

    def gain(kx: float, ky: float) -> float:
        """Weight of the band with OTF(f + k) (``±k`` of an angle): 1 for band 0."""
        if kx == ky == 0.0:
            return 1.0
        key = (float(kx), float(ky))
        return gains[key] if key in gains else gains[(-float(kx), -float(ky))]

    def target(fx: np.ndarray, fy: np.ndarray, kx: float, ky: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """Wiener response of the band with OTF(f + k), and that OTF."""
        den = np.zeros(np.broadcast_shapes(fx.shape, fy.shape))
        for p in params:
            for s in (0, 1, -1):
                den += gain(s * p.kx, s * p.ky) * _otf(fx + s * p.kx, fy + s * p.ky, cutoff) ** 2
        otf_b = _otf(fx + kx, fy + ky, cutoff)
        rho = np.hypot(fx, fy)
        reg = wiener_w**2 if prior is None else prior(rho)
        return ideal_otf(rho, extended) * gain(kx, ky) / (den + reg) * otf_b, otf_b

    r = kernel // 2
    taps = np.arange(-r, r + 1)
    offsets = [(dy / 2 - 0.25, dx / 2 - 0.25) for dy in (0, 1) for dx in (0, 1)]

    def band_kernels(kx: float, ky: float) -> np.ndarray:
        """``(4, K, K)`` complex kernels of the band with OTF(f + k), correlation order."""
        out = np.empty((4, kernel, kernel), dtype=np.complex128)
        if method == "truncated":
            f = (np.arange(4 * samples) - 2 * samples) / (2.0 * samples)
            fy, fx = f[:, None], f[None, :]
            h_f, _ = target(fx, fy, kx, ky)
            for i, (oy, ox) in enumerate(offsets):
                ey = np.exp(2j * np.pi * np.outer(taps + oy, f))
                ex = np.exp(2j * np.pi * np.outer(taps + ox, f))
                out[i] = ey @ h_f @ ex.T * (f[1] - f[0]) ** 2
            return out[:, ::-1, ::-1]  # h(p − q + δ): correlation orientation
        u = (np.arange(samples) - samples // 2) / samples  # one period around the band
        fy, fx = np.meshgrid(u - ky, u - kx, indexing="ij")
        # plus the zero frequency itself, held exactly (the image's mean intensity)
        fy, fx = np.append(fy.ravel(), 0.0), np.append(fx.ravel(), 0.0)
        h_f, otf_b = target(fx, fy, kx, ky)
        if prior is None:
            weight = otf_b**2 / (fx**2 + fy**2 + 0.05**2)
            root = np.sqrt(weight / weight.max() + 0.01)
        else:  # the expected error power of a response error: (signal + noise) of the band
            eps = prior(np.hypot(fx, fy))
            weight = (otf_b**2 + eps / gain(kx, ky)) / eps
            root = np.sqrt(weight / weight.max())
        root[-1] = 100.0
        ty, tx = np.meshgrid(taps, taps, indexing="ij")
        basis = np.exp(-2j * np.pi * (fy.reshape(-1, 1) * ty.ravel() + fx.reshape(-1, 1)
                                      * tx.ravel()))
        for i, (oy, ox) in enumerate(offsets):
            want = h_f * np.exp(2j * np.pi * (fy * oy + fx * ox))
            c, *_ = np.linalg.lstsq(basis * root[:, None], want * root, rcond=None)
            out[i] = c.reshape(kernel, kernel)
        return out[:, ::-1, ::-1]  # h(p − q + δ): correlation orientation

    h0 = band_kernels(0.0, 0.0).real
    weights = np.zeros((4, 3 * len(params), kernel, kernel))
    for a, p in enumerate(params):
        h = band_kernels(p.kx, p.ky)
        weights[:, 3 * a] = h0
        weights[:, 3 * a + 1] = 2 * h.real
        weights[:, 3 * a + 2] = -2 * h.imag
    return weights


def _correlate(channels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` × ``(D, C, K, K)`` zero-padded cross-correlation -> ``(D, H, W)``."""
    from scipy import signal

    d, c, k, _ = weights.shape
    h, w = channels.shape[1:]
    out = np.zeros((d, h, w))
    for i in range(d):
        for j in range(c):
            out[i] += signal.correlate(channels[j], weights[i, j], mode="same",
                                       method="fft" if k > 7 else "direct")
    return out


def demodulate_float(photons: np.ndarray, params: Sequence[AngleParameters]) -> np.ndarray:
    """The demodulation in float: ``(3·A, Y, X)`` raw frames -> ``c0, Re z, Im z`` per
    angle (same units as ``photons``)."""
    n = len(params)
    if photons.ndim != 3 or photons.shape[0] != 3 * n:
        raise ValueError(f"expected {3 * n} frames (3 phases × {n} angles), got "
                         f"shape {photons.shape}")
    h, w = photons.shape[1:]
    y = (np.arange(h) + 0.5)[:, None]
    x = (np.arange(w) + 0.5)[None, :]
    out = np.empty((3 * n, h, w))
    for a, p in enumerate(params):
        u0, u1, u2 = photons[3 * a: 3 * a + 3]
        theta = 2 * np.pi * (p.kx * x + p.ky * y) + p.phase_rad
        m = max(float(p.modulation), _MIN_MODULATION)
        big_a, big_b = 2 * u0 - u1 - u2, u2 - u1
        out[3 * a] = (u0 + u1 + u2) / 3
        out[3 * a + 1] = (big_a * np.cos(theta) + _SQRT3 * big_b * np.sin(theta)) / (3 * m)
        out[3 * a + 2] = (_SQRT3 * big_b * np.cos(theta) - big_a * np.sin(theta)) / (3 * m)
    return out


def wiener_realspace(
    photons: np.ndarray,
    params: Sequence[AngleParameters],
    *,
    na: float,
    wavelength_nm: float,
    pixel_size_nm: float,
    wiener_w: float | WienerPrior = 0.05,
    kernel: int = 9,
) -> np.ndarray:
    """Float reference of the streaming Wiener: 9 angle-major frames (photons) -> 2× image.

    Same units and grid as :func:`~fluorofpga.microscope.sim_recon.wiener_sim` (not
    clipped at 0); ``params`` are used as they are (no estimation, no order check).
    """
    photons = np.asarray(photons, dtype=np.float64)
    weights = design_wiener_filters(params, na=na, wavelength_nm=wavelength_nm,
                                    pixel_size_nm=pixel_size_nm, wiener_w=wiener_w,
                                    kernel=kernel)
    return depth_to_space(_correlate(demodulate_float(photons, params), weights))


# ------------------------------------------------------------------ integer form
def sine_tables() -> tuple[np.ndarray, np.ndarray]:
    """``(SIN, SIN3)``: ``round(2¹⁴ sin(2πi/1024))`` and ``round(2¹⁴ √3 sin(2πi/1024))``
    (int32, 1024 entries); the cosines are the same tables read 256 entries later."""
    i = np.arange(1 << TABLE_BITS)
    s = np.sin(2 * np.pi * i / (1 << TABLE_BITS))
    return (np.rint(TABLE_ONE * s).astype(np.int32),
            np.rint(TABLE_ONE * _SQRT3 * s).astype(np.int32))


@dataclass(frozen=True)
class DemodRegisters:
    """Run-time registers of the demodulation kernel (one set per frame or tile).

    Attributes:
        phase0: per angle, the phase accumulator at pixel (0, 0) of the tile, unsigned
            32-bit (``2³² θ / 2π``).
        step_x, step_y: per angle, phase increment per column / row (unsigned 32-bit).
        gain_z: per angle, gain of ``Re z, Im z`` (unsigned 18-bit, ``/2³⁰`` after the
            ``2¹⁴`` table scale).
        gain_s: gain of the widefield channel.
        in_zero: input code of zero signal.
        wide_zero: widefield channel code of zero signal (the band channels': 128).
    """

    phase0: tuple[int, ...]
    step_x: tuple[int, ...]
    step_y: tuple[int, ...]
    gain_z: tuple[int, ...]
    gain_s: int
    in_zero: int
    wide_zero: int

    @classmethod
    def from_parameters(cls, params: Sequence[AngleParameters], codes: LinearSimCodes
                        ) -> DemodRegisters:
        """Registers for a frame's pixel (0, 0) from the measured pattern parameters."""
        mod = 1 << PHASE_BITS
        phase0, sx, sy, gz = [], [], [], []
        for p in params:
            turns = p.phase_rad / (2 * np.pi) + 0.5 * (p.kx + p.ky)  # pixel centre (½, ½)
            phase0.append(int(np.rint((turns % 1.0) * mod)) % mod)
            sx.append(int(np.rint((p.kx % 1.0) * mod)) % mod)
            sy.append(int(np.rint((p.ky % 1.0) * mod)) % mod)
            m = max(float(p.modulation), _MIN_MODULATION)
            gz.append(_gain(codes.channel_gain / (3 * m)))
        return cls(tuple(phase0), tuple(sx), tuple(sy), tuple(gz),
                   _gain(codes.wide_gain / 3), int(codes.in_zero), int(codes.wide_zero))

    def at(self, y0: int, x0: int) -> DemodRegisters:
        """The registers of a tile whose pixel (0, 0) is frame pixel ``(y0, x0)``."""
        mod = 1 << PHASE_BITS
        p0 = tuple((p + x0 * sx + y0 * sy) % mod for p, sx, sy in
                   zip(self.phase0, self.step_x, self.step_y, strict=True))
        return DemodRegisters(p0, self.step_x, self.step_y, self.gain_z, self.gain_s,
                              self.in_zero, self.wide_zero)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def _gain(value: float) -> int:
    g = int(np.rint(value * (1 << (GAIN_SHIFT - 14))))
    if not 0 <= g < (1 << GAIN_BITS):
        raise ValueError(f"demodulation gain {value:g} outside the kernel's 18-bit range")
    return g


def _requantize(acc: np.ndarray, gain: int, zero: int) -> np.ndarray:
    """``((acc · gain + 2²⁹) >> 30) + zero`` (floor shift: round half up), not clipped."""
    return ((acc * np.int64(gain) + (1 << (GAIN_SHIFT - 1))) >> GAIN_SHIFT) + zero


def demodulate_int(codes: np.ndarray, regs: DemodRegisters) -> tuple[np.ndarray, int]:
    """Bit-exact reference of ``hw/rtl/sim_demod.sv``.

    Args:
        codes: ``(3·A, H, W)`` uint8 input codes of one group (angle-major), the tile's
            pixel (0, 0) at ``regs``' phase.
        regs: registers of this tile.

    Returns:
        ``(3·A, H, W)`` uint8 channels ``c0, Re z, Im z`` per angle (zero points
        ``wide_zero``, 128, 128), and
        how many channel values were clipped (fell outside 0..255 before clipping).
    """
    q = np.asarray(codes)
    n = len(regs.phase0)
    if q.ndim != 3 or q.shape[0] != 3 * n or q.dtype != np.uint8:
        raise ValueError(f"expected uint8 codes of shape ({3 * n}, H, W), got {q.dtype} "
                         f"{q.shape}")
    h, w = q.shape[1:]
    sin, sin3 = sine_tables()
    quarter = 1 << (TABLE_BITS - 2)
    mask = (1 << TABLE_BITS) - 1
    y = np.arange(h, dtype=np.uint64)[:, None]
    x = np.arange(w, dtype=np.uint64)[None, :]
    u = q.astype(np.int64)
    out = np.empty((3 * n, h, w), dtype=np.int64)
    for a in range(n):
        phase = (np.uint64(regs.phase0[a]) + x * np.uint64(regs.step_x[a])
                 + y * np.uint64(regs.step_y[a])) & np.uint64(0xFFFFFFFF)
        idx = (((phase + np.uint64(1 << (PHASE_BITS - TABLE_BITS - 1)))
                >> np.uint64(PHASE_BITS - TABLE_BITS)) & np.uint64(mask)).astype(np.int64)
        cos_i = (idx + quarter) & mask
        u0, u1, u2 = u[3 * a], u[3 * a + 1], u[3 * a + 2]
        big_a, big_b = 2 * u0 - u1 - u2, u2 - u1
        s = (u0 + u1 + u2 - 3 * regs.in_zero) * TABLE_ONE
        zr = big_a * sin[cos_i] + big_b * sin3[idx]
        zi = big_b * sin3[cos_i] - big_a * sin[idx]
        out[3 * a] = _requantize(s, regs.gain_s, regs.wide_zero)
        out[3 * a + 1] = _requantize(zr, regs.gain_z[a], CHANNEL_ZERO)
        out[3 * a + 2] = _requantize(zi, regs.gain_z[a], CHANNEL_ZERO)
    saturated = int(np.count_nonzero((out < 0) | (out > 255)))
    return np.clip(out, 0, 255).astype(np.uint8), saturated


def fit_output_gain(weights: np.ndarray, codes: LinearSimCodes, weight_bits: int = 8
                    ) -> LinearSimCodes:
    """``codes`` with the largest ``out_gain`` ≤ the given one at which the largest
    integer-domain weight sits just below a power-of-two boundary times
    ``2^(bits−1) − 1``: 8-bit weights with power-of-two scales then use their whole range
    (up to 1.5 more bits of weight precision, for up to 2× coarser output codes)."""
    gains = codes.channel_gains(weights.shape[1] // 3)
    top = float(np.abs(weights / gains[None, :, None, None]).max())
    levels = (1 << (weight_bits - 1)) - 1.5  # margin: float rounding of the scale
    exponent = np.floor(np.log2(codes.out_gain * top / levels))
    return replace(codes, out_gain=float(levels * 2.0**exponent / top))


def integer_weights(weights: np.ndarray, codes: LinearSimCodes, weight_bits: int = 8
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Float weights and bias of the quantized filter layer on integer codes.

    With channel codes ``γ_c v + zero_c`` (widefield: ``wide_gain``, ``wide_zero``; band:
    ``channel_gain``, 128) and output codes ``γ_out R + out_zero``, the layer computes
    ``out = Σ W · code + b`` with ``W = γ_out h / γ_c`` — already on the grid of the
    layer's ``weight_bits`` power-of-two weights, each kernel's sum kept — and
    ``b = out_zero − Σ W zero_c`` (per output channel).
    """
    n = weights.shape[1] // 3
    gains, zeros = codes.channel_gains(n), codes.channel_zeros(n)
    w = _round_keeping_sums(codes.out_gain * weights / gains[None, :, None, None], weight_bits)
    b = codes.out_zero - np.einsum("dckl,c->d", w, zeros.astype(np.float64))
    return w, b


def _round_keeping_sums(w: np.ndarray, bits: int) -> np.ndarray:
    """Weights on the ``bits``-bit grid of their output channel's power-of-two scale (as
    the quantized layer's), each ``K × K`` kernel's sum kept: plain rounding moves a
    kernel's DC gain, i.e. the image's mean intensity, by up to a few per cent; the
    difference is given to the taps whose rounding was closest to going the other way."""
    levels = (1 << (bits - 1)) - 1
    out = np.empty_like(w)
    for d in range(w.shape[0]):
        scale = 2.0 ** np.ceil(np.log2(np.abs(w[d]).max() / levels))
        for c in range(w.shape[1]):
            x = (w[d, c] / scale).ravel()
            q = np.clip(np.rint(x), -levels, levels)
            missing = int(np.rint(x.sum() - q.sum()))
            order = np.argsort(q - x) if missing > 0 else np.argsort(x - q)
            for i in order[:abs(missing)]:
                q[i] = np.clip(q[i] + np.sign(missing), -levels, levels)
            out[d, c] = (q * scale).reshape(w.shape[2:])
    return out
