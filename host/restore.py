"""Camera frame in, restored frame out: the host's half of the signal representation.

Per frame (see :mod:`fluorofpga.microscope.signal`): the per-pixel part of a calibration
(hot pixels repaired, per-pixel offset and gain mapped onto the sensor's median offset and
PTC gain) → the pixel-in table (ADU → GAT code) → the accelerator, tile by tile → the
pixel-out arithmetic and table (residual code → clean code → ADU) → the per-pixel maps
undone → the user's units: ``uint16`` ADU (rounded, clipped values counted) or
``float32`` ADU (no rounding). Pixels at the ADC maximum or above the input code's range
pass through unchanged and are counted; nothing is clipped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluorofpga.microscope.signal import CodeCounts, PixelMaps, SignalTables

from .accelerator import Accelerator
from .tiling import process_tiled

__all__ = ["OUTPUT_DTYPES", "FrameRestorer", "Packed"]

#: Output dtypes a restorer can write.
OUTPUT_DTYPES = ("uint16", "float32")


class FrameRestorer:
    """``restorer(frame) -> restored frame`` through an accelerator and the signal tables.

    Args:
        accelerator: the backend (emulate, rtlsim, pynq) of the bundle.
        tables: this camera's pixel-in / pixel-out tables (:class:`SignalTables`).
        halo: tile overlap, pixels (the network's receptive-field radius).
        calibration: optional :class:`~fluorofpga.microscope.Calibration` whose per-pixel
            maps (hot pixels, offset, gain map) are applied around the tables.
        dtype: ``"uint16"`` (rounded ADU) or ``"float32"`` (ADU, not rounded).
        threads: split the per-pixel table work of a frame over this many threads (numpy
            releases the GIL in its loops; worth it only with idle cores).

    Attributes:
        counts: pixels passed through or clipped, accumulated over all frames.

    One frame at a time: the code frames are work arrays reused from frame to frame (the
    returned frame is always new).
    """

    def __init__(
        self,
        accelerator: Accelerator,
        tables: SignalTables,
        halo: int,
        calibration: Any = None,
        dtype: str = "uint16",
        threads: int = 1,
    ) -> None:
        if dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output dtype {dtype!r} not supported; choose {OUTPUT_DTYPES}")
        spec = tables.spec
        if spec.in_bits != accelerator.in_bits or spec.out_bits != accelerator.out_bits:
            raise ValueError(
                f"signal codes ({spec.in_bits} -> {spec.out_bits} bits) do not match the "
                f"accelerator ({accelerator.in_bits} -> {accelerator.out_bits} bits)")
        self.accelerator = accelerator
        self.tables = tables
        self.halo = int(halo)
        self.calibration = calibration
        self.dtype = np.dtype(dtype)
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = int(threads)
        self.counts = CodeCounts()
        self.maps = PixelMaps(calibration, tables.adc_max) if calibration is not None else None
        self._buffers: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A work array kept between frames (code frames: never handed to the caller)."""
        key = (name, shape)
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != np.dtype(dtype):
            if len(self._buffers) > 8:  # frame size keeps changing: do not hoard memory
                self._buffers.clear()
            buf = self._buffers[key] = np.empty(shape, dtype)
        return buf

    def _check(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype.kind != "u" or frame.ndim != 2:
            raise ValueError(
                f"expected a 2-D unsigned-integer camera frame (raw ADU), got {frame.dtype} "
                f"with shape {frame.shape}")
        if self.calibration is not None:
            self.calibration.check_shape(frame.shape)
        return frame

    def to_uniform(self, frame: np.ndarray) -> np.ndarray:
        """Per-pixel part of the calibration: raw ADU → ADU of a uniform sensor (uint16)."""
        frame = self._check(frame)
        return frame if self.maps is None else self.maps.to_uniform(frame)

    def from_uniform(self, values: np.ndarray) -> np.ndarray:
        """Undo :meth:`to_uniform` on restored values (float64 ADU)."""
        return values if self.maps is None else self.maps.from_uniform(values)

    def codes(self, frame: np.ndarray) -> np.ndarray:
        """The accelerator's input codes of a raw frame (pixel-in)."""
        return self.tables.encode(self.to_uniform(frame))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Restore one raw ``(Y, X)`` frame; returns ``uint16`` or ``float32`` ADU."""
        return self.unpack(self.accelerate(self.pack(frame, reuse=True), reuse=True))

    # -- the three stages of a frame (a stream runs them on their own threads) -------------

    def stages(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """``[("pack", pack), ("accelerate", accelerate), ("unpack", unpack)]``.

        :class:`~fluorofpga.host.StreamPipeline` runs each on its own thread with a
        bounded queue between them, so frame n+1 is packed and frame n−1 unpacked while
        the accelerator works on frame n. Each frame in flight has its own work arrays.
        """
        return [("pack", self.pack), ("accelerate", self.accelerate), ("unpack", self.unpack)]

    def pack(self, frame: np.ndarray, reuse: bool = False) -> Packed:
        """Pixel-in of one raw frame: the per-pixel maps, then the input codes.

        ``reuse``: write into this restorer's work arrays (one frame at a time) rather
        than new ones (frames in flight on several threads).
        """
        frame = self._check(frame)
        uniform = frame
        if self.maps is not None:
            uniform = self.maps.to_uniform(
                frame, out=self._buffer("uniform", frame.shape, np.uint16) if reuse else None,
                threads=self.threads)
        q = self.tables.encode(
            uniform, out=self._buffer("q", frame.shape, self.tables.in_lut.dtype)
            if reuse else None, threads=self.threads)
        return Packed(frame, uniform, q)

    def accelerate(self, packed: Packed, reuse: bool = False) -> Packed:
        """The accelerator on a packed frame, tile by tile (``packed.r``: its output codes)."""
        acc = self.accelerator
        dtype = np.uint8 if acc.out_bits <= 8 else np.uint16
        out = self._buffer("r", packed.q.shape, dtype) if reuse else None
        packed.r = process_tiled(packed.q, acc, acc.tile_shape, self.halo, out=out)
        return packed

    def unpack(self, packed: Packed) -> np.ndarray:
        """Pixel-out of an accelerated frame: ``uint16`` or ``float32`` ADU (a new array);
        pass-through and clipped pixels added to :attr:`counts`."""
        if packed.r is None:
            raise ValueError("unpack() needs a frame that went through accelerate()")
        counts = CodeCounts()
        if self.maps is None:  # one lookup straight to the output dtype
            out = self.tables.decode(packed.uniform, packed.q, packed.r, counts,
                                     self.dtype.name, threads=self.threads)
        else:  # the table in float64, the maps undone, then the output dtype
            out = self.maps.decode(self.tables, packed.frame, packed.uniform, packed.q,
                                   packed.r, counts, self.dtype.name, threads=self.threads)
        self.counts.add(counts)
        return out


@dataclass
class Packed:
    """One frame between the stages: the raw frame, its uniform-sensor ADU, its input
    codes and (after :meth:`FrameRestorer.accelerate`) the accelerator's output codes."""

    frame: np.ndarray
    uniform: np.ndarray
    q: np.ndarray
    r: np.ndarray | None = None
