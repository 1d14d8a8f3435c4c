"""Classical Wiener SIM through the accelerator: the host's half of a Wiener-SIM bundle.

A Wiener-SIM bundle (``task: "sim"``, signal ``linear-sim``, see
:mod:`fluorofpga.microscope.sim_linear`) holds the shift-invariant filter of the
generalised Wiener reconstruction, compiled for one design pattern (optics, pattern
frequencies, Wiener ``w``). Per group of 9 raw frames (3 angles × 3 phases, angle-major):

1. each raw frame: the per-pixel part of the calibration (hot pixels, offset and gain
   maps), then linear input codes ``(ADU − zero)/step + in_zero`` (8 bits; the step is
   chosen on the first group so its 99.99th percentile has 10 % headroom, then kept);
2. the demodulation (:func:`~fluorofpga.microscope.sim_linear.demodulate_int`, the
   reference of the ``sim_demod`` RTL kernel) with registers from the *measured*
   parameters: phases, modulation and exact frequencies enter here, at run time;
3. the accelerator (the filter), tile by tile with halo, on the frame surrounded by
   ``halo`` pixels of zero-signal codes (the hardware's own zero padding would read as a
   strong negative signal in the offset channels);
4. output codes back to ADU above zero, rearranged onto the 2× grid.

Parameters must stay within :data:`~fluorofpga.microscope.sim_linear.DESIGN_TOLERANCE`
of the design frequencies (else :class:`~fluorofpga.microscope.SimParametersMismatch`
naming the rebuild command). Nothing clips silently: saturated input pixels are passed
through on their 2×2 block (``saturated``), input codes at the top (``above_range``),
demodulated channels that saturated (``channel_saturated``) and output codes at their
limits (``residual_at_limit``) are counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fluorofpga.microscope.sim import AngleParameters, depth_to_space
from fluorofpga.microscope.sim_linear import (
    DESIGN_TOLERANCE,
    DemodRegisters,
    LinearSimCodes,
    demodulate_int,
)
from fluorofpga.microscope.sim_params import SimParametersMismatch

from .accelerator import Accelerator
from .tiling import process_tiled

__all__ = ["WienerSimRestorer", "check_design", "check_optics"]


#: A first group with more than this factor more or less light than the design's (the
#: MMSE filter's noise-to-signal ratio) gets a ``LightLevelWarning``.
LIGHT_TOLERANCE = 4.0
_REBUILD = ("build a bundle for this pattern: `fluorofpga sim-bundle --params P.json` "
            "with the parameters saved by `fluorofpga sim --save-params P.json`")


def check_optics(design: dict[str, Any], optics: dict[str, float]) -> None:
    """Raise ``SimParametersMismatch`` unless ``optics`` (NA, wavelength and pixel size in
    nm) are those the bundle's filter was compiled for (0.1 %)."""
    name = design.get("bundle", "this Wiener bundle")
    for key in ("na", "wavelength_nm", "pixel_size_nm"):
        want, got = float(design[key]), optics.get(key)
        if got is not None and abs(float(got) - want) > 1e-3 * want:
            raise SimParametersMismatch(
                f"{name} was compiled for {key} = {want:g}, the data has {float(got):g}; "
                + _REBUILD)


def check_design(params: Sequence[AngleParameters], design: dict[str, Any]) -> None:
    """Raise ``SimParametersMismatch`` unless ``params`` fit the pattern the bundle's
    filter was compiled for (frequencies within ``DESIGN_TOLERANCE``)."""
    name = design.get("bundle", "this Wiener bundle")
    rebuild = _REBUILD
    angles = design["angles"]
    if len(params) != len(angles):
        raise SimParametersMismatch(f"{name} was compiled for {len(angles)} angles, the "
                                    f"parameters have {len(params)}; " + rebuild)
    for a, (p, d) in enumerate(zip(params, angles, strict=True)):
        k = np.hypot(d["kx"], d["ky"])
        off = float(np.hypot(p.kx - d["kx"], p.ky - d["ky"]) / k)
        if off > DESIGN_TOLERANCE:
            raise SimParametersMismatch(
                f"angle {a}: the measured pattern frequency ({p.kx:.5f}, {p.ky:.5f}) "
                f"cycles/pixel is {100 * off:.2f} % away from the one {name} was compiled "
                f"for ({d['kx']:.5f}, {d['ky']:.5f}; tolerance "
                f"{100 * DESIGN_TOLERANCE:.1f} %); " + rebuild)


class WienerSimRestorer:
    """``restorer(group, params) -> (2Y, 2X)`` float64 ADU above the zero level.

    Args:
        accelerator: the bundle's filter (9 channels in, 4 sub-pixels out).
        codes: the bundle's integer representation.
        design: the manifest's ``reconstruction`` entry (design pattern and optics).
        halo: tile overlap (the filter's radius).
        zero_adu: the camera's zero level (offset) of the (uniform) frames; ``None``:
            the 0.1th percentile of the first group (at or below the dark level; a
            linear reconstruction only needs the codes to start below the signal), kept.
        step: input step in ADU per code; ``None``: chosen on the first group.
        adc_max: ADC saturation value.

    Attributes:
        counts: ``pixels``, ``saturated``, ``above_range``, ``channel_saturated``,
            ``residual_at_limit``, accumulated over all groups.
    """

    def __init__(self, accelerator: Accelerator, codes: LinearSimCodes,
                 design: dict[str, Any], halo: int, zero_adu: float | None,
                 step: float | None = None, adc_max: int = 65535) -> None:
        n = 3 * len(design["angles"])
        if accelerator.in_channels != n or accelerator.out_channels != 4:
            raise ValueError(f"accelerator takes {accelerator.in_channels} and returns "
                             f"{accelerator.out_channels} values per pixel; a Wiener SIM "
                             f"bundle needs {n} in and 4 out")
        self.accelerator = accelerator
        self.codes = codes
        self.design = design
        self.halo = int(halo)
        self.zero_adu = None if zero_adu is None else float(zero_adu)
        self.step = None if step is None else float(step)
        self.adc_max = int(adc_max)
        self.frames = n
        self.counts = {"pixels": 0, "saturated": 0, "above_range": 0,
                       "channel_saturated": 0, "residual_at_limit": 0}

    def encode(self, group: np.ndarray) -> np.ndarray:
        """Linear input codes of a raw ``(9, Y, X)`` group (the step fixed on first use)."""
        group = np.asarray(group)
        if group.dtype.kind != "u" or group.ndim != 3 or group.shape[0] != self.frames:
            raise ValueError(f"expected {self.frames} raw frames as an unsigned-integer "
                             f"(P, Y, X) array (raw ADU), got {group.dtype} with shape "
                             f"{group.shape}")
        if self.zero_adu is None:
            self.zero_adu = float(np.percentile(group, 0.1))
        above = group.astype(np.float64) - self.zero_adu
        if self.step is None:  # the first group
            self.step = self.codes.step_for(above)
            self._check_light(group)
        return self.codes.encode(above, self.step)

    def _check_light(self, group: np.ndarray) -> None:
        """Warn (``LightLevelWarning``) when the first group's light level is more than
        :data:`LIGHT_TOLERANCE` × away from the one the filter was designed for (the
        MMSE filter of a bundle built with ``sim-bundle --wiener auto``)."""
        prior = self.design.get("wiener_prior")
        if prior is None:
            return
        from fluorofpga.microscope import WienerPrior, measure_wiener_prior
        from fluorofpga.microscope.sim_params import LightLevelWarning

        optics = {k: float(self.design[k]) for k in ("na", "wavelength_nm", "pixel_size_nm")}
        try:
            measured = measure_wiener_prior(group, **optics)
        except ValueError:
            return  # too small a frame to measure on: nothing to say
        if measured is None:
            return
        design = WienerPrior.from_dict(prior)
        rho = np.linspace(0.5, 1.5, 11) * design.cutoff  # where the filter's bands meet
        light = float(np.exp(np.mean(np.log(design(rho) / measured(rho)))))
        if 1 / LIGHT_TOLERANCE <= light <= LIGHT_TOLERANCE:
            return
        name = self.design.get("bundle", "this Wiener bundle")
        effect = ("smoother than it could be" if light > 1 else
                  "sharper than this light allows: noisier than the CPU's automatic filter")
        warnings.warn(
            f"this SIM data has {'more' if light > 1 else 'less'} light than {name}'s "
            f"filter was designed for (its noise-to-signal ratio is {1 / light:.2g}× the "
            f"design's), so the reconstruction is {effect}; for the best filter at this light "
            "save the parameters from such a stack (`fluorofpga sim RAW.tif OUT.tif "
            "--save-params P.json`) and rebuild (`fluorofpga sim-bundle --params P.json`)",
            LightLevelWarning, stacklevel=4)

    def _padded(self, channels: np.ndarray) -> np.ndarray:
        """The channels with ``halo`` pixels of *zero signal* around the frame.

        The accelerator pads frame borders with code 0, which for the demodulated
        channels (zero points ``wide_zero`` and 128) would be a strong negative signal;
        padding with each channel's zero code makes the borders those of a zero-padded
        convolution (as :func:`~fluorofpga.microscope.sim_linear.wiener_realspace`).
        """
        h = self.halo
        if not h:
            return channels
        c, y, x = channels.shape
        zeros = self.codes.channel_zeros(c // 3)
        out = np.empty((c, y + 2 * h, x + 2 * h), np.uint8)
        out[:] = zeros[:, None, None]
        out[:, h:-h, h:-h] = channels
        return out

    def _run_tile(self, tile: np.ndarray) -> np.ndarray:
        out = self.accelerator.run(np.ascontiguousarray(np.moveaxis(tile, 0, -1)))
        return np.moveaxis(out, -1, 0)

    def close(self) -> None:
        """Release the accelerator."""
        self.accelerator.close()

    def __call__(self, group: np.ndarray, params: Sequence[AngleParameters]) -> np.ndarray:
        """Reconstruct one raw group with the (measured) parameters ``params``."""
        return self.unpack(self.accelerate(self.pack(group, params)))

    # -- the three stages of a group (a stream runs them on their own threads) -------------

    def pack(self, group: np.ndarray, params: Sequence[AngleParameters]) -> dict[str, Any]:
        """Pixel-in of one raw group: its input codes demodulated with ``params`` into the
        filter's channels, zero-signal borders added. Returns ``{"group", "q", "channels",
        "saturated"}`` for :meth:`accelerate`."""
        check_design(params, self.design)
        q = self.encode(group)
        regs = DemodRegisters.from_parameters(params, self.codes)
        channels, saturated = demodulate_int(q, regs)
        return {"group": np.asarray(group), "q": q, "channels": self._padded(channels),
                "saturated": saturated}

    def accelerate(self, packed: dict[str, Any]) -> dict[str, Any]:
        """The filter on a packed group, tile by tile (adds ``"o"``, its output codes)."""
        o = process_tiled(packed["channels"], self._run_tile, self.accelerator.tile_shape,
                          self.halo)
        packed["o"] = o[:, self.halo:-self.halo, self.halo:-self.halo] if self.halo else o
        return packed

    def unpack(self, packed: dict[str, Any]) -> np.ndarray:
        """Pixel-out of an accelerated group: ``(2Y, 2X)`` float64 ADU above the zero
        level, saturated pixels passed through on their 2×2 blocks (counts added)."""
        group, q, o = packed["group"], packed["q"], packed["o"]
        image = depth_to_space(self.codes.decode(o, float(self.step)))
        sat = (group >= self.adc_max).any(axis=0)
        if sat.any():  # the saturated value (above zero), passed through on its 2x2 block
            image[np.kron(sat, np.ones((2, 2))).astype(bool)] = (
                self.adc_max - float(self.zero_adu or 0.0))
        c = self.counts
        c["pixels"] += int(o.size)
        c["saturated"] += 4 * int(np.count_nonzero(sat))
        c["above_range"] += int(np.count_nonzero((q == self.codes.code_max).any(axis=0)
                                                 & ~sat))
        c["channel_saturated"] += packed["saturated"]
        c["residual_at_limit"] += int(np.count_nonzero((o == 0) | (o == self.codes.code_max)))
        return image
