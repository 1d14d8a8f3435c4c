"""cocotb test of the board kernel (run by :func:`fluorofpga.hw.kernel.simulate_kernel`).

Not imported by the package. Drives ``fluorofpga_kernel`` as the PYNQ driver does: its
registers over AXI4-Lite at the driver's offsets (passed in the JSON job named by
``FLUOROFPGA_KERNEL_JOB``), the tiles on ``s_axis`` (the DMA's MM2S), the output collected
packet by packet from ``m_axis`` (the DMA's S2MM); writes ``result.json``.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import (
    AxiLiteBus,
    AxiLiteMaster,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

from fluorofpga.hw.cocotb_common import load_job, random_bools

JOB_ENV = "FLUOROFPGA_KERNEL_JOB"
CLOCK_NS = 5
#: registers read at each check point
READ = ("ID", "TILE", "BITS", "CHANNELS", "STATUS", "PACKET_BYTES", "TILES_DONE")
UNDECODED = 0x028  #: a word the map does not use (reads 0)
DRAIN_CYCLES = 256


@cocotb.test()
async def drive_like_the_driver(dut: Any) -> None:
    """Registers, table commits, packet length, soft reset mid-tile, tiles through."""
    job = load_job(JOB_ENV, "fluorofpga.hw.kernel.simulate_kernel")
    regs: dict[str, int] = job["registers"]
    rng = random.Random(job.get("seed", 0))
    cocotb.start_soon(Clock(dut.ap_clk, CLOCK_NS, unit="ns").start())
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), dut.ap_clk,
                         dut.ap_rst_n, reset_active_level=False)
    src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.ap_clk, dut.ap_rst_n,
                          reset_active_level=False, byte_lanes=1)  # one word a pixel
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.ap_clk, dut.ap_rst_n,
                         reset_active_level=False)  # drives tready; beats: monitor()
    for s in (axil.write_if, axil.read_if, src, sink):
        s.log.setLevel(logging.WARNING)
    seen: dict[str, int] = {}

    async def read_all(point: str) -> None:
        for name in READ:
            seen[f"{point}.{name}"] = await axil.read_dword(regs[name])
        seen[f"{point}.UNDECODED"] = await axil.read_dword(UNDECODED)

    dut.ap_rst_n.value = 0
    await ClockCycles(dut.ap_clk, 8)
    dut.ap_rst_n.value = 1
    await ClockCycles(dut.ap_clk, 4)
    await read_all("reset")

    # the driver's table load: a window write, then the count register commits it
    await axil.write_dword(regs["IN_LUT"] + 4 * 7, 0x1FF)
    await axil.write_dword(regs["IN_LUT_COUNT"], 1 << 16)
    seen["in_table.STATUS"] = await axil.read_dword(regs["STATUS"])
    await axil.write_dword(regs["OUT_LUT"], 0x3F80_0000)
    await axil.write_dword(regs["OUT_LUT_COUNT"], 4096)
    await axil.write_dword(regs["ID"], 0)  # read-only: ignored
    await axil.write_dword(regs["PACKET_BYTES"], job["packet_bytes"])
    await read_all("set")

    tiles = job["tiles"]
    n_beats = int(job["beats_per_tile"])  # output beats of one tile
    if job["reset_after"] is not None:  # a tile cut off by a soft reset: output dropped
        await src.send(AxiStreamFrame(tiles[0][: int(job["reset_after"])]))
        while not src.idle():
            await RisingEdge(dut.ap_clk)
        await ClockCycles(dut.ap_clk, 50)
        seen["partial.STATUS"] = await axil.read_dword(regs["STATUS"])
        await axil.write_dword(regs["CTRL"], job["ctrl_soft_reset"])
        await ClockCycles(dut.ap_clk, 40)
        await read_all("soft_reset")
        sink.clear()

    # beats are taken at the handshake (the sink only drives tready): a packet cut by the
    # soft reset has no TLAST, so the sink's frames would glue it to the next packet
    beats: list[tuple[int, int]] = []

    async def monitor() -> None:
        while True:
            await RisingEdge(dut.ap_clk)
            if int(dut.m_axis_tvalid.value) and int(dut.m_axis_tready.value):
                keep = int(dut.m_axis_tkeep.value)
                assert keep == (1 << len(dut.m_axis_tkeep)) - 1, f"TKEEP {keep:#x}: a partial pixel"
                beats.append((int(dut.m_axis_tdata.value), int(dut.m_axis_tlast.value)))

    cocotb.start_soon(monitor())
    if job["idle_prob"] > 0:
        src.set_pause_generator(random_bools(job["idle_prob"], rng))
    if job["backpressure_prob"] > 0:
        sink.set_pause_generator(random_bools(job["backpressure_prob"], rng))
    for t in tiles:
        await src.send(AxiStreamFrame(t))
    cycles = 0
    while len(beats) < len(tiles) * n_beats:
        if cycles > job["max_cycles"]:
            raise AssertionError(f"deadlock or timeout: {len(beats)} of "
                                 f"{len(tiles) * n_beats} output beats")
        await RisingEdge(dut.ap_clk)
        cycles += 1
    sink.clear_pause_generator()
    sink.pause = False
    await ClockCycles(dut.ap_clk, DRAIN_CYCLES)
    assert len(beats) == len(tiles) * n_beats, "output beats after the last tile"
    assert src.idle(), "input not fully consumed"
    await read_all("end")
    packets, run = [], 0
    for _, last in beats:
        run += 1
        if last:
            packets.append(run)
            run = 0
    if run:
        packets.append(run)  # no TLAST at the end: reported as a last, open packet
    Path(job["result"]).write_text(json.dumps({"words": [w for w, _ in beats],
                                               "packets": packets, "registers": seen}))
