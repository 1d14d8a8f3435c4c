"""The FINN flow on a freshly trained small model: every stage gives identical integers."""

import copy
import json

import numpy as np
import pytest
import torch

from fluorofpga.hw import (
    VERIFIED_STEPS,
    BuildUntil,
    HwBuildConfig,
    NotBitExact,
    VivadoMissing,
    assert_same_integers,
    build,
    execute_int,
    export_hw_layers,
)
from fluorofpga.hw.transforms import (
    IntegerInput,
    IntegerOutput,
    RemoveIdentityThresholds,
    SingleChannelTransposeToReshape,
)
from fluorofpga.microscope import NoiseModel, SignalTables
from fluorofpga.models import DenoiserConfig, PlainDenoiser, SimulatedPairs
from fluorofpga.quantize import export_to_qonnx, quantize_from_float, run_qonnx_int

TILE = 32
CFG = DenoiserConfig(channels=8, depth=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("hwbuild")
    torch.manual_seed(0)
    data = SimulatedPairs(3, (96, 96), CFG.signal, seed=2)
    q, _ = quantize_from_float(PlainDenoiser(CFG), "w4a8", data, steps=30, crop=32)
    qonnx = export_to_qonnx(q, out / "m.onnx", (TILE, TILE))
    cfg = HwBuildConfig(board="kv260", tile=TILE, halo=CFG.halo, target_mpix_per_s=2.0)
    result = build(qonnx, out / "finn", cfg)
    from fluorofpga.microscope import WidefieldMicroscope

    frame = next(WidefieldMicroscope(shape=(64, 64), seed=5).frames(1)).noisy
    rng = np.random.default_rng(0)
    inputs = [
        SignalTables(CFG.signal, NoiseModel.from_camera(0.46, 100, 1.6)).encode(frame)[
            :TILE, :TILE],
        rng.integers(0, 256, (TILE, TILE)).astype(np.uint8),
        np.zeros((TILE, TILE), np.uint8),
        np.full((TILE, TILE), 255, np.uint8),
    ]
    return qonnx, result, inputs, cfg


def test_build_writes_models_reports_and_config(built):
    qonnx, result, _, cfg = built
    for step in VERIFIED_STEPS:
        assert result.intermediate_models[step].is_file()
    est = result.estimates
    assert est["board"] == "kv260" and est["tile"] == TILE
    assert est["mpix_per_s"] > 0 and est["resources"]["LUT"] > 0
    assert est["fits"] is True  # a 8-channel net at 2 Mpixel/s is small
    saved = json.loads((result.out_dir / "build_config.json").read_text())
    assert saved["tile"] == TILE and saved["version"] == cfg.version
    meta = json.loads((result.out_dir / "report" / "metadata_builder.json").read_text())
    assert meta["status"] == "ok"


def test_every_stage_gives_identical_integers(built):
    qonnx, result, inputs, _ = built
    for x in inputs:
        ref = run_qonnx_int(qonnx, x)
        for step in VERIFIED_STEPS:
            got = execute_int(result.intermediate_models[step], x)
            assert_same_integers(ref, got, step)
    # the comparison is not vacuous: the realistic tile gives a real image
    assert len(np.unique(run_qonnx_int(qonnx, inputs[0]))) > 5


def test_hardware_graph_is_pure_integer_dataflow(built):
    from qonnx.core.modelwrapper import ModelWrapper

    _, result, _, _ = built
    model = ModelWrapper(str(result.hw_model))
    ops = [n.op_type for n in model.graph.node]
    assert not any(op.startswith(("Thresholding", "Shuffle", "ElementwiseMul")) for op in ops)
    assert model.get_tensor_datatype(model.graph.input[0].name).name == "UINT8"
    assert model.get_tensor_datatype(model.graph.output[0].name).name == "UINT8"
    assert sum(op.startswith("MVAU") for op in ops) == CFG.depth


def test_host_emulator_matches_hardware_graph(built, tmp_path):
    """Rung 4: FINN's execution of the folded hardware graph == host emulator."""
    from fluorofpga.host import EmulatedAccelerator, load_hw_graph

    _, result, inputs, _ = built
    graph = load_hw_graph(export_hw_layers(result.hw_model, tmp_path))
    acc = EmulatedAccelerator(graph)
    assert acc.tile_shape == (TILE, TILE)
    for x in inputs:
        assert_same_integers(execute_int(result.hw_model, x), acc.run(x).astype(np.int64),
                             "emulator")


def test_own_transformations_preserve_behaviour(built):
    """Each of our transformations executed before/after on the same integers."""
    from qonnx.core.modelwrapper import ModelWrapper

    qonnx, result, inputs, _ = built
    models = result.intermediate_models
    before_in = ModelWrapper(str(models["step_qonnx_to_finn"]))
    after_in = copy.deepcopy(before_in).transform(IntegerInput(8))
    assert after_in.get_tensor_datatype(after_in.graph.input[0].name).name == "UINT8"
    streamlined = ModelWrapper(str(models["step_streamline"]))
    io = copy.deepcopy(streamlined).transform(RemoveIdentityThresholds())
    io = io.transform(IntegerOutput(8)).transform(SingleChannelTransposeToReshape())
    assert len(io.graph.node) < len(streamlined.graph.node)
    for x in inputs:
        ref = run_qonnx_int(qonnx, x)
        for model in (before_in, after_in, streamlined, io):
            assert_same_integers(ref, execute_int(model, x), "transform")


def test_assert_same_integers_reports_difference():
    a = np.zeros((4, 4), np.int64)
    b = a.copy()
    b[2, 3] = 1
    with pytest.raises(NotBitExact, match=r"1 pixels differ, first at \(2, 3\)"):
        assert_same_integers(a, b, "stage")


def test_bitfile_without_vivado_fails_clearly(built, tmp_path, monkeypatch):
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    qonnx, _, _, _ = built
    cfg = HwBuildConfig(tile=TILE, halo=CFG.halo, until=BuildUntil.BITFILE)
    with pytest.raises(VivadoMissing, match="XILINX_VIVADO"):
        build(qonnx, tmp_path / "b", cfg)
    assert not (tmp_path / "b").exists()  # refused before anything ran


def test_standalone_thresholds_variant_is_bit_exact(built, tmp_path):
    """MVAUs without activation + Thresholding layers (the DSP/RTL-MVAU variant)."""
    import dataclasses

    from qonnx.core.modelwrapper import ModelWrapper

    from fluorofpga.host import EmulatedAccelerator, load_hw_graph

    qonnx, _, inputs, cfg = built
    result = build(qonnx, tmp_path / "st", dataclasses.replace(cfg, standalone_thresholds=True))
    ops = [n.op_type for n in ModelWrapper(str(result.hw_model)).graph.node]
    assert any(op.startswith("Thresholding") for op in ops)
    acc = EmulatedAccelerator(load_hw_graph(export_hw_layers(result.hw_model, tmp_path / "e")))
    for x in inputs:
        ref = run_qonnx_int(qonnx, x)
        assert_same_integers(ref, execute_int(result.hw_model, x), "standalone thresholds")
        assert_same_integers(ref, acc.run(x).astype(np.int64), "emulator")
