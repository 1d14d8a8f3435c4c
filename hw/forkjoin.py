"""Forks and joins of the stitched accelerator: our RTL for FINN's ``DuplicateStreams`` and
``ElementwiseAdd`` nodes (skip connections).

finn-plus 1.6.1 turns a residual ``Add`` of two activations into a ``DuplicateStreams``
(at the fork, by ``InferDuplicateStreamsLayer``) and an ``ElementwiseAdd`` with two
streamed inputs (at the join, by ``InferElementwiseBinaryOperation``; the ``AddStreams``
op of older FINN versions is gone). ``SpecializeLayers`` leaves both as ``_hls`` layers
(``DuplicateStreams`` has no RTL variant; ``ElementwiseAdd_rtl`` is finn-rtllib's
floating-point-capable ``eltwise``): neither simulates without Vitis HLS. The stitched
flow (:mod:`fluorofpga.hw.stitch`) therefore builds such nodes, whatever their variant,
from our own kernels with the node's own attributes:

- ``hw/rtl/stream_fork.sv``: one input, ``NumOutputStreams`` outputs, every beat handed
  to each output under independent backpressure (FINN's ``DuplicateStreams``);
- ``hw/rtl/stream_add.sv``: the element-wise integer sum of two PE-packed streams, each
  input sign- or zero-extended by its datatype, in the output datatype FINN derived for
  the node (``out_dtype``; FINN's ``ElementwiseAdd._derive_out_dtype``: one bit more than
  the wider input, two more when the wider is unsigned and the narrower signed).

Each node gets a wrapper module named after it, with FINN's interface names (``in0_V``,
``out1_V``, ... at FINN's padded widths), rendered from ``hw/templates/forkjoin_layer.sv.j2``;
the top level then instantiates it like any FINN layer. The reference is FINN's own
Python execution of the node (:func:`reference_node`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .rtlsim import render_template

RTL_DIR = Path(__file__).parent / "rtl"
TEMPLATE = "forkjoin_layer.sv.j2"
#: generic FINN op -> our kernel
KERNELS = {"DuplicateStreams": "stream_fork", "ElementwiseAdd": "stream_add"}
HW_DOMAIN = "finn.custom_op.fpgadataflow"


class ForkJoinError(ValueError):
    """A fork / join node our kernels do not implement (a constant or broadcast input,
    a non-integer datatype, an output datatype that cannot hold the sum)."""


def generic_op(op_type: str) -> str:
    """``ElementwiseAdd_hls`` -> ``ElementwiseAdd`` (FINN's specialized suffixes removed)."""
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def is_forkjoin(node: Any) -> bool:
    """True for a FINN ``DuplicateStreams`` / ``ElementwiseAdd`` node of any variant."""
    return generic_op(node.op_type) in KERNELS and node.domain.startswith(HW_DOMAIN)


@dataclass
class ForkJoinLayer:
    """One fork / join node built from our kernels.

    Attributes:
        name: node name (also the wrapper module's name).
        op_type: the node's op type as in the graph (e.g. ``ElementwiseAdd_hls``).
        kernel: ``stream_fork`` or ``stream_add``.
        params: the kernel's HDL parameters.
        inputs, outputs: FINN's stream interfaces, ``{"port": "in0_V", "width": bits}``.
        sources: HDL files (our kernels, then the wrapper).
    """

    name: str
    op_type: str
    kernel: str
    params: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    sources: list[Path]

    @property
    def intf(self) -> dict[str, list[tuple[str, int]]]:
        """FINN's ``get_verilog_top_module_intf_names()`` stream entries of the node."""
        return {"s_axis": [(p["port"], p["width"]) for p in self.inputs],
                "m_axis": [(p["port"], p["width"]) for p in self.outputs]}


def kernel_parameters(model: Any, node: Any) -> tuple[str, dict[str, int]]:
    """Our kernel and its HDL parameters for a fork / join node of ``model``.

    Raises:
        ForkJoinError: the node is not one our kernels implement exactly.
    """
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    op = generic_op(node.op_type)
    if op == "DuplicateStreams":
        n = int(inst.get_nodeattr("NumOutputStreams"))
        if n != len(node.output) or n < 1:
            raise ForkJoinError(f"{node.name}: NumOutputStreams={n} but {len(node.output)} "
                                "outputs")
        return "stream_fork", {"WIDTH": int(inst.get_instream_width_padded(0)),
                               "N_OUTPUTS": n}
    if op != "ElementwiseAdd":
        raise ForkJoinError(f"{node.name}: {node.op_type} is no fork or join")
    styles = (inst.get_nodeattr("lhs_style"), inst.get_nodeattr("rhs_style"))
    shapes = [list(inst.get_nodeattr(k)) for k in ("lhs_shape", "rhs_shape", "out_shape")]
    if styles != ("input", "input") or any(model.get_initializer(t) is not None
                                           for t in node.input):
        raise ForkJoinError(f"{node.name}: an ElementwiseAdd with a constant input "
                            f"({styles}) is no join of two streams")
    if shapes[0] != shapes[2] or shapes[1] != shapes[2]:
        raise ForkJoinError(f"{node.name}: broadcasting ElementwiseAdd {shapes} is no join "
                            "of two streams of the same shape")
    a, b, out = inst.lhs_dtype, inst.rhs_dtype, inst.out_dtype
    if not (a.is_integer() and b.is_integer() and out.is_integer()):
        raise ForkJoinError(f"{node.name}: {a}, {b} -> {out}: integer datatypes only")
    lo, hi = a.min() + b.min(), a.max() + b.max()
    if not (out.min() <= lo and hi <= out.max()) or out.bitwidth() <= max(a.bitwidth(),
                                                                           b.bitwidth()):
        raise ForkJoinError(f"{node.name}: {out} cannot hold every sum of {a} and {b}")
    return "stream_add", {
        "PE": int(inst.pe),
        "A_BITS": a.bitwidth(), "A_SIGNED": int(a.signed()),
        "B_BITS": b.bitwidth(), "B_SIGNED": int(b.signed()),
        "OUT_BITS": out.bitwidth(),
        "A_WIDTH": int(inst.get_instream_width_padded(0)),
        "B_WIDTH": int(inst.get_instream_width_padded(1)),
        "OUT_WIDTH": int(inst.get_outstream_width_padded(0)),
    }


def kernel_sources(kernel: str) -> list[Path]:
    """HDL files of one of our fork / join kernels (the skid buffer first)."""
    return [RTL_DIR / "axis_skid_buffer.sv", RTL_DIR / f"{kernel}.sv"]


def generate_forkjoin_layer(model: Any, node: Any, code_dir: str | Path) -> ForkJoinLayer:
    """Write the node's wrapper (``<code_dir>/<node name>.sv``) around our kernel.

    Args:
        model: the graph holding ``node`` (datatypes and initializers are read from it).
        node: a ``DuplicateStreams`` / ``ElementwiseAdd`` node (:func:`is_forkjoin`).
        code_dir: directory for the wrapper (created).

    Raises:
        ForkJoinError: see :func:`kernel_parameters`.
    """
    from qonnx.custom_op.registry import getCustomOp

    kernel, params = kernel_parameters(model, node)
    intf = getCustomOp(node).get_verilog_top_module_intf_names()
    inputs = [{"port": p, "width": int(w)} for p, w in intf["s_axis"]]
    outputs = [{"port": p, "width": int(w)} for p, w in intf["m_axis"]]
    if len(inputs) != (2 if kernel == "stream_add" else 1):
        raise ForkJoinError(f"{node.name}: stream inputs {inputs}")
    code_dir = Path(code_dir)
    code_dir.mkdir(parents=True, exist_ok=True)
    wrapper = code_dir / f"{node.name}.sv"
    wrapper.write_text(render_template(
        TEMPLATE, name=node.name, op_type=node.op_type, kernel=kernel, params=params,
        inputs=inputs, outputs=outputs))
    return ForkJoinLayer(name=node.name, op_type=node.op_type, kernel=kernel, params=params,
                         inputs=inputs, outputs=outputs,
                         sources=[*kernel_sources(kernel), wrapper])


def reference_node(model: Any, node_name: str, inputs: list[np.ndarray]
                   ) -> list[np.ndarray]:
    """FINN's Python execution (``execute_node`` of the generic op) of one node.

    Args:
        model: ModelWrapper holding the node (specialized or not).
        node_name: the node.
        inputs: one integer array per streamed input, the node's normal input shape.

    Returns:
        Every output as int64, the node's normal output shape.
    """
    from qonnx.custom_op.registry import getCustomOp

    from .transforms import Unspecialize

    model = copy.deepcopy(model).transform(Unspecialize())
    node = next(n for n in model.graph.node if n.name == node_name)
    inst = getCustomOp(node)
    context: dict[str, np.ndarray] = {}
    streamed = [t for t in node.input if model.get_initializer(t) is None]
    for i, (t, x) in enumerate(zip(streamed, inputs, strict=True)):
        context[t] = np.asarray(x, dtype=np.float32).reshape(inst.get_normal_input_shape(i))
    for t in node.input:
        if t not in context:
            context[t] = model.get_initializer(t)
    for i, t in enumerate(node.output):
        context[t] = np.zeros(inst.get_normal_output_shape(i), dtype=np.float32)
    inst.execute_node(context, model.graph)
    out = []
    for t in node.output:
        y = context[t]
        if not np.array_equal(np.rint(y), y):
            raise ValueError(f"{node_name}: Python execution gave non-integer output")
        out.append(np.rint(y).astype(np.int64))
    return out


#: environment variable naming the job file of a :mod:`~fluorofpga.hw.cocotb_forkjoin` run
JOB_ENV = "FLUOROFPGA_FORKJOIN_JOB"
COCOTB_MODULE = "fluorofpga.hw.cocotb_forkjoin"
#: Verilator options of the unit simulation: every warning of ``-Wall`` is an error
UNIT_VERILATOR_ARGS = ("--no-timing", "-Wall")


def simulate_forkjoin(model: Any, node_name: str, inputs: list[np.ndarray], *,
                      work_dir: str | Path, idle_prob: float = 0.0,
                      backpressure_prob: float = 0.0, seed: int = 0) -> list[np.ndarray]:
    """Stream ``inputs`` through one fork / join node built from our kernels, in Verilator.

    The wrapper and kernels are compiled with ``-Wall`` (any lint warning fails the build).
    Each input and each output has its own random idle / backpressure pattern.

    Args:
        model: ModelWrapper holding the node.
        node_name: the ``DuplicateStreams`` / ``ElementwiseAdd`` node.
        inputs: one integer array per streamed input (normal input shape).
        work_dir: build and run directory (``<work_dir>/<node_name>/...``).
        idle_prob: probability of an idle cycle before each input beat (per input).
        backpressure_prob: probability that an output's ``tready`` is low in a cycle.
        seed: seed of the patterns.

    Returns:
        Every output as int64 of the node's normal output shape.

    Raises:
        RuntimeError: the simulation failed (deadlock, extra beats); its log is named.
    """
    import shutil

    from cocotb_tools.runner import get_runner
    from qonnx.custom_op.registry import getCustomOp

    from .rtlsim import (
        ensure_verilator,
        pack_words,
        run_cocotb_job,
        unpack_words,
        verilator_make_env,
    )

    node = next(n for n in model.graph.node if n.name == node_name)
    inst = getCustomOp(node)
    root = Path(work_dir).absolute() / node_name
    layer = generate_forkjoin_layer(model, node, root / "gen")
    ensure_verilator()
    build_dir = root / "build"
    with verilator_make_env():
        get_runner("verilator").build(
            sources=[str(s) for s in layer.sources], hdl_toplevel=node_name,
            build_dir=str(build_dir), build_args=list(UNIT_VERILATOR_ARGS),
            timescale=("1ns", "1ps"), log_file=str(build_dir / "build.log"))
    words = {}
    for i, (p, x) in enumerate(zip(layer.inputs, inputs, strict=True)):
        folded = inst.get_folded_input_shape(i)
        bits = inst.get_input_datatype(i).bitwidth()
        words[p["port"]] = [hex(w) for w in pack_words(np.asarray(x).reshape(folded), bits)]
    beats = int(np.prod(inst.get_folded_output_shape(0)[:-1]))
    run_dir = root / f"run_idle{idle_prob:g}_bp{backpressure_prob:g}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    job = {"inputs": words, "outputs": [p["port"] for p in layer.outputs], "beats": beats,
           "idle_prob": idle_prob, "backpressure_prob": backpressure_prob, "seed": seed,
           "max_cycles": 50 * beats + 1000, "result": str(run_dir / "result.json")}
    res = run_cocotb_job(COCOTB_MODULE, node_name, build_dir, run_dir, JOB_ENV, job, seed,
                         f"simulation of {node_name}")
    out = []
    for i, p in enumerate(layer.outputs):
        folded = inst.get_folded_output_shape(i)
        dt = inst.get_output_datatype(i)
        got = unpack_words([int(w, 16) for w in res["outputs"][p["port"]]], dt.bitwidth(),
                           int(folded[-1]), dt.signed())
        out.append(got.reshape(inst.get_normal_output_shape(i)))
    return out
