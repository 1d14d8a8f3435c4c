"""Our own pixel-in / pixel-out kernels (``hw/rtl/pixel_in.sv``, ``hw/rtl/pixel_out.sv``):
their bit-level stream formats, their Python reference, and the cocotb run glue.

The reference is :class:`~fluorofpga.microscope.signal.SignalTables` itself (``encode``,
``spec.combine`` inside ``decode``, ``out_lut``, the pass-through rule of ``decode`` and
:class:`~fluorofpga.host.restore.FrameRestorer`); this module only packs its numbers into
stream words.

Streams (each word zero-padded to whole bytes, element 0 in the LSBs, one pixel a beat):

* pixel_in ``s_axis``: ADU pixel (``in_bits``), TLAST optional (marks a frame's end and
  travels with the bypass word to pixel_out's ``m_axis_tlast``).
* pixel_in ``s_axis_lut``: :func:`pixel_in_table`, one entry a beat from entry 0, TLAST on
  the last: ``code | saturated << code_bits``, ``adc_max + 1`` entries (the kernel's
  capacity ``ADC_MAX``, not the camera's: entries at and above the camera's ``adc_max``
  hold its code there with the saturated flag, so one bitstream serves any camera).
* pixel_in ``m_axis``: the network's input code ``q`` (``code_bits``).
* pixel_in ``m_axis_bypass`` = pixel_out ``s_axis_bypass``: :func:`pack_bypass`, bits
  ``[0, in_bits)`` ADU, then ``code_bits`` of ``q``, then the saturated flag and the
  above-range flag (``q`` at its top code and not saturated).
* pixel_out ``s_axis``: the network's residual code ``r`` (``out_bits``).
* pixel_out ``s_axis_lut``: :func:`pixel_out_table`, ``2**c_bits`` entries: ``out_lut`` as
  IEEE float32 bits (``output="float32"``) or rounded, clipped ``uint16`` ADU
  (``output="uint16"``, exactly FrameRestorer's rounding).
* pixel_out ``m_axis``: the restored pixel in that format; pass-through pixels carry their
  ADU (as float32, or as the integer).

Tables are loaded at run time (per camera, between frames): while a load is incomplete
neither kernel accepts a new pixel, pixels already inside may see either table, and a
reset (``ap_rst_n``) flushes the pixels in flight and restarts a load at entry 0 but keeps
a loaded table. The kernels see ADU after the per-pixel part of the calibration
(:class:`~fluorofpga.microscope.signal.PixelMaps`, applied by the host), exactly as
``SignalTables`` does. Between pixel_in's bypass output and pixel_out, the stitched design
needs a FIFO at least as deep as the network's latency in pixels (sized in the stitched
simulation, rung 6).

Run glue: :func:`run_kernel_tests` compiles a kernel for one parameter set (a build
directory per set) and runs the cocotb tests of :mod:`fluorofpga.hw.cocotb_pixel` on it,
which check every output word against :func:`pixel_in_reference` /
:func:`pixel_out_reference`.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: keeps `import fluorofpga.hw` light
    from fluorofpga.microscope.signal import NoiseModel, SignalSpec, SignalTables

__all__ = [
    "KERNELS",
    "RTL_DIR",
    "Camera",
    "KernelRun",
    "KernelRunError",
    "OutputFormat",
    "PixelKernelParams",
    "assert_same_words",
    "build_kernel",
    "full_range_frame",
    "kernel_sources",
    "pack_bypass",
    "passthrough_flags",
    "pixel_in_reference",
    "pixel_in_table",
    "pixel_out_reference",
    "pixel_out_table",
    "random_residuals",
    "run_kernel_tests",
    "unpack_bypass",
]

#: the SystemVerilog sources shipped with the package
RTL_DIR = Path(__file__).parent / "rtl"
#: kernel top module -> its sources, dependencies first
KERNELS: dict[str, tuple[str, ...]] = {
    "pixel_in": ("axis_skid_buffer.sv", "stream_lut.sv", "pixel_in.sv"),
    "pixel_out": ("axis_skid_buffer.sv", "stream_lut.sv", "pixel_out.sv"),
}
#: environment variable naming the job file of a :mod:`~fluorofpga.hw.cocotb_pixel` run
JOB_ENV = "FLUOROFPGA_PIXEL_JOB"
#: cocotb test module of the kernels
COCOTB_MODULE = "fluorofpga.hw.cocotb_pixel"
_UINT16_MAX = 65535


class OutputFormat(str, Enum):
    """What pixel_out's table holds and emits."""

    FLOAT32 = "float32"  #: IEEE float32 ADU, not rounded (32-bit words)
    UINT16 = "uint16"  #: ADU rounded and clipped to 0..65535 (16-bit words)


def _pad8(bits: int) -> int:
    return (bits + 7) // 8 * 8


@dataclass(frozen=True)
class PixelKernelParams:
    """HDL parameters of one pixel-in / pixel-out pair (they must agree with each other).

    Attributes:
        in_bits: camera pixel width, bits (``IN_BITS``).
        code_bits: network input code width, bits (``CODE_BITS`` = ``SignalSpec.in_bits``).
        adc_max: pixel_in's table capacity (``ADC_MAX``): the largest camera ``adc_max``
            it can hold; table depth ``adc_max + 1``.
        out_bits: network residual code width, bits (``OUT_BITS`` = ``SignalSpec.out_bits``).
        ratio: residual codes per input code (``RATIO`` = ``SignalSpec.ratio``).
        zero: residual code of "no noise" (``ZERO`` = ``SignalSpec.residual_zero``).
        c_bits: clean code width (``C_BITS`` = ``SignalSpec.code_bits``).
        output: pixel_out's table and output format.
    """

    in_bits: int = 16
    code_bits: int = 8
    adc_max: int = _UINT16_MAX
    out_bits: int = 8
    ratio: int = 8
    zero: int = 128
    c_bits: int = 12
    output: OutputFormat = OutputFormat.FLOAT32

    def __post_init__(self) -> None:
        """Validate."""
        object.__setattr__(self, "output", OutputFormat(self.output))
        if not 1 <= self.adc_max <= (1 << self.in_bits) - 1:
            raise ValueError(f"adc_max={self.adc_max} must be in 1..2**in_bits-1")
        if self.output == OutputFormat.FLOAT32 and self.in_bits > 24:
            raise ValueError("float32 output holds pass-through ADU exactly only up to 24 bits")
        if self.output == OutputFormat.UINT16 and self.in_bits > 16:
            raise ValueError("uint16 output cannot hold pass-through ADU wider than 16 bits")

    @classmethod
    def from_spec(
        cls,
        spec: SignalSpec,
        *,
        in_bits: int = 16,
        adc_max: int = _UINT16_MAX,
        output: OutputFormat | str = OutputFormat.FLOAT32,
    ) -> PixelKernelParams:
        """The kernel parameters of a bundle's signal representation."""
        return cls(in_bits=in_bits, code_bits=spec.in_bits, adc_max=adc_max,
                   out_bits=spec.out_bits, ratio=spec.ratio, zero=spec.residual_zero,
                   c_bits=spec.code_bits, output=OutputFormat(output))

    def check_tables(self, tables: SignalTables) -> None:
        """Raise ``ValueError`` unless ``tables`` can be loaded into these kernels."""
        spec = tables.spec
        have = (self.code_bits, self.out_bits, self.ratio, self.zero, self.c_bits)
        want = (spec.in_bits, spec.out_bits, spec.ratio, spec.residual_zero, spec.code_bits)
        if have != want:
            raise ValueError(f"kernels built for (code_bits, out_bits, ratio, zero, c_bits) = "
                             f"{have}, signal spec needs {want}")
        if tables.adc_max > self.adc_max:
            raise ValueError(f"camera adc_max={tables.adc_max} exceeds the pixel_in table "
                             f"capacity ADC_MAX={self.adc_max}: rebuild with a larger adc_max")
        if tables.adc_max >= 1 << self.in_bits:
            raise ValueError(f"camera adc_max={tables.adc_max} needs more than "
                             f"{self.in_bits}-bit pixels")

    @property
    def data_bits(self) -> int:
        """pixel_out's table entry / output word width, bits."""
        return 32 if self.output == OutputFormat.FLOAT32 else 16

    @property
    def bypass_bits(self) -> int:
        """Meaningful bits of a bypass word."""
        return self.in_bits + self.code_bits + 2

    def stream_widths(self, kernel: str) -> dict[str, int]:
        """TDATA width of each AXI-Stream port prefix of ``kernel``, bits."""
        if kernel == "pixel_in":
            return {"s_axis": _pad8(self.in_bits), "s_axis_lut": _pad8(self.code_bits + 1),
                    "m_axis": _pad8(self.code_bits), "m_axis_bypass": _pad8(self.bypass_bits)}
        if kernel == "pixel_out":
            return {"s_axis": _pad8(self.out_bits), "s_axis_bypass": _pad8(self.bypass_bits),
                    "s_axis_lut": _pad8(self.data_bits), "m_axis": _pad8(self.data_bits)}
        raise KeyError(f"unknown kernel {kernel!r}; known: {sorted(KERNELS)}")

    def hdl_parameters(self, kernel: str) -> dict[str, int]:
        """The SystemVerilog parameters of ``kernel`` (``pixel_in`` or ``pixel_out``)."""
        if kernel == "pixel_in":
            return {"IN_BITS": self.in_bits, "CODE_BITS": self.code_bits,
                    "ADC_MAX": self.adc_max}
        if kernel == "pixel_out":
            return {"IN_BITS": self.in_bits, "CODE_BITS": self.code_bits,
                    "OUT_BITS": self.out_bits, "RATIO": self.ratio, "ZERO": self.zero,
                    "C_BITS": self.c_bits, "DATA_BITS": self.data_bits,
                    "OUT_FLOAT": int(self.output == OutputFormat.FLOAT32)}
        raise KeyError(f"unknown kernel {kernel!r}; known: {sorted(KERNELS)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["output"] = self.output.value
        return d


@dataclass(frozen=True)
class Camera:
    """One camera's tables as test/driver data: noise model and ADC maximum."""

    noise: NoiseModel
    adc_max: int = _UINT16_MAX

    def tables(self, spec: SignalSpec) -> SignalTables:
        """Its :class:`SignalTables` for ``spec``."""
        from fluorofpga.microscope.signal import SignalTables

        return SignalTables(spec, self.noise, self.adc_max)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"noise": self.noise.to_dict(), "adc_max": self.adc_max}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Camera:
        """Inverse of :meth:`to_dict`."""
        from fluorofpga.microscope.signal import NoiseModel

        return cls(NoiseModel.from_dict(d["noise"]), int(d["adc_max"]))


# ------------------------------------------------------------------ packing


def kernel_sources(kernel: str) -> list[Path]:
    """The SystemVerilog files of ``kernel``, dependencies first."""
    if kernel not in KERNELS:
        raise KeyError(f"unknown kernel {kernel!r}; known: {sorted(KERNELS)}")
    return [RTL_DIR / f for f in KERNELS[kernel]]


def pack_bypass(adu: np.ndarray, q: np.ndarray, saturated: np.ndarray, above: np.ndarray,
                params: PixelKernelParams) -> np.ndarray:
    """Bypass words (uint64): ``adu | q << in_bits | saturated << .. | above << ..``."""
    adu = np.asarray(adu, dtype=np.uint64)
    q = np.asarray(q, dtype=np.uint64)
    if np.any(adu >> np.uint64(params.in_bits)) or np.any(q >> np.uint64(params.code_bits)):
        raise ValueError("adu or q out of range of the kernel's bit widths")
    sat_bit = np.uint64(params.in_bits + params.code_bits)
    return (adu | (q << np.uint64(params.in_bits))
            | (np.asarray(saturated, dtype=np.uint64) << sat_bit)
            | (np.asarray(above, dtype=np.uint64) << (sat_bit + np.uint64(1))))


def unpack_bypass(words: np.ndarray, params: PixelKernelParams
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_bypass`: (adu uint16/32, q, saturated, above)."""
    w = np.asarray(words, dtype=np.uint64)
    adu = w & np.uint64((1 << params.in_bits) - 1)
    q = (w >> np.uint64(params.in_bits)) & np.uint64((1 << params.code_bits) - 1)
    sat_bit = np.uint64(params.in_bits + params.code_bits)
    saturated = ((w >> sat_bit) & np.uint64(1)).astype(bool)
    above = ((w >> (sat_bit + np.uint64(1))) & np.uint64(1)).astype(bool)
    adu_dtype = np.uint16 if params.in_bits <= 16 else np.uint32
    q_dtype = np.uint8 if params.code_bits <= 8 else np.uint16
    return adu.astype(adu_dtype), q.astype(q_dtype), saturated, above


def pixel_in_table(tables: SignalTables, params: PixelKernelParams) -> np.ndarray:
    """pixel_in's table (``params.adc_max + 1`` words) for one camera's ``tables``.

    Entry ``i`` is ``in_lut[min(i, adc_max)]`` with the saturated flag set for
    ``i >= adc_max`` (the camera's), so ``LUT[min(adu, ADC_MAX)]`` is ``encode(adu)`` and
    its flag the saturation rule of ``SignalTables.decode`` for every ``adu``.
    """
    params.check_tables(tables)
    idx = np.arange(params.adc_max + 1, dtype=np.int64)
    code = tables.in_lut[np.minimum(idx, tables.adc_max)].astype(np.uint32)
    sat = (idx >= tables.adc_max).astype(np.uint32)
    return (code | (sat << np.uint32(params.code_bits))).astype(np.uint16)


def pixel_out_table(tables: SignalTables, params: PixelKernelParams) -> np.ndarray:
    """pixel_out's table (``2**c_bits`` words): ``out_lut`` in the kernel's output format."""
    params.check_tables(tables)
    return _output_words(tables.out_lut, params)


def _output_words(values: np.ndarray, params: PixelKernelParams) -> np.ndarray:
    if params.output == OutputFormat.FLOAT32:
        return np.asarray(values, dtype=np.float64).astype(np.float32).view(np.uint32)
    return np.clip(np.rint(np.asarray(values, dtype=np.float64)), 0, _UINT16_MAX).astype(
        np.uint16)


def passthrough_flags(tables: SignalTables, adu: np.ndarray, q: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(saturated, above range) per pixel: the rule of ``SignalTables.decode``.

    ``saturated = adu >= adc_max``; ``above = q >= in_max`` and not saturated.
    """
    saturated = np.asarray(adu) >= tables.adc_max
    above = (np.asarray(q) >= tables.spec.in_max) & ~saturated
    return saturated, above


def pixel_in_reference(tables: SignalTables, adu: np.ndarray, params: PixelKernelParams
                       ) -> tuple[np.ndarray, np.ndarray]:
    """What pixel_in emits for ADU pixels: (codes ``encode(adu)``, bypass words)."""
    params.check_tables(tables)
    adu = np.asarray(adu)
    if adu.dtype.kind != "u":
        raise ValueError(f"ADU pixels must be unsigned integers, got {adu.dtype}")
    q = tables.encode(adu)
    saturated, above = passthrough_flags(tables, adu, q)
    return q, pack_bypass(adu, q, saturated, above, params)


def pixel_out_reference(tables: SignalTables, bypass: np.ndarray, r: np.ndarray,
                        params: PixelKernelParams) -> np.ndarray:
    """What pixel_out emits: ``SignalTables.decode(adu, q, r)`` as output words.

    float32: the float32 bits of ``decode`` (the table is float32 ``out_lut``, pass-through
    ADU is exact); uint16: ``decode`` rounded and clipped as FrameRestorer does.
    """
    params.check_tables(tables)
    adu, q, _, _ = unpack_bypass(bypass, params)
    return _output_words(tables.decode(adu, q, np.asarray(r)), params)


def full_range_frame(tables: SignalTables, shape: tuple[int, int], rng: np.random.Generator,
                     in_bits: int = 16) -> np.ndarray:
    """A test frame (uint16) covering the whole input range of one camera's tables.

    Mostly ADU inside the coded range, plus uniform over all ``in_bits`` values, the
    ADC maximum and its neighbours, the first above-range ADU and its neighbour, 0 and
    the top value; shuffled.
    """
    n = int(np.prod(shape))
    top = (1 << in_bits) - 1
    coded_top = int(np.clip(np.ceil(tables.max_adu()), 0, top))
    above = np.flatnonzero(tables.in_lut >= tables.spec.in_max)
    special = [0, top, tables.adc_max, max(tables.adc_max - 1, 0), min(tables.adc_max + 1, top)]
    if above.size:
        special += [int(above[0]), max(int(above[0]) - 1, 0)]
    n_wide = n // 8
    n_main = max(n - n_wide - len(special), 0)
    main = rng.integers(0, coded_top + 1, size=n_main)
    wide = rng.integers(0, top + 1, size=n_wide)
    px = np.concatenate([main, wide, np.asarray(special)])[:n]
    rng.shuffle(px)
    return px.astype(np.uint16 if in_bits <= 16 else np.uint32).reshape(shape)


def random_residuals(n: int, params: PixelKernelParams, rng: np.random.Generator
                     ) -> np.ndarray:
    """``n`` random residual codes over the full range, with extra 0s and top codes."""
    top = (1 << params.out_bits) - 1
    r = rng.integers(0, top + 1, size=n)
    r[rng.random(n) < 0.05] = 0
    r[rng.random(n) < 0.05] = top
    return r


def assert_same_words(got: Sequence[int], expected: Sequence[int], what: str) -> None:
    """Raise ``AssertionError`` naming the first mismatch unless the words are identical."""
    got_a = np.asarray([int(w) for w in got], dtype=np.uint64)
    exp_a = np.asarray([int(w) for w in expected], dtype=np.uint64)
    if got_a.shape != exp_a.shape:
        raise AssertionError(f"{what}: {got_a.size} words, expected {exp_a.size}")
    bad = np.flatnonzero(got_a != exp_a)
    if bad.size:
        i = int(bad[0])
        raise AssertionError(f"{what}: {bad.size} of {exp_a.size} words differ; first at "
                             f"{i}: got {int(got_a[i]):#x}, expected {int(exp_a[i]):#x}")


# ------------------------------------------------------------------ run glue


class KernelRunError(RuntimeError):
    """A cocotb test of a kernel failed (the message names the log and the tests)."""


def build_kernel(kernel: str, params: PixelKernelParams, work_dir: str | Path,
                 simulator: str = "verilator") -> Path:
    """Compile ``kernel`` with ``params`` for cocotb; returns its build directory.

    One directory per kernel, simulator and parameter set under ``work_dir``; an
    up-to-date build is reused.
    """
    from cocotb_tools.runner import get_runner

    from .rtlsim import ensure_verilator, verilator_make_env

    hdl = params.hdl_parameters(kernel)
    tag = "_".join(f"{k}{v}" for k, v in hdl.items())
    build_dir = Path(work_dir).absolute() / f"{kernel}_{simulator}_{tag}" / "build"
    runner = get_runner(simulator)
    args: list[str] = []
    if simulator == "verilator":
        ensure_verilator()
        args = ["--no-timing", "-Wall"]
    with verilator_make_env():
        runner.build(
            sources=[str(s) for s in kernel_sources(kernel)],
            hdl_toplevel=kernel,
            build_dir=str(build_dir),
            parameters=hdl,
            build_args=args,
            timescale=("1ns", "1ps"),
            log_file=str(build_dir / "build.log"),
        )
    return build_dir


@dataclass
class KernelRun:
    """Outcome of one simulator run of a kernel's cocotb tests.

    Attributes:
        kernel: ``pixel_in`` or ``pixel_out``.
        outcomes: cocotb test name -> failure message, or ``""`` if it passed.
        measurements: what tests recorded (e.g. ``pixel_in_throughput``: cycles, pixels
            per clock).
        log: the simulator log.
    """

    kernel: str
    outcomes: dict[str, str]
    measurements: dict[str, Any]
    log: Path

    def check(self, test: str = "") -> list[str]:
        """Raise :class:`KernelRunError` if a test whose name contains ``test`` failed.

        Returns:
            The names of the matching tests (at least one, else an error too).
        """
        names = [n for n in self.outcomes if test in n]
        if not names:
            raise KernelRunError(f"{self.kernel}: no cocotb test named like {test!r} ran "
                                 f"(ran {sorted(self.outcomes)}); see {self.log}")
        failed = {n: self.outcomes[n] for n in names if self.outcomes[n]}
        if failed:
            lines = "\n".join(f"  {n}: {m}" for n, m in failed.items())
            raise KernelRunError(f"{self.kernel}: {len(failed)} of {len(names)} cocotb tests "
                                 f"failed (see {self.log}):\n{lines}")
        return names


def run_kernel_tests(
    kernel: str,
    params: PixelKernelParams,
    cameras: Sequence[Camera],
    *,
    work_dir: str | Path,
    tests: str | None = None,
    spec: SignalSpec | None = None,
    frame: tuple[int, int] = (32, 32),
    seed: int = 0,
    simulator: str = "verilator",
) -> KernelRun:
    """Run the cocotb tests of ``kernel`` (:mod:`fluorofpga.hw.cocotb_pixel`) in one simulation.

    Args:
        kernel: ``"pixel_in"`` or ``"pixel_out"``.
        params: HDL parameters (one build per set).
        cameras: two cameras (tables are swapped at run time); all must fit ``params``.
        work_dir: directory for builds and runs.
        tests: regular expression selecting cocotb tests by the name after the kernel
            prefix (``matrix``, ``stress``...); None = all of them.
        spec: the signal representation (default ``SignalSpec()``).
        frame: frame shape of the tests, pixels (the throughput test uses 4x the pixels).
        seed: seed of frames, idle and backpressure patterns.
        simulator: cocotb simulator name (``verilator``; ``icarus`` works too).

    Returns:
        The :class:`KernelRun`; call its :meth:`~KernelRun.check` to raise on failures.

    Raises:
        KernelRunError: the simulation produced no results (it crashed; see its log).
    """

    from fluorofpga.microscope.signal import SignalSpec

    spec = spec or SignalSpec()
    if len(cameras) != 2:
        raise ValueError("the kernel tests need two cameras (tables are swapped at run time)")
    for cam in cameras:
        params.check_tables(cam.tables(spec))
    build_dir = build_kernel(kernel, params, work_dir, simulator)
    run = f"{tests or 'all'}_seed{seed}"
    run = "".join(c if c.isalnum() or c in "-_" else "_" for c in run)
    test_dir = build_dir.parent / run
    if test_dir.exists():
        shutil.rmtree(test_dir)
    test_dir.mkdir(parents=True)
    job = {
        "kernel": kernel,
        "params": params.to_dict(),
        "spec": spec.to_dict(),
        "cameras": [c.to_dict() for c in cameras],
        "frame": list(frame),
        "seed": seed,
        "measurements": str(test_dir / "measurements.json"),
    }
    return run_cocotb_tests(kernel, build_dir, test_dir, job, seed,
                            f"\\.{kernel}_({tests or '.*'})", simulator)


def run_cocotb_tests(toplevel: str, build_dir: Path, test_dir: Path, job: dict[str, Any],
                     seed: int, test_filter: str, simulator: str = "verilator",
                     module: str = COCOTB_MODULE, job_env: str = JOB_ENV) -> KernelRun:
    """Run the cocotb tests of ``module`` matching ``test_filter`` on a built kernel.

    ``job`` (with a ``measurements`` file path) is written to ``test_dir/job.json`` and
    named by ``job_env`` in the simulator's environment. Returns the
    :class:`KernelRun`; raises :class:`KernelRunError` when the simulation gave no
    results (it crashed) or ran no test.
    """
    from cocotb_tools.runner import get_runner

    job_file = test_dir / "job.json"
    job_file.write_text(json.dumps(job))
    log = test_dir / "sim.log"
    results = test_dir / "results.xml"
    crash = ""
    try:
        get_runner(simulator).test(
            test_module=module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=str(build_dir),
            test_dir=str(test_dir),
            extra_env={job_env: str(job_file)},
            log_file=str(log),
            results_xml=str(results),
            seed=seed,
            test_filter=test_filter,
        )
    except (RuntimeError, SystemExit) as err:  # cocotb's runner: failed tests or a crash
        crash = f"{type(err).__name__}: {err}"
    if not results.is_file():
        raise KernelRunError(f"{toplevel}: the simulation gave no results ({crash}); "
                             f"see {log}")
    outcomes = _read_results(results)
    if not outcomes:
        raise KernelRunError(f"{toplevel}: no cocotb test ran; see {log}")
    meas_file = Path(job["measurements"])
    measurements = json.loads(meas_file.read_text()) if meas_file.is_file() else {}
    return KernelRun(toplevel, outcomes, measurements, log)


def _read_results(xml_file: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(xml_file).getroot().iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        message = "" if bad is None else (bad.get("message") or bad.text or "failed")
        outcomes[case.get("name", "?")] = message
    return outcomes
