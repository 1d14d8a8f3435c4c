"""QONNX export of a :class:`QuantDenoiser` and integer execution of the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from brevitas.export import export_qonnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model

from .model import QuantDenoiser


def export_to_qonnx(model: QuantDenoiser, path: str | Path, tile_shape: tuple[int, int]) -> Path:
    """Export ``model`` for a fixed ``tile_shape`` (H, W) input to a cleaned-up QONNX file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(1, model.config.in_frames, *tile_shape)
    export_qonnx(model, args=dummy, export_path=str(path), dynamo=False)
    cleaned = cleanup_model(ModelWrapper(str(path)))
    cleaned.save(str(path))
    return path


def run_qonnx_int(
    model: ModelWrapper | str | Path, x_int: np.ndarray, io_bits: int = 8
) -> np.ndarray:
    """Execute a QONNX model (qonnx ``execute_onnx``) on integer pixels; integer output.

    ``x_int``: (N,C,H,W), (C,H,W) or (H,W) unsigned integers, run one image at a time (the
    graph has batch 1). Output: int64, (N,C',H,W), (C',H,W) or (H,W) respectively.
    """
    if not isinstance(model, ModelWrapper):
        model = ModelWrapper(str(model))
    x = np.asarray(x_int)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None, None]
    if x.ndim == 3:
        return run_qonnx_int(model, x[None], io_bits)[0]
    scale = 2.0**io_bits
    iname = model.graph.input[0].name
    oname = model.graph.output[0].name
    outs = [
        execute_onnx(model, {iname: (xi[None].astype(np.float32) / scale)})[oname]
        for xi in x
    ]
    y = np.rint(np.concatenate(outs).astype(np.float64) * scale).astype(np.int64)
    return y[0, 0] if squeeze else y


def untrained_qonnx(
    cfg: Any,
    recipe: str,
    tile: int,
    path: str | Path,
    scenes: int = 2,
    seed: int = 0,
) -> Path:
    """QONNX of an untrained ``PlainDenoiser(cfg)`` with ``recipe``'s activation ranges
    calibrated on simulated scenes (no QAT): for hardware cost and verification of an
    architecture, where the trained values do not matter.

    Args:
        cfg: a ``fluorofpga.models.DenoiserConfig`` (a denoiser, or a SIM network with
            ``in_frames=3``: then calibrated on simulated SIM groups).
        recipe: quantization recipe name.
        tile: side of the square tile the model is exported for, pixels.
        path: the QONNX file to write.
        scenes: simulated scenes used for calibration.
        seed: seed of the weights (``torch.manual_seed``); the scenes use ``seed + 1``.
    """
    from fluorofpga.models import PlainDenoiser, SimTriplets, SimulatedPairs

    from .qat import quantize_from_float

    torch.manual_seed(seed)
    data = (SimulatedPairs(scenes, (64, 64), cfg.signal, seed=seed + 1) if cfg.in_frames == 1
            else SimTriplets(scenes, 64, cfg.signal, seed=seed + 1))
    q, _ = quantize_from_float(PlainDenoiser(cfg).eval(), recipe, data, steps=0, crop=32)
    return export_to_qonnx(q, path, (tile, tile))
