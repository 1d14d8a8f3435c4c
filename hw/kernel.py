"""The board kernel: the network behind the PYNQ driver's register map and DMA streams.

What the bitstream holds between the AXI DMA and the PS (``fluorofpga_kernel``, generated
from ``hw/templates/kernel.sv.j2``): ``hw/rtl/fluorofpga_ctrl.sv`` (the AXI4-Lite register
file of :mod:`fluorofpga.host.pynq_backend`: ID, tile, bits, channels, packet length,
tiles done, idle, soft reset, table commits) around the network-only stitched design of
:func:`fluorofpga.hw.stitch.generate_accelerator` (codes in, codes out: the driver's code
mode, the host applies the camera's tables). One pixel per stream beat, in the DMA's byte
order: a pixel's values are packed as the driver packs them (one byte per code, two above
8 bits; channel 0 in the least significant byte), so the stream must be a width the AXI DMA
offers (8, 16, 32, ... bits) and equal to the network's word padded to bytes; a pixel may
take several beats (a SIM network: one channel a beat), as FINN folds it.

:func:`simulate_kernel` runs it in Verilator through cocotb (``hw/cocotb_kernel.py``): the
registers read and written at the driver's offsets over AXI4-Lite, tiles streamed with
random idle and backpressure, output packets cut by TLAST, a soft reset in the middle of a
tile.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rtlsim import render_template, run_cocotb_job, verilator_build
from .stitch import (
    StitchedDesign,
    StitchError,
    fresh_run_dir,
    pack_channels,
    unpack_channels,
)

__all__ = ["DMA_INSTANCE", "KERNEL_ID", "KERNEL_INSTANCE", "KERNEL_RANGE", "KERNEL_TOP",
           "REGISTERS", "KernelDesign", "KernelRun", "generate_kernel", "simulate_kernel"]

#: Module name of the board kernel (the block design's ``fluorofpga_0`` instance).
KERNEL_TOP = "fluorofpga_kernel"
#: The kernel's register map, byte offsets on ``s_axi_control`` as ``fluorofpga_ctrl.sv``
#: decodes them; ``fluorofpga.host.pynq_backend`` drives the same (``REG_<name>``; a test
#: ties the two, so the driver and the RTL cannot drift apart).
REGISTERS = {"CTRL": 0x000, "STATUS": 0x004, "ID": 0x008, "TILE": 0x00C, "BITS": 0x010,
             "PACKET_BYTES": 0x014, "TILES_DONE": 0x018, "IN_LUT_COUNT": 0x01C,
             "OUT_LUT_COUNT": 0x020, "CHANNELS": 0x024, "IN_LUT": 0x40000,
             "OUT_LUT": 0x80000}
#: ``REG_ID``'s value ("FLF1")
KERNEL_ID = 0x464C4631
#: ``REG_CTRL`` bit 0: soft reset
CTRL_SOFT_RESET = 0x1
#: the kernel's address range in the block design (1 MiB: the table windows)
KERNEL_RANGE = 0x100000
#: instance names in the block design (the .hwh the driver reads)
DMA_INSTANCE = "axi_dma_0"
KERNEL_INSTANCE = "fluorofpga_0"
CTRL_SOURCE = Path(__file__).parent / "rtl" / "fluorofpga_ctrl.sv"
COCOTB_MODULE = "fluorofpga.hw.cocotb_kernel"
JOB_ENV = "FLUOROFPGA_KERNEL_JOB"
#: AXI stream widths the AXI DMA (PG021) offers for MM2S / S2MM, bits
DMA_STREAM_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class KernelDesign:
    """A generated board kernel.

    Attributes:
        top: its module name.
        net: the network-only stitched design inside it.
        sources: every source file, the kernel's last.
        in_width, out_width: ``s_axis`` / ``m_axis`` data widths, bits (one beat).
    """

    top: str
    net: StitchedDesign
    sources: list[Path]
    in_width: int
    out_width: int

    @property
    def out_pixel_bytes(self) -> int:
        """Bytes of one output pixel on the stream (the driver's packet unit)."""
        return self.out_width // 8 * self.net.out_beats


def _dma_width(end: str, word_bits: int, value_bits: int, channels: int, beats: int) -> int:
    """The DMA stream width of one beat as the driver packs a pixel, or StitchError.

    The driver writes a pixel's values channels-last, one byte each (two above 8 bits), so
    a beat of ``channels / beats`` values is that many byte lanes.
    """
    lane = 8 if value_bits <= 8 else 16
    per_beat = channels // beats
    width = lane * per_beat
    if per_beat > 1 and value_bits != lane:
        raise StitchError(f"network {end}: {per_beat} values of {value_bits} bits a beat; "
                          f"the driver packs {lane}-bit lanes and the board kernel has no "
                          "converter between them")
    if width not in DMA_STREAM_WIDTHS:
        raise StitchError(f"network {end}: a beat of {per_beat} values is {width} bits on "
                          f"the DMA; the AXI DMA streams {DMA_STREAM_WIDTHS} bits and the "
                          "board kernel has no width converter yet")
    if word_bits > width:
        raise StitchError(f"network {end}: {word_bits}-bit words do not fit the {width}-bit "
                          "DMA stream")
    return width


def generate_kernel(net: StitchedDesign, top: str = KERNEL_TOP) -> KernelDesign:
    """Write the board kernel around a network-only stitched design (into its folder).

    Args:
        net: from ``generate_accelerator(..., params=None)`` (no pixel kernels, no
            ``sim_demod``: the driver streams codes); a SIM network's pixel is several
            beats (one channel each), as FINN folds its first and last layer.
        top: module name.

    Raises:
        StitchError: a design with pixel kernels or demodulation, or a beat whose values
            packed as the driver packs them are not an AXI DMA stream width.
    """
    if net.params is not None or net.demod:
        raise StitchError("the board kernel wraps a network-only design (the driver streams "
                          "codes); generate_accelerator(..., params=None, demod=False)")
    in_w = _dma_width("input", net.in_bits, net.in_value_bits, net.in_channels, net.in_beats)
    out_w = _dma_width("output", net.out_bits, net.out_value_bits, net.out_channels,
                       net.out_beats)
    th, tw = net.tile_shape
    path = net.out_dir / f"{top}.sv"
    path.write_text(render_template(
        "kernel.sv.j2", top=top, net=net.top, tile_h=th, tile_w=tw,
        in_bits=net.in_value_bits, out_bits=net.out_value_bits,
        in_channels=net.in_channels, out_channels=net.out_channels,
        in_w=in_w, out_w=out_w, net_in_bits=net.in_bits, net_out_bits=net.out_bits,
        in_beats=net.in_beats, out_beats=net.out_beats))
    ctrl = net.out_dir / CTRL_SOURCE.name
    shutil.copy(CTRL_SOURCE, ctrl)
    return KernelDesign(top=top, net=net, sources=[*net.sources, ctrl, path],
                        in_width=in_w, out_width=out_w)


@dataclass
class KernelRun:
    """One simulation of the board kernel.

    Attributes:
        words: output codes per tile, (n, h, w) or (n, h, w, C) for C values a pixel.
        packets: length in beats of every output packet (TLAST to TLAST), in order.
        registers: register name -> value read at the points the job names
            (``<point>.<REG>``, e.g. ``"reset.ID"``, ``"end.TILES_DONE"``).
        log: the simulator's log.
    """

    words: np.ndarray
    packets: list[int]
    registers: dict[str, int]
    log: Path


def simulate_kernel(
    kernel: KernelDesign,
    tiles: np.ndarray,
    packet_bytes: int,
    *,
    run_name: str = "kernel_run",
    idle_prob: float = 0.0,
    backpressure_prob: float = 0.0,
    seed: int = 0,
    reset_after: int | None = None,
    max_cycles: int | None = None,
) -> KernelRun:
    """Drive the board kernel as the PYNQ driver does, in Verilator.

    The register offsets are :data:`REGISTERS` (the driver's, by test). After
    reset the identity registers are read; both table windows get a word and their count
    registers a write; ``REG_PACKET_BYTES`` is set to ``packet_bytes``; with
    ``reset_after``, that many pixels of an extra first tile go in, then ``REG_CTRL`` soft-
    resets the kernel (its output is discarded); then ``tiles`` (codes, ``(n, h, w)`` or
    channels-last ``(n, h, w, C)``, packed into the DMA's beats as the driver packs them)
    stream through with random idle / backpressure.

    Raises:
        RuntimeError: the simulation failed (its log is named).
    """
    net = kernel.net
    tiles = np.asarray(tiles)
    want = (*net.tile_shape, *((net.in_channels,) if net.in_channels > 1 else ()))
    if tiles.shape[1:] != want or tiles.dtype.kind != "u":
        raise ValueError(f"tiles must be unsigned codes (n, {', '.join(map(str, want))}), "
                         f"got {tiles.dtype} {tiles.shape}")
    lane = kernel.in_width // (net.in_channels // net.in_beats)
    beats = pack_channels(tiles.reshape(len(tiles), -1, net.in_channels // net.in_beats),
                          lane).reshape(len(tiles), -1)  # the DMA's beats, in order
    build_dir = verilator_build(kernel.sources, kernel.top, net.out_dir / "build_kernel",
                                ("-Wno-WIDTH", "-Wno-PINMISSING"))
    run_dir = fresh_run_dir(net, run_name)
    n, (h, w) = len(tiles), net.tile_shape
    job = {
        "tiles": [[int(v) for v in t] for t in beats],
        "beats_per_tile": h * w * net.out_beats,
        "registers": REGISTERS,
        "ctrl_soft_reset": CTRL_SOFT_RESET,
        "packet_bytes": int(packet_bytes),
        "idle_prob": idle_prob,
        "backpressure_prob": backpressure_prob,
        "reset_after": reset_after,
        "max_cycles": max_cycles or 20 * (n + 2) * (net.estimated_cycles + h * w) + 20000,
        "result": str(run_dir / "result.json"),
    }
    res = run_cocotb_job(COCOTB_MODULE, kernel.top, build_dir, run_dir, JOB_ENV, job, seed,
                         "board kernel simulation")
    per_beat = net.out_channels // net.out_beats
    values = unpack_channels(np.array(res["words"], dtype=np.int64).reshape(-1, 1),
                             kernel.out_width // per_beat, per_beat)
    dtype = np.uint8 if net.out_value_bits <= 8 else np.uint16
    words = values.astype(dtype).reshape(n, h, w, *((net.out_channels,)
                                                    if net.out_channels > 1 else ()))
    return KernelRun(words=words, packets=[int(p) for p in res["packets"]],
                     registers={k: int(v) for k, v in res["registers"].items()},
                     log=run_dir / "sim.log")
