"""Our build steps, in finn-plus' builder convention ``step_<verb>(model, cfg) -> model``.

They are inserted by name-free callables into finn-plus' list of steps (see
``fluorofpga.hw.build.flow_steps``); the builder saves the model after each one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes

from .transforms import (
    BoundaryTransposesToNHWC,
    IntegerInput,
    IntegerOutput,
    RemoveIdentityThresholds,
    SingleChannelTransposeToReshape,
)

Step = Callable[[ModelWrapper, Any], ModelWrapper]


def make_step_integer_input(bits: int) -> Step:
    """Step: the graph takes ``UINT{bits}`` pixels (see :class:`IntegerInput`)."""

    def step_integer_input(model: ModelWrapper, cfg: Any) -> ModelWrapper:
        return model.transform(IntegerInput(bits))

    return step_integer_input


def make_step_integer_io(bits: int) -> Step:
    """Step after streamlining: integer pixels in and out, no single-channel transposes.

    Removes the identity input thresholds, the output scale and the layout transposes
    (1-channel ones become Reshapes; multi-channel ones at the graph's ends go, the
    graph's input and output become NHWC), so the dataflow partition starts and ends
    with integer image streams.
    """

    def step_integer_io(model: ModelWrapper, cfg: Any) -> ModelWrapper:
        model = model.transform(RemoveIdentityThresholds())
        model = model.transform(IntegerOutput(bits))
        model = model.transform(SingleChannelTransposeToReshape())
        model = model.transform(BoundaryTransposesToNHWC())
        model = model.transform(InferShapes())
        model = model.transform(InferDataTypes())
        model = model.transform(GiveUniqueNodeNames())
        return model.transform(GiveReadableTensorNames())

    return step_integer_io
