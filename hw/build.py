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
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from fluorofpga.boards import Board, load_board

from .finn_compat import boot_finn, require_vivado, run_builder
from .steps import make_step_integer_input, make_step_integer_io

BUILD_CONFIG_VERSION = 1
RESOURCE_KEYS = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


class BuildUntil(str, Enum):
    """How far a build goes."""

    ESTIMATES = "estimates"  #: hardware-layer graph, folding, resource/performance estimates
    BITFILE = "bitfile"  #: + IP generation, stitching, synthesis (needs Vivado)


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
    until: BuildUntil = BuildUntil.ESTIMATES
    version: int = BUILD_CONFIG_VERSION

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
    """

    out_dir: Path
    intermediate_models: dict[str, Path]
    hw_model: Path
    estimates: dict[str, Any]
    seconds: float


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
        standalone_thresholds=cfg.standalone_thresholds,
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
    return BuildResult(
        out_dir=out_dir,
        intermediate_models=models,
        hw_model=models["step_minimize_bit_width"],
        estimates=read_estimates(out_dir, cfg),
        seconds=seconds,
    )


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
