"""cocotb test of one fork / join wrapper (run by :func:`fluorofpga.hw.forkjoin.simulate_forkjoin`).

Not imported by the package: it runs inside the simulator with a JSON job named by
``FLUOROFPGA_FORKJOIN_JOB`` (words per input port, beats expected per output port, idle
and backpressure probabilities, seed) and writes ``result.json`` (words per output port,
cycles). Every input and every output gets its own random idle / backpressure pattern, so
a fork's outputs stall independently and a join's inputs arrive out of step.
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
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from fluorofpga.hw.cocotb_common import load_job, random_bools

JOB_ENV = "FLUOROFPGA_FORKJOIN_JOB"
CLOCK_NS = 5
RESET_CYCLES = 8
#: cycles without backpressure after the last expected beat in which no beat may come
DRAIN_CYCLES = 64


@cocotb.test()
async def stream(dut: Any) -> None:
    """Drive every input, collect every output, check the beat counts and the drain."""
    job = load_job(JOB_ENV, "fluorofpga.hw.forkjoin.simulate_forkjoin")
    rng = random.Random(job["seed"])
    cocotb.start_soon(Clock(dut.ap_clk, CLOCK_NS, unit="ns").start())
    sources = {p: AxiStreamSource(AxiStreamBus.from_prefix(dut, p), dut.ap_clk, dut.ap_rst_n,
                                  reset_active_level=False, byte_lanes=1)
               for p in job["inputs"]}
    sinks = {p: AxiStreamSink(AxiStreamBus.from_prefix(dut, p), dut.ap_clk, dut.ap_rst_n,
                              reset_active_level=False, byte_lanes=1)
             for p in job["outputs"]}
    for s in (*sources.values(), *sinks.values()):
        s.log.setLevel(logging.WARNING)
    dut.ap_rst_n.value = 0
    await ClockCycles(dut.ap_clk, RESET_CYCLES)
    dut.ap_rst_n.value = 1
    await RisingEdge(dut.ap_clk)
    for src in sources.values():
        if job["idle_prob"] > 0:
            src.set_pause_generator(random_bools(job["idle_prob"], rng))
    for sink in sinks.values():
        if job["backpressure_prob"] > 0:
            sink.set_pause_generator(random_bools(job["backpressure_prob"], rng))
    counts = {p: 0 for p in sinks}

    async def count() -> None:
        while True:
            await RisingEdge(dut.ap_clk)
            for p in sinks:
                if int(getattr(dut, f"{p}_TVALID").value) and \
                        int(getattr(dut, f"{p}_TREADY").value):
                    counts[p] += 1

    cocotb.start_soon(count())
    for p, words in job["inputs"].items():
        # one frame per word: no TLAST on FINN streams, so frames must not merge beats
        for w in words:
            await sources[p].send(AxiStreamFrame([int(w, 16)]))
    want = job["beats"]
    cycles = 0
    while any(counts[p] < want for p in sinks):
        await RisingEdge(dut.ap_clk)
        cycles += 1
        if cycles > job["max_cycles"]:
            raise AssertionError(f"deadlock or timeout after {cycles} cycles: {counts} of "
                                 f"{want} beats")
    for sink in sinks.values():
        sink.clear_pause_generator()
        sink.pause = False
    before = dict(counts)
    await ClockCycles(dut.ap_clk, DRAIN_CYCLES)
    assert counts == before, f"beats after the last expected one: {before} -> {counts}"
    assert all(src.idle() for src in sources.values()), "an input was not fully consumed"
    out: dict[str, list[str]] = {}
    for p, sink in sinks.items():
        words: list[str] = []
        while not sink.empty():
            words += [hex(int(w)) for w in sink.recv_nowait().tdata]
        out[p] = words
    Path(job["result"]).write_text(json.dumps({"outputs": out, "cycles": cycles}))
