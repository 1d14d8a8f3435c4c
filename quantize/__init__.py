"""fluorofpga.quantize: Brevitas recipes, QAT, QONNX export and integer equality.

Public API:
    Recipe, RECIPES, get_recipe     named recipes ("w8a8", "w4a8", "w4a4"); 8-bit fixed-scale
                                    input/output, power-of-two scales everywhere
    QuantDenoiser                   Brevitas twin of models.PlainDenoiser (same state_dict keys)
    from_float(model, recipe)       drop-in: float weights into the quantized twin
    calibrate, quantize_from_float  activation-range calibration and QAT from a float model
    export_to_qonnx(model, path, tile_shape)   QONNX file for a fixed tile
    run_qonnx_int(model, x_int)     qonnx ``execute_onnx`` on integer pixels -> integer pixels
    wiener.wiener_filter_model(W, b)           a Wiener-SIM bundle's designed filter as a
                                    one-layer Brevitas network (8-bit weights, fixed-scale
                                    8-bit codes); load_wiener_filter / save_wiener_filter
    untrained_qonnx(cfg, recipe, tile, path)   an untrained, calibrated net's QONNX (hardware
                                    cost and verification of an architecture)
"""

import warnings

# brevitas warns at import that an optional CUDA kernel package is absent; irrelevant here
warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")

from .export import export_to_qonnx, run_qonnx_int, untrained_qonnx  # noqa: E402
from .model import QuantDenoiser, from_float  # noqa: E402
from .qat import calibrate, quantize_from_float  # noqa: E402
from .recipes import RECIPES, Recipe, get_recipe  # noqa: E402

__all__ = [
    "RECIPES",
    "QuantDenoiser",
    "Recipe",
    "calibrate",
    "export_to_qonnx",
    "from_float",
    "get_recipe",
    "quantize_from_float",
    "run_qonnx_int",
    "untrained_qonnx",
]
