"""``pynq`` backend: the accelerator on a PYNQ board (PYNQ 4.0, Python 3.10, numpy 1.x).

The overlay is the bundle's bitstream (``files["bitstream"]``, its ``.hwh`` beside it) with
an AXI DMA (:data:`DMA_NAME`, simple register mode) in front of our kernel
(:data:`KERNEL_NAME`; its RTL is ``hw/rtl/fluorofpga_ctrl.sv`` around the network, and
``fluorofpga compile`` writes the Vivado script of this block design): MM2S streams input
codes into the kernel, S2MM brings the output
codes back (the denoiser's residual codes, a SIM bundle's sub-pixel codes). ``pynq`` is
imported lazily, so importing :mod:`fluorofpga.host` never needs it.

Tiles and DMA packing. A 1-channel bundle (the denoiser) streams ``(th, tw)`` tiles; a SIM
bundle streams channels-last tiles ``(th, tw, C)``: ``C_in`` = the bundle's ``frames``
(the learned 3-frame bundle: 3 GAT codes of the raw frames; a Wiener-SIM bundle: the 9
demodulated channels the host computes) and ``C_out`` = ``upscale²`` (4 sub-pixels). The
buffers hold ``th·tw·C`` codes, pixel-major and channel-minor (row-major ``(th, tw, C)``),
one byte per code (two, little-endian, above 8 bits). That is FINN's stream order: a
pixel's channels travel in one word (or one word per beat when the first / last layer
folds them), channel 0 in the least significant bits (``hw.stitch.pack_channels``), so
with 8-bit codes (every shipped bundle) the little-endian AXI stream's bytes are exactly
these bytes in memory (codes of 9..15 bits would need the board design to pad FINN's
packed values to 16-bit lanes); the emulator and the ``rtlsim`` backend take and return
the same ``(th, tw, C)`` tiles.

Transfers are split at the DMA's maximum length, rounded down to whole pixels (and to the
DMA's address alignment): each MM2S transfer ends on a pixel boundary, and the kernel's
output packet (``REG_PACKET_BYTES``) is a whole number of output pixels, so each S2MM
transfer of that length ends on the kernel's TLAST.

Device I/O follows PYNQ's own driver: buffers from ``pynq.allocate`` (allocated once: two
input and two output buffers, so tile n+1 is sent while the PL works on tile n),
``flush()`` before a send, ``invalidate()`` after a receive, ``sendchannel.transfer()`` /
``recvchannel.transfer()`` split at the DMA's maximum transfer length. Completion is
polled with a deadline (PYNQ's ``wait()`` spins forever on a hung PL), and a DMA error or
timeout leaves the accelerator faulted until :meth:`PynqAccelerator.reset`.

Kernel register map (AXI4-Lite ``s_axi_control``, 32-bit words, byte offsets):

=====================  ======  =========================================================
name                   offset  meaning
=====================  ======  =========================================================
``REG_CTRL``           0x000   W: ``CTRL_SOFT_RESET`` (bit 0, self-clearing) drops the
                               pixels in flight; registers and tables survive
``REG_STATUS``         0x004   R: ``STATUS_IDLE`` (bit 0) no tile inside the kernel,
                               ``STATUS_IN_LUT`` / ``STATUS_OUT_LUT`` (bits 1, 2) tables
                               loaded
``REG_ID``             0x008   R: :data:`KERNEL_ID` (identifies a fluorofpga kernel)
``REG_TILE``           0x00C   R: compiled tile, ``height << 16 | width``
``REG_BITS``           0x010   R: ``in_bits | out_bits << 8``
``REG_PACKET_BYTES``   0x014   RW: the output stream's TLAST every this many bytes (and
                               at the end of each tile), so each S2MM transfer of that
                               length ends on a packet boundary; 0 = once per tile
``REG_TILES_DONE``     0x018   R: tiles completed since the last reset
``REG_IN_LUT_COUNT``   0x01C   W: entries just written to the pixel-in table (commits it)
``REG_OUT_LUT_COUNT``  0x020   W: entries just written to the pixel-out table (commits it)
``REG_CHANNELS``       0x024   R: values per pixel, ``in_channels | out_channels << 8``
                               (``0x0101`` for a 1-channel kernel, ``0x0403`` for the
                               learned 3-frame SIM bundle, ``0x0409`` for a Wiener-SIM
                               bundle). A kernel from before this register reads 0
                               (its AXI4-Lite register file returns 0 for an undecoded
                               word, as ``tests/pynq_standin.py`` models): those kernels
                               stream 1-channel tiles only, so 0 is taken as 1 -> 1
                               (accepted for a 1-channel bundle, refused for a SIM one)
``REG_IN_LUT``         0x40000 window: pixel-in table, one word per ADU 0..65535:
                               ``code | saturated << in_bits`` (``pixel_in.sv`` format)
``REG_OUT_LUT``        0x80000 window: pixel-out table, one float32 word per clean code
                               (``out_lut``, ``pixel_out.sv`` with ``OUT_FLOAT=1``)
=====================  ======  =========================================================

The driver checks ``REG_ID``, ``REG_TILE``, ``REG_BITS`` and ``REG_CHANNELS`` against the
bundle before it streams a tile, so a bitstream of another bundle is refused at open.

In this release the data path carries codes (input codes in, output codes out: the
pixel kernels pass through and the host applies the tables, as ``FrameRestorer``,
``SimRestorer`` and ``WienerSimRestorer`` do); a 1-channel kernel's tables are still written
(the kernel ``fluorofpga compile`` builds, ``hw/rtl/fluorofpga_ctrl.sv``, takes the table
windows and discards them, its STATUS bits recording the commit), so a later kernel with
table memories needs no driver change. A SIM kernel has no table memories (no SIM pixel kernels
are built: one pixel-in table per raw frame, and the Wiener bundle's linear codes and
demodulation, live on the host), so :meth:`PynqAccelerator.load_tables` refuses a
multi-channel accelerator rather than write a denoiser's table where none is used.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .accelerator import (
    Accelerator,
    AcceleratorBusy,
    AcceleratorError,
    BoardNotFound,
    _unsigned_dtype,
)

__all__ = [
    "DMA_NAME",
    "KERNEL_ID",
    "KERNEL_NAME",
    "PynqAccelerator",
    "pixel_in_words",
    "pixel_out_words",
]

#: Instance names in the block design (the ``.hwh``).
DMA_NAME = "axi_dma_0"
KERNEL_NAME = "fluorofpga_0"

# Kernel registers (byte offsets on s_axi_control), see the module docstring.
REG_CTRL = 0x000
REG_STATUS = 0x004
REG_ID = 0x008
REG_TILE = 0x00C
REG_BITS = 0x010
REG_PACKET_BYTES = 0x014
REG_TILES_DONE = 0x018
REG_IN_LUT_COUNT = 0x01C
REG_OUT_LUT_COUNT = 0x020
REG_CHANNELS = 0x024
REG_IN_LUT = 0x40000
REG_OUT_LUT = 0x80000
#: Bytes of the kernel's register space.
KERNEL_RANGE = 0x100000
#: Entries of the pixel-in table window (one per 16-bit ADU).
IN_LUT_ENTRIES = 1 << 16
#: Maximum entries of the pixel-out table window.
OUT_LUT_ENTRIES = 1 << 16

CTRL_SOFT_RESET = 0x1
STATUS_IDLE = 0x1
STATUS_IN_LUT = 0x2
STATUS_OUT_LUT = 0x4
#: ``REG_ID`` of a fluorofpga kernel: ASCII "FLF1".
KERNEL_ID = 0x464C4631

# AXI DMA (PG021) registers used for the reset, beyond PYNQ's channel driver.
DMA_MM2S_DMACR = 0x00
DMA_S2MM_DMACR = 0x30
DMACR_RESET = 0x4
DMASR_ERRORS = {0x10: "internal error (transfer length or TLAST mismatch)",
                0x20: "slave error (memory access)", 0x40: "decode error (bad address)"}
DMA_STATUS_OFFSET = 0x04

#: Seconds a tile may take before the DMA counts as hung.
DEFAULT_TIMEOUT_S = 5.0
#: Seconds the DMA / kernel soft reset may take.
RESET_TIMEOUT_S = 1.0


def pixel_in_words(tables: Any) -> np.ndarray:
    """The pixel-in table as ``REG_IN_LUT`` words (``uint32``, :data:`IN_LUT_ENTRIES`).

    Entry ``i`` is ``in_lut[min(i, adc_max)]`` with the saturated flag (bit ``in_bits``)
    set for ``i >= adc_max``: the format of ``hw/rtl/pixel_in.sv``.
    """
    idx = np.arange(IN_LUT_ENTRIES, dtype=np.int64)
    code = np.asarray(tables.in_lut)[np.minimum(idx, tables.adc_max)].astype(np.uint32)
    saturated = (idx >= tables.adc_max).astype(np.uint32)
    return code | (saturated << np.uint32(tables.spec.in_bits))


def pixel_out_words(tables: Any) -> np.ndarray:
    """The pixel-out table as ``REG_OUT_LUT`` words: ``out_lut`` as float32 bit patterns."""
    values = np.asarray(tables.out_lut, dtype=np.float64)
    if values.size > OUT_LUT_ENTRIES:
        raise ValueError(f"out_lut has {values.size} entries; the kernel holds "
                         f"{OUT_LUT_ENTRIES}")
    return values.astype(np.float32).view(np.uint32)


@dataclass
class _Chunk:
    """One DMA transfer: ``nbytes`` from byte ``start`` of buffer ``slot`` of ``tile``."""

    tile: int
    slot: int
    start: int
    nbytes: int


class _Channel:
    """Book-keeping for one PYNQ DMA channel: queued transfers and the one in progress."""

    def __init__(self, name: str, channel: Any, buffers: list[Any]) -> None:
        self.name = name
        self.channel = channel
        self.buffers = buffers
        self.queue: deque[_Chunk] = deque()
        self.active: _Chunk | None = None

    def check_error(self) -> None:
        status = int(self.channel._mmio.read(self.channel._offset + DMA_STATUS_OFFSET))
        if self.channel.error:
            what = "; ".join(v for k, v in DMASR_ERRORS.items() if status & k) or "error"
            raise AcceleratorError(
                f"DMA {self.name} channel error (DMASR=0x{status:08x}: {what}); the tiles in "
                "flight are lost: reset with acc.reset() and submit them again")

    def step(self) -> _Chunk | None:
        """Complete the active transfer if the engine is idle, issue the next; return the
        completed chunk (or None)."""
        done = None
        if self.active is not None:
            self.check_error()
            if not self.channel.idle:
                return None
            self.channel.wait()  # idle: returns at once (PYNQ's bookkeeping, invalidate)
            done, self.active = self.active, None
            if int(self.channel.transferred) != done.nbytes:
                raise AcceleratorError(
                    f"DMA {self.name} moved {int(self.channel.transferred)} of {done.nbytes} "
                    "bytes: the kernel's packet length (REG_PACKET_BYTES) does not match; "
                    "reset with acc.reset()")
        if self.active is None and self.queue:
            chunk = self.queue.popleft()
            self.channel.transfer(self.buffers[chunk.slot], chunk.start, chunk.nbytes)
            self.active = chunk
        return done

    def clear(self) -> None:
        self.queue.clear()
        self.active = None


@dataclass
class _InFlight:
    tile: int
    slot: int
    pending: int  # receive chunks not yet completed


class PynqAccelerator(Accelerator):
    """The bundle's bitstream on a PYNQ board, driven through the AXI DMA.

    Args:
        bitstream: path of the ``.bit`` (the ``.hwh`` of the same name beside it).
        tile_shape, in_bits, out_bits: from the bundle manifest.
        in_channels, out_channels: values per pixel in and out (1, 1 for the denoiser; a
            SIM bundle's ``frames`` and ``upscale²``): tiles are then channels-last
            ``(th, tw, C)`` (see the module docstring for the DMA packing).
        tables: optional ``SignalTables`` loaded into the kernel's tables (:meth:`load_tables`;
            1-channel kernels only).
        timeout_s: seconds a tile may take before the DMA counts as hung.
        max_transfer_bytes: cap of one DMA transfer; default the DMA's own maximum
            (PYNQ's ``buffer_max_size``, from the IP parameter ``c_sg_length_width``).
        download: program the PL (False: the overlay is already loaded).
        device: the ``pynq.Device`` (default: PYNQ's active device).

    Up to :attr:`max_in_flight` (2) tiles may be in flight: ``submit(a); submit(b);
    wait() -> a; submit(c); wait() -> b ...`` keeps the PL busy while the host packs the
    next tile. :meth:`run` (one tile) works as for every backend.

    Attributes:
        max_transfer_bytes: the DMA's maximum transfer, rounded down to its alignment.
        send_bytes: bytes of each MM2S transfer but a tile's last (whole input pixels).
        packet_bytes: the kernel's output packet (``REG_PACKET_BYTES``) and the length of
            each S2MM transfer but a tile's last (whole output pixels).
    """

    name = "pynq"
    max_in_flight = 2

    def __init__(
        self,
        bitstream: str | Path,
        tile_shape: tuple[int, int],
        in_bits: int = 8,
        out_bits: int = 8,
        tables: Any = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_transfer_bytes: int | None = None,
        download: bool = True,
        device: Any = None,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__(tile_shape, in_bits, out_bits, in_channels=in_channels,
                         out_channels=out_channels)
        self.timeout_s = float(timeout_s)
        self._buffers: list[Any] = []
        self._queue: deque[_InFlight] = deque()
        self._fault: str | None = None
        self._tiles_submitted = 0
        pynq = _import_pynq()
        bitstream = Path(bitstream)
        if not bitstream.is_file():
            raise BoardNotFound(f"bitstream {bitstream} not found")
        if not bitstream.with_suffix(".hwh").is_file():
            raise BoardNotFound(f"{bitstream.with_suffix('.hwh').name} missing beside "
                                f"{bitstream}; copy the bundle again")
        if device is None:
            device = _active_device(pynq)
        self.device = device
        self.overlay = pynq.Overlay(str(bitstream), download=download, device=device)
        try:
            self.dma = getattr(self.overlay, DMA_NAME)
            self.kernel = getattr(self.overlay, KERNEL_NAME)
        except AttributeError as e:
            raise AcceleratorError(
                f"{bitstream.name}: no {DMA_NAME!r} / {KERNEL_NAME!r} in the overlay ({e}); is "
                "the bitstream the bundle's? run `fluorofpga verify`") from None
        self._check_kernel(bitstream)
        limit = int(self.dma.buffer_max_size)
        if max_transfer_bytes is not None:
            limit = min(limit, int(max_transfer_bytes))
        align = max(int(self.dma.sendchannel._align), int(self.dma.recvchannel._align), 1)
        self.max_transfer_bytes = limit - limit % align
        if self.max_transfer_bytes < align:
            raise AcceleratorError(f"DMA maximum transfer {limit} B is below its alignment "
                                   f"{align} B")
        th, tw = self.tile_shape
        in_dtype, out_dtype = _unsigned_dtype(self.in_bits), _unsigned_dtype(self.out_bits)
        in_pixel = self.in_channels * in_dtype.itemsize  # bytes of one pixel in / out
        out_pixel = self.out_channels * out_dtype.itemsize
        self.send_bytes = self._whole_pixels(in_pixel, align, "input")
        self.packet_bytes = self._whole_pixels(out_pixel, align, "output")
        for dtype, channels in ((in_dtype, self.in_channels), (in_dtype, self.in_channels),
                                (out_dtype, self.out_channels),
                                (out_dtype, self.out_channels)):
            self._buffers.append(pynq.allocate(shape=(th * tw * channels,), dtype=dtype,
                                               target=device))
        self._in_bufs, self._out_bufs = self._buffers[:2], self._buffers[2:]
        self._send = _Channel("MM2S (send)", self.dma.sendchannel, self._in_bufs)
        self._recv = _Channel("S2MM (receive)", self.dma.recvchannel, self._out_bufs)
        self.send_bytes = min(self.send_bytes, self._in_bufs[0].nbytes)
        self._packet = self.packet_bytes = min(self.packet_bytes, self._out_bufs[0].nbytes)
        self.kernel.write(REG_PACKET_BYTES, int(self._packet))
        if tables is not None:
            try:
                self.load_tables(tables)
            except BaseException:
                self.close()  # the DMA buffers are not left behind
                raise

    @classmethod
    def from_bundle(cls, bundle: Any, **kwargs: Any) -> PynqAccelerator:
        """Open the accelerator of a :class:`~fluorofpga.host.Bundle` (bitstream in its files).

        Any bundle: the denoiser (1 channel in and out), the learned SIM bundle
        (``frames`` GAT codes in, ``upscale²`` sub-pixel codes out) and the Wiener-SIM
        bundle (its 9 demodulated channels in, 4 out); bits, tile and channels come from
        the manifest, as for the ``emulate`` backend, and are checked against the kernel's
        registers. A SIM bundle's tables stay on the host (``SimRestorer``,
        ``WienerSimRestorer``): pass no ``tables`` for it.

        Raises:
            BoardNotFound: the bundle has no bitstream, ``pynq`` is missing or it finds no
                device.
            AcceleratorError: the bitstream's kernel does not match the bundle.
        """
        if "bitstream" not in bundle.manifest.get("files", {}):
            raise BoardNotFound(
                f"bundle {bundle.name} has no bitstream (it was built without Vivado)")
        frames, upscale = int(bundle.frames), int(bundle.upscale)
        return cls(bundle.file("bitstream"), bundle.tile_shape, bundle.in_bits,
                   bundle.out_bits, in_channels=frames, out_channels=upscale * upscale,
                   **kwargs)

    # -- device set-up ---------------------------------------------------------------------

    def _whole_pixels(self, pixel: int, align: int, end: str) -> int:
        """The longest transfer of whole ``pixel``-byte pixels within the DMA's maximum,
        a multiple of its address alignment ``align`` (so the next transfer's start is
        aligned too)."""
        unit = math.lcm(pixel, align)
        if unit > self.max_transfer_bytes:
            raise AcceleratorError(
                f"DMA maximum transfer {self.max_transfer_bytes} B holds no whole number "
                f"of {end} pixels ({pixel} B each, {align} B alignment): the block design's "
                "DMA (c_sg_length_width) is too small for this bundle")
        return self.max_transfer_bytes - self.max_transfer_bytes % unit

    def _check_kernel(self, bitstream: Path) -> None:
        ident = int(self.kernel.read(REG_ID))
        hint = "is the bitstream the bundle's? run `fluorofpga verify`"
        if ident != KERNEL_ID:
            raise AcceleratorError(f"{bitstream.name}: {KERNEL_NAME} reads ID 0x{ident:08x}, "
                                   f"expected 0x{KERNEL_ID:08x}; {hint}")
        tile = int(self.kernel.read(REG_TILE))
        bits = int(self.kernel.read(REG_BITS))
        got = ((tile >> 16) & 0xFFFF, tile & 0xFFFF, bits & 0xFF, (bits >> 8) & 0xFF)
        want = (*self.tile_shape, self.in_bits, self.out_bits)
        if got != want:
            raise AcceleratorError(
                f"{bitstream.name}: kernel compiled for tile {got[:2]} and {got[2]} -> "
                f"{got[3]} bits, the bundle says tile {want[:2]} and {want[2]} -> {want[3]} "
                f"bits; {hint}")
        channels = int(self.kernel.read(REG_CHANNELS))
        want_ch = (self.in_channels, self.out_channels)
        if channels == 0 and want_ch != (1, 1):
            raise AcceleratorError(
                f"{bitstream.name}: the kernel has no channel register (REG_CHANNELS reads "
                f"0): it predates multi-channel streaming and takes 1-channel tiles only, "
                f"the bundle needs {want_ch[0]} -> {want_ch[1]} channels per pixel; {hint}")
        got_ch = (1, 1) if channels == 0 else (channels & 0xFF, (channels >> 8) & 0xFF)
        if got_ch != want_ch:
            raise AcceleratorError(
                f"{bitstream.name}: kernel compiled for {got_ch[0]} -> {got_ch[1]} channels "
                f"per pixel (REG_CHANNELS 0x{channels:04x}), the bundle needs {want_ch[0]} "
                f"-> {want_ch[1]}; {hint}")

    def load_tables(self, tables: Any) -> None:
        """Write a camera's ``SignalTables`` into the kernel's pixel-in / pixel-out tables.

        Load between tiles (nothing in flight): a tile inside the kernel may see either
        table.

        Raises:
            ValueError: a multi-channel (SIM) accelerator: its kernel has no tables, the
                host applies them (``SimRestorer``, ``WienerSimRestorer``); or the tables
                encode another code width.
        """
        if (self.in_channels, self.out_channels) != (1, 1):
            raise ValueError(
                f"{self.name}: a {self.in_channels} -> {self.out_channels} channel (SIM) "
                "kernel has no pixel tables: the host applies a SIM bundle's tables "
                "(SimRestorer / WienerSimRestorer); load none")
        if self._queue:
            raise AcceleratorBusy(self.name)
        if tables.spec.in_bits != self.in_bits:
            raise ValueError(f"tables encode {tables.spec.in_bits}-bit codes, the kernel "
                             f"takes {self.in_bits}")
        for base, count_reg, words in ((REG_IN_LUT, REG_IN_LUT_COUNT, pixel_in_words(tables)),
                                       (REG_OUT_LUT, REG_OUT_LUT_COUNT,
                                        pixel_out_words(tables))):
            self.kernel.mmio.write(base, np.ascontiguousarray(words, "<u4").tobytes())
            self.kernel.write(count_reg, int(words.size))

    # -- submit / wait with two tiles in flight ---------------------------------------------

    def submit(self, tile: np.ndarray) -> None:
        """Validate ``tile`` and send it; up to :attr:`max_in_flight` tiles may be in flight.

        Raises:
            ValueError: bad dtype, shape or values (as every backend).
            AcceleratorBusy: :attr:`max_in_flight` tiles are in flight; call :meth:`wait`.
            AcceleratorError: closed, or faulted (DMA error or timeout): call :meth:`reset`.
        """
        if self._closed:
            raise AcceleratorError(f"{self.name}: accelerator is closed; create a new one")
        if self._fault is not None:
            raise AcceleratorError(f"{self.name}: {self._fault}; call acc.reset() first")
        if len(self._queue) >= self.max_in_flight:
            raise AcceleratorBusy(self.name)
        tile = self._validate(tile)
        self._start(tile)
        self._in_flight = True

    def wait(self) -> np.ndarray:
        """Block until the oldest tile in flight is done and return its output tile."""
        if not self._queue:
            raise AcceleratorError(
                f"{self.name}: nothing in flight; call submit(tile) before wait()")
        try:
            out = self._finish()
        finally:
            self._in_flight = bool(self._queue)
        return self._check_output(out)

    def _compute(self, tile: np.ndarray) -> np.ndarray:
        self._start(tile)
        return self._finish()

    @staticmethod
    def _chunks(tile: int, slot: int, nbytes: int, step: int) -> list[_Chunk]:
        return [_Chunk(tile, slot, s, min(step, nbytes - s)) for s in range(0, nbytes, step)]

    def _start(self, tile: np.ndarray) -> None:
        slot = self._tiles_submitted % 2
        index = self._tiles_submitted
        self._tiles_submitted += 1
        buf = self._in_bufs[slot]
        np.copyto(buf, tile.reshape(-1))
        buf.flush()
        recv = self._chunks(index, slot, self._out_bufs[slot].nbytes, self.packet_bytes)
        self._recv.queue.extend(recv)
        self._send.queue.extend(self._chunks(index, slot, buf.nbytes, self.send_bytes))
        self._queue.append(_InFlight(index, slot, len(recv)))
        self._guarded(self._pump)

    def _pump(self) -> None:
        """Advance both channels as far as the hardware allows now, without blocking."""
        progress = True
        while progress:
            progress = False
            for channel in (self._recv, self._send):  # receive first: the PL never backs up
                busy_before = channel.active
                done = channel.step()
                if done is not None and channel is self._recv:
                    for record in self._queue:
                        if record.tile == done.tile:
                            record.pending -= 1
                progress = progress or done is not None or (
                    busy_before is None and channel.active is not None)

    def _finish(self) -> np.ndarray:
        record = self._queue[0]
        deadline = time.monotonic() + self.timeout_s
        polls = 0
        while True:
            self._guarded(self._pump)
            if record.pending == 0:
                break
            if time.monotonic() > deadline:
                self._fail(f"DMA did not finish within {self.timeout_s:g} s")
                raise AcceleratorError(
                    f"DMA did not finish within {self.timeout_s:g} s: is the bitstream the "
                    "bundle's? run `fluorofpga verify`; reset with acc.reset()")
            polls += 1
            if polls > 100:
                time.sleep(50e-6)
        self._queue.popleft()
        out = self._out_bufs[record.slot]
        out.invalidate()
        return np.array(out).reshape(self.out_shape)

    def _guarded(self, step: Any) -> None:
        try:
            step()
        except AcceleratorError as e:
            self._fail(str(e))
            raise
        except RuntimeError as e:  # PYNQ's channel driver reports DMA faults this way
            self._fail(str(e))
            raise AcceleratorError(f"DMA error: {e}; reset with acc.reset()") from e

    def _fail(self, why: str) -> None:
        self._fault = why.split(";")[0]
        self._queue.clear()
        self._send.clear()
        self._recv.clear()
        self._in_flight = False

    # -- recovery and release -----------------------------------------------------------------

    def reset(self) -> None:
        """Recover from a DMA error or a hang without restarting Python.

        Resets the AXI DMA (both channels, ``DMACR.Reset``), restarts its channels, soft-
        resets the kernel (``REG_CTRL``: pixels in flight dropped, tables kept) and forgets
        the tiles in flight (submit them again).
        """
        if self._closed:
            raise AcceleratorError(f"{self.name}: accelerator is closed; create a new one")
        mmio = self.dma.mmio
        mmio.write(DMA_MM2S_DMACR, DMACR_RESET)
        deadline = time.monotonic() + RESET_TIMEOUT_S
        while int(mmio.read(DMA_MM2S_DMACR)) & DMACR_RESET:
            if time.monotonic() > deadline:
                raise AcceleratorError(
                    f"the AXI DMA did not leave reset within {RESET_TIMEOUT_S:g} s: reload the "
                    "bitstream (create the accelerator again)")
        self.dma.sendchannel.start()
        self.dma.recvchannel.start()
        self.kernel.write(REG_CTRL, CTRL_SOFT_RESET)
        self.kernel.write(REG_PACKET_BYTES, int(self._packet))
        self._send.clear()
        self._recv.clear()
        self._queue.clear()
        self._fault = None
        self._in_flight = False

    def _release(self) -> None:
        for channel in (getattr(self, "_send", None), getattr(self, "_recv", None)):
            if channel is not None:
                channel.clear()
        for buf in self._buffers:
            buf.freebuffer()
        self._buffers = []
        self._in_bufs = self._out_bufs = []
        self._queue.clear()


def _import_pynq() -> Any:
    try:
        import pynq
    except ImportError as e:
        raise BoardNotFound(f"the 'pynq' package is not installed: {e}") from None
    return pynq


def _active_device(pynq: Any) -> Any:
    try:
        return pynq.Device.active_device
    except RuntimeError as e:
        raise BoardNotFound(f"pynq found no device ({e})") from None
