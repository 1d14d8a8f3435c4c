"""Our SIM demodulation kernel (``hw/rtl/sim_demod.sv``): its stream words, its test stimulus
and the cocotb run glue.

The reference is :func:`~fluorofpga.microscope.sim_linear.demodulate_int` itself (and its
:class:`~fluorofpga.microscope.sim_linear.DemodRegisters`); this module only packs its
numbers into stream words. The kernel's header comment describes the arithmetic and the
tile / load / reset rules; in short:

* ``s_axis`` / ``m_axis``: one pixel a beat, 72 bits, channel ``c`` in bits
  ``[8c, 8c+8)`` (:func:`pack_codes`): in, the 9 frames angle-major; out, ``c0, Re z, Im z``
  per angle. TLAST ends a tile and travels with its pixel.
* ``s_axis_cfg``: :func:`demod_config_words`, 15 words a tile, TLAST on the last. A load
  takes effect at the next tile boundary (it may be sent while the previous tile streams);
  after a tile's TLAST pixel no pixel is accepted until the next load.
* ``sat_count``: clipped channel values of the current tile (``demodulate_int``'s count once
  the tile's TLAST beat has left); ``cfg_rejects``: malformed loads since the last reset.

The sine tables are data the kernel includes: :func:`write_sine_tables` writes
``sim_demod_tables.svh`` from :func:`~fluorofpga.microscope.sim_linear.sine_tables` into
the build directory, so the ROMs hold exactly Python's ``np.rint`` values.

Run glue: :func:`run_demod_tests` compiles the kernel (:func:`build_demod_kernel`) and runs
the cocotb tests of :mod:`fluorofpga.hw.cocotb_demod`, which check every output word and
every tile's saturation count against ``demodulate_int``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluorofpga.microscope.sim_linear import (
    CHANNEL_ZERO,
    GAIN_BITS,
    GAIN_SHIFT,
    PHASE_BITS,
    TABLE_BITS,
    TABLE_ONE,
    DemodRegisters,
    demodulate_int,
    sine_tables,
)

from .pixel_kernels import RTL_DIR, KernelRun, run_cocotb_tests

__all__ = [
    "ANGLES",
    "CFG_WORDS",
    "CHANNELS",
    "assert_same_pixels",
    "TABLES_FILE",
    "TOPLEVEL",
    "build_demod_kernel",
    "demod_config_words",
    "demod_reference",
    "demod_sources",
    "demod_stimulus",
    "pack_codes",
    "random_registers",
    "run_demod_tests",
    "unpack_codes",
    "write_sine_tables",
]

TOPLEVEL = "sim_demod"  #: the kernel's top module
#: its SystemVerilog sources under :data:`~fluorofpga.hw.pixel_kernels.RTL_DIR`, dependencies first
SOURCES = ("axis_skid_buffer.sv", "sim_demod.sv")
TABLES_FILE = "sim_demod_tables.svh"  #: the generated include holding the sine tables
ANGLES = 3  #: pattern angles the kernel is built for
CHANNELS = 3 * ANGLES  #: input frames = output channels per pixel
CODE_BITS = 8  #: input / output code width
CFG_WORDS = 4 * ANGLES + 3  #: words of one register load
#: environment variable naming the job file of a :mod:`~fluorofpga.hw.cocotb_demod` run
JOB_ENV = "FLUOROFPGA_DEMOD_JOB"
COCOTB_MODULE = "fluorofpga.hw.cocotb_demod"  #: cocotb test module of the kernel
_ENTRY_BITS = 16  # signed sine table entry width in the kernel
_U32 = 1 << PHASE_BITS
_GAIN_LIMIT = 1 << GAIN_BITS
_CODE_TOP = (1 << CODE_BITS) - 1


# ------------------------------------------------------------------ stream words


def demod_config_words(regs: DemodRegisters, width: int) -> list[int]:
    """The ``s_axis_cfg`` words of one tile: per angle ``phase0, step_x, step_y, gain_z``,
    then ``gain_s``, ``in_zero | wide_zero << 8`` and the tile width in pixels.

    Raises:
        ValueError: ``regs`` has another number of angles than the kernel, or a field (or
            ``width``) does not fit its register.
    """
    per_angle = {"phase0": regs.phase0, "step_x": regs.step_x, "step_y": regs.step_y,
                 "gain_z": regs.gain_z}
    for name, values in per_angle.items():
        if len(values) != ANGLES:
            raise ValueError(f"the kernel has {ANGLES} angles; {name} has {len(values)}")
    limits = {"phase0": _U32, "step_x": _U32, "step_y": _U32, "gain_z": _GAIN_LIMIT}
    for name, values in per_angle.items():
        for a, v in enumerate(values):
            _check_field(f"{name}[{a}]", v, limits[name])
    _check_field("gain_s", regs.gain_s, _GAIN_LIMIT)
    _check_field("in_zero", regs.in_zero, _CODE_TOP + 1)
    _check_field("wide_zero", regs.wide_zero, _CODE_TOP + 1)
    if not 1 <= int(width) < _U32:
        raise ValueError(f"tile width {width} must be 1..2**32-1 pixels")
    words: list[int] = []
    for a in range(ANGLES):
        words += [int(regs.phase0[a]), int(regs.step_x[a]), int(regs.step_y[a]),
                  int(regs.gain_z[a])]
    words += [int(regs.gain_s), int(regs.in_zero) | int(regs.wide_zero) << CODE_BITS,
              int(width)]
    return words


def _check_field(name: str, value: int, limit: int) -> None:
    if not 0 <= int(value) < limit:
        raise ValueError(f"{name}={value} does not fit the kernel's register (0..{limit - 1})")


def pack_codes(codes: np.ndarray) -> list[int]:
    """``(9, ...)`` uint8 channels -> one 72-bit word per pixel (row-major), channel ``c``
    in bits ``[8c, 8c+8)``."""
    from .rtlsim import pack_words

    c = np.asarray(codes)
    if c.shape[0] != CHANNELS or c.dtype != np.uint8:
        raise ValueError(f"expected uint8 codes of shape ({CHANNELS}, ...), got {c.dtype} "
                         f"{c.shape}")
    return pack_words(c.reshape(CHANNELS, -1).T, CODE_BITS)


def unpack_codes(words: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_codes`: words -> ``(9, *shape)`` uint8."""
    from .rtlsim import unpack_words

    if len(words) != int(np.prod(shape)):
        raise ValueError(f"{len(words)} words for a tile of shape {shape}")
    u = unpack_words(list(words), CODE_BITS, CHANNELS, signed=False)
    return u.T.reshape(CHANNELS, *shape).astype(np.uint8)


def assert_same_pixels(got: Sequence[int], expected: Sequence[int], shape: tuple[int, ...],
                       what: str) -> None:
    """Raise ``AssertionError`` naming the first differing channel value unless the 72-bit
    words of a tile of ``shape`` are identical."""
    if len(got) != len(expected):
        raise AssertionError(f"{what}: {len(got)} pixels, expected {len(expected)}")
    g, e = unpack_codes(got, shape), unpack_codes(expected, shape)
    bad = np.argwhere(g != e)
    if bad.size:
        c, *pos = (int(v) for v in bad[0])
        raise AssertionError(f"{what}: {len(bad)} channel values differ; first: channel {c} "
                             f"of pixel {tuple(pos)}: got {g[(c, *pos)]}, expected "
                             f"{e[(c, *pos)]}")


def demod_reference(codes: np.ndarray, regs: DemodRegisters) -> tuple[list[int], int]:
    """What the kernel emits for one tile ``(9, H, W)``: ``m_axis`` words (from
    ``demodulate_int``) and the tile's ``sat_count``."""
    out, saturated = demodulate_int(codes, regs)
    return pack_codes(out), saturated


# ------------------------------------------------------------------ stimulus


def random_registers(rng: np.random.Generator, *, saturating: bool = False) -> DemodRegisters:
    """Random registers over the kernel's whole ranges.

    Phases and steps are uniform 32-bit (now and then 0, 2³¹ or 2³²−1); gains log-uniform
    over the 18-bit range (now and then 0, 1 or the top value); zeros uniform 8-bit. With
    ``saturating``, gains ≥ 2¹⁶, ``in_zero`` 32..128 and ``wide_zero`` ≤ 64: then the
    pixels of :func:`demod_stimulus` clip every channel at both ends.
    """
    def word() -> int:
        if rng.random() < 0.1:
            return int(rng.choice([0, 1 << (PHASE_BITS - 1), _U32 - 1]))
        return int(rng.integers(0, _U32))

    def gain() -> int:
        if saturating:
            return int(rng.integers(1 << 16, _GAIN_LIMIT))
        if rng.random() < 0.1:
            return int(rng.choice([0, 1, _GAIN_LIMIT - 1]))
        return min(int(2.0 ** rng.uniform(0, GAIN_BITS)), _GAIN_LIMIT - 1)

    angles = range(ANGLES)
    return DemodRegisters(
        phase0=tuple(word() for _ in angles),
        step_x=tuple(word() for _ in angles),
        step_y=tuple(word() for _ in angles),
        gain_z=tuple(gain() for _ in angles),
        gain_s=gain(),
        in_zero=int(rng.integers(32, 129) if saturating else rng.integers(0, 256)),
        wide_zero=int(rng.integers(0, 65) if saturating else rng.integers(0, 256)),
    )


#: input triples per angle the crafted pixels choose from
_CORNERS = np.array([(u0, u1, u2) for u0 in (0, 255) for u1 in (0, 255) for u2 in (0, 255)],
                    dtype=np.int64)


def demod_stimulus(shape: tuple[int, int], regs: DemodRegisters, rng: np.random.Generator
                   ) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """A test tile ``(9, H, W)`` uint8 covering every code in every channel, plus crafted pixels.

    Every channel holds each of the 256 codes at least once (the rest uniform random). Eight
    pixels are crafted: all 0, all 255, and for each output kind (``c0``, ``Re z``,
    ``Im z``) and end one pixel whose frames (each 0 or 255) push that kind of every angle
    as far as they can towards that end at the pixel's phase.

    Returns:
        The codes and the ``(channel, end)`` pairs (end −1: below 0, +1: above 255) that
        the crafted pixels are sure to clip (every one for :func:`random_registers`
        ``(saturating=True)``).
    """
    h, w = shape
    n = h * w
    crafted = 8
    if n < 256 + crafted:
        raise ValueError(f"a {h}x{w} tile cannot hold every code plus {crafted} crafted pixels")
    flat = rng.integers(0, 256, size=(CHANNELS, n), dtype=np.int64)
    spots = rng.permutation(n)
    special, rest = spots[:crafted], spots[crafted:]
    for c in range(CHANNELS):
        flat[c, rng.choice(rest, size=256, replace=False)] = np.arange(256)
    flat[:, special[0]] = 0
    flat[:, special[1]] = 255
    clipped: set[tuple[int, int]] = set()
    targets = [(kind, end) for kind in range(3) for end in (-1, 1)]
    for spot, (kind, end) in zip(special[2:], targets, strict=True):
        y, x = divmod(int(spot), w)
        for a in range(ANGLES):
            acc = _corner_accumulators(regs, a, y, x)[:, kind]
            best = int(np.argmax(end * acc))
            flat[3 * a: 3 * a + 3, spot] = _CORNERS[best]
            gain = regs.gain_s if kind == 0 else regs.gain_z[a]
            zero = regs.wide_zero if kind == 0 else CHANNEL_ZERO
            raw = ((int(acc[best]) * int(gain) + (1 << (GAIN_SHIFT - 1))) >> GAIN_SHIFT) + zero
            if raw < 0 or raw > _CODE_TOP:
                clipped.add((3 * a + kind, 1 if raw > _CODE_TOP else -1))
    return flat.reshape(CHANNELS, h, w).astype(np.uint8), clipped


def _corner_accumulators(regs: DemodRegisters, a: int, y: int, x: int) -> np.ndarray:
    """``(8, 3)``: ``s, zr, zi`` of angle ``a`` at pixel ``(y, x)`` for each corner triple."""
    sin, sin3 = sine_tables()
    mask = (1 << TABLE_BITS) - 1
    phase = (regs.phase0[a] + x * regs.step_x[a] + y * regs.step_y[a]) % _U32
    i = ((phase + (1 << (PHASE_BITS - TABLE_BITS - 1))) >> (PHASE_BITS - TABLE_BITS)) & mask
    k = (i + (1 << (TABLE_BITS - 2))) & mask
    u0, u1, u2 = _CORNERS.T
    big_a, big_b = 2 * u0 - u1 - u2, u2 - u1
    s = (u0 + u1 + u2 - 3 * regs.in_zero) * TABLE_ONE
    return np.stack([s, big_a * int(sin[k]) + big_b * int(sin3[i]),
                     big_b * int(sin3[k]) - big_a * int(sin[i])], axis=1)


# ------------------------------------------------------------------ build


def write_sine_tables(directory: str | Path) -> Path:
    """Write :data:`TABLES_FILE` (the kernel's ROMs, from ``sine_tables()``) into
    ``directory``; an identical file is left untouched (its build stays up to date).

    The include declares two ROMs, ``sin_rom`` and ``sin3_rom`` (1024 signed 16-bit
    entries each), and an ``initial`` block that sets every entry, in two's-complement hex.
    """
    sin, sin3 = sine_tables()
    limit = 1 << (_ENTRY_BITS - 1)
    if max(int(np.abs(sin).max()), int(np.abs(sin3).max())) >= limit:
        raise ValueError("a sine table entry does not fit the kernel's 16-bit ROM")
    mask = (1 << _ENTRY_BITS) - 1
    roms = (("sin_rom", sin), ("sin3_rom", sin3))
    lines = ["// SPDX-License-Identifier: Apache-2.0",
             "// Generated by fluorofpga.hw.demod_kernel.write_sine_tables from",
             "// fluorofpga.microscope.sim_linear.sine_tables(): do not edit."]
    lines += [f"logic signed [{_ENTRY_BITS - 1}:0] {name} [{len(table)}];"
              for name, table in roms]
    lines.append("initial begin")
    for name, table in roms:
        lines += [f"    {name}[{i}] = {_ENTRY_BITS}'h{int(v) & mask:04x};"
                  for i, v in enumerate(table)]
    lines.append("end")
    text = "\n".join(lines) + "\n"
    path = Path(directory) / TABLES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def demod_sources() -> list[Path]:
    """The kernel's SystemVerilog files, dependencies first (plus :data:`TABLES_FILE`,
    included from a directory of :func:`write_sine_tables`)."""
    return [RTL_DIR / f for f in SOURCES]


def build_demod_kernel(work_dir: str | Path, simulator: str = "verilator") -> Path:
    """Compile the kernel for cocotb under ``work_dir``; returns its build directory.

    The sine-table include is written next to the build (``<work_dir>/sim_demod_<simulator>
    /include``); an up-to-date build is reused. Verilator runs with ``-Wall`` (every
    warning is an error).
    """
    from cocotb_tools.runner import get_runner

    from .rtlsim import ensure_verilator, verilator_make_env

    root = Path(work_dir).absolute() / f"{TOPLEVEL}_{simulator}"
    include = write_sine_tables(root / "include").parent
    build_dir = root / "build"
    args: list[str] = []
    if simulator == "verilator":
        ensure_verilator()
        args = ["--no-timing", "-Wall"]
    with verilator_make_env():
        get_runner(simulator).build(
            sources=[str(s) for s in demod_sources()],
            hdl_toplevel=TOPLEVEL,
            build_dir=str(build_dir),
            includes=[str(include)],
            build_args=args,
            timescale=("1ns", "1ps"),
            log_file=str(build_dir / "build.log"),
        )
    return build_dir


def run_demod_tests(
    work_dir: str | Path,
    *,
    tests: str | None = None,
    seed: int = 0,
    throughput_pixels: int = 4096,
    simulator: str = "verilator",
    extra_job: dict[str, Any] | None = None,
) -> KernelRun:
    """Run the cocotb tests of :mod:`fluorofpga.hw.cocotb_demod` in one simulation.

    Args:
        work_dir: directory for the build and the runs.
        tests: regular expression selecting tests by the name after ``demod_``
            (``random_tiles``, ``matrix``...); None = all of them.
        seed: seed of registers, codes, idle and backpressure patterns.
        throughput_pixels: pixels of each of the two tiles of the throughput test.
        simulator: cocotb simulator name (``verilator``; ``icarus`` works too).
        extra_job: more entries of the job (:func:`run_demod_on_tiles`).

    Returns:
        The :class:`~fluorofpga.hw.pixel_kernels.KernelRun` (``kernel`` = ``sim_demod``;
        measurements ``demod_throughput``); call its ``check()`` to raise on failures.

    Raises:
        KernelRunError: the simulation produced no results (it crashed; see its log).
    """

    build_dir = build_demod_kernel(work_dir, simulator)
    run = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{tests or 'all'}_seed{seed}")
    test_dir = build_dir.parent / run
    if test_dir.exists():
        shutil.rmtree(test_dir)
    test_dir.mkdir(parents=True)
    measurements = test_dir / "measurements.json"
    job = {"seed": seed, "throughput_pixels": throughput_pixels,
           "measurements": str(measurements), **(extra_job or {})}
    return run_cocotb_tests(TOPLEVEL, build_dir, test_dir, job, seed,
                            f"\\.demod_({tests or '.*'})", simulator, COCOTB_MODULE, JOB_ENV)


def run_demod_on_tiles(work_dir: str | Path, tiles: Sequence[tuple[np.ndarray, DemodRegisters]],
                       simulator: str = "verilator") -> list[np.ndarray]:
    """The kernel's output channels for given tiles: each ``(codes (9, H, W) uint8,
    registers)`` is loaded and streamed in turn (no idle, no backpressure) and its output
    words are returned as ``(9, H, W)`` uint8 — what the RTL computes, for chaining with the
    next stage's simulation (the run also checks them against ``demodulate_int``).
    """
    work = Path(work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    job_in, job_out = work / "job_tiles.npz", work / "job_tiles_out.npz"
    np.savez(job_in, **{f"codes{i}": np.ascontiguousarray(c, dtype=np.uint8)
                        for i, (c, _) in enumerate(tiles)},
             registers=np.array(json.dumps([r.to_dict() for _, r in tiles])))
    if job_out.exists():
        job_out.unlink()
    run = run_demod_tests(work, tests="job_tiles", simulator=simulator,
                          extra_job={"tiles": str(job_in), "tiles_out": str(job_out)})
    run.check()
    with np.load(job_out) as data:
        return [data[f"out{i}"] for i in range(len(tiles))]
