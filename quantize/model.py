"""Brevitas twin of :class:`fluorofpga.models.PlainDenoiser`.

Same structure and the same ``state_dict`` keys for the weights (``convs.{i}.weight``,
``convs.{i}.bias``), so a float checkpoint loads directly (drop-in).
"""

from __future__ import annotations

import brevitas.nn as qnn
import torch
from brevitas.core.scaling import ScalingImplType
from brevitas.quant.fixed_point import (
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from brevitas.quant_tensor import QuantTensor
from torch import nn

from fluorofpga.models import DenoiserConfig, PlainDenoiser, layer_channels

from .recipes import Recipe, get_recipe


def _fixed_io_quant(bits: int) -> qnn.QuantIdentity:
    """Unsigned ``bits`` quantizer with a constant power-of-two scale ``2**-bits``."""
    return qnn.QuantIdentity(
        act_quant=Uint8ActPerTensorFixedPoint,
        bit_width=bits,
        scaling_impl_type=ScalingImplType.CONST,
        scaling_init=1.0,
        return_quant_tensor=True,
    )


class QuantDenoiser(nn.Module):
    """Quantized denoiser; input and output are fixed-scale unsigned integers.

    ``forward`` returns a float tensor (``value``); :meth:`forward_int` returns the
    integer output pixels.
    """

    def __init__(self, config: DenoiserConfig | None = None, recipe: Recipe | str = "w4a8"):
        super().__init__()
        self.config = config or DenoiserConfig()
        self.recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
        depth = self.config.depth
        wq = Int8WeightPerChannelFixedPoint if self.recipe.per_channel else (
            Int8WeightPerTensorFixedPoint
        )
        self.inp = _fixed_io_quant(self.recipe.io_bits)
        self.convs = nn.ModuleList(
            qnn.QuantConv2d(
                cin, cout, 3, padding=1, bias=True,
                weight_quant=wq, weight_bit_width=self.recipe.weight_bits(i, depth),
                bias_quant=None, return_quant_tensor=False,
            )
            for i, (cin, cout) in enumerate(layer_channels(self.config))
        )
        self.acts = nn.ModuleList(
            qnn.QuantReLU(
                act_quant=Uint8ActPerTensorFixedPoint,
                bit_width=self.recipe.act_bits,
                return_quant_tensor=True,
            )
            for _ in range(depth - 1)
        )
        self.out = _fixed_io_quant(self.recipe.io_bits)

    def forward_quant(self, x: torch.Tensor) -> QuantTensor:
        """Run the network and return the output QuantTensor (fixed scale 2**-io_bits)."""
        x = self.inp(x)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self.acts[i](x)
        return self.out(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` (N,1,H,W) on the float input scale ``q / 2**io_bits``."""
        y = self.forward_quant(x)
        return y.value if isinstance(y, QuantTensor) else y  # plain with quantizers disabled

    @torch.no_grad()
    def scales(self) -> list[tuple[torch.Tensor, float, float]]:
        """Per conv: (per-channel weight scales, input activation scale, output scale).

        All power-of-two (fixed-point recipes): the conv's accumulator lives on the grid
        ``weight scale x input scale`` of each output channel.
        """
        self.eval()
        probe = torch.zeros(1, self.config.in_frames, 4, 4)
        quants = [self.inp, *self.acts, self.out]
        x_scales = [float(self.inp(probe).scale)]
        x = self.inp(probe)
        for i, conv in enumerate(self.convs):
            y = quants[i + 1](conv(x))
            x_scales.append(float(y.scale))
            x = y
        return [(conv.quant_weight().scale.detach().reshape(-1), x_scales[i], x_scales[i + 1])
                for i, conv in enumerate(self.convs)]

    @torch.no_grad()
    def nudge_biases(self, margin: float = 0.25) -> int:
        """Keep every bias at least ``margin`` accumulator steps away from a rounding tie.

        The next quantizer rounds ``acc + bias`` (``acc`` on the grid ``g`` = weight scale x
        input scale of the channel) to its step ``s``: when ``acc + bias`` can land exactly
        on, or within float32 rounding of, a half step ``(k + 0.5)·s``, Brevitas/QONNX
        (round half to even, float32 sums) and FINN's thresholds (``>=``, the bias folded
        into them) may disagree by one code. That happened: a bias 4e-9 away from a
        dyadic value became an exact tie in float32. Moving such a bias by at most
        ``margin·g`` (here a few thousandths of an activation step) makes every
        comparison of the chain decided by at least ``margin·g``, far above float32
        rounding, so all stages give the same integers. Returns the biases moved.
        """
        moved = 0
        for conv, (w_scale, x_scale, s) in zip(self.convs, self.scales(), strict=True):
            if conv.bias is None:
                continue
            bias = conv.bias.detach().double()
            g = w_scale.double() * x_scale
            h = s / g  # quantizer step in accumulator steps (powers of two)
            period = torch.clamp(h, max=1.0)
            tie = torch.remainder(0.5 * h, period)  # ties at bias/g = tie (mod period)
            phase = torch.remainder(bias / g - tie, period) / period  # 0..1, ties at 0 and 1
            low, high = phase < margin, phase > 1 - margin
            shift = torch.where(low, (margin - phase) * period,
                                torch.where(high, (1 - margin - phase) * period,
                                            torch.zeros_like(phase)))
            if bool((low | high).any()):
                moved += int((low | high).sum())
                conv.bias.copy_((bias + shift * g).float())
        return moved

    @torch.no_grad()
    def forward_int(self, x_int: torch.Tensor) -> torch.Tensor:
        """Integer pixels in (N,1,H,W) -> integer pixels out (int64)."""
        scale = 2.0**self.recipe.io_bits
        y = self.forward_quant(x_int.to(torch.float32) / scale)
        return torch.round(y.value / y.scale).to(torch.int64)


def from_float(model: PlainDenoiser, recipe: Recipe | str) -> QuantDenoiser:
    """Build a :class:`QuantDenoiser` initialised with the float model's weights.

    Raises if any float weight does not find its place (the drop-in contract).
    """
    q = QuantDenoiser(model.config, recipe)
    result = q.load_state_dict(model.state_dict(), strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"float keys not used by the quantized model: {result.unexpected_keys}")
    missing = [k for k in result.missing_keys if not (".act_quant." in k or "_quant." in k)]
    if missing:
        raise RuntimeError(f"quantized weights left uninitialised: {missing}")
    return q
