"""cocotb testbench of our SIM demodulation kernel ``sim_demod`` (run by ``demod_kernel``).

Not imported by the package: :func:`fluorofpga.hw.demod_kernel.run_demod_tests` runs this
module inside the simulator with a JSON job (seed, throughput tile size, measurements file)
named by ``FLUOROFPGA_DEMOD_JOB``. Every output word and every tile's ``sat_count`` is
compared with ``demodulate_int`` on the same tile and registers
(:func:`~fluorofpga.hw.demod_kernel.demod_reference`).

Tests (names prefixed ``demod_``): pixels wait for a load (after power-up and after a
tile's TLAST); random tiles with random registers (every code in every channel, crafted
pixels clipping every channel at both ends, widths 1 and odd); the idle × backpressure
matrix; loads sent while the previous tile streams, late loads and malformed loads; a
reset in the middle of a tile and of a load; the throughput of two long tiles back to
back. Every test ends by checking that nothing is left in flight.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from fluorofpga.hw.cocotb_common import JobBench, load_job
from fluorofpga.hw.cocotb_pixel import (
    CLOCK_NS,
    PAUSES,
    QUIET_CYCLES,
    RESET_CYCLES,
    PauseFactory,
    pause_factory,
)
from fluorofpga.hw.demod_kernel import (
    CHANNELS,
    JOB_ENV,
    assert_same_pixels,
    demod_config_words,
    demod_reference,
    demod_stimulus,
    pack_codes,
    random_registers,
    unpack_codes,
)
from fluorofpga.microscope.sim_linear import DemodRegisters

#: tile shapes (H, W) of the tests: width 1, odd and even widths, all >= 264 pixels
SHAPES = ((264, 1), (38, 7), (17, 16), (9, 31), (5, 64), (3, 97))
#: every (output channel, end) pair: end -1 clipped at 0, +1 clipped at 255
ALL_ENDS = {(c, end) for c in range(CHANNELS) for end in (-1, 1)}
Tile = tuple[np.ndarray, DemodRegisters]
LOAD_CYCLES = 1000  #: time limit for a load to be accepted, cycles


def _high(signal: Any) -> bool:
    """A 1-bit signal is 1 (X/Z count as 0)."""
    return str(signal.value) == "1"


class DemodTB(JobBench):
    """Testbench of ``sim_demod``: clock, pixel and register sources, output sink, and a
    monitor counting handshakes and recording ``sat_count`` after every tile's last beat."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.job = load_job(JOB_ENV, "fluorofpga.hw.demod_kernel.run_demod_tests")
        self.seed = int(self.job["seed"])
        cocotb.start_soon(Clock(dut.ap_clk, CLOCK_NS, unit="ns").start())
        kw = {"reset_active_level": False, "byte_lanes": 1}  # one list element = one beat

        def bus(prefix: str) -> AxiStreamBus:
            return AxiStreamBus.from_prefix(dut, prefix)

        self.pixels = AxiStreamSource(bus("s_axis"), dut.ap_clk, dut.ap_rst_n, **kw)
        self.cfg = AxiStreamSource(bus("s_axis_cfg"), dut.ap_clk, dut.ap_rst_n, **kw)
        self.out = AxiStreamSink(bus("m_axis"), dut.ap_clk, dut.ap_rst_n, **kw)
        for port in (self.pixels, self.cfg, self.out):
            port.log.setLevel(logging.WARNING)
        self.ports = {p: (getattr(dut, f"{p}_tvalid"), getattr(dut, f"{p}_tready"))
                      for p in ("s_axis", "s_axis_cfg", "m_axis")}
        self.beats: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.tile_sats: list[int] = []  # sat_count right after each TLAST beat left
        self.cycle = 0
        self._clear_counts()
        cocotb.start_soon(self._monitor())

    def _clear_counts(self) -> None:
        self.beats = dict.fromkeys(self.ports, 0)
        self.first = dict.fromkeys(self.ports, -1)
        self.last = dict.fromkeys(self.ports, -1)
        self.tile_sats = []

    async def _monitor(self) -> None:
        after_tlast = False
        while True:
            await RisingEdge(self.dut.ap_clk)
            self.cycle += 1
            if after_tlast:  # the count including the tile's last beat
                self.tile_sats.append(int(self.dut.sat_count.value))
            after_tlast = False
            for p, (valid, ready) in self.ports.items():
                if _high(valid) and _high(ready):
                    self.beats[p] += 1
                    self.last[p] = self.cycle
                    if self.first[p] < 0:
                        self.first[p] = self.cycle
                    after_tlast |= p == "m_axis" and _high(self.dut.m_axis_tlast)

    def set_idle_generator(self, factory: PauseFactory) -> None:
        """Idle cycles on the pixel and register inputs (independent patterns)."""
        for src in (self.pixels, self.cfg):
            if factory is None:
                src.clear_pause_generator()
            else:
                src.set_pause_generator(factory())

    def set_backpressure_generator(self, factory: PauseFactory) -> None:
        """``m_axis_tready`` low now and then."""
        if factory is None:
            self.out.clear_pause_generator()
            self.out.pause = False
        else:
            self.out.set_pause_generator(factory())

    async def reset(self) -> None:
        """Hold ``ap_rst_n`` low for :data:`RESET_CYCLES`; drop everything queued."""
        self.dut.ap_rst_n.value = 0
        await ClockCycles(self.dut.ap_clk, RESET_CYCLES)
        for src in (self.pixels, self.cfg):
            src.clear()
        self.out.clear()
        self.dut.ap_rst_n.value = 1
        await RisingEdge(self.dut.ap_clk)
        self._clear_counts()

    async def queue_load(self, words: Sequence[int]) -> None:
        """Queue register words as one load (TLAST on the last); returns at once."""
        await self.cfg.send(AxiStreamFrame([int(w) for w in words]))

    async def load(self, regs: DemodRegisters, width: int) -> None:
        """Send a tile's registers; returns once the last word was accepted."""
        await self.queue_load(demod_config_words(regs, width))
        await self.loaded()

    async def loaded(self) -> None:
        """Wait until the queued loads have been accepted (the staging buffer holds at most
        one load waiting for its tile; a second one would wait for that tile's end)."""
        await with_timeout(self.cfg.wait(), LOAD_CYCLES * CLOCK_NS, "ns")
        await RisingEdge(self.dut.ap_clk)

    async def send(self, codes: np.ndarray) -> None:
        """Queue a tile's pixels (TLAST on the last)."""
        await self.pixels.send(AxiStreamFrame(pack_codes(codes)))

    async def expect(self, tiles: Sequence[Tile], name: str) -> None:
        """Receive the tiles' outputs: every word and ``sat_count`` as ``demodulate_int``."""
        start = len(self.tile_sats)
        want_sats = []
        for i, (codes, regs) in enumerate(tiles):
            words, sat = demod_reference(codes, regs)
            want_sats.append(sat)
            limit = (20 * len(words) + 1000) * CLOCK_NS
            frame = await with_timeout(self.out.recv(), limit, "ns")
            assert_same_pixels(frame.tdata, words, codes.shape[1:], f"{name}, tile {i}")
            self.dut._log.info("%s, tile %d: %d pixels as demodulate_int, %d clipped", name,
                               i, len(words), sat)
        await ClockCycles(self.dut.ap_clk, 2)
        got_sats = self.tile_sats[start: start + len(tiles)]
        assert got_sats == want_sats, f"{name}: sat_count {got_sats}, expected {want_sats}"

    async def check_idle(self) -> None:
        """Nothing left in flight: inputs consumed, no output beat for a while, stages empty."""
        self.set_backpressure_generator(None)
        for name, src in (("s_axis", self.pixels), ("s_axis_cfg", self.cfg)):
            assert src.empty() and src.idle(), f"{name}: input not fully consumed"
        before = self.beats["m_axis"]
        await ClockCycles(self.dut.ap_clk, QUIET_CYCLES)
        extra = self.beats["m_axis"] - before
        assert extra == 0 and self.out.empty(), f"m_axis: {extra} beats after the expected ones"
        assert not _high(self.dut.m_axis_tvalid), "m_axis: tvalid left high"
        assert int(self.dut.valid_p.value) == 0, "a pixel left in the pipeline"
        assert not _high(self.dut.u_in.m_axis_tvalid), "a pixel left in the input slice"
        assert int(self.dut.cfg_count.value) == 0, "a partial load left behind"


async def _start(dut: Any) -> DemodTB:
    tb = DemodTB(dut)
    await tb.reset()
    return tb


def _tile(rng: np.random.Generator, shape: tuple[int, int], *, saturating: bool = False
          ) -> Tile:
    regs = random_registers(rng, saturating=saturating)
    return demod_stimulus(shape, regs, rng)[0], regs


def _width(tile: Tile) -> int:
    return int(tile[0].shape[2])


def _pixels(tile: Tile) -> int:
    return int(tile[0].shape[1] * tile[0].shape[2])


async def _assert_held(tb: DemodTB, beats_out: int, what: str) -> None:
    """For a while no pixel enters the pipeline (the input slice may hold two beats)."""
    await ClockCycles(tb.dut.ap_clk, 40)
    assert tb.beats["m_axis"] == beats_out, f"{what}: pixels came out"
    assert int(tb.dut.valid_p.value) == 0, f"{what}: a pixel entered the pipeline"
    assert tb.beats["s_axis"] <= beats_out + 2, f"{what}: pixels accepted"


# ---------------------------------------------------------------------- tests


@cocotb.test(name="demod_waits_for_load")
async def demod_waits_for_load(dut: Any) -> None:
    """No pixel is accepted before the first load, nor after a tile's TLAST until the next."""
    tb = await _start(dut)
    rng = tb.rng("waits")
    first, second = _tile(rng, SHAPES[2]), _tile(rng, SHAPES[3])
    power_up = not _high(dut.loaded)  # the simulation's first test: nothing loaded yet
    tb.measure("demod_waits_for_load", {"power_up_checked": power_up})
    if power_up:
        await tb.send(first[0])
        await _assert_held(tb, 0, "before the first load")
        await tb.load(first[1], _width(first))
    else:
        await tb.load(first[1], _width(first))
        await tb.send(first[0])
    await tb.expect([first], "first tile")
    await tb.send(second[0])
    await _assert_held(tb, _pixels(first), "after TLAST")
    await tb.load(second[1], _width(second))
    await tb.expect([second], "tile after its load")
    await tb.check_idle()


@cocotb.test(name="demod_random_tiles")
async def demod_random_tiles(dut: Any) -> None:
    """Random tiles and registers; every code in every channel; every channel clipped at
    both ends (registers of every other tile made to clip)."""
    tb = await _start(dut)
    rng = tb.rng("random_tiles")
    clipped: set[tuple[int, int]] = set()
    for i, shape in enumerate(SHAPES):
        regs = random_registers(rng, saturating=i % 2 == 0)
        codes, ends = demod_stimulus(shape, regs, rng)
        clipped |= ends
        for c in range(CHANNELS):
            assert np.unique(codes[c]).size == 256, f"channel {c} misses codes"
        await tb.load(regs, shape[1])
        await tb.send(codes)
        await tb.expect([(codes, regs)], f"random tile {shape}")
    assert clipped == ALL_ENDS, f"not clipped: {sorted(ALL_ENDS - clipped)}"
    assert int(dut.cfg_rejects.value) == 0
    await tb.check_idle()


async def _matrix(dut: Any, idle: str, backpressure: str) -> None:
    """Two tiles (the second one's load queued with them) under one idle × backpressure
    combination."""
    tb = await _start(dut)
    name = f"matrix idle={idle} backpressure={backpressure}"
    rng = tb.rng(name)
    pauses = random.Random(f"{tb.seed}/{name}")
    i = PAUSES.index(idle) * len(PAUSES) + PAUSES.index(backpressure)
    tiles = [_tile(rng, SHAPES[i % len(SHAPES)], saturating=i % 2 == 0),
             _tile(rng, SHAPES[(i + 1) % len(SHAPES)])]
    tb.set_idle_generator(pause_factory(idle, pauses))
    tb.set_backpressure_generator(pause_factory(backpressure, pauses))
    await tb.load(tiles[0][1], _width(tiles[0]))
    await tb.queue_load(demod_config_words(tiles[1][1], _width(tiles[1])))
    for codes, _ in tiles:
        await tb.send(codes)
    await tb.expect(tiles, name)
    await tb.check_idle()


@cocotb.test(name="demod_matrix")
@cocotb.parametrize(idle=list(PAUSES), backpressure=list(PAUSES))
async def demod_matrix(dut: Any, idle: str, backpressure: str) -> None:
    """One idle × backpressure combination (see :func:`_matrix`)."""
    await _matrix(dut, idle, backpressure)


@cocotb.test(name="demod_stress")
async def demod_stress(dut: Any) -> None:
    """Random-length tiles (down to one pixel) back to back, every load and pixel queued at
    once, under random idle and backpressure."""
    tb = await _start(dut)
    rng = tb.rng("stress")
    pauses = random.Random(f"{tb.seed}/stress")
    shapes = [(1, 1), (1, 2), (2, 1)]
    shapes += [(int(rng.integers(1, 6)), int(rng.integers(1, 24))) for _ in range(12)]
    rng.shuffle(shapes)
    tiles = []
    for shape in shapes:
        regs = random_registers(rng)
        tiles.append((rng.integers(0, 256, (CHANNELS, *shape)).astype(np.uint8), regs))
    tb.set_idle_generator(pause_factory("random", pauses))
    tb.set_backpressure_generator(pause_factory("random", pauses))
    await tb.load(tiles[0][1], shapes[0][1])  # after a reset: before the first pixel
    for codes, _ in tiles:
        await tb.send(codes)
    for codes, regs in tiles[1:]:  # each waits in the staging buffer for its tile
        await tb.queue_load(demod_config_words(regs, codes.shape[2]))
    await tb.expect(tiles, "stress")
    await tb.check_idle()


@cocotb.test(name="demod_reload")
async def demod_reload(dut: Any) -> None:
    """Back-to-back tiles whose next load arrives while the previous tile streams; a late
    load the pixels wait for, after three malformed loads that are rejected."""
    tb = await _start(dut)
    rng = tb.rng("reload")
    pauses = random.Random(f"{tb.seed}/reload")
    a, b, c = _tile(rng, SHAPES[1]), _tile(rng, SHAPES[0]), _tile(rng, SHAPES[4])
    tb.set_backpressure_generator(pause_factory("random", pauses))
    await tb.load(a[1], _width(a))
    await tb.send(a[0])
    await tb.load(b[1], _width(b))  # staged while tile a streams
    assert tb.beats["s_axis"] < _pixels(a), "tile a ended before b's load: no overlap tested"
    assert _high(dut.staged), "b's load did not wait for the end of tile a"
    await tb.send(b[0])
    await tb.expect([a, b], "reload")
    # a late load: the pixels of tile c wait for it, across three malformed loads
    done = tb.beats["m_axis"]
    await tb.send(c[0])
    words = demod_config_words(c[1], _width(c))
    malformed = {"TLAST early": words[:-1], "TLAST missing": [*words, 7],
                 "width 0": [*words[:-1], 0]}
    for i, (what, bad) in enumerate(malformed.items(), start=1):
        await tb.queue_load(bad)
        await tb.loaded()
        await _assert_held(tb, done, what)
        assert int(dut.cfg_rejects.value) == i, f"{what}: load not rejected"
    await tb.load(c[1], _width(c))
    await tb.expect([c], "late load")
    assert int(dut.cfg_rejects.value) == len(malformed)
    await tb.check_idle()


@cocotb.test(name="demod_reset_mid_tile")
async def demod_reset_mid_tile(dut: Any) -> None:
    """A reset in the middle of a tile: the registers stay, the next tile starts at (0, 0).
    A reset in the middle of a load: the load is dropped; a new one replaces the registers."""
    tb = await _start(dut)
    rng = tb.rng("reset")
    pauses = random.Random(f"{tb.seed}/reset")
    first, partial, fresh = _tile(rng, SHAPES[3]), _tile(rng, SHAPES[2]), _tile(rng, SHAPES[5])
    tb.set_backpressure_generator(pause_factory("random", pauses))
    await tb.load(first[1], _width(first))
    await tb.send(first[0])
    while tb.beats["m_axis"] < _pixels(first) // 3:
        await RisingEdge(dut.ap_clk)
    await tb.reset()
    # no load: the registers are kept (the tile width too)
    kept = demod_stimulus(first[0].shape[1:], first[1], rng)[0]
    await tb.send(kept)
    await tb.expect([(kept, first[1])], "after a reset mid-tile")
    await tb.queue_load(demod_config_words(partial[1], _width(partial)))
    while tb.beats["s_axis_cfg"] < 7:
        await RisingEdge(dut.ap_clk)
    await tb.reset()
    assert int(dut.cfg_count.value) == 0 and not _high(dut.staged), "load survived a reset"
    await tb.load(fresh[1], _width(fresh))
    await tb.send(fresh[0])
    await tb.expect([fresh], "after a reset mid-load")
    await tb.check_idle()


@cocotb.test(name="demod_throughput")
async def demod_throughput(dut: Any) -> None:
    """Two long tiles back to back (the second one's load staged during the first) with
    TVALID and TREADY always high: one pixel per clock, measured."""
    tb = await _start(dut)
    rng = tb.rng("throughput")
    n_tile = int(tb.job["throughput_pixels"])
    shape = (n_tile // 64, 64)
    tiles = [_tile(rng, shape), _tile(rng, shape)]
    await tb.load(tiles[0][1], shape[1])
    await tb.load(tiles[1][1], shape[1])
    for codes, _ in tiles:
        await tb.send(codes)
    await tb.expect(tiles, "throughput")
    n = 2 * shape[0] * shape[1]
    first_in, first_out, last_out = tb.first["s_axis"], tb.first["m_axis"], tb.last["m_axis"]
    cycles = last_out - first_in + 1
    steady = last_out - first_out + 1
    values = {"pixels": n, "cycles": cycles, "latency_cycles": first_out - first_in,
              "pixels_per_clock": n / cycles, "steady_pixels_per_clock": n / steady}
    tb.measure("demod_throughput", values)
    assert steady == n, f"output not one pixel per clock once started: {values}"
    assert n / cycles >= 0.99, values
    await tb.check_idle()


@cocotb.test(name="demod_job_tiles")
async def demod_job_tiles(dut: Any) -> None:
    """The job's own tiles (``run_demod_on_tiles``), outputs written back; a job without
    tiles has nothing to do here."""
    tb = await _start(dut)
    if "tiles" not in tb.job:
        return
    with np.load(tb.job["tiles"]) as data:
        regs = [DemodRegisters(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in d.items()})
                for d in json.loads(str(data["registers"]))]
        tiles = [(data[f"codes{i}"], r) for i, r in enumerate(regs)]
    outputs = {}
    for i, (codes, r) in enumerate(tiles):
        await tb.load(r, codes.shape[2])
        await tb.send(codes)
        words, _ = demod_reference(codes, r)
        frame = await with_timeout(tb.out.recv(), (20 * len(words) + 1000) * CLOCK_NS, "ns")
        got = [int(w) for w in frame.tdata]
        assert_same_pixels(got, words, codes.shape[1:], f"job tile {i}")
        outputs[f"out{i}"] = unpack_codes(got, codes.shape[1:])
    np.savez(tb.job["tiles_out"], **outputs)
    await tb.check_idle()
