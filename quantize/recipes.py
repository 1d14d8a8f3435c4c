"""Named quantization recipes. The name is the spec: ``w{weight bits}a{activation bits}``.

Every recipe keeps 8-bit unsigned input and output codes with a *fixed* scale of
``2**-8`` (the signal representation fixes their meaning: GAT input code, noise-residual
output code; a learned output range was measured to clip bright pixels) and power-of-two
scales everywhere, so that float arithmetic in Brevitas, QONNX and FINN is exact. First and
last layers keep 8-bit weights; the hidden weight and activation widths are the levers
(mixed precision: ``w4a6``, ``w4a5``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Bit widths of one quantization recipe.

    Attributes:
        name: recipe name.
        first_weight_bits: weights of the first conv (1 -> C channels).
        hidden_weight_bits: weights of the hidden convs (C -> C).
        last_weight_bits: weights of the last conv (C -> 1).
        act_bits: hidden ReLU activations (unsigned).
        io_bits: input and output pixels (unsigned, fixed scale 2**-io_bits).
        per_channel: per-output-channel weight scales (power of two).
    """

    name: str
    first_weight_bits: int
    hidden_weight_bits: int
    last_weight_bits: int
    act_bits: int
    io_bits: int = 8
    per_channel: bool = True

    def weight_bits(self, layer: int, depth: int) -> int:
        """Weight bit width of conv ``layer`` in a net of ``depth`` convs."""
        if layer == 0:
            return self.first_weight_bits
        if layer == depth - 1:
            return self.last_weight_bits
        return self.hidden_weight_bits

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "w8a8": Recipe("w8a8", 8, 8, 8, 8),
    "w4a8": Recipe("w4a8", 8, 4, 8, 8),
    # mixed precision: 8-bit first/last weights, 4-bit hidden weights, narrower activations
    "w4a6": Recipe("w4a6", 8, 4, 8, 6),
    "w4a5": Recipe("w4a5", 8, 4, 8, 5),
    "w4a4": Recipe("w4a4", 8, 4, 8, 4),
}


def get_recipe(name: str) -> Recipe:
    """Look up a recipe by name, with a clear error listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None
