"""cocotb test that streams tiles through the stitched accelerator (run by ``stitch``).

Not imported by the package: :func:`fluorofpga.hw.stitch.simulate_accelerator` runs it
inside the simulator with a JSON job named by ``FLUOROFPGA_ACCEL_JOB`` (the two table
loads, the ADU tiles, idle / backpressure probabilities, an optional reset in the middle
of a tile, the FIFO names) and reads back ``result.json`` (output words, cycles, each
tile's completion cycle, each FIFO's peak occupancy).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from pathlib import Path
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from fluorofpga.hw.cocotb_common import load_job, random_bools

JOB_ENV = "FLUOROFPGA_ACCEL_JOB"
CLOCK_NS = 5
RESET_CYCLES = 8
#: cycles without an output beat after the last tile before the run counts as drained
DRAIN_CYCLES = 256


def _job() -> dict[str, Any]:
    return load_job(JOB_ENV, "fluorofpga.hw.stitch.simulate_accelerator")


class AccelTB:
    """Clock, the three input streams, the output stream and cycle/beat counters."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        cocotb.start_soon(Clock(dut.ap_clk, CLOCK_NS, unit="ns").start())

        def source(prefix: str) -> AxiStreamSource:
            return AxiStreamSource(AxiStreamBus.from_prefix(dut, prefix), dut.ap_clk,
                                   dut.ap_rst_n, reset_active_level=False, byte_lanes=1)

        self.pixels = source("s_axis")
        self.cfg = source("s_axis_cfg") if hasattr(dut, "s_axis_cfg_tdata") else None
        self.tables = hasattr(dut, "s_axis_lut_in_tdata")
        self.lut_in = source("s_axis_lut_in") if self.tables else None
        self.lut_out = source("s_axis_lut_out") if self.tables else None
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.ap_clk,
                                  dut.ap_rst_n, reset_active_level=False, byte_lanes=1)
        for s in (self.pixels, self.cfg, self.lut_in, self.lut_out, self.sink):
            if s is not None:
                s.log.setLevel(logging.WARNING)  # frames are thousands of words: not logged
        self.cycle = 0
        self.out_beats = 0
        self.tile_done: list[int] = []  #: cycle of every tile's last output beat
        self.tile_pixels = 0
        self.counting = False

    async def reset(self) -> None:
        """Hold ``ap_rst_n`` low for :data:`RESET_CYCLES`."""
        self.dut.ap_rst_n.value = 0
        await ClockCycles(self.dut.ap_clk, RESET_CYCLES)
        self.dut.ap_rst_n.value = 1
        await RisingEdge(self.dut.ap_clk)

    async def count(self) -> None:
        """Count cycles and output handshakes (TLAST beats by cycle)."""
        dut = self.dut
        while True:
            await RisingEdge(dut.ap_clk)
            self.cycle += 1
            if self.counting and int(dut.m_axis_tvalid.value) and int(dut.m_axis_tready.value):
                self.out_beats += 1
                if self.out_beats % self.tile_pixels == 0:
                    self.tile_done.append(self.cycle)

    async def load(self, words: list[int]) -> None:
        """Send one register load (a demod design's ``s_axis_cfg``) and wait until it is
        taken, so the tile after it cannot start with the previous registers."""
        assert self.cfg is not None
        await self.cfg.send(AxiStreamFrame(words))
        while not self.cfg.idle():
            await RisingEdge(self.dut.ap_clk)
        await ClockCycles(self.dut.ap_clk, 2)  # the 15th word: staged, then in effect

    def levels(self, names: list[str]) -> dict[str, int]:
        """Current occupancy of the named FIFOs (diagnosis of a deadlock)."""
        return {n: int(getattr(self.dut, f"count_{n}").value) for n in names}


@cocotb.test()
async def stream_tiles(dut: Any) -> None:
    """Load the tables, stream the tiles, collect exactly one output frame per tile."""
    job = _job()
    tb = AccelTB(dut)
    rng = random.Random(job["seed"])
    await tb.reset()
    cocotb.start_soon(tb.count())
    if tb.lut_in is not None and tb.lut_out is not None:
        await tb.lut_in.send(AxiStreamFrame(job["lut_in"]))
        await tb.lut_out.send(AxiStreamFrame(job["lut_out"]))
        while not (tb.lut_in.idle() and tb.lut_out.idle()):
            await RisingEdge(dut.ap_clk)
    table_cycles = tb.cycle
    tiles = job["tiles"]
    n_pixels = tb.tile_pixels = int(job.get("out_beats_per_tile") or len(tiles[0]))

    cfg = job.get("cfg")
    if job["reset_after"] is not None:  # a tile cut off by a reset: its output is dropped
        part = tiles[0][: int(job["reset_after"])]
        if cfg:
            await tb.load(cfg[0])
        await tb.pixels.send(AxiStreamFrame(part))
        while not tb.pixels.idle():
            await RisingEdge(dut.ap_clk)
        await ClockCycles(dut.ap_clk, 50)
        await tb.reset()
        await ClockCycles(dut.ap_clk, 2)
        tb.sink.clear()

    if job.get("pace", 0) > 1:  # one pixel every `pace` cycles: the design's own rate
        tb.pixels.set_pause_generator(itertools.cycle([False] + [True] * (job["pace"] - 1)))
    elif job["idle_prob"] > 0:
        tb.pixels.set_pause_generator(random_bools(job["idle_prob"], rng))
    if job["backpressure_prob"] > 0:
        tb.sink.set_pause_generator(random_bools(job["backpressure_prob"], rng))
    if cfg:  # the first tile's registers in effect before its first pixel
        await tb.load(cfg[0])
    start = tb.cycle
    tb.counting = True
    for k, t in enumerate(tiles):
        # TLAST (with pixel kernels or sim_demod) marks a tile's end; a network alone has none
        await tb.pixels.send(AxiStreamFrame(t))
        if cfg and k + 1 < len(tiles):  # staged by the kernel while tile k streams
            await tb.cfg.send(AxiStreamFrame(cfg[k + 1]))
    words: list[int] = []
    frames = 0
    while len(words) < len(tiles) * n_pixels:
        if tb.cycle - start > job["max_cycles"]:
            raise AssertionError(
                f"deadlock or timeout: {frames} of {len(tiles)} tiles, {tb.out_beats} output "
                f"beats after {tb.cycle - start} cycles; input idle={tb.pixels.idle()}; "
                f"FIFO levels {tb.levels(job['fifos'])}")
        if tb.sink.empty():
            await RisingEdge(dut.ap_clk)
            continue
        frame = tb.sink.recv_nowait()
        got = [int(w) for w in frame.tdata]
        if tb.tables:
            assert len(got) == n_pixels, (
                f"tile {frames}: {len(got)} output beats up to TLAST, expected {n_pixels}")
        words.extend(got)
        frames = len(words) // n_pixels
    tb.sink.clear_pause_generator()
    tb.sink.pause = False
    before = tb.out_beats
    await ClockCycles(dut.ap_clk, DRAIN_CYCLES)
    assert tb.out_beats == before, f"{tb.out_beats - before} output beats after the last tile"
    assert tb.pixels.idle(), "input not fully consumed"
    if cfg:
        assert tb.cfg.idle(), "register loads not all taken"
        assert int(dut.demod_cfg_rejects.value) == 0, "sim_demod rejected a register load"
    maxcount = {n: int(getattr(dut, f"maxcount_{n}").value) for n in job["fifos"]}
    Path(job["result"]).write_text(json.dumps({
        "words": words,
        "cycles": tb.tile_done[-1] - start,
        "tile_done": [c - start for c in tb.tile_done],
        "table_cycles": table_cycles,
        "maxcount": maxcount,
    }))
