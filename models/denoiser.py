"""FINN-friendly denoiser: a plain stack of 3x3 zero-padded convolutions with ReLU.

No batch-norm, no residual fork, no upsampling: every layer maps to one FINN
``ConvolutionInputGenerator`` + ``MVAU`` pair, and the receptive field (hence the
tiling halo) is ``2 * depth + 1`` pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fluorofpga.microscope.signal import SignalSpec

#: Fixed-point convention shared by every stage: an integer pixel ``q`` of ``INPUT_BITS``
#: is fed to the network as ``q / 2**INPUT_BITS`` and the network's output ``y`` means
#: the integer ``round(y * 2**OUTPUT_BITS)``. Power-of-two scales keep every float
#: computation in the chain exact, which is what makes bit-exactness across stages hold.
INPUT_BITS = 8
OUTPUT_BITS = 8

#: 2: the network works in the GAT-residual representation (``signal``), not raw ADU.
CHECKPOINT_VERSION = 2


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture of :class:`PlainDenoiser`.

    Attributes:
        channels: feature channels of the hidden layers.
        depth: number of 3x3 conv layers (>= 2); the receptive field is ``2*depth+1``.
        signal: the representation the network works in (GAT input code, noise-residual
            output code; see :mod:`fluorofpga.microscope.signal`).
        in_frames: input channels: 1 for the denoiser, 3 raw frames for a 3-frame SIM
            reconstructor (one GAT code per frame).
        upscale: output grid refinement: 1 (same grid) or 2 (SIM: ``upscale²`` sub-pixel
            output channels, channel ``s = 2·dy + dx`` is fine pixel ``(2y+dy, 2x+dx)``).
    """

    channels: int = 16
    depth: int = 5
    signal: SignalSpec = field(default_factory=SignalSpec)
    in_frames: int = 1
    upscale: int = 1

    def __post_init__(self) -> None:
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2, got {self.depth}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.in_frames < 1:
            raise ValueError(f"in_frames must be >= 1, got {self.in_frames}")
        if self.upscale not in (1, 2):
            raise ValueError(f"upscale must be 1 or 2, got {self.upscale}")

    @property
    def out_channels(self) -> int:
        """Output channels: ``upscale²`` sub-pixels per input pixel."""
        return self.upscale**2

    @property
    def halo(self) -> int:
        """Receptive-field radius in pixels: the overlap a tile needs on each side."""
        return self.depth

    @property
    def receptive_field(self) -> int:
        """Receptive-field width in pixels."""
        return 2 * self.depth + 1

    @property
    def params(self) -> int:
        """Trainable parameters (weights and biases)."""
        return sum(9 * ci * co + co for ci, co in layer_channels(self))

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per restored pixel (the hardware's work)."""
        return sum(9 * ci * co for ci, co in layer_channels(self))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenoiserConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["signal"] = SignalSpec.from_dict(d.get("signal", {}))
        return cls(**d)


def layer_channels(config: DenoiserConfig) -> list[tuple[int, int]]:
    """(in, out) channels of each conv layer: frames -> C -> ... -> C -> upscale²."""
    c, first, last = config.channels, config.in_frames, config.out_channels
    return [(first if i == 0 else c, last if i == config.depth - 1 else c)
            for i in range(config.depth)]


class PlainDenoiser(nn.Module):
    """Float denoiser: ``depth`` 3x3 convs with ReLU between them.

    Input: ``(N, in_frames, H, W)`` float, GAT input codes divided by ``2**INPUT_BITS``.
    Output: ``(N, upscale², H, W)``: noise-residual codes (denoiser) or clean GAT codes of
    the sub-pixels (SIM) divided by ``2**OUTPUT_BITS``. The quantized
    twin in ``fluorofpga.quantize`` has the same ``state_dict`` keys
    (``convs.{i}.weight``, ``convs.{i}.bias``).
    """

    def __init__(self, config: DenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config or DenoiserConfig()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, padding=1, bias=True)
            for cin, cout in layer_channels(self.config)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` (N, in_frames, H, W)."""
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self.act(x)
        return x


def save_checkpoint(
    path: str | Path, model: nn.Module, config: DenoiserConfig, **extra: Any
) -> None:
    """Save weights and config together (``kind`` tells float from quantized)."""
    payload = {
        "version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "state_dict": model.state_dict(),
        **extra,
    }
    torch.save(payload, Path(path))


def load_checkpoint(path: str | Path) -> tuple[DenoiserConfig, dict[str, Any]]:
    """Load ``(config, payload)`` from a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint version {payload.get('version')!r}, expected "
            f"{CHECKPOINT_VERSION} (version 1 networks took raw ADU; re-train them with "
            "`fluorofpga train`)"
        )
    return DenoiserConfig.from_dict(payload["config"]), payload


def load_float_model(path: str | Path) -> PlainDenoiser:
    """Load a float :class:`PlainDenoiser` from a checkpoint."""
    config, payload = load_checkpoint(path)
    model = PlainDenoiser(config)
    model.load_state_dict(payload["state_dict"])
    return model.eval()
