"""Quantization-aware training (QAT) starting from a float checkpoint."""

from __future__ import annotations

from typing import Any

import torch

from fluorofpga.models import PlainDenoiser, fit
from fluorofpga.models.train import Progress

from .model import QuantDenoiser, from_float
from .recipes import Recipe


@torch.no_grad()
def calibrate(model: QuantDenoiser, data: Any, batches: int = 8, crop: int = 64) -> None:
    """Initialise the activation ranges from a few batches (training-mode statistics)."""
    model.train()
    for _ in range(batches):
        x = data.batch(16, crop)[0]
        model(x)
    model.eval()


def quantize_from_float(
    float_model: PlainDenoiser,
    recipe: Recipe | str,
    data: Any,
    steps: int = 600,
    lr: float = 5e-4,
    batch_size: int = 16,
    crop: int = 48,
    progress: Progress | None = None,
) -> tuple[QuantDenoiser, list[float]]:
    """Build the quantized twin of ``float_model``, calibrate it and fine-tune it (QAT).

    Its biases are then kept off the quantizers' rounding ties
    (:meth:`QuantDenoiser.nudge_biases`). Returns the quantized model (eval mode) and its
    loss history.
    """
    qmodel = from_float(float_model, recipe)
    calibrate(qmodel, data, crop=crop)
    history = fit(qmodel, data, steps, batch_size, crop, lr, progress) if steps > 0 else []
    qmodel.nudge_biases()  # no rounding ties: every stage of the chain agrees
    return qmodel.eval(), history
