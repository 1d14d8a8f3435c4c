"""cocotb test that streams one tensor through a FINN layer's RTL (run by ``rtlsim``).

Not imported by the package: :func:`fluorofpga.hw.rtlsim.simulate_layer` runs it inside
the simulator, passing a JSON job file through the ``FLUOROFPGA_RTLSIM_JOB`` environment
variable (input words, port prefixes, expected output beats, side inputs such as MVAU
weights, idle / backpressure probabilities, seed) and reading back ``result.json`` (output
words, cycles).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from fluorofpga.hw.cocotb_common import load_job, random_bools

JOB_ENV = "FLUOROFPGA_RTLSIM_JOB"
CLOCK_NS = 5  #: simulated clock period, ns (cycles are what is reported)
RESET_CYCLES = 8  #: cycles ap_rst_n is held low
#: AXI-Lite inputs some FINN wrappers expose even when unused: tied low
AXILITE_INPUTS = ("AWVALID", "WVALID", "BREADY", "ARVALID", "RREADY", "AWADDR", "WDATA",
                  "WSTRB", "ARADDR")
#: clock inputs of double-pumped variants (MVAU_rtl's ap_clk2x): tied low when unused
UNUSED_CLOCKS = ("ap_clk2x",)


def _job() -> dict[str, Any]:
    return load_job(JOB_ENV, "fluorofpga.hw.rtlsim.simulate_layer")


class LayerTB:
    """Testbench of one FINN stream layer: clock, source, sink, reset, pause generators."""

    def __init__(self, dut: Any, in_port: str, out_port: str,
                 side_ports: tuple[str, ...] = ()) -> None:
        self.dut = dut
        cocotb.start_soon(Clock(dut.ap_clk, CLOCK_NS, unit="ns").start())
        for sig in AXILITE_INPUTS:
            handle = getattr(dut, f"s_axilite_{sig}", None)
            if handle is not None:
                handle.value = 0
        for clk in UNUSED_CLOCKS:
            handle = getattr(dut, clk, None)
            if handle is not None:
                handle.value = 0
        # byte_lanes=1: one list element = one whole TDATA word (FINN's packed vector)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, in_port), dut.ap_clk,
                                      dut.ap_rst_n, reset_active_level=False, byte_lanes=1)
        #: further inputs driven with fixed words (MVAU weight stream in1_V)
        self.side_sources = {
            p: AxiStreamSource(AxiStreamBus.from_prefix(dut, p), dut.ap_clk, dut.ap_rst_n,
                               reset_active_level=False, byte_lanes=1)
            for p in side_ports}
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, out_port), dut.ap_clk,
                                  dut.ap_rst_n, reset_active_level=False, byte_lanes=1)
        self.out_valid = getattr(dut, f"{out_port}_TVALID")
        self.out_ready = getattr(dut, f"{out_port}_TREADY")
        self.out_handshakes = 0
        self.last_out_cycle = 0
        self.cycle = 0

    def set_idle_generator(self, gen: Iterator[bool] | None,
                           side: dict[str, Iterator[bool]] | None = None) -> None:
        """Random idle cycles on the input stream (and on side inputs, one each)."""
        if gen is not None:
            self.source.set_pause_generator(gen)
        for port, side_gen in (side or {}).items():
            self.side_sources[port].set_pause_generator(side_gen)

    def set_backpressure_generator(self, gen: Iterator[bool] | None) -> None:
        """Random ``tready`` low on the output stream."""
        if gen is not None:
            self.sink.set_pause_generator(gen)

    async def reset(self) -> None:
        """Hold ``ap_rst_n`` low for :data:`RESET_CYCLES`."""
        self.dut.ap_rst_n.value = 0
        await ClockCycles(self.dut.ap_clk, RESET_CYCLES)
        self.dut.ap_rst_n.value = 1
        await RisingEdge(self.dut.ap_clk)

    async def count(self) -> None:
        """Count cycles and output handshakes (including unexpected ones)."""
        while True:
            await RisingEdge(self.dut.ap_clk)
            self.cycle += 1
            if int(self.out_valid.value) and int(self.out_ready.value):
                self.out_handshakes += 1
                self.last_out_cycle = self.cycle


@cocotb.test()
async def stream_layer(dut: Any) -> None:
    """Send the job's input words, collect exactly the expected output beats, drain."""
    job = _job()
    side = job.get("side_inputs", [])
    tb = LayerTB(dut, job["in_port"], job["out_port"], tuple(si["port"] for si in side))
    rng = random.Random(job["seed"])
    if job["idle_prob"] > 0:
        tb.set_idle_generator(
            random_bools(job["idle_prob"], rng),
            {si["port"]: random_bools(job["idle_prob"], random.Random(rng.random()))
             for si in side})
    if job["backpressure_prob"] > 0:
        tb.set_backpressure_generator(random_bools(job["backpressure_prob"], rng))
    await tb.reset()
    cocotb.start_soon(tb.count())
    for si in side:  # e.g. MVAU weights, once per input vector (no TLAST: one list)
        words = [int(w, 16) for w in si["words"]]
        await tb.side_sources[si["port"]].send(AxiStreamFrame(words * si["repeat"]))
    in_words = [int(w, 16) for w in job["in_words"]]
    for w in in_words:  # no TLAST in FINN streams: one beat per frame
        await tb.source.send(AxiStreamFrame([w]))
    n_out = job["out_beats"]
    out_words: list[int] = []
    while len(out_words) < n_out:
        if tb.cycle > job["max_cycles"]:
            raise AssertionError(f"timeout: {len(out_words)} of {n_out} output beats after "
                                 f"{tb.cycle} cycles")
        if tb.sink.empty():
            await RisingEdge(dut.ap_clk)
            continue
        frame = tb.sink.recv_nowait()
        out_words.extend(int(w) for w in frame.tdata)
    cycles = tb.last_out_cycle
    # drain: no backpressure; wait until the output has been quiet for drain_cycles
    tb.sink.clear_pause_generator()
    tb.sink.pause = False
    quiet = 0
    while quiet < job["drain_cycles"]:
        if tb.cycle > job["max_cycles"]:
            raise AssertionError(f"output never goes quiet: {tb.out_handshakes} beats "
                                 f"after {tb.cycle} cycles, expected {n_out}")
        before = tb.out_handshakes
        await RisingEdge(dut.ap_clk)
        quiet = quiet + 1 if tb.out_handshakes == before else 0
    assert tb.source.idle(), "input not fully consumed"
    for port, src in tb.side_sources.items():
        assert src.idle(), f"side input {port} not fully consumed"
    extra: list[int] = []
    while not tb.sink.empty():
        extra.extend(int(w) for w in tb.sink.recv_nowait().tdata)
    # A layer may start the next frame without input (FMPadding emits the next frame's
    # top border at once): such beats must be the input-independent start of a frame.
    frame = job.get("frame_beats", n_out)
    assert len(extra) < frame and extra == out_words[: len(extra)], (
        f"{len(extra)} output beats after the frame that are not the start of a frame")
    assert tb.out_handshakes == n_out + len(extra)
    Path(job["result"]).write_text(json.dumps({
        "out_words": [hex(w) for w in out_words],
        "cycles": cycles,
        "in_beats": len(in_words),
        "out_beats": len(out_words),
        "next_frame_beats": len(extra),
    }))
