"""FINN build of a quantized image-to-image network with finn-plus' own builder.

``build(qonnx_path, out_dir, cfg)`` runs finn-plus' ``build_dataflow_cfg`` over
:func:`flow_steps`: its standard steps plus ours (:mod:`fluorofpga.hw.steps`), up to
folding for a target throughput and estimate reports. Steps that need Vivado are refused
with :class:`~fluorofpga.hw.finn_compat.VivadoMissing` before anything runs.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from fluorofpga.boards import Board, load_board

from .finn_compat import boot_finn, require_vivado, run_builder
from .steps import make_step_integer_input, make_step_integer_io

BUILD_CONFIG_VERSION = 1
#: weight memory choices of :class:`HwBuildConfig`
WEIGHT_MEMORY = ("finn", "auto", "distributed", "block")
#: ``weight_memory="auto"``: weights at most this many words deep go to LUTRAM (a BRAM
#: would be mostly empty), deeper ones to BRAM
LUTRAM_MAX_WORDS = 128
RESOURCE_KEYS = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


class BuildUntil(str, Enum):
    """How far a build goes."""

    ESTIMATES = "estimates"  #: hardware-layer graph, folding, resource/performance estimates
    BITFILE = "bitfile"  #: + IP generation, stitching, synthesis (needs Vivado)


class MvauImpl(str, Enum):
    """Which MVAU implementation a build asks finn-plus' ``SpecializeLayers`` for.

    ``RTL`` (DSP-based ``MVAU_rtl``, finn-rtllib ``mvu``; the only MVAU that simulates here,
    without Vitis HLS) needs thresholds outside the MVAU, so it implies
    ``standalone_thresholds`` (activations become ``Thresholding_rtl`` layers). finn-plus
    then makes an MVAU RTL when its weights are signed, input and weight widths are >= 2
    bits, input, weight and accumulator widths fit the DSP (DSP48E2: activations < 18
    bits unsigned / <= 18 signed, weights <= 27, accumulator <= 48) and, on DSP48E1 parts
    (Zynq-7000, e.g. pynq-z2), the weights are narrow-range (no -2**(w-1)). Any other
    MVAU stays HLS with a warning; :func:`mvau_impl_report` says which and why.
    """

    AUTO = "auto"  #: finn-plus' default: RTL only for standalone thresholds and >= 4 bits
    RTL = "rtl"  #: prefer MVAU_rtl (``preferred_impl_style="rtl"``), standalone thresholds


@dataclass
class HwBuildConfig:
    """Configuration of one FINN build (saved as ``build_config.json`` next to its output).

    Attributes:
        board: board name from ``fluorofpga.boards`` (e.g. "kv260").
        tile: side of the square tile the accelerator is compiled for, pixels.
        halo: overlap a tile needs on each side (receptive-field radius), pixels.
        target_mpix_per_s: restored camera pixels per second the accelerator must
            sustain, Mpixel/s (halo overhead included when deriving FINN's target fps).
        clock_mhz: fabric clock, MHz; None = the board's default.
        io_bits: width of input/output pixels, bits.
        mvau_wwidth_max: FINN's cap on an MVAU's weight-stream width, bits.
        standalone_thresholds: split activations out of the MVAUs into Thresholding
            layers; MVAUs then specialize to RTL (DSP-based) instead of HLS.
        mvau_impl: MVAU implementation to prefer (:class:`MvauImpl`); ``"rtl"`` implies
            standalone thresholds (see :meth:`uses_standalone_thresholds`).
        weight_memory: where MVAU weights live: ``"auto"`` (LUTRAM when at most
            :data:`LUTRAM_MAX_WORDS` words deep, i.e. nearly unrolled, else BRAM),
            ``"distributed"`` or ``"block"`` for all; ``"finn"``: FINN's default.
        until: how far to build.
        version: config format version.
    """

    board: str = "kv260"
    tile: int = 128
    halo: int = 5
    target_mpix_per_s: float = 10.0
    clock_mhz: float | None = None
    io_bits: int = 8
    mvau_wwidth_max: int = 144
    standalone_thresholds: bool = False
    mvau_impl: MvauImpl = MvauImpl.AUTO
    weight_memory: str = "finn"
    until: BuildUntil = BuildUntil.ESTIMATES
    version: int = BUILD_CONFIG_VERSION

    def __post_init__(self) -> None:
        """Accept the enums' string values."""
        self.mvau_impl = MvauImpl(self.mvau_impl)
        self.until = BuildUntil(self.until)
        if self.weight_memory not in WEIGHT_MEMORY:
            raise ValueError(f"weight_memory {self.weight_memory!r}: choose one of "
                             f"{', '.join(WEIGHT_MEMORY)}")

    def uses_standalone_thresholds(self) -> bool:
        """Thresholds as separate layers: asked for, or needed by RTL MVAUs."""
        return self.standalone_thresholds or self.mvau_impl == MvauImpl.RTL

    def board_def(self) -> Board:
        """The :class:`~fluorofpga.boards.Board` this build targets."""
        return load_board(self.board)

    def clock(self) -> float:
        """Effective clock in MHz."""
        return self.clock_mhz or self.board_def().clock_mhz

    def useful_pixels_per_tile(self) -> int:
        """Output pixels a tile contributes in the interior of a frame (halo cropped)."""
        inner = self.tile - 2 * self.halo
        if inner <= 0:
            raise ValueError(f"tile {self.tile} too small for halo {self.halo}")
        return inner * inner

    def target_tiles_per_s(self) -> int:
        """FINN ``target_fps``: tiles per second needed for ``target_mpix_per_s``."""
        return max(1, math.ceil(self.target_mpix_per_s * 1e6 / self.useful_pixels_per_tile()))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        d = asdict(self)
        d["until"] = self.until.value
        d["mvau_impl"] = self.mvau_impl.value
        return d


#: steps after which the model is a complete, executable stage (verified for bit-exactness)
VERIFIED_STEPS = (
    "step_qonnx_to_finn",
    "step_integer_input",
    "step_tidy_up",
    "step_streamline",
    "step_integer_io",
    "step_convert_to_hw",
    "step_create_dataflow_partition",
    "step_minimize_bit_width",
)

#: finn-plus steps that need Vivado / Vitis HLS
VIVADO_STEPS = [
    "step_hw_codegen",
    "step_hw_ipgen",
    "step_set_fifo_depths",
    "step_create_stitched_ip",
    "step_synthesize_bitfile",
    "step_make_driver",
    "step_deployment_package",
]


def step_prefer_rtl_mvau(model: Any, cfg: Any) -> Any:
    """Step: ask ``SpecializeLayers`` for MVAU_rtl (``preferred_impl_style="rtl"``).

    Set on every generic MVAU; finn-plus still falls back to HLS (with a warning) for an
    MVAU that cannot be RTL (see :class:`MvauImpl`).
    """
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if node.op_type == "MVAU" and node.domain == "finn.custom_op.fpgadataflow":
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model


def make_step_weight_memory(choice: str) -> Any:
    """Step: set each MVAU's weight ``ram_style`` (after folding fixed its memory depth)."""

    def step_weight_memory(model: Any, cfg: Any) -> Any:
        from qonnx.custom_op.registry import getCustomOp

        for node in model.graph.node:
            if not node.op_type.startswith("MVAU"):
                continue
            inst = getCustomOp(node)
            style = choice
            if choice == "auto":
                style = "distributed" if inst.calc_wmem() <= LUTRAM_MAX_WORDS else "block"
            inst.set_nodeattr("ram_style", style)
        return model

    return step_weight_memory


def flow_steps(cfg: HwBuildConfig) -> list[Any]:
    """The build's step list: finn-plus step names and our step callables."""
    steps: list[Any] = [
        "step_qonnx_to_finn",
        make_step_integer_input(cfg.io_bits),
        "step_tidy_up",
        "step_streamline",
        make_step_integer_io(cfg.io_bits),
        "step_convert_to_hw",
        "step_minimize_bit_width_initial",
        "step_create_dataflow_partition",
        "step_specialize_layers",
        "step_target_fps_parallelization",
        "step_apply_folding_config",
        "step_minimize_bit_width",
        "step_generate_estimate_reports",
    ]
    if cfg.mvau_impl == MvauImpl.RTL:
        steps.insert(steps.index("step_specialize_layers"), step_prefer_rtl_mvau)
    if cfg.weight_memory != "finn":
        steps.insert(steps.index("step_apply_folding_config") + 1,
                     make_step_weight_memory(cfg.weight_memory))
    if cfg.until == BuildUntil.BITFILE:
        steps += VIVADO_STEPS
    return steps


@dataclass
class BuildResult:
    """What a build produced.

    Attributes:
        out_dir: the build's output directory.
        intermediate_models: step name -> saved ONNX model after that step.
        hw_model: the folded hardware-layer graph (dataflow partition), ONNX.
        estimates: FINN's performance estimate plus summed resources.
        seconds: wall time of the build.
        mvau_impl: per MVAU node, its implementation and why (:func:`mvau_impl_report`;
            also written to ``report/mvau_impl.json``).
    """

    out_dir: Path
    intermediate_models: dict[str, Path]
    hw_model: Path
    estimates: dict[str, Any]
    seconds: float
    mvau_impl: dict[str, dict[str, Any]] = field(default_factory=dict)


def build(qonnx_path: str | Path, out_dir: str | Path, cfg: HwBuildConfig) -> BuildResult:
    """Run the FINN flow on a QONNX model; returns the :class:`BuildResult`.

    Raises:
        VivadoMissing: ``cfg.until`` needs Vivado and it is not installed.
        RuntimeError: the FINN builder failed (its log is named in the message).
    """
    if cfg.until == BuildUntil.BITFILE:
        require_vivado("Building a bitstream (" + ", ".join(VIVADO_STEPS) + ")")
    boot_finn()
    import finn.builder.build_dataflow_config as bc

    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    board = cfg.board_def()
    (out_dir / "build_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    finn_cfg = bc.DataflowBuildConfig(
        output_dir=str(out_dir),
        synth_clk_period_ns=1000.0 / cfg.clock(),
        target_fps=cfg.target_tiles_per_s(),
        fpga_part=board.fpga_part,
        board=board.finn_board,
        mvau_wwidth_max=cfg.mvau_wwidth_max,
        standalone_thresholds=cfg.uses_standalone_thresholds(),
        generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS],
        steps=flow_steps(cfg),
        verify_steps=[],  # FINN's isclose checks are too weak; see fluorofpga.hw.verify
        save_intermediate_models=True,
        console_log_level=bc.LogLevel.ERROR,
    )
    finn_cfg = bc.DataflowBuildConfig.construct_from(finn_cfg)
    t0 = time.perf_counter()
    rc = run_builder(qonnx_path, finn_cfg)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"FINN build failed (exit {rc}); see {out_dir / 'build_dataflow.log'}")
    inter = out_dir / "intermediate_models"
    models = {p.stem: p for p in sorted(inter.glob("step_*.onnx"))}
    impl = mvau_impl_report(models["step_specialize_layers"], board.fpga_part)
    (out_dir / "report" / "mvau_impl.json").write_text(json.dumps(impl, indent=2))
    return BuildResult(
        out_dir=out_dir,
        intermediate_models=models,
        hw_model=models["step_minimize_bit_width"],
        estimates=read_estimates(out_dir, cfg),
        seconds=seconds,
        mvau_impl=impl,
    )


def mvau_impl_report(model: Any, fpgapart: str) -> dict[str, dict[str, Any]]:
    """Which implementation each MVAU of a specialized graph got, and why not RTL.

    Args:
        model: graph after ``step_specialize_layers`` (ModelWrapper or ONNX path).
        fpgapart: the FPGA part of the build (decides the DSP type).

    Returns:
        node name -> ``{"impl": "rtl" | "hls", "reasons": [...]}``; ``reasons`` lists what
        keeps the MVAU from being RTL, in finn-plus' terms (empty for RTL MVAUs; for an
        HLS MVAU without a listed reason, finn-plus' default heuristic chose HLS: build
        with ``mvau_impl="rtl"``).
    """
    boot_finn()
    from finn.util.basic import get_dsp_block, get_dsp_datapath_limits
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    if not isinstance(model, ModelWrapper):
        model = ModelWrapper(str(model))
    dsp = get_dsp_block(fpgapart)
    max_act, max_weight, max_acc = get_dsp_datapath_limits(dsp)
    report: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        if not node.op_type.startswith("MVAU"):
            continue
        inst = getCustomOp(node)
        idt, wdt = inst.get_input_datatype(0), inst.get_input_datatype(1)
        acc = inst.get_accumulator_datatype().bitwidth()
        weights = model.get_initializer(node.input[1])
        reasons = []
        if inst.get_nodeattr("noActivation") == 0:
            reasons.append("thresholds inside the MVAU (build with standalone thresholds)")
        if inst.get_nodeattr("binaryXnorMode") == 1:
            reasons.append("binary XNOR mode")
        if not wdt.signed():
            reasons.append(f"unsigned weights ({wdt.get_canonical_name()})")
        if dsp == "DSP48E1" and (weights is None or float(weights.min()) == wdt.min()):
            reasons.append("full-range weights on DSP48E1 (needs narrow-range weights)")
        if idt.bitwidth() < 2 or wdt.bitwidth() < 2:
            reasons.append("input or weight width below 2 bits")
        if idt.bitwidth() - int(idt.signed()) >= max_act:
            reasons.append(f"{idt.get_canonical_name()} inputs exceed the {dsp} B port")
        if wdt.bitwidth() > max_weight:
            reasons.append(f"{wdt.get_canonical_name()} weights exceed the {dsp} A port")
        if acc > max_acc:
            reasons.append(f"{acc}-bit accumulator exceeds the {dsp} P port")
        impl = "rtl" if node.op_type == "MVAU_rtl" else "hls"
        report[node.name] = {
            "impl": impl,
            "reasons": [] if impl == "rtl" else reasons,
            "input": idt.get_canonical_name(),
            "weights": wdt.get_canonical_name(),
            "accumulator_bits": acc,
            "dsp": dsp,
        }
    return report


def read_estimates(out_dir: str | Path, cfg: HwBuildConfig) -> dict[str, Any]:
    """Summarise FINN's estimate reports: throughput, latency and resources vs the board."""
    report = Path(out_dir) / "report"
    perf = json.loads((report / "estimate_network_performance.json").read_text())
    layers = json.loads((report / "estimate_layer_resources.json").read_text())
    total: dict[str, float] = {}
    for name, res in layers.items():
        if name == "total":
            continue
        for k, v in res.items():
            if k in RESOURCE_KEYS:
                total[k] = total.get(k, 0.0) + float(v)
    board = cfg.board_def()
    tiles_per_s = float(perf["estimated_throughput_fps"])
    return {
        "board": board.name,
        "clock_mhz": cfg.clock(),
        "tile": cfg.tile,
        "tiles_per_s": tiles_per_s,
        "mpix_per_s": tiles_per_s * cfg.useful_pixels_per_tile() / 1e6,
        "target_mpix_per_s": cfg.target_mpix_per_s,
        "latency_us": float(perf["estimated_latency_ns"]) / 1000.0,
        "bottleneck": perf.get("max_cycles_node_name"),
        "resources": total,
        "capacity": board.resources,
        "fits": all(total.get(k, 0.0) <= board.resources.get(k, 0) for k in total),
    }
