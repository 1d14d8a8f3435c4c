"""The shift-invariant half of the streaming Wiener SIM as a Brevitas layer.

:mod:`fluorofpga.microscope.sim_linear` splits the classical Wiener reconstruction into a
demodulation (our own RTL kernel) and one ``K × K`` convolution from the 9 demodulated
channels to the 4 sub-pixels of the 2× image. That convolution is computed here, not
learned: :func:`wiener_filter_model` loads the designed float weights into a one-layer
Brevitas network with the project's fixed-scale 8-bit input and output (the same
quantizers as :class:`~fluorofpga.quantize.QuantDenoiser`, 8-bit per-channel
power-of-two weights), so it follows the denoiser's path through QONNX and FINN and the
same chain-of-custody checks apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint
from torch import nn

from .model import QuantDenoiser, _fixed_io_quant
from .recipes import get_recipe

__all__ = ["QuantWienerFilter", "WienerFilterConfig", "load_wiener_filter",
           "wiener_filter_model"]

CHECKPOINT_KIND = "wiener-filter"


@dataclass(frozen=True)
class WienerFilterConfig:
    """Shape of the filter layer.

    Attributes:
        kernel: odd kernel side (camera pixels).
        in_frames: input channels (3 per pattern angle).
        upscale: output grid refinement (``upscale²`` output channels).
    """

    kernel: int = 11
    in_frames: int = 9
    upscale: int = 2

    @property
    def halo(self) -> int:
        """Tile overlap the layer needs (pixels)."""
        return self.kernel // 2

    @property
    def receptive_field(self) -> int:
        """Receptive field (camera pixels)."""
        return self.kernel

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per camera pixel."""
        return self.in_frames * self.upscale**2 * self.kernel**2

    @property
    def params(self) -> int:
        """Weights and biases."""
        return self.macs_per_pixel + self.upscale**2

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


class QuantWienerFilter(QuantDenoiser):
    """One quantized ``K × K`` convolution, ``in_frames`` -> ``upscale²`` channels, no
    activation; 8-bit fixed-scale unsigned input and output codes (``forward_int``)."""

    def __init__(self, config: WienerFilterConfig | None = None) -> None:
        nn.Module.__init__(self)
        self.config = config or WienerFilterConfig()
        self.recipe = get_recipe("w8a8")
        k = self.config.kernel
        self.inp = _fixed_io_quant(self.recipe.io_bits)
        self.convs = nn.ModuleList([qnn.QuantConv2d(
            self.config.in_frames, self.config.upscale**2, k, padding=k // 2, bias=True,
            weight_quant=Int8WeightPerChannelFixedPoint, weight_bit_width=8,
            bias_quant=None, return_quant_tensor=False)])
        self.acts = nn.ModuleList()
        self.out = _fixed_io_quant(self.recipe.io_bits)


def wiener_filter_model(weights: np.ndarray, bias: np.ndarray) -> QuantWienerFilter:
    """The quantized layer computing ``out_code = Σ W · in_code + b`` (then rounded and
    clipped to 8 bits) from the integer-domain float weights
    (:func:`~fluorofpga.microscope.sim_linear.integer_weights`).

    The biases are moved off rounding ties (``nudge_biases``) so every stage of the
    chain rounds the same way.
    """
    w = np.asarray(weights, dtype=np.float64)
    d, c, k, k2 = w.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"weights must be (out, in, K, K) with odd K, got {w.shape}")
    model = QuantWienerFilter(WienerFilterConfig(kernel=k, in_frames=c,
                                                 upscale=int(round(np.sqrt(d)))))
    scale = 2.0 ** model.recipe.io_bits  # codes -> the fixed-scale float domain
    with torch.no_grad():
        conv = model.convs[0]
        conv.weight.copy_(torch.from_numpy(w).float())
        conv.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float64) / scale).float())
    model.eval()
    model.nudge_biases()
    return model


def save_wiener_filter(path: str | Path, model: QuantWienerFilter, **extra: Any) -> None:
    """Checkpoint of the layer (config, state) with any extra design information."""
    torch.save({"kind": CHECKPOINT_KIND, "config": model.config.to_dict(),
                "state_dict": model.state_dict(), **extra}, Path(path))


def load_wiener_filter(path: str | Path) -> QuantWienerFilter:
    """Inverse of :func:`save_wiener_filter`."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    if payload.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path}: not a Wiener filter checkpoint (kind "
                         f"{payload.get('kind')!r})")
    model = QuantWienerFilter(WienerFilterConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
