"""Skip connections in the stitched accelerator: FINN's fork (``DuplicateStreams``) and join
(``ElementwiseAdd`` of two streams) built from our kernels (``hw/rtl/stream_fork.sv``,
``hw/rtl/stream_add.sv``), simulated whole in Verilator == FINN's Python execution of the
hardware-layer graph == the host's emulator, under random idle / backpressure; the skip
branch's FIFO sized from the simulation and written back; too shallow, the design hangs
(FINN issue #1094) and the simulation says so. Unit level: each kernel against FINN's
``execute_node`` under independent backpressure on every port.

The network: a Brevitas residual block (quantized input -> conv3x3 -> quantized ReLU,
plus the skip from the input, added, requantized), exported to QONNX and streamlined
by finn-plus' ``StreamlinePlus`` (after ``IntegerInput``): ``MultiThreshold`` (input,
identity: removed) ``-> Transpose -> Im2Col -> MatMul -> MultiThreshold -> Transpose ->
Add -> MultiThreshold``, the layout transposes stuck at the fork (one branch NHWC for
Im2Col, the skip NCHW) and the join (finn-plus' ``MoveTransposePastJoinAdd`` needs one
on each input); our ``TransposeAheadOfFork`` moves the first ahead of the fork, then
finn-plus' passes take them out: ``Im2Col -> MatMul -> MultiThreshold``, ``Add``,
``MultiThreshold``, NHWC. Converted by finn-plus' own transformations in
``step_convert_to_hw``'s order with standalone thresholds, finn-plus 1.6.1 makes of it::

    DuplicateStreams_hls -> FMPadding_rtl -> ConvolutionInputGenerator_rtl -> MVAU_rtl
      -> Thresholding_rtl -> ElementwiseAdd_hls (in1: the fork's 2nd output) -> Thresholding_rtl

(no ``AddStreams`` any more; neither ``_hls`` layer simulates without Vitis HLS: the
stitched flow builds both from our kernels).
"""

from __future__ import annotations

import copy
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fluorofpga.hw.finn_compat import boot_finn
from fluorofpga.hw.rtlsim import DEFAULT_FPGA_PART
from fluorofpga.hw.stitch import (
    StitchError,
    fifo_depths,
    generate_accelerator,
    set_fifo_depths,
    simulate_accelerator,
    size_accelerator,
    stitch_graph,
)

TILE = 16
CHANNELS = 4
BITS = 4  # UINT4 activations, INT4 weights
CYCLES_SLACK = 0.10  # sized FIFOs: cycles per tile within 10 % of the deep-FIFO run
#: the skip FIFO of the "too shallow" design: less than the conv branch's line buffer holds
SHALLOW_SKIP = 8


# ------------------------------------------------------------------------ the network


def residual_block(tile: int, channels: int, seed: int = 0):
    """A quantized residual block in Brevitas, exported to QONNX and streamlined by
    finn-plus (plus :class:`~fluorofpga.hw.transforms.TransposeAheadOfFork`), NHWC.

    ``x = q(input); y = out(q(conv3x3(x)) + x)`` with one fixed-scale 4-bit quantizer
    ``q`` (2**-4: both addends on the same scale, so the sum is an integer sum) and a
    4-bit output quantizer. Returns ``(qonnx, streamlined)``: the exported model (float
    ``q / 16`` in, NCHW) and the integer graph (UINT4 codes in and out, NHWC):
    ``Im2Col -> MatMul -> MultiThreshold``, ``Add`` (the skip), ``MultiThreshold``.
    """
    import torch
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantConv2d
    from torch import nn

    from fluorofpga.quantize.model import _fixed_io_quant

    boot_finn()
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.streamline.reorder import MoveTransposePastJoinAdd
    from finn.transformation.streamline.streamline_plus import StreamlinePlus
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
    from qonnx.util.cleanup import cleanup_model

    from fluorofpga.hw.transforms import (
        BoundaryTransposesToNHWC,
        IntegerInput,
        IntegerOutput,
        RemoveIdentityThresholds,
        TransposeAheadOfFork,
    )

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = _fixed_io_quant(BITS)
            self.conv = QuantConv2d(channels, channels, 3, padding=1, bias=False,
                                    weight_bit_width=BITS)
            self.out = _fixed_io_quant(BITS)

        def forward(self, x):
            x = self.q(x)
            return self.out(self.q(self.conv(x)) + x).value

    torch.manual_seed(seed)
    block = Block().eval()
    with torch.no_grad():
        block.conv.weight *= 4  # conv outputs over many codes, not just the lowest
    path = Path(tempfile.mkdtemp()) / "block.onnx"
    export_qonnx(block, args=torch.rand(1, channels, tile, tile), export_path=str(path),
                 dynamo=False)
    qonnx = cleanup_model(ModelWrapper(str(path)))
    m = qonnx.transform(ConvertQONNXtoFINN()).transform(IntegerInput(BITS))
    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(),
              GiveReadableTensorNames(), InferDataTypes(),
              absorb.AbsorbScalarBiasIntoMultiThreshold(), StreamlinePlus(),
              LowerConvsToMatMul(), absorb.AbsorbTransposeIntoMultiThreshold(),
              absorb.AbsorbConsecutiveTransposes(), StreamlinePlus(),
              RemoveIdentityThresholds(), IntegerOutput(BITS),
              # the layout transposes finn-plus leaves at the fork and the join
              TransposeAheadOfFork(), MoveTransposePastJoinAdd(),
              absorb.AbsorbTransposeIntoMultiThreshold(),
              absorb.AbsorbConsecutiveTransposes(), BoundaryTransposesToNHWC(),
              InferShapes(), InferDataTypes()):
        m = m.transform(t)
    return qonnx, m


def qonnx_execute(qonnx, tiles: np.ndarray) -> np.ndarray:
    """The exported Brevitas model on NHWC codes: ``q / 16`` in, output * 16 out."""
    from qonnx.core.onnx_exec import execute_onnx

    iname, oname = qonnx.graph.input[0].name, qonnx.graph.output[0].name
    scale = 2.0**BITS
    out = [execute_onnx(qonnx, {iname: (t.transpose(2, 0, 1)[None] / scale)
                                .astype(np.float32)})[oname][0].transpose(1, 2, 0)
           for t in tiles]
    y = np.stack(out) * scale
    assert np.array_equal(np.rint(y), y)
    return y.astype(np.int64)


def to_hw_layers(model, pe: int):
    """finn-plus' conversion to hardware layers (standalone thresholds, RTL preferred),
    bit widths minimized, folded to ``pe``, specialized."""
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
        InferDuplicateStreamsLayer,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import (
        MinimizeWeightBitWidth,
    )
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes

    for t in (InferConvInpGen(), InferThresholdingLayer(),
              InferQuantizedMatrixVectorActivation(), InferElementwiseBinaryOperation(),
              InferDuplicateStreamsLayer(), MinimizeWeightBitWidth(),
              MinimizeAccumulatorWidth(), RoundAndClipThresholds(), InferDataTypes(),
              GiveUniqueNodeNames()):
        model = model.transform(t)
    for node in model.graph.node:
        inst = getCustomOp(node)
        if node.op_type in ("MVAU", "Thresholding"):
            inst.set_nodeattr("preferred_impl_style", "rtl")
        attrs = inst.get_nodeattr_types()
        for fold in ("PE", "SIMD"):
            if fold in attrs:
                inst.set_nodeattr(fold, pe)
    return model.transform(SpecializeLayers(DEFAULT_FPGA_PART))


def finn_execute(model, tiles: np.ndarray) -> np.ndarray:
    """FINN's Python execution of the hardware-layer graph (generic ops), tile by tile."""
    from qonnx.core.onnx_exec import execute_onnx

    from fluorofpga.hw.transforms import Unspecialize

    generic = copy.deepcopy(model).transform(Unspecialize())
    iname, oname = generic.graph.input[0].name, generic.graph.output[0].name
    return np.stack([execute_onnx(generic, {iname: t[None].astype(np.float32)})[oname][0]
                     for t in tiles]).astype(np.int64)


def skip_fifo(model) -> str:
    """Name of the FIFO between the fork's second output and the join."""
    fork = next(n for n in model.graph.node if n.op_type.startswith("DuplicateStreams"))
    fifo = model.find_consumer(fork.output[1])
    assert fifo.op_type == "StreamingFIFO_rtl"
    assert model.find_consumer(fifo.output[0]).op_type.startswith("ElementwiseAdd")
    return fifo.name


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from fluorofpga.host.emulate import load_hw_graph
    from fluorofpga.hw.layers import export_hw_layers

    d = tmp_path_factory.mktemp("forkjoin")
    qonnx, streamlined = residual_block(TILE, CHANNELS)
    hw = to_hw_layers(copy.deepcopy(streamlined), pe=CHANNELS)
    rng = np.random.default_rng(3)
    top = 2**BITS - 1
    full = rng.integers(0, top + 1, (2, TILE, TILE, CHANNELS))
    full[0, 0, :2] = [[0] * CHANNELS, [top] * CHANNELS]  # both extremes in a tile
    tiles = np.concatenate([full, np.full((1, TILE, TILE, CHANNELS), top)]).astype(np.uint8)
    stitched = stitch_graph(hw)
    return {
        "dir": d, "qonnx": qonnx, "streamlined": streamlined, "hw": hw,
        "stitched": stitched, "tiles": tiles,
        "skip": skip_fifo(stitched), "expected": finn_execute(hw, tiles),
        "emulator": load_hw_graph(export_hw_layers(hw, d / "hw_layers")),
    }


# ------------------------------------------------------------- graph level (fast)


def test_finn_turns_the_skip_connection_into_a_fork_and_a_join(net):
    assert [n.op_type for n in net["hw"].graph.node] == [
        "DuplicateStreams_hls", "FMPadding_rtl", "ConvolutionInputGenerator_rtl",
        "MVAU_rtl", "Thresholding_rtl", "ElementwiseAdd_hls", "Thresholding_rtl"]
    ops = [n.op_type for n in net["stitched"].graph.node]
    # FINN's InsertFIFO put a FIFO on every stream: 7 layers, 8 streams + the input
    assert ops.count("StreamingFIFO_rtl") == 9
    assert fifo_depths(net["stitched"])[net["skip"]] == 2  # FINN's shallow default


def test_streamlining_gives_the_integer_residual_block(net):
    assert [n.op_type for n in net["streamlined"].graph.node] == [
        "Im2Col", "MatMul", "MultiThreshold", "Add", "MultiThreshold"]
    add = net["streamlined"].graph.node[3]
    assert net["streamlined"].graph.input[0].name in add.input  # the skip


def test_hw_graph_equals_brevitas_qonnx_and_the_host_emulator(net):
    from fluorofpga.host.emulate import run_hw_graph

    np.testing.assert_array_equal(qonnx_execute(net["qonnx"], net["tiles"]), net["expected"])
    np.testing.assert_array_equal(finn_execute(net["streamlined"], net["tiles"]),
                                  net["expected"])
    emulated = np.stack([run_hw_graph(net["emulator"], t) for t in net["tiles"]])
    np.testing.assert_array_equal(emulated, net["expected"])
    assert len(np.unique(net["expected"])) > 8  # not a saturated output


def test_a_join_of_a_constant_is_refused(net):
    from qonnx.custom_op.registry import getCustomOp

    g = copy.deepcopy(net["hw"])
    add = next(n for n in g.graph.node if n.op_type == "ElementwiseAdd_hls")
    getCustomOp(add).set_nodeattr("rhs_style", "const")
    with pytest.raises(StitchError, match="constant input"):
        stitch_graph(g)


def test_fork_and_join_wrappers_are_verilator_lint_clean(net, verilator, tmp_path):
    from fluorofpga.hw.forkjoin import generate_forkjoin_layer, is_forkjoin

    g = net["stitched"]
    for node in (n for n in g.graph.node if is_forkjoin(n)):
        layer = generate_forkjoin_layer(g, node, tmp_path / node.name)
        r = subprocess.run([verilator, "--lint-only", "-Wall", "--top-module", node.name,
                            *map(str, layer.sources)], capture_output=True, text=True)
        assert r.returncode == 0 and "%Warning" not in r.stderr, r.stderr


# ------------------------------------------------------------- kernels (cocotb)


def _node_model(node, inputs: dict[str, str], outputs: list[str], shape: list[int]):
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    g = helper.make_graph(
        [node], node.name,
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, shape) for t in inputs],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, shape) for t in outputs])
    model = ModelWrapper(qonnx_make_model(g))
    for t, dt in inputs.items():
        model.set_tensor_datatype(t, DataType[dt])
    return model


@pytest.mark.slow
def test_fork_kernel_hands_every_beat_to_each_output(net, verilator):
    """3 outputs under independent backpressure: each gets every beat, once, in order."""
    boot_finn()
    from onnx import helper

    from fluorofpga.hw.forkjoin import reference_node, simulate_forkjoin

    shape = [1, 4, 4, 6]
    node = helper.make_node(
        "DuplicateStreams", ["x"], ["o0", "o1", "o2"], name="DuplicateStreams_0",
        domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", NumChannels=6, PE=2,
        NumOutputStreams=3, inputDataType="UINT5", numInputVectors=shape[:3])
    model = _node_model(node, {"x": "UINT5"}, ["o0", "o1", "o2"], shape)
    x = np.random.default_rng(0).integers(0, 32, shape)
    x.flat[:2] = [0, 31]
    want = reference_node(model, node.name, [x])
    for idle, bp, seed in ((0.0, 0.0, 0), (0.3, 0.6, 1)):
        got = simulate_forkjoin(model, node.name, [x], work_dir=net["dir"] / "unit",
                                idle_prob=idle, backpressure_prob=bp, seed=seed)
        assert len(got) == 3
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.slow
def test_join_kernel_adds_signed_and_unsigned_as_finn(net, verilator):
    """INT3 + UINT6 -> INT8 (FINN's derived datatype: the wider input unsigned, the
    narrower signed: two bits more), PE 3, inputs out of step, full ranges."""
    boot_finn()
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    from fluorofpga.hw.forkjoin import reference_node, simulate_forkjoin

    shape = [1, 4, 4, 6]
    node = helper.make_node(
        "ElementwiseAdd", ["a", "b"], ["s"], name="ElementwiseAdd_0",
        domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", lhs_dtype="INT3",
        rhs_dtype="UINT6", out_dtype="INT32", lhs_shape=shape, rhs_shape=shape,
        out_shape=shape, PE=3)
    model = _node_model(node, {"a": "INT3", "b": "UINT6"}, ["s"], shape)
    inst = getCustomOp(model.graph.node[0])
    inst.minimize_accumulator_width(model)
    assert inst.get_nodeattr("out_dtype") == "INT8"
    rng = np.random.default_rng(1)
    a, b = rng.integers(-4, 4, shape), rng.integers(0, 64, shape)
    a.flat[:4], b.flat[:4] = [-4, -4, 3, 3], [0, 63, 0, 63]  # every extreme sum
    want = reference_node(model, node.name, [a, b])[0]
    assert want.min() == -4 and want.max() == 66
    for idle, bp, seed in ((0.0, 0.0, 0), (0.4, 0.5, 2)):
        got = simulate_forkjoin(model, node.name, [a, b], work_dir=net["dir"] / "unit",
                                idle_prob=idle, backpressure_prob=bp, seed=seed)
        np.testing.assert_array_equal(got[0], want)


# ------------------------------------------------------------- stitched (cocotb)


@pytest.fixture(scope="module")
def deep(net):
    """The design with every FIFO unbounded (FINN_SIMULATION), input not paced."""
    design = generate_accelerator(net["stitched"], net["dir"] / "deep", None)
    return design, simulate_accelerator(design, net["tiles"], run_name="deep", gauge="all")


@pytest.fixture(scope="module")
def sized(net):
    return size_accelerator(net["stitched"], net["dir"] / "accel", None, net["tiles"],
                            None, None)


@pytest.mark.slow
def test_deep_fifo_design_equals_finn(net, deep):
    design, run = deep
    assert "DuplicateStreams_hls_0" in design.layer_cycles
    np.testing.assert_array_equal(run.words.astype(np.int64), net["expected"])


@pytest.mark.slow
def test_skip_fifo_is_sized_from_the_simulation_and_written_back(net, sized):
    skip = net["skip"]
    # the skip branch holds the pixels the conv's line buffer holds: more than a row
    assert sized.peaks[skip] > TILE
    assert sized.depths[skip] >= sized.peaks[skip]
    assert fifo_depths(sized.design.graph)[skip] == sized.depths[skip]
    assert "bypass" not in sized.depths  # network only: no bypass FIFO
    print(f"\nskip FIFO {skip}: peak {sized.peaks[skip]}, depth {sized.depths[skip]}")


@pytest.mark.slow
def test_sized_design_equals_finn_without_throughput_loss(net, deep, sized):
    run = simulate_accelerator(sized.design, net["tiles"], run_name="free")
    np.testing.assert_array_equal(run.words.astype(np.int64), net["expected"])
    assert run.maxcount[net["skip"]] <= sized.depths[net["skip"]]
    deep_interval = deep[1].interval
    assert run.interval is not None and deep_interval is not None
    assert abs(run.interval - deep_interval) <= CYCLES_SLACK * deep_interval, (
        run.interval, deep_interval)
    print(f"\ncycles per tile: deep FIFOs {deep_interval}, sized {run.interval}, "
          f"FINN estimate {sized.design.estimated_cycles}")
    stalled = simulate_accelerator(sized.design, net["tiles"], run_name="stalls",
                                   idle_prob=0.3, backpressure_prob=0.5, seed=5)
    np.testing.assert_array_equal(stalled.words.astype(np.int64), net["expected"])
    # a reset in the middle of a tile (fork half handed out, join half paired) recovers
    reset = simulate_accelerator(sized.design, net["tiles"], run_name="reset",
                                 reset_after=TILE * TILE // 2 + 3)
    np.testing.assert_array_equal(reset.words.astype(np.int64), net["expected"])


@pytest.mark.slow
def test_a_skip_fifo_too_shallow_hangs_and_says_so(net, sized):
    """FINN #1094: the fork waits for the full skip FIFO, the join for the conv branch,
    whose line buffer waits for pixels the fork cannot hand out."""
    skip = net["skip"]
    assert SHALLOW_SKIP < sized.peaks[skip]
    shallow = generate_accelerator(set_fifo_depths(sized.design.graph, {skip: SHALLOW_SKIP}),
                                   net["dir"] / "shallow", None)
    with pytest.raises(RuntimeError, match="stitched simulation failed") as err:
        simulate_accelerator(shallow, net["tiles"], run_name="hang",
                             max_cycles=4 * sized.design.estimated_cycles)
    log = open(str(err.value).rsplit("see ", 1)[1]).read()
    levels = re.search(r"deadlock or timeout: 0 of 3 tiles.*FIFO levels (\{[^}]*\})", log)
    assert levels, "the simulation did not report a hang"
    assert f"'{skip}': {SHALLOW_SKIP}" in levels.group(1)  # the skip FIFO is full
