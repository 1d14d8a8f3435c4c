"""fluorofpga.hw: FINN flow for image-to-image networks (no pynq here).

Public API:
    HwBuildConfig, BuildUntil, build(qonnx, out_dir, cfg) -> BuildResult
                                    finn-plus builder run: streamline, hardware layers,
                                    folding for a target Mpixel/s, estimate reports
    MvauImpl, mvau_impl_report      HwBuildConfig(mvau_impl="rtl"): DSP-based MVAU_rtl
                                    (standalone thresholds); which MVAUs are RTL and why
                                    not (BuildResult.mvau_impl, report/mvau_impl.json)
    flow_steps(cfg), VERIFIED_STEPS the step list; the steps whose models are checked
    execute_int(model, x_int)       integer execution of any stage (QONNX ... folded graph)
    threshold_coverage(model, tiles) which thresholds the inputs exercise (chain of custody)
    assert_same_integers, NotBitExact
    export_hw_layers(model, dir)    hardware-layer graph as data for host's emulator
    VivadoMissing, vivado_available, require_vivado
                                    the clear failure of steps that need Vivado
    generate_layer_rtl, simulate_layer, RtlLayer, pack_words, unpack_words,
    full_range_layer_inputs, PatchFailed
                                    rung 5: FINN-generated RTL of one layer (MVAU_rtl with
                                    its weight stream) in Verilator via cocotb, random
                                    idle/backpressure, cycles counted; finn-rtllib copies
                                    patched from hw/patches (PatchFailed if one no longer
                                    applies)
    PixelKernelParams, OutputFormat, Camera, pixel_in_table, pixel_out_table,
    pixel_in_reference, pixel_out_reference, pack_bypass, unpack_bypass
                                    our pixel-in / pixel-out kernels (hw/rtl/*.sv): their
                                    parameters, run-time tables and stream words, with
                                    SignalTables as the bit-exact reference
    run_kernel_tests -> KernelRun, KernelRunError
                                    rung 5 for those kernels: their cocotb tests in one
                                    simulation (Verilator, or Icarus)
SIM demodulation kernel (``fluorofpga.hw.demod_kernel``, ``hw/rtl/sim_demod.sv``):
    demod_config_words, pack_codes, unpack_codes, run_demod_tests, run_demod_on_tiles
                                    its register and pixel words and cocotb runs, with
                                    microscope.sim_linear.demodulate_int as the reference;
    compile.demod_resources         its resources in ``fluorofpga compile`` reports
Board kernel (``fluorofpga.hw.kernel``, ``hw/rtl/fluorofpga_ctrl.sv``):
    generate_kernel, simulate_kernel, REGISTERS
                                    what the bitstream holds between the AXI DMA and the PS:
                                    the network behind the AXI4-Lite register map the
                                    ``pynq`` backend drives (equal by test), simulated as the
                                    driver drives it; ``fluorofpga compile`` writes it with
                                    ``block_design.tcl`` into its Vivado folder
Transformations (``fluorofpga.hw.transforms``): IntegerInput, RemoveIdentityThresholds,
IntegerOutput, SingleChannelTransposeToReshape, Unspecialize.
The Vivado-less workarounds for finn-plus live only in ``fluorofpga.hw.finn_compat``.
"""

from .build import (
    VERIFIED_STEPS,
    BuildResult,
    BuildUntil,
    HwBuildConfig,
    MvauImpl,
    build,
    flow_steps,
    mvau_impl_report,
)
from .finn_compat import VivadoMissing, require_vivado, vivado_available
from .layers import UnsupportedLayer, export_hw_layers
from .pixel_kernels import (
    Camera,
    KernelRun,
    KernelRunError,
    OutputFormat,
    PixelKernelParams,
    pack_bypass,
    pixel_in_reference,
    pixel_in_table,
    pixel_out_reference,
    pixel_out_table,
    run_kernel_tests,
    unpack_bypass,
)
from .rtlsim import (
    PatchFailed,
    RtlLayer,
    full_range_layer_inputs,
    generate_layer_rtl,
    pack_words,
    simulate_layer,
    unpack_words,
)
from .verify import NotBitExact, assert_same_integers, execute_int, threshold_coverage

__all__ = [
    "VERIFIED_STEPS",
    "BuildResult",
    "BuildUntil",
    "Camera",
    "HwBuildConfig",
    "KernelRun",
    "KernelRunError",
    "MvauImpl",
    "NotBitExact",
    "OutputFormat",
    "PatchFailed",
    "PixelKernelParams",
    "RtlLayer",
    "UnsupportedLayer",
    "VivadoMissing",
    "assert_same_integers",
    "build",
    "execute_int",
    "threshold_coverage",
    "export_hw_layers",
    "flow_steps",
    "full_range_layer_inputs",
    "generate_layer_rtl",
    "mvau_impl_report",
    "pack_bypass",
    "pack_words",
    "pixel_in_reference",
    "pixel_in_table",
    "pixel_out_reference",
    "pixel_out_table",
    "require_vivado",
    "run_kernel_tests",
    "simulate_layer",
    "unpack_bypass",
    "unpack_words",
    "vivado_available",
]
