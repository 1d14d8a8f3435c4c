"""cocotb testbenches of our pixel-in / pixel-out kernels (run by ``pixel_kernels``).

Not imported by the package: :func:`fluorofpga.hw.pixel_kernels.run_kernel_tests` runs
this module inside the simulator with a JSON job (kernel parameters, signal spec, two
cameras, frame shape, seed) named by ``FLUOROFPGA_PIXEL_JOB``. Every check compares
with the bit-exact Python reference (:func:`~fluorofpga.hw.pixel_kernels.pixel_in_reference`,
:func:`~fluorofpga.hw.pixel_kernels.pixel_out_reference`, i.e. ``SignalTables``).

Tests (each kernel, names prefixed ``pixel_in_`` / ``pixel_out_``): the idle ×
backpressure matrix, a random-length stress test, a reset in the middle of a frame (and
of a table load), two cameras' tables swapped at run time, pixels that wait for a table
load, saturated / above-range pass-through, and the throughput of a long frame without
stalls. Every test ends by checking that nothing is left in flight.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from fluorofpga.hw.cocotb_common import JobBench, load_job
from fluorofpga.hw.pixel_kernels import (
    JOB_ENV,
    Camera,
    PixelKernelParams,
    assert_same_words,
    full_range_frame,
    pixel_in_reference,
    pixel_in_table,
    pixel_out_reference,
    pixel_out_table,
    random_residuals,
)
from fluorofpga.microscope.signal import SignalSpec, SignalTables

CLOCK_NS = 4  #: simulated clock period, ns (cycles are what is measured)
RESET_CYCLES = 8  #: cycles ap_rst_n is held low
QUIET_CYCLES = 32  #: cycles without any output beat that end a test
#: pause patterns of the idle × backpressure matrix
PAUSES = ("none", "cycle", "random")
PauseFactory = Callable[[], Iterator[bool]] | None


def _job() -> dict[str, Any]:
    return load_job(JOB_ENV, "fluorofpga.hw.pixel_kernels.run_kernel_tests")


def _high(signal: Any) -> bool:
    """A 1-bit signal is 1 (X/Z before reset count as 0, as in Icarus)."""
    return str(signal.value) == "1"


def pause_factory(kind: str, rng: random.Random) -> PauseFactory:
    """A factory of pause generators: none, a fixed 3-of-4 cycle, or random 50 %."""
    if kind == "none":
        return None
    if kind == "cycle":
        return lambda: itertools.cycle([True, True, True, False])
    if kind == "random":
        seed = rng.getrandbits(32)

        def gen() -> Iterator[bool]:
            r = random.Random(seed)
            while True:
                yield r.random() < 0.5

        return gen
    raise ValueError(f"unknown pause kind {kind!r}; known: {PAUSES}")


class _Setup(JobBench):
    """The job's data: parameters, spec, cameras' tables, frame shape, seed."""

    def __init__(self) -> None:
        job = _job()
        self.job = job
        self.params = PixelKernelParams(**job["params"])
        self.spec = SignalSpec.from_dict(job["spec"])
        self.cameras = [Camera.from_dict(c) for c in job["cameras"]]
        self.tables = [c.tables(self.spec) for c in self.cameras]
        self.frame = tuple(job["frame"])
        self.seed = int(job["seed"])


class TableDriver:
    """Drives a table-load stream (``<prefix>_tdata/tvalid/tready/tlast``) directly.

    One entry per clock while ``tready`` is high, TLAST on the last entry: the same
    protocol as an ``AxiStreamSource`` sending one frame, with less Python per cycle
    (a pixel_in table has 65536 entries).
    """

    def __init__(self, dut: Any, prefix: str) -> None:
        self.clk = dut.ap_clk
        self.tdata = getattr(dut, f"{prefix}_tdata")
        self.tvalid = getattr(dut, f"{prefix}_tvalid")
        self.tlast = getattr(dut, f"{prefix}_tlast")
        self.tready = getattr(dut, f"{prefix}_tready")
        self.stop()

    def stop(self) -> None:
        """Drive the stream idle (a running :meth:`send` must be cancelled first)."""
        self.tvalid.value = 0
        self.tlast.value = 0
        self.tdata.value = 0

    async def send(self, words: Sequence[int] | np.ndarray) -> None:
        """Send ``words`` as one frame; returns after the last handshake."""
        words = [int(w) for w in words]
        edge = RisingEdge(self.clk)
        i = 0
        while i < len(words):
            self.tdata.value = words[i]
            self.tlast.value = int(i == len(words) - 1)
            self.tvalid.value = 1
            await edge
            if _high(self.tready):
                i += 1
        self.stop()


#: camera whose table each kernel holds (tables survive resets and tests)
_LOADED: dict[str, int | None] = {}


class KernelTB:
    """Testbench of one kernel: clock, sources and sinks by port prefix, reset, pauses.

    Args:
        dut: the kernel.
        inputs: data input prefixes (``s_axis``...), besides the table input.
        outputs: output prefixes (``m_axis``...).
    """

    kernel = ""

    def __init__(self, dut: Any, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        self.dut = dut
        self.setup = _Setup()
        cocotb.start_soon(Clock(dut.ap_clk, CLOCK_NS, unit="ns").start())

        def bus(prefix: str) -> AxiStreamBus:
            return AxiStreamBus.from_prefix(dut, prefix)

        kw = {"reset_active_level": False, "byte_lanes": 1}  # one list element = one beat
        self.sources = {p: AxiStreamSource(bus(p), dut.ap_clk, dut.ap_rst_n, **kw)
                        for p in inputs}
        self.lut = TableDriver(dut, "s_axis_lut")
        self.sinks = {p: AxiStreamSink(bus(p), dut.ap_clk, dut.ap_rst_n, **kw) for p in outputs}
        for port in [*self.sources.values(), *self.sinks.values()]:
            port.log.setLevel(logging.WARNING)  # no line per frame
        self._ports = {p: (getattr(dut, f"{p}_tvalid"), getattr(dut, f"{p}_tready"))
                       for p in [*inputs, *outputs]}
        self.handshakes = dict.fromkeys(self._ports, 0)
        self.first = dict.fromkeys(self._ports, -1)
        self.last = dict.fromkeys(self._ports, -1)
        self.cycle = 0
        cocotb.start_soon(self._count())

    async def _count(self) -> None:
        while True:
            await RisingEdge(self.dut.ap_clk)
            self.cycle += 1
            for p, (valid, ready) in self._ports.items():
                if _high(valid) and _high(ready):
                    self.handshakes[p] += 1
                    self.last[p] = self.cycle
                    if self.first[p] < 0:
                        self.first[p] = self.cycle

    def set_idle_generator(self, factory: PauseFactory) -> None:
        """Idle cycles on every data input (an independent pattern per input)."""
        for src in self.sources.values():
            if factory is None:
                src.clear_pause_generator()
            else:
                src.set_pause_generator(factory())

    def set_backpressure_generator(self, factory: PauseFactory) -> None:
        """``tready`` low on every output (an independent pattern per output)."""
        for sink in self.sinks.values():
            if factory is None:
                sink.clear_pause_generator()
                sink.pause = False
            else:
                sink.set_pause_generator(factory())

    async def reset(self) -> None:
        """Hold ``ap_rst_n`` low for :data:`RESET_CYCLES`; drop everything queued."""
        self.dut.ap_rst_n.value = 0
        await ClockCycles(self.dut.ap_clk, RESET_CYCLES)
        for src in self.sources.values():
            src.clear()
        self.lut.stop()
        for sink in self.sinks.values():
            sink.clear()
        self.dut.ap_rst_n.value = 1
        await RisingEdge(self.dut.ap_clk)
        self.handshakes = dict.fromkeys(self._ports, 0)
        self.first = dict.fromkeys(self._ports, -1)
        self.last = dict.fromkeys(self._ports, -1)

    def table(self, tables: SignalTables) -> np.ndarray:
        """This kernel's table words for one camera."""
        raise NotImplementedError

    async def load_table(self, camera: int) -> None:
        """Stream camera ``camera``'s table into the kernel (TLAST on its last entry)."""
        _LOADED[self.kernel] = None
        await self.lut.send(self.table(self.setup.tables[camera]))
        await ClockCycles(self.dut.ap_clk, 2)
        assert not _high(self.dut.u_lut.loading), "table load did not end"
        _LOADED[self.kernel] = camera

    async def use_camera(self, camera: int) -> None:
        """Make sure camera ``camera``'s table is loaded (tables survive resets)."""
        if _LOADED.get(self.kernel) != camera:
            await self.load_table(camera)

    def max_cycles(self, pixels: int) -> int:
        """Time limit for ``pixels`` beats: 20 cycles each plus two table loads."""
        depth = max(len(self.table(t)) for t in self.setup.tables)
        return 20 * pixels + 2 * depth + 1000

    async def collect(self, prefix: str, n: int, max_cycles: int) -> list[list[int]]:
        """Receive ``n`` beats from output ``prefix``, grouped in frames (by TLAST)."""
        frames: list[list[int]] = []
        got = 0
        while got < n:
            frame = await with_timeout(self.sinks[prefix].recv(), max_cycles * CLOCK_NS, "ns")
            frames.append([int(w) for w in frame.tdata])
            got += len(frame.tdata)
        assert got == n, f"{prefix}: {got} beats, expected {n}"
        return frames

    async def check_idle(self) -> None:
        """Nothing left in flight: inputs consumed, no output beat for a while, all empty."""
        self.set_backpressure_generator(None)
        for name, src in self.sources.items():
            assert src.empty() and src.idle(), f"{name}: input not fully consumed"
        before = dict(self.handshakes)
        await ClockCycles(self.dut.ap_clk, QUIET_CYCLES)
        for p, sink in self.sinks.items():
            extra = self.handshakes[p] - before[p]
            assert extra == 0 and sink.empty(), f"{p}: {extra} beats after the expected ones"
            assert not _high(getattr(self.dut, f"{p}_tvalid")), f"{p}: tvalid left high"
        for stage in ("v1", "v2", "v3"):
            assert not _high(getattr(self.dut, stage)), f"pixel left in stage {stage}"


class PixelInTB(KernelTB):
    """Testbench of ``pixel_in``: ADU in; codes and bypass words out."""

    kernel = "pixel_in"

    def __init__(self, dut: Any) -> None:
        super().__init__(dut, ["s_axis"], ["m_axis", "m_axis_bypass"])

    def table(self, tables: SignalTables) -> np.ndarray:
        """pixel_in's table of one camera."""
        return pixel_in_table(tables, self.setup.params)

    async def send(self, frames: Sequence[np.ndarray]) -> None:
        """Queue ADU frames (TLAST on each frame's last pixel)."""
        for f in frames:
            await self.sources["s_axis"].send(AxiStreamFrame([int(x) for x in f.ravel()]))

    async def run(self, frames: Sequence[np.ndarray], camera: int, name: str) -> None:
        """Send frames, receive both outputs, compare with the reference, check idle."""
        tables = self.setup.tables[camera]
        exp_codes: list[int] = []
        exp_bypass: list[list[int]] = []
        for f in frames:
            q, byp = pixel_in_reference(tables, f.ravel(), self.setup.params)
            exp_codes += [int(x) for x in q]
            exp_bypass.append([int(x) for x in byp])
        n = len(exp_codes)
        await self.send(frames)
        limit = self.max_cycles(n)
        codes = cocotb.start_soon(self.collect("m_axis", n, limit))
        bypass = cocotb.start_soon(self.collect("m_axis_bypass", n, limit))
        got_codes = [w for fr in await codes for w in fr]
        got_bypass = await bypass
        assert_same_words(got_codes, exp_codes, f"{name}: codes")
        assert [len(fr) for fr in got_bypass] == [len(fr) for fr in exp_bypass], (
            f"{name}: bypass frames (TLAST) {[len(fr) for fr in got_bypass]}")
        assert_same_words([w for fr in got_bypass for w in fr],
                          [w for fr in exp_bypass for w in fr], f"{name}: bypass words")
        await self.check_idle()


class PixelOutTB(KernelTB):
    """Testbench of ``pixel_out``: residual codes and bypass words in; pixels out."""

    kernel = "pixel_out"

    def __init__(self, dut: Any) -> None:
        super().__init__(dut, ["s_axis", "s_axis_bypass"], ["m_axis"])

    def table(self, tables: SignalTables) -> np.ndarray:
        """pixel_out's table of one camera."""
        return pixel_out_table(tables, self.setup.params)

    def stimulus(self, adu: np.ndarray, camera: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(bypass words from pixel_in's reference, random residual codes incl. limits)."""
        _, byp = pixel_in_reference(self.setup.tables[camera], adu.ravel(), self.setup.params)
        return byp, random_residuals(byp.size, self.setup.params, rng)

    async def run(self, frames: Sequence[np.ndarray], camera: int, name: str,
                  rng: np.random.Generator) -> None:
        """Send frames, receive the output, compare with the reference, check idle."""
        tables = self.setup.tables[camera]
        expected: list[list[int]] = []
        for f in frames:
            byp, r = self.stimulus(f, camera, rng)
            expected.append([int(x) for x in pixel_out_reference(tables, byp, r,
                                                                 self.setup.params)])
            await self.sources["s_axis"].send(AxiStreamFrame([int(x) for x in r]))
            await self.sources["s_axis_bypass"].send(AxiStreamFrame([int(x) for x in byp]))
        n = sum(len(e) for e in expected)
        got = await self.collect("m_axis", n, self.max_cycles(n))
        assert [len(fr) for fr in got] == [len(fr) for fr in expected], (
            f"{name}: output frames (TLAST) {[len(fr) for fr in got]}")
        assert_same_words([w for fr in got for w in fr], [w for fr in expected for w in fr],
                          f"{name}: output words")
        await self.check_idle()


# ---------------------------------------------------------------------- helpers


async def _start(dut: Any) -> KernelTB:
    tb: KernelTB = PixelInTB(dut) if _job()["kernel"] == "pixel_in" else PixelOutTB(dut)
    await tb.reset()
    return tb


async def _run(tb: KernelTB, frames: Sequence[np.ndarray], camera: int, name: str) -> None:
    if isinstance(tb, PixelInTB):
        await tb.run(frames, camera, name)
    else:
        assert isinstance(tb, PixelOutTB)
        await tb.run(frames, camera, name, tb.setup.rng(name + "/r"))


def _frame(tb: KernelTB, camera: int, name: str, shape: tuple[int, ...] | None = None
           ) -> np.ndarray:
    return full_range_frame(tb.setup.tables[camera], shape or tb.setup.frame,
                            tb.setup.rng(name), tb.setup.params.in_bits)


async def _matrix(dut: Any, idle: str, backpressure: str) -> None:
    """One frame under one idle × backpressure combination."""
    tb = await _start(dut)
    name = f"matrix idle={idle} backpressure={backpressure}"
    rng = random.Random(f"{tb.setup.seed}/{name}")
    await tb.use_camera(0)
    tb.set_idle_generator(pause_factory(idle, rng))
    tb.set_backpressure_generator(pause_factory(backpressure, rng))
    await _run(tb, [_frame(tb, 0, name)], 0, name)


async def _stress(dut: Any) -> None:
    """Random-length frames back to back under random idle and backpressure."""
    tb = await _start(dut)
    rng = random.Random(tb.setup.seed)
    await tb.use_camera(1)
    full = _frame(tb, 1, "stress").ravel()
    sizes = [rng.randint(1, 3 * tb.setup.frame[1]) for _ in range(12)] + [1, 1, 2]
    rng.shuffle(sizes)
    frames, start = [], 0
    for s in sizes:
        frames.append(np.resize(np.roll(full, -start), s))
        start += s
    tb.set_idle_generator(pause_factory("random", rng))
    tb.set_backpressure_generator(pause_factory("random", rng))
    await _run(tb, frames, 1, "stress")


async def _reset_mid_frame(dut: Any) -> None:
    """Reset in the middle of a frame and of a table load; the next frame is exact."""
    tb = await _start(dut)
    rng = random.Random(tb.setup.seed + 1)
    cam = _LOADED.get(tb.kernel) or 0
    other = 1 - cam
    await tb.use_camera(cam)
    frame = _frame(tb, cam, "reset")
    tb.set_backpressure_generator(pause_factory("random", rng))
    if isinstance(tb, PixelInTB):
        await tb.send([frame])
    else:
        byp, r = tb.stimulus(frame, cam, tb.setup.rng("reset/r"))
        await tb.sources["s_axis"].send(AxiStreamFrame([int(x) for x in r]))
        await tb.sources["s_axis_bypass"].send(AxiStreamFrame([int(x) for x in byp]))
    out = next(iter(tb.sinks))
    while tb.handshakes[out] < frame.size // 3:  # a third of the frame is out
        await RisingEdge(dut.ap_clk)
    await tb.reset()
    # a reset in the middle of a table load restarts the load at entry 0
    _LOADED[tb.kernel] = None
    load = cocotb.start_soon(tb.lut.send(tb.table(tb.setup.tables[other])))
    while not _high(dut.u_lut.loading):
        await RisingEdge(dut.ap_clk)
    await ClockCycles(dut.ap_clk, 5)
    assert not load.done(), "the table load ended before the reset"
    load.cancel()  # the host stops sending; the kernel is in the middle of the load
    assert _high(dut.u_lut.loading)
    await tb.reset()
    await tb.load_table(cam)  # must restart at entry 0, or the frame below goes wrong
    tb.set_backpressure_generator(pause_factory("random", rng))
    await _run(tb, [frame], cam, "after reset")


async def _two_cameras(dut: Any) -> None:
    """Two cameras' tables loaded at run time, one after the other (0, 1, 0)."""
    tb = await _start(dut)
    frame = _frame(tb, 0, "cameras")
    for camera in (0, 1, 0):  # the first load is skipped if camera 0 is loaded already
        await tb.use_camera(camera)
        await _run(tb, [frame], camera, f"camera {camera}")
    t0, t1 = (tb.table(t) for t in tb.setup.tables[:2])
    assert not np.array_equal(t0[: min(t0.size, t1.size)], t1[: min(t0.size, t1.size)]), (
        "the two cameras' tables are identical: the test would not see a swap")


async def _load_holds_pixels(dut: Any) -> None:
    """Pixels sent during a table load wait for it and use the new table only."""
    tb = await _start(dut)
    new = 0 if _LOADED.get(tb.kernel) == 1 else 1  # the camera not loaded now
    frame = _frame(tb, new, "load_holds")
    _LOADED[tb.kernel] = None
    load = cocotb.start_soon(tb.lut.send(tb.table(tb.setup.tables[new])))
    while not _high(dut.u_lut.loading):
        await RisingEdge(dut.ap_clk)
    # pixels sent while the table loads must wait and then see the new table only
    await _run(tb, [frame], new, "pixels during a load")
    assert load.done()
    _LOADED[tb.kernel] = new


async def _passthrough(dut: Any) -> None:
    """Saturated and above-range pixels (and their neighbours) of both cameras."""
    tb = await _start(dut)
    p = tb.setup.params
    for camera in sorted((0, 1), key=lambda c: c != _LOADED.get(tb.kernel)):
        tables = tb.setup.tables[camera]
        above = np.flatnonzero(tables.in_lut >= tables.spec.in_max)
        assert above.size, f"camera {camera}: no above-range ADU below adc_max; pick another"
        lo = max(int(above[0]) - 4, 0)
        top = (1 << p.in_bits) - 1
        px = np.concatenate([np.arange(lo, lo + 8), np.arange(tables.adc_max - 4,
                             min(tables.adc_max + 4, top) + 1), [top, 0], above[-3:]])
        frame = np.clip(px, 0, top).astype(np.uint16)
        _, byp = pixel_in_reference(tables, frame, p)
        sat_bit = p.in_bits + p.code_bits
        flags = (byp.astype(np.int64) >> sat_bit) & 3
        assert np.any(flags == 1) and np.any(flags == 2) and np.any(flags == 0), flags
        await tb.use_camera(camera)
        await _run(tb, [frame], camera, f"pass-through camera {camera}")


async def _throughput(dut: Any) -> None:
    """A frame of 4x the pixels without stalls: one pixel per clock, measured."""
    tb = await _start(dut)
    await tb.use_camera(0)
    shape = (2 * tb.setup.frame[0], 2 * tb.setup.frame[1])
    name = "throughput"
    await _run(tb, [_frame(tb, 0, name, shape)], 0, name)
    n = shape[0] * shape[1]
    out = next(iter(tb.sinks))
    first_in = min(tb.first[p] for p in tb.sources)
    cycles = tb.last[out] - first_in + 1
    steady = tb.last[out] - tb.first[out] + 1
    latency = tb.first[out] - first_in
    values = {"pixels": n, "cycles": cycles, "latency_cycles": latency,
              "pixels_per_clock": n / cycles, "steady_pixels_per_clock": n / steady}
    tb.setup.measure(f"{tb.kernel}_throughput", values)
    assert steady == n, f"output not one pixel per clock once started: {values}"
    assert n / cycles >= 0.99, values


# ---------------------------------------------------------------------- tests
# The same tests for both kernels, registered under each kernel's prefix so that a run
# selects its kernel's tests by name (pixel_kernels.run_kernel_tests does); cocotb finds
# tests among the module's globals.

#: run order (after the matrix) chosen to reload the tables as rarely as possible
_TESTS: dict[str, Callable[..., Any]] = {
    "throughput": _throughput,
    "two_cameras": _two_cameras,
    "passthrough": _passthrough,
    "stress": _stress,
    "load_holds_pixels": _load_holds_pixels,
    "reset_mid_frame": _reset_mid_frame,
}


def _register(kernel: str, name: str, body: Callable[..., Any]) -> None:
    async def test(dut: Any) -> None:
        await body(dut)

    test.__doc__ = body.__doc__
    globals()[f"{kernel}_{name}"] = cocotb.test(name=f"{kernel}_{name}")(test)


def _register_matrix(kernel: str) -> None:
    async def test(dut: Any, idle: str, backpressure: str) -> None:
        await _matrix(dut, idle, backpressure)

    test.__doc__ = _matrix.__doc__
    matrix = cocotb.parametrize(idle=list(PAUSES), backpressure=list(PAUSES))(test)
    globals()[f"{kernel}_matrix"] = cocotb.test(name=f"{kernel}_matrix")(matrix)


for _kernel in ("pixel_in", "pixel_out"):
    _register_matrix(_kernel)
    for _name, _body in _TESTS.items():
        _register(_kernel, _name, _body)
