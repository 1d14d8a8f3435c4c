"""Rung 5: every FINN-generated RTL layer of a fresh small accelerator, in Verilator via
cocotb, under random input idle cycles and output backpressure, == FINN's Python
execution of the same node (exact integers)."""

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from fluorofpga.hw import HwBuildConfig, VivadoMissing, build
from fluorofpga.hw.rtlsim import (
    generate_layer_rtl,
    pack_words,
    random_layer_input,
    reference_layer,
    rtl_layer_names,
    simulate_layer,
    unpack_words,
)

pytestmark = pytest.mark.slow

TILE = 16
DEPTH = 3  # conv layers: FMPadding_rtl + ConvolutionInputGenerator_rtl + MVAU each
CHANNELS = 8
#: RTL layers of the default build (MVAUs are MVAU_hls: no RTL without Vitis HLS)
DEFAULT_RTL = (
    ["Reshape_rtl_0", "Reshape_rtl_1"]
    + [f"FMPadding_rtl_{i}" for i in range(DEPTH)]
    + [f"ConvolutionInputGenerator_rtl_{i}" for i in range(DEPTH)]
)
#: extra RTL layers with FINN's standalone_thresholds=True (MVAU_rtl + Thresholding_rtl)
THRESHOLDS_RTL = [f"Thresholding_rtl_{i}" for i in range(DEPTH)]
#: (input idle probability, output backpressure probability)
STALLS = [(0.0, 0.0), (0.3, 0.3), (0.0, 0.7)]
CYCLES: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A fresh small accelerator (untrained, calibrated w4a8), built twice by FINN."""
    import torch

    from fluorofpga.models import DenoiserConfig, PlainDenoiser, SimulatedPairs
    from fluorofpga.quantize import export_to_qonnx, quantize_from_float

    d = tmp_path_factory.mktemp("rtlsim_net")
    net = DenoiserConfig(channels=CHANNELS, depth=DEPTH)
    torch.manual_seed(0)
    data = SimulatedPairs(2, (64, 64), net.signal, seed=1)
    q, _ = quantize_from_float(PlainDenoiser(net).eval(), "w4a8", data, steps=0, crop=32)
    qonnx = export_to_qonnx(q, d / "model.qonnx.onnx", (TILE, TILE))
    cfg = HwBuildConfig(tile=TILE, halo=net.halo)
    return {
        "default": build(qonnx, d / "finn", cfg).hw_model,
        "standalone_thresholds": build(
            qonnx, d / "finn_st", dataclasses.replace(cfg, standalone_thresholds=True)
        ).hw_model,
    }


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rtlsim")


@pytest.fixture(scope="module", autouse=True)
def cycles_report(sim_dir):
    yield
    if CYCLES:
        (sim_dir / "cycles.json").write_text(json.dumps(CYCLES, indent=2))
        print("\nRTL layer cycles (one 16x16 tile):", json.dumps(CYCLES, indent=1))


def test_every_rtl_layer_is_covered(graphs):
    assert set(rtl_layer_names(graphs["default"])) == set(DEFAULT_RTL)
    st = set(rtl_layer_names(graphs["standalone_thresholds"]))
    assert st == set(DEFAULT_RTL) | set(THRESHOLDS_RTL) | {f"MVAU_rtl_{i}" for i in range(DEPTH)}


def _check_layer(graph: Path, name: str, sim_dir: Path, verilator: str) -> None:
    layer = generate_layer_rtl(graph, name, sim_dir / "gen" / name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = random_layer_input(layer, rng)
    expected = reference_layer(graph, name, x)
    assert expected.shape == layer.out_shape
    for seed, (idle, bp) in enumerate(STALLS):
        y, cycles = simulate_layer(layer, x, work_dir=sim_dir / "sim", idle_prob=idle,
                                   backpressure_prob=bp, seed=seed)
        assert np.array_equal(y, expected), f"{name} idle={idle} bp={bp}: RTL != Python"
        assert cycles >= layer.out_beats
        if idle == 0 and bp == 0:  # free-running: FINN's estimate plus pipeline latency
            assert cycles <= layer.exp_cycles + 64, (cycles, layer.exp_cycles)
        CYCLES.setdefault(name, {"finn_estimate": layer.exp_cycles})[f"idle{idle}_bp{bp}"] = (
            cycles
        )


@pytest.mark.parametrize("name", DEFAULT_RTL)
def test_rtl_layer_matches_python(graphs, sim_dir, verilator, name):
    _check_layer(graphs["default"], name, sim_dir, verilator)


@pytest.mark.parametrize("name", THRESHOLDS_RTL)
def test_standalone_thresholding_rtl_matches_python(graphs, sim_dir, verilator, name):
    _check_layer(graphs["standalone_thresholds"], name, sim_dir, verilator)


def test_hls_layer_needs_vivado(graphs, tmp_path):
    with pytest.raises(VivadoMissing, match="Vivado.*Vitis HLS|Vitis HLS.*Vivado"):
        generate_layer_rtl(graphs["default"], "MVAU_hls_0", tmp_path)


@pytest.mark.xfail(strict=True, raises=RuntimeError,
                   reason="finn-rtllib mvu/add_multi.sv: Verilator 5.48 rejects a constant "
                          "function declared under generate")
def test_mvau_rtl_compiles_in_verilator(graphs, sim_dir, verilator):
    from fluorofpga.hw.rtlsim import build_layer

    layer = generate_layer_rtl(graphs["standalone_thresholds"], "MVAU_rtl_0",
                               sim_dir / "gen" / "MVAU_rtl_0")
    build_layer(layer, sim_dir / "sim")


@pytest.mark.parametrize("dtype", ["UINT8", "UINT3", "INT8", "INT17", "INT21", "BINARY"])
@pytest.mark.parametrize("n", [1, 2, 9])
def test_packing_is_finns(dtype, n):
    from qonnx.core.datatype import DataType

    from fluorofpga.hw.finn_compat import boot_finn

    boot_finn()
    from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy

    dt = DataType[dtype]
    rng = np.random.default_rng(n)
    x = rng.integers(int(dt.min()), int(dt.max()) + 1, size=(3, 4, n))
    bits = dt.bitwidth()
    words = pack_words(x, bits)
    assert words == npy_to_rtlsim_input(x.astype(np.float32), dt, bits * n)
    back = unpack_words(words, bits, n, dt.signed())
    assert np.array_equal(back.reshape(x.shape), x)
    finn_back = rtlsim_output_to_npy(words, None, dt, x.shape, bits * n, bits)
    assert np.array_equal(finn_back, x)
