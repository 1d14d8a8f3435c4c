"""fluorofpga.hw: FINN flow for image-to-image networks (no pynq here).

Public API:
    HwBuildConfig, BuildUntil, build(qonnx, out_dir, cfg) -> BuildResult
                                    finn-plus builder run: streamline, hardware layers,
                                    folding for a target Mpixel/s, estimate reports
    flow_steps(cfg), VERIFIED_STEPS the step list; the steps whose models are checked
    execute_int(model, x_int)       integer execution of any stage (QONNX ... folded graph)
    threshold_coverage(model, tiles) which thresholds the inputs exercise (chain of custody)
    assert_same_integers, NotBitExact
    export_hw_layers(model, dir)    hardware-layer graph as data for host's emulator
    VivadoMissing, vivado_available, require_vivado
                                    the clear failure of steps that need Vivado
    generate_layer_rtl, simulate_layer, RtlLayer, pack_words, unpack_words
                                    rung 5: FINN-generated RTL of one layer in Verilator via
                                    cocotb, random idle/backpressure, cycles counted
Transformations (``fluorofpga.hw.transforms``): IntegerInput, RemoveIdentityThresholds,
IntegerOutput, SingleChannelTransposeToReshape, Unspecialize.
The Vivado-less workarounds for finn-plus live only in ``fluorofpga.hw.finn_compat``.
"""

from .build import VERIFIED_STEPS, BuildResult, BuildUntil, HwBuildConfig, build, flow_steps
from .finn_compat import VivadoMissing, require_vivado, vivado_available
from .layers import UnsupportedLayer, export_hw_layers
from .rtlsim import RtlLayer, generate_layer_rtl, pack_words, simulate_layer, unpack_words
from .verify import NotBitExact, assert_same_integers, execute_int, threshold_coverage

__all__ = [
    "VERIFIED_STEPS",
    "BuildResult",
    "BuildUntil",
    "HwBuildConfig",
    "NotBitExact",
    "RtlLayer",
    "UnsupportedLayer",
    "VivadoMissing",
    "assert_same_integers",
    "build",
    "execute_int",
    "threshold_coverage",
    "export_hw_layers",
    "flow_steps",
    "generate_layer_rtl",
    "pack_words",
    "require_vivado",
    "simulate_layer",
    "unpack_words",
    "vivado_available",
]
