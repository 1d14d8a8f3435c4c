"""Rung 5 for our own kernels: pixel_in / pixel_out (hw/rtl) in Verilator via cocotb, every
output word == the Python reference (SignalTables), under idle cycles and backpressure,
with tables of two cameras loaded at run time, and one pixel per clock measured.

Each kernel parameter set is compiled once and all its cocotb tests
(:mod:`fluorofpga.hw.cocotb_pixel`) run in one simulation; the pytest tests below each
check their part of that run. The Python-only tests tie the stream formats to
SignalTables.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from fluorofpga.hw.pixel_kernels import (
    RTL_DIR,
    Camera,
    KernelRunError,
    PixelKernelParams,
    full_range_frame,
    kernel_sources,
    pack_bypass,
    passthrough_flags,
    pixel_in_reference,
    pixel_in_table,
    pixel_out_reference,
    pixel_out_table,
    random_residuals,
    run_kernel_tests,
    unpack_bypass,
)
from fluorofpga.microscope.signal import CodeCounts, NoiseModel, SignalSpec

SPEC = SignalSpec()
#: a 16-bit sCMOS (0.5 e-/ADU, offset 100) and a 12-bit camera (2 e-/ADU, offset 400)
CAMERAS = (
    Camera(NoiseModel.from_camera(0.5, 100.0, 1.6), 65535),
    Camera(NoiseModel.from_camera(2.0, 400.0, 3.0), 4095),
)
#: two 12-bit cameras for a pixel_in whose table holds only 4096 entries
CAMERAS_12BIT = (
    Camera(NoiseModel.from_camera(2.0, 400.0, 3.0), 4095),
    Camera(NoiseModel.from_camera(1.0, 100.0, 1.2), 3000),
)
FRAME = (32, 32)  #: frame of the tests (the throughput test streams 4x as many pixels)
#: (kernel, variant) -> (parameters, cameras)
VARIANTS = {
    ("pixel_in", "adc16"): (PixelKernelParams(), CAMERAS),
    ("pixel_out", "float32"): (PixelKernelParams(), CAMERAS),
    ("pixel_in", "adc12"): (PixelKernelParams(adc_max=4095), CAMERAS_12BIT),
    ("pixel_out", "uint16"): (PixelKernelParams(output="uint16"), CAMERAS),
}
KERNEL_RUNS = [
    pytest.param(("pixel_in", "adc16"), id="pixel_in-adc16"),
    pytest.param(("pixel_out", "float32"), id="pixel_out-float32"),
    pytest.param(("pixel_in", "adc12"), id="pixel_in-adc12", marks=pytest.mark.slow),
    pytest.param(("pixel_out", "uint16"), id="pixel_out-uint16", marks=pytest.mark.slow),
]
MEASURED: dict[str, dict] = {}


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("kernels")
    yield d
    if MEASURED:
        (d / "throughput.json").write_text(json.dumps(MEASURED, indent=1))
        print("\nkernel throughput:", json.dumps(MEASURED, indent=1))


@pytest.fixture(scope="module")
def kernel_run(sim_dir, verilator):
    """``run(kernel, variant)``: that variant's cocotb run (one simulation, cached)."""
    cache: dict = {}

    def run(key: tuple[str, str]):
        if key not in cache:
            params, cameras = VARIANTS[key]
            try:
                cache[key] = run_kernel_tests(key[0], params, cameras, work_dir=sim_dir,
                                              frame=FRAME, seed=7)
            except KernelRunError as err:
                cache[key] = err
        result = cache[key]
        if isinstance(result, KernelRunError):
            raise result
        return result

    return run


# ------------------------------------------------------------------- simulation


@pytest.mark.parametrize("key", KERNEL_RUNS)
def test_idle_backpressure_matrix(kernel_run, key):
    names = kernel_run(key).check("_matrix/")
    assert len(names) == 9  # {none, 3-of-4 cycle, random} x {same}


@pytest.mark.parametrize("key", KERNEL_RUNS)
def test_random_length_stress(kernel_run, key):
    kernel_run(key).check("_stress")


@pytest.mark.parametrize("key", KERNEL_RUNS)
def test_reset_mid_frame_and_mid_table_load(kernel_run, key):
    kernel_run(key).check("_reset_mid_frame")


@pytest.mark.parametrize("key", KERNEL_RUNS)
def test_two_cameras_tables_loaded_at_run_time(kernel_run, key):
    kernel_run(key).check("_two_cameras")


@pytest.mark.parametrize("key", KERNEL_RUNS)
def test_pixels_wait_for_a_table_load(kernel_run, key):
    kernel_run(key).check("_load_holds_pixels")


@pytest.mark.parametrize("key", KERNEL_RUNS)
def test_saturated_and_above_range_pixels_pass_through(kernel_run, key):
    kernel_run(key).check("_passthrough")


@pytest.mark.parametrize("key", KERNEL_RUNS)
def test_one_pixel_per_clock(kernel_run, key):
    run = kernel_run(key)
    run.check("_throughput")
    m = run.measurements[f"{key[0]}_throughput"]
    MEASURED["-".join(key)] = m
    assert m["pixels"] == 4 * FRAME[0] * FRAME[1]
    assert m["steady_pixels_per_clock"] == 1.0
    assert m["pixels_per_clock"] >= 0.99, m  # cycles from first input to last output


# ------------------------------------------------------------------- Icarus


def _iverilog() -> str:
    exe = shutil.which("iverilog")
    if exe is None:
        pytest.fail("Icarus Verilog not found: `apt-get install iverilog` (Icarus 11); the "
                    "kernels must stay Icarus-clean", pytrace=False)
    return exe


@pytest.mark.parametrize("kernel", ["pixel_in", "pixel_out"])
def test_kernels_compile_in_icarus(kernel, tmp_path):
    r = subprocess.run([_iverilog(), "-g2012", "-Wall", "-s", kernel, "-o",
                        str(tmp_path / "k.vvp"), *map(str, kernel_sources(kernel))],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["pixel_in", "pixel_out"])
def test_kernels_simulate_in_icarus(kernel, sim_dir):
    _iverilog()
    params, cameras = VARIANTS[("pixel_in", "adc12")] if kernel == "pixel_in" else VARIANTS[
        ("pixel_out", "float32")]
    run = run_kernel_tests(kernel, params, cameras, work_dir=sim_dir, simulator="icarus",
                           tests="matrix|passthrough|throughput", frame=(16, 16), seed=3)
    run.check()


# ------------------------------------------------------------------- formats


@pytest.mark.parametrize("camera", CAMERAS + CAMERAS_12BIT[1:])
def test_pixel_in_table_is_encode_and_the_saturation_rule(camera):
    params = PixelKernelParams()
    tables = camera.tables(SPEC)
    words = pixel_in_table(tables, params).astype(np.int64)
    assert words.size == params.adc_max + 1
    adu = np.arange(1 << params.in_bits, dtype=np.uint16)
    entry = words[np.minimum(adu, params.adc_max)]  # what the kernel reads
    assert np.array_equal(entry & 0xFF, tables.encode(adu))
    assert np.array_equal((entry >> 8) & 1, (adu >= tables.adc_max).astype(np.int64))
    assert not np.any(entry >> 9)


def test_pixel_in_table_capacity_is_checked():
    with pytest.raises(ValueError, match="capacity"):
        pixel_in_table(CAMERAS[0].tables(SPEC), PixelKernelParams(adc_max=4095))
    with pytest.raises(ValueError, match="signal spec"):
        pixel_out_table(CAMERAS[0].tables(SignalSpec(code_bits=13)), PixelKernelParams())


@pytest.mark.parametrize("camera", CAMERAS)
def test_flags_are_decodes_pass_through_rule(camera):
    tables = camera.tables(SPEC)
    rng = np.random.default_rng(0)
    adu = full_range_frame(tables, (64, 64), rng).ravel()
    q = tables.encode(adu)
    r = random_residuals(adu.size, PixelKernelParams(), rng)
    sat, above = passthrough_flags(tables, adu, q)
    counts = CodeCounts()
    out = tables.decode(adu, q, r, counts)
    assert counts.saturated == sat.sum() > 0 and counts.above_range == above.sum() > 0
    passed = sat | above
    assert np.array_equal(out[passed], adu[passed].astype(np.float64))
    # the frames also reach the clean code's lower clip (r above ratio*q + zero)
    assert np.any(SPEC.ratio * q.astype(np.int64) + SPEC.residual_zero - r < 0)


def test_bypass_words_round_trip():
    params = PixelKernelParams()
    rng = np.random.default_rng(1)
    adu = rng.integers(0, 1 << 16, 1000).astype(np.uint16)
    q = rng.integers(0, 256, 1000).astype(np.uint8)
    sat, above = rng.random(1000) < 0.3, rng.random(1000) < 0.3
    words = pack_bypass(adu, q, sat, above, params)
    assert int(words.max()) < 1 << params.bypass_bits
    for got, want in zip(unpack_bypass(words, params), (adu, q, sat, above), strict=True):
        assert np.array_equal(got, want)
    with pytest.raises(ValueError):
        pack_bypass([1 << 16], [0], [0], [0], params)


@pytest.mark.parametrize("output", ["float32", "uint16"])
def test_pixel_out_reference_is_decode(output):
    params = PixelKernelParams(output=output)
    tables = CAMERAS[0].tables(SPEC)
    rng = np.random.default_rng(2)
    adu = full_range_frame(tables, (32, 32), rng).ravel()
    q, byp = pixel_in_reference(tables, adu, params)
    r = random_residuals(adu.size, params, rng)
    got = pixel_out_reference(tables, byp, r, params)
    restored = tables.decode(adu, q, r)
    if output == "float32":
        assert got.dtype == np.uint32
        assert np.array_equal(got.view(np.float32), restored.astype(np.float32))
    else:  # FrameRestorer's uint16 rounding
        assert np.array_equal(got, np.clip(np.rint(restored), 0, 65535).astype(np.uint16))
    # the table is out_lut in the same format, indexed by spec.combine
    table = pixel_out_table(tables, params)
    passed = np.logical_or(*passthrough_flags(tables, adu, q))
    assert np.array_equal(got[~passed], table[SPEC.combine(q, r)][~passed])


def test_params_follow_the_signal_spec():
    spec = SignalSpec(in_step=0.125, residual_zero=100)
    params = PixelKernelParams.from_spec(spec, adc_max=4095, output="uint16")
    assert params.hdl_parameters("pixel_out") == {
        "IN_BITS": 16, "CODE_BITS": 8, "OUT_BITS": 8, "RATIO": 4, "ZERO": 100,
        "C_BITS": 12, "DATA_BITS": 16, "OUT_FLOAT": 0}
    assert params.hdl_parameters("pixel_in") == {"IN_BITS": 16, "CODE_BITS": 8,
                                                 "ADC_MAX": 4095}
    assert params.stream_widths("pixel_in")["m_axis_bypass"] == 32
    for kernel in ("pixel_in", "pixel_out"):
        assert all(p.is_file() and p.parent == RTL_DIR for p in kernel_sources(kernel))
