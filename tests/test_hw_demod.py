"""Rung 5 for our SIM demodulation kernel: sim_demod (hw/rtl) in Verilator via cocotb, every
output word and every tile's saturation count == demodulate_int, under idle cycles and
backpressure, with loads between tiles, malformed loads and resets, and one pixel per
clock measured; the same tests in Icarus.

The kernel is compiled once and all its cocotb tests (:mod:`fluorofpga.hw.cocotb_demod`)
run in one simulation; the pytest tests below each check their part of that run. The
Python-only tests tie the register words, the pixel words and the sine-table include to
sim_linear.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from fluorofpga.hw.demod_kernel import (
    ANGLES,
    CFG_WORDS,
    TOPLEVEL,
    assert_same_pixels,
    demod_config_words,
    demod_reference,
    demod_sources,
    demod_stimulus,
    pack_codes,
    random_registers,
    run_demod_tests,
    unpack_codes,
    write_sine_tables,
)
from fluorofpga.hw.pixel_kernels import KernelRunError
from fluorofpga.microscope.sim import AngleParameters
from fluorofpga.microscope.sim_linear import (
    DemodRegisters,
    LinearSimCodes,
    demodulate_int,
    sine_tables,
)

REGS = DemodRegisters(phase0=(1, 2, 3), step_x=(4, 5, 6), step_y=(7, 8, 9),
                      gain_z=(10, 11, 12), gain_s=13, in_zero=16, wide_zero=8)


@pytest.fixture(scope="module")
def demod_run(tmp_path_factory, verilator):
    """The Verilator run of all cocotb tests (one simulation), or its error."""
    try:
        return run_demod_tests(tmp_path_factory.mktemp("demod"), seed=7)
    except KernelRunError as err:
        return err


def _run(result):
    if isinstance(result, KernelRunError):
        raise result
    return result


# ------------------------------------------------------------------- simulation


def test_pixels_wait_for_a_load(demod_run):
    run = _run(demod_run)
    run.check("_waits_for_load")
    assert run.measurements["demod_waits_for_load"]["power_up_checked"]


def test_random_length_stress(demod_run):
    _run(demod_run).check("_stress")


def test_random_tiles_equal_demodulate_int(demod_run):
    _run(demod_run).check("_random_tiles")


def test_idle_backpressure_matrix(demod_run):
    names = _run(demod_run).check("_matrix/")
    assert len(names) == 9  # {none, 3-of-4 cycle, random} x {same}


def test_loads_between_tiles_and_malformed_loads(demod_run):
    _run(demod_run).check("_reload")


def test_reset_mid_tile_and_mid_load(demod_run):
    _run(demod_run).check("_reset_mid_tile")


def test_one_pixel_per_clock(demod_run):
    run = _run(demod_run)
    run.check("_throughput")
    m = run.measurements["demod_throughput"]
    print("\nsim_demod throughput:", json.dumps(m, indent=1))
    assert m["pixels"] == 2 * 4096
    assert m["steady_pixels_per_clock"] == 1.0  # two tiles, no gap between them
    assert m["pixels"] / m["pixels_per_clock"] == m["pixels"] + m["latency_cycles"]


# ------------------------------------------------------------------- Icarus


def _iverilog() -> str:
    exe = shutil.which("iverilog")
    if exe is None:
        pytest.fail("Icarus Verilog not found: `apt-get install iverilog` (Icarus 11); the "
                    "kernel must stay Icarus-clean", pytrace=False)
    return exe


def test_kernel_compiles_in_icarus(tmp_path):
    include = write_sine_tables(tmp_path).parent
    r = subprocess.run([_iverilog(), "-g2012", "-Wall", f"-I{include}", "-s", TOPLEVEL, "-o",
                        str(tmp_path / "k.vvp"), *map(str, demod_sources())],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_kernel_simulates_in_icarus(tmp_path_factory):
    _iverilog()
    run = run_demod_tests(tmp_path_factory.mktemp("demod_icarus"), simulator="icarus",
                          seed=3, throughput_pixels=512)
    run.check()
    assert run.measurements["demod_throughput"]["steady_pixels_per_clock"] == 1.0


# ------------------------------------------------------------------- formats


def test_config_words_are_the_registers_in_order():
    words = demod_config_words(REGS, 31)
    assert len(words) == CFG_WORDS == 15
    assert words == [1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 12, 13, 16 | 8 << 8, 31]


@pytest.mark.parametrize("change, match", [
    ({"gain_z": (10, 1 << 18, 12)}, r"gain_z\[1\]"),
    ({"gain_s": -1}, "gain_s"),
    ({"phase0": (1, 2, 1 << 32)}, r"phase0\[2\]"),
    ({"step_y": (7, -8, 9)}, r"step_y\[1\]"),
    ({"in_zero": 256}, "in_zero"),
    ({"wide_zero": 300}, "wide_zero"),
    ({"step_x": (4, 5)}, "3 angles"),
])
def test_config_words_refuse_what_the_kernel_cannot_hold(change, match):
    with pytest.raises(ValueError, match=match):
        demod_config_words(dataclasses.replace(REGS, **change), 8)
    for width in (0, 1 << 32):
        with pytest.raises(ValueError, match="width"):
            demod_config_words(REGS, width)


def test_config_words_of_measured_parameters():
    params = [AngleParameters(0.21, 0.05, 0.3, 0.8), AngleParameters(-0.14, 0.17, 2.0, 0.5),
              AngleParameters(-0.07, -0.2, -1.0, 0.1)]
    regs = DemodRegisters.from_parameters(params, LinearSimCodes())
    words = demod_config_words(regs, 128)
    assert words[0::4][:ANGLES] == list(regs.phase0)
    assert words[3::4][:ANGLES] == list(regs.gain_z)
    assert all(0 <= w < 1 << 32 for w in words)


def test_pixel_words_pack_channel_c_at_bits_8c():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (9, 5, 7)).astype(np.uint8)
    words = pack_codes(codes)
    assert len(words) == 35 and max(words) < 1 << 72
    assert words[8] == sum(int(codes[c, 1, 1]) << (8 * c) for c in range(9))
    assert np.array_equal(unpack_codes(words, (5, 7)), codes)
    with pytest.raises(ValueError):
        pack_codes(codes.astype(np.int16))
    with pytest.raises(ValueError):
        unpack_codes(words, (5, 6))


def test_reference_words_are_demodulate_int():
    rng = np.random.default_rng(1)
    regs = random_registers(rng)
    codes, _ = demod_stimulus((9, 31), regs, rng)
    words, sat = demod_reference(codes, regs)
    out, want_sat = demodulate_int(codes, regs)
    assert sat == want_sat
    assert_same_pixels(words, pack_codes(out), (9, 31), "reference")
    bad = list(words)
    bad[40] ^= 1 << 17  # channel 2 of pixel (1, 9)
    with pytest.raises(AssertionError, match=r"channel 2 of pixel \(1, 9\)"):
        assert_same_pixels(bad, words, (9, 31), "reference")


def test_sine_table_include_holds_pythons_tables(tmp_path):
    path = write_sine_tables(tmp_path)
    text = path.read_text()
    entries: dict[str, dict[int, int]] = {"sin_rom": {}, "sin3_rom": {}}
    for name, i, hex_value in re.findall(r"(sin3?_rom)\[(\d+)\] = 16'h([0-9a-f]{4});", text):
        v = int(hex_value, 16)
        entries[name][int(i)] = v - (1 << 16) if v >= 1 << 15 else v
    for name, table in zip(entries, sine_tables(), strict=True):
        assert sorted(entries[name]) == list(range(1024))
        assert np.array_equal([entries[name][i] for i in range(1024)], table)
    mtime = path.stat().st_mtime_ns
    write_sine_tables(tmp_path)  # unchanged: not rewritten (the build stays up to date)
    assert path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stimulus_covers_every_code_and_clips_every_channel_at_both_ends(seed):
    rng = np.random.default_rng(seed)
    regs = random_registers(rng, saturating=True)
    codes, ends = demod_stimulus((9, 31), regs, rng)
    assert ends == {(c, e) for c in range(9) for e in (-1, 1)}
    for c in range(9):
        assert np.array_equal(np.unique(codes[c]), np.arange(256))
    out, sat = demodulate_int(codes, regs)  # the reference agrees
    assert sat >= 18
    for c in range(9):
        assert out[c].min() == 0 and out[c].max() == 255
    with pytest.raises(ValueError, match="cannot hold"):
        demod_stimulus((16, 16), regs, rng)


def test_random_registers_span_the_register_ranges():
    rng = np.random.default_rng(3)
    regs = [random_registers(rng) for _ in range(200)]
    gains = np.array([g for r in regs for g in (*r.gain_z, r.gain_s)])
    assert gains.max() >= 1 << 17 and gains.min() <= 1 and np.median(gains) < 1 << 14
    phases = np.array([p for r in regs for p in (*r.phase0, *r.step_x, *r.step_y)])
    assert phases.max() >= 0xF000_0000 and phases.min() == 0
    for r in regs:  # all loadable
        demod_config_words(r, 1)
