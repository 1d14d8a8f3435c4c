"""Raw SIM frames in, super-resolved image out: the host's half of a SIM bundle.

A SIM bundle's network (``task: "sim"``) takes a group of raw frames (``frames`` of them,
in the manifest's ``order``) as one channel each and returns ``upscale²`` sub-pixel
channels of the 2× image as clean GAT codes (signal kind ``gat-direct``). Per group:

1. each raw frame: the per-pixel part of the calibration (hot pixels, offset and gain
   maps), then the pixel-in table (ADU -> GAT code) — the same tables as the denoiser;
2. the accelerator, tile by tile with halo, channels-last tiles ``(th, tw, frames)`` in,
   ``(th, tw, 4)`` out;
3. the output table (code -> ADU, the algebraic inverse GAT) and the sub-pixel channels
   rearranged onto the 2× grid (:func:`depth_to_space`, the pixel shuffle), in the units
   of the raw frames: a uniform region of the SIM image has the value of the widefield
   image (the mean of the raw frames) there;
4. ``uint16`` (rounded, clipped values counted) or ``float32``.

Nothing clips silently: input pixels at the ADC maximum make their 2×2 output block the
saturated value (passed through, counted as ``saturated``), codes at the top of the input
range are counted as ``above_range``, outputs at the network's lowest or highest code as
``residual_at_limit``, and values clipped to ``uint16`` as ``clipped_output``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fluorofpga.microscope.signal import CodeCounts, PixelMaps, SignalTables
from fluorofpga.microscope.sim import depth_to_space

from .accelerator import Accelerator
from .restore import OUTPUT_DTYPES
from .tiling import process_tiled

__all__ = ["SimRestorer"]

_UINT16_MAX = 65535


class SimRestorer:
    """``restorer(group) -> SIM image`` through a SIM bundle's accelerator.

    Args:
        accelerator: the bundle's backend; ``in_channels`` must equal ``frames`` and
            ``out_channels`` ``upscale²``.
        tables: the camera's pixel-in / pixel-out tables for the bundle's ``gat-direct``
            representation.
        halo: tile overlap, pixels.
        frames: raw frames per reconstruction.
        upscale: output grid refinement (2).
        calibration: optional calibration whose per-pixel maps are applied to every raw
            frame; the output stays in the units of that uniform sensor (median offset, PTC
            gain): undoing one camera pixel's maps on its 2×2 block would print the
            sensor's fixed-pattern noise into the super-resolved image.
        dtype: ``"uint16"`` or ``"float32"``.

    Attributes:
        counts: pixels passed through or clipped, accumulated over all groups.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        tables: SignalTables,
        halo: int,
        frames: int = 3,
        upscale: int = 2,
        calibration: Any = None,
        dtype: str = "uint16",
    ) -> None:
        if dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output dtype {dtype!r} not supported; choose {OUTPUT_DTYPES}")
        if tables.spec.kind != "gat-direct":
            raise ValueError(f"a SIM reconstruction needs a 'gat-direct' signal, got "
                             f"{tables.spec.kind!r}")
        if accelerator.in_channels != frames or accelerator.out_channels != upscale**2:
            raise ValueError(
                f"accelerator takes {accelerator.in_channels} and returns "
                f"{accelerator.out_channels} values per pixel; this SIM bundle needs "
                f"{frames} frames in and {upscale**2} sub-pixels out")
        self.accelerator = accelerator
        self.tables = tables
        self.halo = int(halo)
        self.frames = int(frames)
        self.upscale = int(upscale)
        self.calibration = calibration
        self.maps = PixelMaps(calibration, tables.adc_max) if calibration is not None else None
        self.dtype = np.dtype(dtype)
        self.counts = CodeCounts()

    def _check(self, group: np.ndarray) -> np.ndarray:
        group = np.asarray(group)
        if group.dtype.kind != "u" or group.ndim != 3 or group.shape[0] != self.frames:
            raise ValueError(
                f"expected {self.frames} raw frames as an unsigned-integer (P, Y, X) array "
                f"(raw ADU), got {group.dtype} with shape {group.shape}")
        if self.calibration is not None:
            self.calibration.check_shape(group.shape[1:])
        return group

    def codes(self, group: np.ndarray) -> np.ndarray:
        """The accelerator's input codes of a raw group, ``(P, Y, X)`` (pixel-in)."""
        group = self._check(group)
        uniform = group if self.maps is None else np.stack(
            [self.maps.to_uniform(f) for f in group])
        return self.tables.encode(np.ascontiguousarray(uniform))

    def _run_tile(self, tile: np.ndarray) -> np.ndarray:
        """One ``(P, th, tw)`` code tile through the accelerator -> ``(4, th, tw)``."""
        out = self.accelerator.run(np.ascontiguousarray(np.moveaxis(tile, 0, -1)))
        return np.moveaxis(out, -1, 0)

    def __call__(self, group: np.ndarray) -> np.ndarray:
        """Reconstruct one group of raw ``(P, Y, X)`` frames -> ``(2Y, 2X)`` image."""
        return self.unpack(self.accelerate(self.pack(group)))

    def stages(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """``pack`` -> ``accelerate`` -> ``unpack``, for a stream to run on their own
        threads (as :meth:`FrameRestorer.stages`)."""
        return [("pack", self.pack), ("accelerate", self.accelerate), ("unpack", self.unpack)]

    def pack(self, group: np.ndarray) -> dict[str, np.ndarray]:
        """Pixel-in of one raw group: ``{"group", "q"}`` (checked, its input codes)."""
        group = np.asarray(group)
        return {"group": group, "q": self.codes(group)}  # codes() checks the group

    def accelerate(self, packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The network on a packed group, tile by tile (adds ``"o"``, its output codes)."""
        packed["o"] = process_tiled(packed["q"], self._run_tile, self.accelerator.tile_shape,
                                    self.halo)
        return packed

    def unpack(self, packed: dict[str, np.ndarray]) -> np.ndarray:
        """Pixel-out of an accelerated group onto the 2x grid (counts added)."""
        group, q, o = packed["group"], packed["q"], packed["o"]
        spec, counts = self.tables.spec, CodeCounts()
        values = self.tables.out_lut[o.astype(np.intp)]  # float64 ADU of the uniform sensor
        counts.pixels += int(o.size)
        counts.residual_at_limit += int(np.count_nonzero((o == 0) | (o == spec.out_max)))
        image = depth_to_space(values, self.upscale)
        sat = (group >= self.tables.adc_max).any(axis=0)
        counts.saturated += int(np.count_nonzero(sat)) * self.upscale**2
        counts.above_range += int(np.count_nonzero((q >= spec.in_max).any(axis=0) & ~sat))
        if sat.any():  # the saturated value, passed through on its 2x2 block
            block = np.ones((self.upscale, self.upscale), dtype=bool)
            image[np.kron(sat, block).astype(bool)] = float(self.tables.adc_max)
        if self.dtype == np.uint16:
            rounded = np.rint(image)
            clipped = (rounded < 0) | (rounded > _UINT16_MAX)
            counts.clipped_output += int(np.count_nonzero(clipped))
            out = np.clip(rounded, 0, _UINT16_MAX).astype(np.uint16)
        else:
            out = image.astype(np.float32)
        self.counts.add(counts)
        return out
