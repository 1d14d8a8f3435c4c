"""Integer execution of every stage of the FINN flow, for the chain of custody.

All stages take the same integer input image and must return the same integer output
image, exactly (``np.array_equal``), not ``isclose``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from .finn_compat import boot_finn
from .transforms import Unspecialize


class NotBitExact(AssertionError):
    """Two stages of the chain gave different integers on the same input."""


def _load(model: ModelWrapper | str | Path) -> ModelWrapper:
    return model if isinstance(model, ModelWrapper) else ModelWrapper(str(model))


def execute_int(
    model: ModelWrapper | str | Path, x_int: np.ndarray, io_bits: int = 8
) -> np.ndarray:
    """Execute any stage (QONNX ... folded hardware-layer graph) on one integer image.

    Args:
        model: the ONNX model of the stage (specialized ``_hls``/``_rtl`` nodes are
            executed through their generic Python implementation, see
            :class:`~fluorofpga.hw.transforms.Unspecialize`).
        x_int: (H, W) unsigned integer image matching the graph's input size, or
            (C, H, W) for a multi-channel network (fed NCHW or NHWC, as the stage's
            graph takes it).
        io_bits: pixel width; float-input stages get ``x_int / 2**io_bits`` and their
            float output is multiplied back by ``2**io_bits``.

    Returns:
        (H, W) int64 output pixels for an (H, W) input, else (C_out, H, W). Raises
        :class:`NotBitExact` if a float output is not an exact integer multiple of
        ``2**-io_bits``.
    """
    boot_finn()
    from finn.core.onnx_exec import execute_onnx

    model = copy.deepcopy(_load(model)).transform(Unspecialize())
    iname = model.graph.input[0].name
    oname = model.graph.output[0].name
    integer_in = model.get_tensor_datatype(iname).is_integer()
    scale = 2.0**io_bits
    feed, nhwc = _feed(model, x_int, integer_in, scale)
    out = execute_onnx(model, {iname: feed})[oname].astype(np.float64)
    if not model.get_tensor_datatype(oname).is_integer():
        out = out * scale
    y = np.rint(out)
    if not np.array_equal(y, out):
        raise NotBitExact(f"stage output is not integral (max deviation {np.abs(y - out).max()})")
    y = y.astype(np.int64)
    if np.asarray(x_int).ndim == 2:
        return y.reshape(np.shape(x_int))
    return np.moveaxis(y[0], -1, 0) if nhwc else y[0]


def _feed(model: ModelWrapper, x_int: np.ndarray, integer_in: bool,
          scale: float) -> tuple[np.ndarray, bool]:
    """The graph's input tensor for an (H, W) or (C, H, W) integer image, and whether the
    graph is NHWC (the hardware stages of a multi-channel network, see
    :class:`~fluorofpga.hw.transforms.BoundaryTransposesToNHWC`)."""
    iname = model.graph.input[0].name
    ishape = list(model.get_tensor_shape(iname))
    x = np.asarray(x_int)
    feed = x.astype(np.float32) if integer_in else x.astype(np.float32) / np.float32(scale)
    if x.ndim == 2 and int(np.prod(ishape)) == x.size:
        return feed.reshape(ishape), False
    if x.ndim == 3 and ishape == [1, *x.shape]:
        return feed[None], False
    if x.ndim == 3 and ishape == [1, x.shape[1], x.shape[2], x.shape[0]]:
        return np.moveaxis(feed, 0, -1)[None], True
    raise ValueError(f"input of shape {x.shape} does not fit the graph input {ishape}")


def assert_same_integers(reference: np.ndarray, other: np.ndarray, what: str) -> None:
    """Raise :class:`NotBitExact` naming ``what`` and where the first difference is."""
    if reference.shape != other.shape:
        raise NotBitExact(f"{what}: shape {other.shape} != {reference.shape}")
    diff = np.argwhere(reference != other)
    if len(diff):
        idx = tuple(int(i) for i in diff[0])
        raise NotBitExact(
            f"{what}: {len(diff)} pixels differ, first at {idx}: "
            f"{other[idx]} != {reference[idx]}"
        )


def threshold_coverage(
    model: ModelWrapper | str | Path, tiles: list[np.ndarray], io_bits: int = 8,
) -> dict[str, dict[str, float | list[int]]]:
    """How much of every ``MultiThreshold`` the input tiles exercise.

    A threshold is *exercised* when some input puts its channel's pre-activation at or
    above it and some input puts it below: only then does changing it change an output.
    For each ``MultiThreshold`` node of ``model`` (e.g. the streamlined graph) returns
    ``{"exercised": fraction of (channel, threshold) pairs exercised, "top_reached":
    fraction of channels whose top threshold is reached, "crossings": per-channel count of
    thresholds crossed at least once}``.
    """
    boot_finn()
    from finn.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp

    model = copy.deepcopy(_load(model)).transform(Unspecialize())
    iname = model.graph.input[0].name
    integer_in = model.get_tensor_datatype(iname).is_integer()
    nodes = [n for n in model.graph.node if n.op_type == "MultiThreshold"]
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for x in tiles:
        feed, _ = _feed(model, x, integer_in, 2.0**io_bits)
        ctx = execute_onnx(model, {iname: feed}, return_full_exec_context=True)
        for node in nodes:
            t = model.get_initializer(node.input[1])
            acc = ctx[node.input[0]]
            layout = getCustomOp(node).get_nodeattr("data_layout")
            axis = 1 if acc.ndim == 2 or layout.index("C") == 1 else -1
            per_ch = np.moveaxis(acc, axis, 0).reshape(acc.shape[axis], -1)
            hi = np.max(per_ch, axis=1)[:, None] >= t
            lo = np.min(per_ch, axis=1)[:, None] < t
            if node.name in seen:
                hi, lo = hi | seen[node.name][0], lo | seen[node.name][1]
            seen[node.name] = (hi, lo)
    report: dict[str, dict[str, float | list[int]]] = {}
    for name, (hi, lo) in seen.items():
        report[name] = {"exercised": float(np.mean(hi & lo)),
                        "top_reached": float(np.mean(hi[:, -1])),
                        "crossings": [int(v) for v in hi.sum(axis=1)]}
    return report
