"""Export the hardware-layer graph as plain data for the host's bit-exact emulator.

The host (``fluorofpga.host.emulate``) must run on the board's own Python without FINN or
onnx, so the dataflow partition is written as ``hw_layers.json`` (ops and attributes, in
stream order) plus ``hw_layers.npz`` (weights and thresholds, exact integers/floats).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper

from .transforms import Unspecialize

HW_LAYERS_VERSION = 1

#: generic op -> node attributes the emulator needs
_ATTRS: dict[str, tuple[str, ...]] = {
    "FMPadding": ("Padding", "NumChannels", "inputDataType"),
    "ConvolutionInputGenerator": (
        "ConvKernelDim", "IFMChannels", "Stride", "Dilation", "inputDataType", "depthwise",
    ),
    "MVAU": (
        "MW", "MH", "ActVal", "noActivation", "binaryXnorMode",
        "inputDataType", "weightDataType", "outputDataType", "PE", "SIMD",
    ),
    "Thresholding": ("NumChannels", "ActVal", "inputDataType", "outputDataType", "PE"),
    "Reshape": (),
    "StreamingDataWidthConverter": (),
    "StreamingFIFO": (),
    # a skip connection: the fork and the join (two streamed inputs)
    "DuplicateStreams": ("NumOutputStreams", "inputDataType"),
    "ElementwiseAdd": ("lhs_dtype", "rhs_dtype", "out_dtype", "lhs_style", "rhs_style"),
}


class UnsupportedLayer(ValueError):
    """The graph has a layer the host emulator does not implement."""


def export_hw_layers(model: ModelWrapper | str | Path, out_dir: str | Path) -> Path:
    """Write ``hw_layers.json`` + ``hw_layers.npz`` for the dataflow partition ``model``.

    Returns the JSON path. Raises :class:`UnsupportedLayer` for ops the emulator lacks.
    """
    if not isinstance(model, ModelWrapper):
        model = ModelWrapper(str(model))
    model = copy.deepcopy(model).transform(Unspecialize())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    layers: list[dict[str, Any]] = []
    # with a fork / join the emulator follows the streams by name (a chain needs none)
    branched = any(n.op_type in ("DuplicateStreams", "ElementwiseAdd")
                   for n in model.graph.node)
    for node in model.graph.node:
        if node.op_type not in _ATTRS:
            raise UnsupportedLayer(
                f"{node.name}: {node.op_type} is not supported by the host emulator "
                f"(supported: {', '.join(_ATTRS)})"
            )
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        entry: dict[str, Any] = {"name": node.name, "op": node.op_type}
        for key in _ATTRS[node.op_type]:
            if key in attrs:
                v = attrs[key]
                entry[key] = v.decode() if isinstance(v, bytes) else (
                    list(v) if isinstance(v, (list, tuple)) or hasattr(v, "__iter__") else v
                )
        for i, tensor in enumerate(node.input[1:], start=1):
            init = model.get_initializer(tensor)
            if init is None:
                continue
            key = f"{node.name}.{'weights' if node.op_type == 'MVAU' and i == 1 else 'thresholds'}"
            arrays[key] = np.asarray(init)
            entry["weights" if key.endswith("weights") else "thresholds"] = key
        if branched:
            entry["inputs"] = [t for t in node.input if model.get_initializer(t) is None]
            entry["outputs"] = list(node.output)
        entry["in_shape"] = list(model.get_tensor_shape(node.input[0]))
        entry["out_shape"] = list(model.get_tensor_shape(node.output[0]))
        layers.append(entry)
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    # the first non-Reshape layer sees the NHWC image stream: (1, H, W, C)
    first = next(e for e in layers if e["op"] != "Reshape")
    spec = {
        "image": {"height": first["in_shape"][1], "width": first["in_shape"][2],
                  "channels": first["in_shape"][3]},
        "format": "fluorofpga-hw-layers",
        "version": HW_LAYERS_VERSION,
        "input": {"shape": list(model.get_tensor_shape(iname)),
                  "datatype": model.get_tensor_datatype(iname).name},
        "output": {"shape": list(model.get_tensor_shape(oname)),
                   "datatype": model.get_tensor_datatype(oname).name},
        "layers": layers,
    }
    np.savez_compressed(out_dir / "hw_layers.npz", **arrays)
    path = out_dir / "hw_layers.json"
    path.write_text(json.dumps(spec, indent=1))
    return path
