"""Rung 5: every FINN-generated RTL layer of a fresh small accelerator, MVAU_rtl included,
in Verilator via cocotb, under random input idle cycles and output backpressure, == FINN's
Python execution of the same node (exact integers) on full-range inputs; cycles reported
against FINN's estimate. Also: the finn-rtllib patch that makes MVAU_rtl compile, and the
build option that asks for RTL MVAUs."""

import dataclasses
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from fluorofpga.hw import HwBuildConfig, VivadoMissing, build
from fluorofpga.hw.build import MvauImpl, flow_steps, step_prefer_rtl_mvau
from fluorofpga.hw.rtlsim import (
    PATCH_DIR,
    VERILATOR_ARGS,
    PatchFailed,
    apply_patches,
    full_range_layer_inputs,
    generate_layer_rtl,
    pack_words,
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
#: RTL layers of the build with mvau_impl="rtl": MVAU_rtl + standalone Thresholding_rtl too
RTL_MVAU_BUILD = (
    DEFAULT_RTL
    + [f"MVAU_rtl_{i}" for i in range(DEPTH)]
    + [f"Thresholding_rtl_{i}" for i in range(DEPTH)]
)
#: (input idle probability, output backpressure probability); MVAU weights idle too
STALLS = [(0.0, 0.0), (0.3, 0.3), (0.0, 0.7)]
#: finn-plus 1.6.1 bug, fixed by hw/patches/finn-rtllib-mvu-output-queue.patch: the output
#: queue of finn-rtllib mvu/mvu_vvu_axi.sv overflowed (beats lost, then deadlock) when an
#: MVAU emitting one result per cycle (MW == SIMD) was backpressured with its input always
#: valid; it also happens in the stitched accelerator without artificial stalls.
MVU_AXI = "finn-rtllib/mvu/mvu_vvu_axi.sv"
#: free-running cycles may exceed FINN's estimate by this factor plus the latency below
CYCLES_SLACK = 1.1
LATENCY_CYCLES = 64
CYCLES: dict[str, dict[str, float]] = {}
ADD_MULTI = "finn-rtllib/mvu/add_multi.sv"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """A fresh small accelerator (untrained, calibrated w4a8), built twice by FINN."""
    from fluorofpga.models import DenoiserConfig
    from fluorofpga.quantize import untrained_qonnx

    d = tmp_path_factory.mktemp("rtlsim_net")
    net = DenoiserConfig(channels=CHANNELS, depth=DEPTH)
    qonnx = untrained_qonnx(net, "w4a8", TILE, d / "model.qonnx.onnx")
    cfg = HwBuildConfig(tile=TILE, halo=net.halo)
    return {
        "default": build(qonnx, d / "finn", cfg),
        "rtl_mvau": build(qonnx, d / "finn_rtl", dataclasses.replace(cfg, mvau_impl="rtl")),
    }


@pytest.fixture(scope="module")
def graphs(builds):
    return {k: b.hw_model for k, b in builds.items()}


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rtlsim")


@pytest.fixture(scope="module", autouse=True)
def cycles_report(sim_dir):
    yield
    if CYCLES:
        (sim_dir / "cycles.json").write_text(json.dumps(CYCLES, indent=2))
        print(f"\nRTL layer cycles per {TILE}x{TILE} tile (free-running; FINN estimate):",
              json.dumps(CYCLES, indent=1))


def test_every_rtl_layer_is_covered(graphs):
    assert set(rtl_layer_names(graphs["default"])) == set(DEFAULT_RTL)
    assert set(rtl_layer_names(graphs["rtl_mvau"])) == set(RTL_MVAU_BUILD)


def test_default_builds_rtl_layers_are_those_simulated(graphs):
    """The default build's RTL layers are identical to the RTL-MVAU build's (attributes,
    datatypes, initializers), so simulating the latter covers both builds."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    a, b = ModelWrapper(str(graphs["default"])), ModelWrapper(str(graphs["rtl_mvau"]))

    def describe(m, node):
        tensors = list(node.input) + list(node.output)
        inits = [m.get_initializer(t) for t in node.input]
        return (node.op_type, {x.name: helper.get_attribute_value(x) for x in node.attribute},
                [str(m.get_tensor_datatype(t)) for t in tensors],
                [None if i is None else i.tobytes() for i in inits])

    for name in DEFAULT_RTL:
        assert describe(a, a.get_node_from_name(name)) == describe(b, b.get_node_from_name(name))


def test_rtl_mvau_option_is_reported(builds):
    rtl = builds["rtl_mvau"].mvau_impl
    assert sorted(rtl) == [f"MVAU_rtl_{i}" for i in range(DEPTH)]
    assert all(v["impl"] == "rtl" and not v["reasons"] for v in rtl.values())
    assert {v["weights"] for v in rtl.values()} == {"INT4", "INT8"}
    default = builds["default"].mvau_impl
    assert all(v["impl"] == "hls" for v in default.values())
    assert all(any("thresholds inside" in r for r in v["reasons"]) for v in default.values())
    saved = json.loads((builds["rtl_mvau"].out_dir / "report" / "mvau_impl.json").read_text())
    assert saved == rtl
    cfg = json.loads((builds["rtl_mvau"].out_dir / "build_config.json").read_text())
    assert cfg["mvau_impl"] == "rtl" and cfg["standalone_thresholds"] is False


def test_rtl_mvau_step_only_when_asked():
    assert step_prefer_rtl_mvau not in flow_steps(HwBuildConfig())
    steps = flow_steps(HwBuildConfig(mvau_impl=MvauImpl.RTL))
    assert steps.index(step_prefer_rtl_mvau) + 1 == steps.index("step_specialize_layers")
    assert HwBuildConfig(mvau_impl="rtl").uses_standalone_thresholds()
    assert not HwBuildConfig().uses_standalone_thresholds()


def _check_layer(graph: Path, name: str, sim_dir: Path) -> None:
    layer = generate_layer_rtl(graph, name, sim_dir / "gen" / name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    xs = full_range_layer_inputs(layer, rng)  # random (min and max in), zeros, max (, min)
    expected = np.stack([reference_layer(graph, name, x) for x in xs])
    assert expected.shape == (len(xs), *layer.out_shape)
    n = len(xs)
    for seed, (idle, bp) in enumerate(STALLS):
        y, cycles = simulate_layer(layer, xs, work_dir=sim_dir / "sim", idle_prob=idle,
                                   backpressure_prob=bp, seed=seed)
        for k in range(n):
            assert np.array_equal(y[k], expected[k]), (
                f"{name} idle={idle} bp={bp} input {k}: RTL != Python")
        assert cycles >= n * layer.out_beats
        if idle == 0 and bp == 0:  # free-running: FINN's estimate plus pipeline latency
            assert cycles <= CYCLES_SLACK * n * layer.exp_cycles + LATENCY_CYCLES, (
                cycles, n, layer.exp_cycles)
        CYCLES.setdefault(name, {"finn_estimate": layer.exp_cycles})[f"idle{idle}_bp{bp}"] = (
            cycles / n)


@pytest.mark.parametrize("name", RTL_MVAU_BUILD)
def test_rtl_layer_matches_python(graphs, sim_dir, verilator, name):
    _check_layer(graphs["rtl_mvau"], name, sim_dir)


def test_mvau_rtl_output_queue_under_heavy_backpressure(graphs, sim_dir, verilator):
    name = "MVAU_rtl_0"
    layer = generate_layer_rtl(graphs["rtl_mvau"], name, sim_dir / "gen_ovf" / name)
    x = full_range_layer_inputs(layer, np.random.default_rng(0))[0]
    expected = reference_layer(graphs["rtl_mvau"], name, x)
    assert MVU_AXI in [p.relative_to(layer.code_dir).as_posix() for p in layer.patched]
    y, _ = simulate_layer(layer, x, work_dir=sim_dir / "sim_ovf", backpressure_prob=0.7)
    assert np.array_equal(y, expected)


def test_mvau_rtl_drives_its_weight_stream_and_uses_the_patched_copy(graphs, sim_dir):
    layer = generate_layer_rtl(graphs["rtl_mvau"], "MVAU_rtl_1", sim_dir / "gen_w")
    (w,) = layer.side_inputs
    assert w.port == "in1_V" and w.repeat == TILE * TILE
    assert [p.relative_to(layer.code_dir).as_posix() for p in layer.patched] == [ADD_MULTI,
                                                                              MVU_AXI]
    assert all(not s.is_relative_to(_installed_rtllib()) for s in layer.sources)


def test_hls_layer_needs_vivado(graphs, tmp_path):
    with pytest.raises(VivadoMissing, match="Vivado.*Vitis HLS|Vitis HLS.*Vivado"):
        generate_layer_rtl(graphs["default"], "MVAU_hls_0", tmp_path)


# ------------------------------------------------------------- the finn-rtllib patch


def _installed_rtllib() -> Path:
    from fluorofpga.hw.finn_compat import boot_finn

    boot_finn()
    from finn.util.settings import get_settings

    return Path(get_settings().finn_rtllib).resolve()


def test_unpatched_add_multi_is_still_rejected_by_verilator(graphs, sim_dir, verilator):
    """The patch is still needed: finn-plus' own add_multi.sv does not elaborate.

    If this fails, upstream fixed add_multi.sv: delete the patch."""
    layer = generate_layer_rtl(graphs["rtl_mvau"], "MVAU_rtl_0", sim_dir / "gen_lint")
    lint = [verilator, "--lint-only", *VERILATOR_ARGS, "--top-module", layer.toplevel]
    ok = subprocess.run([*lint, *map(str, layer.sources)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    originals = [_installed_rtllib().parent / ADD_MULTI if s.name == "add_multi.sv" else s
                 for s in layer.sources]
    bad = subprocess.run([*lint, *map(str, originals)], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "Constant function may not be declared under generate" in bad.stderr


def test_patch_changes_only_the_copy(tmp_path):
    src = _installed_rtllib().parent / ADD_MULTI
    before = src.read_bytes()
    (tmp_path / ADD_MULTI).parent.mkdir(parents=True)
    shutil.copy(src, tmp_path / ADD_MULTI)
    assert apply_patches(tmp_path) == [tmp_path / ADD_MULTI]
    text = (tmp_path / ADD_MULTI).read_text()
    assert text.index("function leaf_load_t init_leaf_loads") < text.index("genTree")
    assert src.read_bytes() == before
    assert apply_patches(tmp_path / "elsewhere") == []  # no target: nothing to patch


def test_patch_that_no_longer_applies_fails_clearly(tmp_path):
    (tmp_path / ADD_MULTI).parent.mkdir(parents=True)
    text = (_installed_rtllib().parent / ADD_MULTI).read_text()
    (tmp_path / ADD_MULTI).write_text(text.replace("automatic leaf_load_t  res;",
                                                   "automatic leaf_load_t  r;"))
    with pytest.raises(PatchFailed, match=r"no longer applies to finn-rtllib/mvu/add_multi\.sv "
                                          r"of finn-plus .*hunk"):
        apply_patches(tmp_path)


def test_patch_file_is_a_documented_unified_diff():
    text = (PATCH_DIR / "finn-rtllib-add_multi-constant-function.patch").read_text()
    assert text.index("Subject:") < text.index("IEEE 1800") < text.index(f"--- a/{ADD_MULTI}")
    assert f"+++ b/{ADD_MULTI}" in text


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
