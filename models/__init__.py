"""fluorofpga.models: PyTorch networks and their training (no FINN here).

Public API:
    DenoiserConfig                  architecture + signal representation (SignalSpec)
    PlainDenoiser                   float FINN-friendly denoiser (3x3 convs + ReLU)
    layer_channels(config)          (in, out) channels per conv layer
    INPUT_BITS, OUTPUT_BITS         integer pixel widths (scales are 2**-bits)
    TrainConfig, train_denoiser     supervised training on simulated pairs
    training_data(cfg, seed)        the simulated data of a config (denoiser or SIM)
    SimTriplets, SIM_CAMERAS        3-frame SIM scenes (3 angles x 1 phase, random optics
                                    and pattern errors) -> 2x target as 4 sub-pixel
                                    channels; every crop through a new random camera
    fit                             the training loop (also used for QAT)
    SimulatedPairs, CameraRange     scene pool; every crop through a new random camera
    encode_noisy                    one (input code, residual target) pair from photons
    int_to_tensor, tensor_to_codes  data conversions
    BlindSpotFrames                 user frames with blind-spot masking (self-supervised)
    python -m fluorofpga.models     float training from the command line, torchrun-ready
    save_checkpoint, load_checkpoint, load_float_model
    export_bioimageio, validate_bioimageio  bioimage.io package: raw ADU in, restored ADU out
"""

from .bioimageio import export_bioimageio, validate_bioimageio
from .data import CameraRange, SimulatedPairs, encode_noisy, int_to_tensor, tensor_to_codes
from .denoiser import (
    INPUT_BITS,
    OUTPUT_BITS,
    DenoiserConfig,
    PlainDenoiser,
    layer_channels,
    load_checkpoint,
    load_float_model,
    save_checkpoint,
)
from .selfsup import BlindSpotFrames
from .simdata import SIM_CAMERAS, SimTriplets
from .train import TrainConfig, fit, train_denoiser, training_data

__all__ = [
    "BlindSpotFrames",
    "INPUT_BITS",
    "OUTPUT_BITS",
    "DenoiserConfig",
    "PlainDenoiser",
    "SIM_CAMERAS",
    "SimTriplets",
    "SimulatedPairs",
    "TrainConfig",
    "CameraRange",
    "encode_noisy",
    "export_bioimageio",
    "tensor_to_codes",
    "fit",
    "int_to_tensor",
    "layer_channels",
    "load_checkpoint",
    "load_float_model",
    "save_checkpoint",
    "train_denoiser",
    "training_data",
    "validate_bioimageio",
]
