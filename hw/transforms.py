"""fluorofpga's own graph transformations for image-to-image FINN graphs.

Contract (as in ``qonnx/transformation/base.py``): a transformation rewrites the graph of
one :class:`~qonnx.core.modelwrapper.ModelWrapper`, never changes what the graph
computes on the integers it is specified for, and does no file I/O. ``apply`` returns
``(model, graph_modified)``; use them as ``model = model.transform(T())``.
"""

from __future__ import annotations

import numpy as np
import qonnx.core.data_layout as DataLayout  # noqa: N812 (qonnx naming)
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_shapes import InferShapes


def _uint(bits: int) -> DataType:
    return DataType[f"UINT{bits}"]


class IntegerInput(Transformation):
    """Make the graph take unsigned integer pixels instead of ``q / 2**bits`` floats.

    Inserts ``Mul(2**-bits)`` right after the global input and annotates the input
    ``UINT{bits}``: the graph computes the same function of ``q`` as before of
    ``q / 2**bits``. Streamlining later absorbs the Mul into the first thresholds.
    """

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        self.bits = bits

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        """Insert the scaling Mul (once) and annotate the input datatype."""
        iname = model.graph.input[0].name
        if model.get_tensor_datatype(iname) == _uint(self.bits):
            return model, False
        scaled = model.make_new_valueinfo_name()
        scale = model.make_new_valueinfo_name()
        model.set_initializer(scale, np.asarray(2.0**-self.bits, dtype=np.float32))
        for node in model.graph.node:
            for i, t in enumerate(node.input):
                if t == iname:
                    node.input[i] = scaled
        model.graph.node.insert(0, helper.make_node("Mul", [iname, scale], [scaled]))
        model.set_tensor_datatype(iname, _uint(self.bits))
        return model.transform(InferShapes()), False


def _is_identity_threshold(model: ModelWrapper, node) -> bool:
    """MultiThreshold that maps UINTn input q to q itself (thresholds k + t, 0 < t <= 1)."""
    if node.op_type != "MultiThreshold":
        return False
    idt = model.get_tensor_datatype(node.input[0])
    odt = model.get_tensor_datatype(node.output[0])
    if not (idt.is_integer() and idt.min() == 0 and odt == idt):
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if float(attrs.get("out_scale", 1.0)) != 1.0 or float(attrs.get("out_bias", 0.0)) != 0.0:
        return False
    thr = model.get_initializer(node.input[1])
    if thr is None or thr.shape[-1] != idt.max():
        return False
    # For integer input q, (q >= t) == (q >= ceil(t)); identity needs ceil(t_k) == k + 1.
    want = np.arange(1, idt.max() + 1, dtype=np.float64)
    return bool(np.all(np.ceil(thr.astype(np.float64)) == want))


class RemoveIdentityThresholds(Transformation):
    """Remove MultiThreshold nodes that are the identity on their unsigned integer input.

    Brevitas' fixed-scale 8-bit input quantizer becomes such a node once the input is
    integer (:class:`IntegerInput`); left in, FINN would build a 255-threshold layer that
    does nothing.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        """Remove one identity threshold node per pass (the framework loops)."""
        graph = model.graph
        for node in graph.node:
            if not _is_identity_threshold(model, node):
                continue
            src, dst = node.input[0], node.output[0]
            if dst in [o.name for o in graph.output]:
                continue
            for consumer in model.find_consumers(dst) or []:
                for i, t in enumerate(consumer.input):
                    if t == dst:
                        consumer.input[i] = src
            graph.node.remove(node)
            return model, True
        return model, False


class IntegerOutput(Transformation):
    """Drop a final ``Mul(2**-bits)`` after an unsigned integer tensor.

    Afterwards the graph outputs the integer pixels themselves (``UINT{bits}``); the scale
    is carried by the model bundle's manifest instead. Only removes a Mul whose input is
    already ``UINT{bits}``, so nothing but the documented scale is lost.
    """

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        self.bits = bits

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        """Remove the trailing scale (once)."""
        oname = model.graph.output[0].name
        node = model.find_producer(oname)
        if node is None or node.op_type != "Mul":
            return model, False
        scale = model.get_initializer(node.input[1])
        if scale is None or scale.size != 1 or float(scale) != 2.0**-self.bits:
            return model, False
        if model.get_tensor_datatype(node.input[0]) != _uint(self.bits):
            return model, False
        src = node.input[0]
        producer = model.find_producer(src)
        producer.output[list(producer.output).index(src)] = oname
        model.graph.node.remove(node)
        model.set_tensor_datatype(oname, _uint(self.bits))
        return model, False


class SingleChannelTransposeToReshape(Transformation):
    """Replace NCHW<->NHWC Transposes of a 1-channel tensor by a Reshape.

    With one channel the two layouts hold the same bytes, so the Reshape is exact, and
    FINN does not build a Shuffle layer for it; at the graph's ends it stays in software.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        """Rewrite one Transpose per pass (the framework loops)."""
        graph = model.graph
        for idx, node in enumerate(graph.node):
            if node.op_type != "Transpose":
                continue
            perm = list(helper.get_attribute_value(node.attribute[0]))
            if perm not in ([0, 2, 3, 1], [0, 3, 1, 2]):
                continue
            in_shape = model.get_tensor_shape(node.input[0])
            out_shape = model.get_tensor_shape(node.output[0])
            channels = in_shape[1] if perm == [0, 2, 3, 1] else in_shape[3]
            if channels != 1:
                continue
            shape_name = model.make_new_valueinfo_name()
            model.set_initializer(shape_name, np.asarray(out_shape, dtype=np.int64))
            reshape = helper.make_node(
                "Reshape", [node.input[0], shape_name], [node.output[0]], name=node.name
            )
            graph.node.remove(node)
            graph.node.insert(idx, reshape)
            return model, True
        return model, False


class BoundaryTransposesToNHWC(Transformation):
    """Drop the layout Transposes at the graph's ends: the accelerator streams NHWC.

    A multi-channel network (a 3-frame SIM reconstructor: 3 frames in, 4 sub-pixels out)
    keeps an NCHW->NHWC Transpose after its input and an NHWC->NCHW one before its
    output once streamlined. In hardware the pixels arrive channel-interleaved anyway
    (the host packs frame values pixel by pixel), so the graph's input and output simply
    become NHWC tensors; FINN would otherwise build a ``Shuffle`` layer for the output
    (no RTL in finn-plus). :func:`fluorofpga.hw.verify.execute_int` feeds each stage in
    its own layout, so the chain still compares the same integers.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        """Remove both boundary Transposes (one pass)."""
        graph = model.graph
        iname, oname = graph.input[0].name, graph.output[0].name
        for node in list(graph.node):
            if node.op_type != "Transpose":
                continue
            perm = list(helper.get_attribute_value(node.attribute[0]))
            if perm == [0, 2, 3, 1] and node.input[0] == iname:
                new_in = node.output[0]
                shape = model.get_tensor_shape(new_in)
                dtype = model.get_tensor_datatype(iname)
                graph.node.remove(node)
                for consumer in model.find_consumers(new_in) or []:
                    for k, name in enumerate(consumer.input):
                        if name == new_in:
                            consumer.input[k] = iname
                model.set_tensor_shape(iname, shape)
                model.set_tensor_datatype(iname, dtype)
                model.set_tensor_layout(iname, DataLayout.NHWC)
            elif perm == [0, 3, 1, 2] and node.output[0] == oname:
                src = node.input[0]
                shape = model.get_tensor_shape(src)
                dtype = model.get_tensor_datatype(src)
                producer = model.find_producer(src)
                graph.node.remove(node)
                producer.output[list(producer.output).index(src)] = oname
                model.set_tensor_shape(oname, shape)
                model.set_tensor_datatype(oname, dtype)
                model.set_tensor_layout(oname, DataLayout.NHWC)
        return model, False


class Unspecialize(Transformation):
    """Map specialized ``X_hls`` / ``X_rtl`` nodes back to their generic ``X`` HW op.

    The generic ops execute in Python (no cppsim/rtlsim, hence no Vivado/Vitis), with
    every attribute the specialized graph has (folding, minimized datatypes, weights,
    thresholds), so a folded graph can be checked for bit-exactness here.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        """Rename op types and domains in one pass."""
        for node in model.graph.node:
            for suffix in ("_hls", "_rtl"):
                if node.op_type.endswith(suffix):
                    node.op_type = node.op_type[: -len(suffix)]
                    node.domain = "finn.custom_op.fpgadataflow"
        return model, False


class TransposeAheadOfFork(Transformation):
    """Move a layout Transpose on one branch of a fork ahead of the fork.

    Streamlining a residual block leaves ``x -> Transpose(NCHW->NHWC) -> Im2Col ...`` on
    the conv branch and ``x`` itself on the skip branch, which finn-plus' reorder passes
    do not move (``MoveTransposePastFork`` wants the Transpose before the fork,
    ``MoveTransposePastJoinAdd`` one on each input of the join). Rewritten as
    ``x -> Transpose -> (conv branch, Transpose back -> skip branch)``, the two
    transposes back meet at the join, ``MoveTransposePastJoinAdd`` moves them past it and
    ``AbsorbTransposeIntoMultiThreshold`` / :class:`BoundaryTransposesToNHWC` take them
    to the graph's end: the whole block streams NHWC. Exact: only layouts change.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        """Rewrite one fork per pass (the framework loops)."""
        graph = model.graph
        tensors = [graph.input[0].name] + [o for n in graph.node for o in n.output]
        for t in tensors:
            consumers = model.find_consumers(t) or []
            if len(consumers) < 2:
                continue
            moved = [c for c in consumers if c.op_type == "Transpose"]
            if not moved or len(moved) == len(consumers):
                continue
            perm = [0, 2, 3, 1]  # NCHW -> NHWC (the transposes back are not moved again)
            if any(list(helper.get_attribute_value(c.attribute[0])) != perm for c in moved):
                continue
            inverse = [int(i) for i in np.argsort(perm)]
            ahead, back = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            model.set_tensor_shape(ahead, model.get_tensor_shape(moved[0].output[0]))
            model.set_tensor_shape(back, model.get_tensor_shape(t))
            model.set_tensor_datatype(ahead, model.get_tensor_datatype(t))
            model.set_tensor_datatype(back, model.get_tensor_datatype(t))
            for c in moved:  # their consumers read the transposed tensor directly
                for cc in model.find_consumers(c.output[0]) or []:
                    for k, name in enumerate(cc.input):
                        if name == c.output[0]:
                            cc.input[k] = ahead
                graph.node.remove(c)
            for c in consumers:
                if c not in moved:
                    for k, name in enumerate(c.input):
                        if name == t:
                            c.input[k] = back
            producer = model.find_producer(t)
            at = 0 if producer is None else list(graph.node).index(producer) + 1
            graph.node.insert(at, helper.make_node("Transpose", [t], [ahead], perm=perm))
            graph.node.insert(at + 1, helper.make_node("Transpose", [ahead], [back],
                                                       perm=inverse))
            return model, True
        return model, False
