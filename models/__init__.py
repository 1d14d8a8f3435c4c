"""fluorofpga.models: PyTorch networks and their training (no FINN here).

Public API:
    DenoiserConfig, Normalization   architecture + camera ADU <-> integer mapping
    PlainDenoiser                   float FINN-friendly denoiser (3x3 convs + ReLU)
    layer_channels(config)          (in, out) channels per conv layer
    INPUT_BITS, OUTPUT_BITS         integer pixel widths (scales are 2**-bits)
    TrainConfig, train_denoiser     supervised training on simulated pairs
    fit                             the training loop (also used for QAT)
    SimulatedPairs                  pool of simulated pairs sampled as crops
    adu_to_int, int_to_tensor       data conversions
    save_checkpoint, load_checkpoint, load_float_model
"""

from .data import SimulatedPairs, adu_to_int, adu_to_target, int_to_tensor
from .denoiser import (
    INPUT_BITS,
    OUTPUT_BITS,
    DenoiserConfig,
    Normalization,
    PlainDenoiser,
    layer_channels,
    load_checkpoint,
    load_float_model,
    save_checkpoint,
)
from .train import TrainConfig, fit, train_denoiser

__all__ = [
    "INPUT_BITS",
    "OUTPUT_BITS",
    "DenoiserConfig",
    "Normalization",
    "PlainDenoiser",
    "SimulatedPairs",
    "TrainConfig",
    "adu_to_int",
    "adu_to_target",
    "fit",
    "int_to_tensor",
    "layer_channels",
    "load_checkpoint",
    "load_float_model",
    "save_checkpoint",
    "train_denoiser",
]
