"""Rung 6: the stitched accelerator, simulated whole in Verilator through cocotb.

pixel-in -> FINN layers (with the data-width converters and FIFOs FINN inserts) ->
pixel-out, plus the bypass FIFO that carries each pixel's ADU and code from pixel-in to
pixel-out, wired by a top level rendered from ``hw/templates/accelerator.sv.j2`` (jinja2;
no Verilog is built from strings here).

- :func:`stitch_graph` takes a folded hardware-layer graph with RTL layers only (a build
  with ``mvau_impl="rtl"``) and runs finn-plus' own ``InsertDWC``, ``InsertFIFO`` and
  ``SpecializeLayers`` (no Vivado needed); every FIFO is FINN's ``StreamingFIFO_rtl``.
- :func:`generate_accelerator` generates every layer's RTL with finn-plus' own
  ``generate_hdl`` (MVAU weights streamed from FINN's memstream, as FINN's IP integrator
  would wire them), copies the finn-rtllib sources into the design folder and applies
  ``hw/patches`` to the copies, and renders the top level.
- :func:`simulate_accelerator` loads the two run-time tables and streams tiles of camera
  ADU through it (random idle / backpressure, optional reset in the middle of a tile) and
  returns the output words, the cycles between tile completions and every FIFO's peak
  occupancy. Compiled with ``FINN_SIMULATION`` (``gauge="all"``) every FIFO is FINN's
  unbounded ``fifo_gauge``: such runs size the FIFOs (:func:`size_accelerator`), which are
  then written back into the graph (``depth`` attributes) for a Vivado build.
- Skip connections: FINN's fork (``DuplicateStreams``) and join (``ElementwiseAdd`` of two
  streams) have no RTL that simulates here; whatever their variant, they are built from
  our own kernels (:mod:`fluorofpga.hw.forkjoin`, ``hw/rtl/stream_fork.sv`` and
  ``stream_add.sv``) with the node's attributes, after FINN's ``InsertDWC`` /
  ``InsertFIFO`` put a converter / FIFO on each branch like on any stream. The FIFO on a
  skip branch must hold what the other branch's line buffers hold, else the design hangs
  (FINN issue #1094): :func:`size_accelerator` sizes it like every FIFO.
- :func:`reference_words` is the host's emulator (``host.emulate.run_hw_graph`` between
  ``pixel_in_reference`` and ``pixel_out_reference``): the stitched simulation must give
  identical words.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .finn_compat import boot_finn
from .pixel_kernels import (
    PixelKernelParams,
    kernel_sources,
    pixel_in_reference,
    pixel_out_reference,
)
from .rtlsim import (
    DEFAULT_CLK_NS,
    DEFAULT_FPGA_PART,
    _finn_rtllib,
    apply_patches,
    render_template,
    run_cocotb_job,
    verilator_build,
)

__all__ = [
    "AccelRun",
    "FifoSizing",
    "StitchError",
    "StitchedDesign",
    "generate_accelerator",
    "reference_words",
    "simulate_accelerator",
    "size_accelerator",
    "size_fifos",
    "stitch_graph",
]

TEMPLATE = "accelerator.sv.j2"
#: raw frames a pixel of a Wiener-SIM design (``generate_accelerator(demod=True)``)
DEMOD_CHANNELS = 9
#: environment variable naming the job file of a :mod:`~fluorofpga.hw.cocotb_accel` run
JOB_ENV = "FLUOROFPGA_ACCEL_JOB"
COCOTB_MODULE = "fluorofpga.hw.cocotb_accel"
#: AXI-Lite inputs some FINN wrappers expose even when unused: tied low in the top level
AXILITE_INPUTS = ("AWVALID", "AWPROT", "AWADDR", "WVALID", "WDATA", "WSTRB", "BREADY",
                  "ARVALID", "ARPROT", "ARADDR", "RREADY")
#: FIFO depth during the sizing run's non-gauge fallback and the smallest depth set
MIN_FIFO_DEPTH = 2


class StitchError(RuntimeError):
    """The graph cannot be stitched (an HLS layer, mismatched stream widths, ...)."""


# ------------------------------------------------------------------------ graph


def _load(model: Any) -> Any:
    from qonnx.core.modelwrapper import ModelWrapper

    return model if isinstance(model, ModelWrapper) else ModelWrapper(str(model))


def stitch_graph(hw_model: Any, fpgapart: str = DEFAULT_FPGA_PART) -> Any:
    """Insert FINN's width converters and FIFOs into a folded RTL-only graph.

    Args:
        hw_model: the folded hardware-layer graph (``BuildResult.hw_model`` of a build
            with ``mvau_impl="rtl"``), ModelWrapper or ONNX path; not modified.
        fpgapart: FPGA part (decides the converter / FIFO implementations).

    Returns:
        A new ModelWrapper: every stream has a ``StreamingFIFO_rtl`` (FINN's shallow
        default depth until :func:`size_fifos` sets it) and a
        ``StreamingDataWidthConverter_rtl`` where producer and consumer widths differ.

    Raises:
        StitchError: a layer is not an ``_rtl`` layer (HLS layers need Vitis HLS).
    """
    boot_finn()
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    from .forkjoin import ForkJoinError, is_forkjoin, kernel_parameters

    model = copy.deepcopy(_load(hw_model))
    hls = [n.name for n in model.graph.node
           if not n.op_type.endswith("_rtl") and not is_forkjoin(n)]
    if hls:
        raise StitchError(f"layers without an RTL implementation: {hls}; build with "
                          "HwBuildConfig(mvau_impl='rtl') (HLS layers need Vitis HLS)")
    for node in model.graph.node:
        if is_forkjoin(node):  # built from our kernels (hw/forkjoin.py): refused early
            try:
                kernel_parameters(model, node)
            except ForkJoinError as err:
                raise StitchError(str(err)) from err
    model = model.transform(InsertDWC())
    model = model.transform(SpecializeLayers(fpgapart))
    model = model.transform(InsertFIFO(create_shallow_fifos=True))
    model = model.transform(SpecializeLayers(fpgapart))
    model = model.transform(GiveUniqueNodeNames())
    for node in model.graph.node:
        if node.op_type == "StreamingFIFO_rtl":
            getCustomOp(node).set_nodeattr("impl_style", "rtl")
    return model


def fifo_depths(model: Any) -> dict[str, int]:
    """FIFO node name -> ``depth`` attribute."""
    from qonnx.custom_op.registry import getCustomOp

    model = _load(model)
    return {n.name: int(getCustomOp(n).get_nodeattr("depth")) for n in model.graph.node
            if n.op_type.startswith("StreamingFIFO")}


def set_fifo_depths(model: Any, depths: Mapping[str, int]) -> Any:
    """A copy of ``model`` with the given FIFOs' ``depth`` set (others unchanged)."""
    from qonnx.custom_op.registry import getCustomOp

    model = copy.deepcopy(_load(model))
    known = fifo_depths(model)
    unknown = sorted(set(depths) - set(known))
    if unknown:
        raise KeyError(f"no FIFOs named {unknown} in the graph (FIFOs: {sorted(known)})")
    for node in model.graph.node:
        if node.name in depths:
            getCustomOp(node).set_nodeattr("depth", max(MIN_FIFO_DEPTH, int(depths[node.name])))
    return model


# -------------------------------------------------------------------- generation


@dataclass
class StitchedDesign:
    """The generated RTL of one stitched accelerator.

    Attributes:
        top: top-level module name.
        out_dir: design folder (sources, generated layers, the stitched graph).
        sources: every HDL file, compile order (packages first).
        graph: the stitched ONNX graph (FIFO depths included).
        params: pixel kernel parameters (None: the network alone, see
            :func:`generate_accelerator`).
        in_bits, out_bits: stream word widths of the top level's input / output.
        tile_shape: (height, width) of one tile, pixels.
        fifos: FINN FIFO name -> depth.
        bypass_depth: depth of the bypass FIFO.
        layer_cycles: FINN's cycle estimate per layer (FIFOs excluded) for one tile.
        data_files: memory-init files read relative to the simulation's directory.
        in_channels, out_channels: values per pixel of the network's input / output
            stream (a 3-frame SIM network: 3 and 4).
        in_beats, out_beats: stream words per pixel (the first / last layer's channel
            folding); each word packs ``channels / beats`` values with the lowest channel in
            the least significant bits (FINN's stream packing).
        demod: ``sim_demod.sv`` in front of the network (a Wiener-SIM bundle): the top
            level takes 9 raw-frame codes a pixel (one 72-bit word, TLAST per tile) and
            every tile's demodulation registers on ``s_axis_cfg``.
    """

    top: str
    out_dir: Path
    sources: list[Path]
    graph: Path
    params: PixelKernelParams | None
    in_bits: int
    out_bits: int
    tile_shape: tuple[int, int]
    fifos: dict[str, int]
    bypass_depth: int
    layer_cycles: dict[str, int]
    data_files: list[Path] = field(default_factory=list)
    in_channels: int = 1
    out_channels: int = 1
    in_beats: int = 1
    out_beats: int = 1
    demod: bool = False

    @property
    def in_value_bits(self) -> int:
        """Bits of one input value (a word holds ``in_channels / in_beats`` of them)."""
        return self.in_bits * self.in_beats // self.in_channels

    @property
    def out_value_bits(self) -> int:
        """Bits of one output value."""
        return self.out_bits * self.out_beats // self.out_channels

    @property
    def estimated_cycles(self) -> int:
        """FINN's estimate of cycles per tile in steady state: the slowest layer's."""
        return max(self.layer_cycles.values())

    @property
    def bottleneck(self) -> str:
        """The layer with the most cycles per tile."""
        return max(self.layer_cycles, key=self.layer_cycles.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (``design.json`` in the design folder)."""
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["graph"] = str(self.graph)
        d["sources"] = [str(s) for s in self.sources]
        d["data_files"] = [str(s) for s in self.data_files]
        d["params"] = self.params.to_dict() if self.params else None
        d["estimated_cycles"] = self.estimated_cycles
        d["bottleneck"] = self.bottleneck
        return d


def _pixel_channels(shape: Any) -> int:
    """Values per pixel of a stream tensor: NHWC ``(1, H, W, C)``, or 1 for the 1-channel
    ``(1, 1, H, W)`` of a Reshape at a denoiser's ends."""
    shape = tuple(int(d) for d in shape)
    return 1 if len(shape) != 4 or shape[1] == 1 else shape[-1]


def _wire(tensor: str, index: int) -> str:
    return f"s{index}_" + re.sub(r"[^A-Za-z0-9_]", "_", tensor)[:40]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate_accelerator(
    model: Any,
    out_dir: str | Path,
    params: PixelKernelParams | None,
    *,
    bypass_depth: int | None = None,
    fpgapart: str = DEFAULT_FPGA_PART,
    clk_ns: float = DEFAULT_CLK_NS,
    top: str = "fluorofpga_accel",
    demod: bool = False,
) -> StitchedDesign:
    """Generate every layer's RTL and the top level of a stitched graph.

    Args:
        model: from :func:`stitch_graph` (FIFO depths as they should be built).
        out_dir: design folder (replaced).
        params: the pixel kernels' parameters (their code and residual widths must match
            the graph's input and output); ``None``: the network alone (codes in, residual
            codes out, no tables), the data path of the ``rtlsim`` backend.
        bypass_depth: depth of the bypass FIFO; default: one tile of pixels (always
            enough: the network holds less than a tile in flight).
        fpgapart, clk_ns: given to FINN's HDL generation.
        top: top-level module name.
        demod: put ``sim_demod.sv`` in front of the network (``params`` None; the network
            takes the 9 demodulated 8-bit channels): raw SIM codes in, with a width
            converter when the first layer folds the 9 channels into several beats.

    Raises:
        StitchError: widths of the network's input / output do not match the kernels, or
            two sources of the same name differ.
    """
    boot_finn()
    from finn.util.basic import getHWCustomOp

    from .forkjoin import ForkJoinError, generate_forkjoin_layer, is_forkjoin

    model = copy.deepcopy(_load(model))
    out = Path(out_dir).absolute()
    if out.exists():
        shutil.rmtree(out)
    (out / "layers").mkdir(parents=True)
    graph_in, graph_out = model.graph.input[0].name, model.graph.output[0].name
    first = getHWCustomOp(model.find_consumer(graph_in))
    shape = tuple(int(d) for d in first.get_normal_input_shape(0))
    nchw = _pixel_channels(shape) == 1 and shape[-1] != 1  # a 1-channel Reshape
    tile_shape = (shape[-2], shape[-1]) if nchw else (shape[1], shape[2])
    channels = {"in": _pixel_channels(shape),
                "out": _pixel_channels(getHWCustomOp(model.find_producer(graph_out))
                                       .get_normal_output_shape(0))}
    n_pixels = tile_shape[0] * tile_shape[1]

    rtllib = _finn_rtllib()
    lib_files: dict[Path, Path] = {}  # rtllib-relative path -> local copy
    own_files: dict[str, Path] = {}   # basename -> generated file (deduplicated)
    streams: dict[str, dict[str, Any]] = {}
    layers: list[dict[str, Any]] = []
    layer_cycles: dict[str, int] = {}
    fifos: dict[str, int] = {}
    data_files: list[Path] = []

    def stream(tensor: str, width: int) -> str:
        s = streams.setdefault(tensor, {"tensor": tensor, "width": width,
                                        "wire": _wire(tensor, len(streams))})
        if s["width"] != width:
            raise StitchError(f"stream {tensor}: producer and consumer widths differ "
                              f"({s['width']} vs {width} bits)")
        return str(s["wire"])

    def add_source(f: Path) -> None:
        real = f.resolve()
        if real.is_relative_to(rtllib):
            lib_files.setdefault(real.relative_to(rtllib), real)
            return
        prev = own_files.get(real.name)
        if prev is None:
            own_files[real.name] = real
        elif _file_digest(prev) != _file_digest(real):
            raise StitchError(f"two different sources named {real.name}: {prev}, {real}")

    for node in model.graph.node:
        inst = getHWCustomOp(node)
        code_dir = out / "layers" / node.name
        code_dir.mkdir()
        if is_forkjoin(node):  # DuplicateStreams / ElementwiseAdd: our kernels
            try:
                own_layer = generate_forkjoin_layer(model, node, code_dir)
            except ForkJoinError as err:
                raise StitchError(str(err)) from err
            for f in own_layer.sources:
                add_source(f)
            module = node.name
        else:
            inst.set_nodeattr("code_gen_dir_ipgen", str(code_dir))
            inst.generate_hdl(model, fpgapart, clk_ns)
            for f in inst.get_rtl_file_list(abspath=True):
                add_source(Path(f))
            module = inst.get_nodeattr("gen_top_module") or inst.get_verilog_top_module_name()
        top_file = next((p for p in code_dir.iterdir() if p.suffix in (".v", ".sv")
                         and re.search(rf"\bmodule\s+{re.escape(module)}\b", p.read_text())),
                        None)
        if top_file is None:
            raise StitchError(f"{node.name}: no generated file defines module {module}")
        text = top_file.read_text()
        intf = inst.get_verilog_top_module_intf_names()
        data_inputs = [t for t in node.input if model.get_initializer(t) is None]
        if len(intf["s_axis"]) != len(data_inputs) or len(intf["m_axis"]) != len(node.output):
            raise StitchError(f"{node.name}: stream interfaces {intf} do not match its "
                              f"inputs {data_inputs} / outputs {list(node.output)}")
        weights = None
        op = node.op_type
        if op.startswith(("MVAU", "VVAU")) and inst.get_nodeattr("mem_mode") == \
                "internal_decoupled":
            wrapper = code_dir / f"{node.name}_memstream_wrapper.v"
            if not wrapper.is_file():
                raise StitchError(f"{node.name}: FINN wrote no weight streamer {wrapper}")
            add_source(wrapper)
            for f in ("axi/hdl/axilite.sv", "memstream/hdl/memstream_axi.sv",
                      "memstream/hdl/memstream.sv"):
                add_source(rtllib / f)
            weights = {"module": f"{node.name}_memstream_wrapper",
                       "width": int(inst.get_instream_width_padded(1))}
        is_fifo = op.startswith("StreamingFIFO")
        if is_fifo:
            fifos[node.name] = int(inst.get_nodeattr("depth"))
        else:
            layer_cycles[node.name] = int(inst.get_exp_cycles())
        data_files += sorted(p for p in code_dir.iterdir()
                             if p.suffix == ".dat" and p.name != "memblock.dat")
        layers.append({
            "name": node.name,
            "module": module,
            "is_fifo": is_fifo,
            "clk2x": bool(re.search(r"\bap_clk2x\b", text)),
            "axilite": [s for s in AXILITE_INPUTS if re.search(rf"\bs_axilite_{s}\b", text)],
            "weights": weights,
            "inputs": [{"port": p, "wire": stream(t, int(w))}
                       for (p, w), t in zip(intf["s_axis"], data_inputs, strict=True)],
            "outputs": [{"port": p, "wire": stream(t, int(w))}
                        for (p, w), t in zip(intf["m_axis"], node.output, strict=True)],
        })

    for end, tensor in (("input", graph_in), ("output", graph_out)):
        inst = getHWCustomOp(model.find_consumer(tensor) if end == "input"
                             else model.find_producer(tensor))
        folded = inst.get_folded_input_shape(0) if end == "input" else \
            inst.get_folded_output_shape(0)
        beats, rest = divmod(int(np.prod(folded[:-1])), tile_shape[0] * tile_shape[1])
        values = channels["in" if end == "input" else "out"]
        if rest or values % beats or (params is not None and beats != 1):
            raise StitchError(f"network {end}: folded shape {tuple(folded)}; the stitched "
                              "design streams whole pixels (one beat per pixel with pixel "
                              "kernels)")
        channels[f"{end}_beats"] = beats
    if params is not None:
        widths_in = params.stream_widths("pixel_in")
        widths_out = params.stream_widths("pixel_out")
        if streams[graph_in]["width"] != widths_in["m_axis"]:
            raise StitchError(f"network input is {streams[graph_in]['width']} bits wide, "
                              f"pixel_in emits {widths_in['m_axis']}")
        if streams[graph_out]["width"] != widths_out["s_axis"]:
            raise StitchError(f"network output is {streams[graph_out]['width']} bits wide, "
                              f"pixel_out takes {widths_out['s_axis']}")
        ports = {"s_axis": widths_in["s_axis"], "lut_in": widths_in["s_axis_lut"],
                 "lut_out": widths_out["s_axis_lut"], "m_axis": widths_out["m_axis"]}
        bypass = {"depth": int(bypass_depth or n_pixels), "width": widths_in["m_axis_bypass"],
                  "ram_style": "auto"}
    else:
        ports = {"s_axis": streams[graph_in]["width"], "m_axis": streams[graph_out]["width"]}
        bypass = {"depth": 0, "width": 0, "ram_style": "auto"}
    if demod:
        from .demod_kernel import demod_sources, write_sine_tables

        net_in = int(streams[graph_in]["width"])
        if params is not None or channels["in"] != DEMOD_CHANNELS or net_in * channels[
                "input_beats"] != DEMOD_CHANNELS * 8 or (DEMOD_CHANNELS * 8) % net_in:
            raise StitchError(f"sim_demod feeds 9 channels of 8 bits, one 72-bit word a "
                              f"pixel; the network takes {channels['in']} channels in "
                              f"{channels['input_beats']} beats of {net_in} bits"
                              + (" (and a design with pixel kernels)" if params else ""))
        ports = {"s_axis": DEMOD_CHANNELS * 8, "net_in": net_in, "m_axis": ports["m_axis"]}
        write_sine_tables(out)  # included by sim_demod.sv from the design folder
        for f in demod_sources():
            add_source(f)
        if net_in != DEMOD_CHANNELS * 8:
            for f in ("dwc/hdl/vpc.sv", "dwc/hdl/dwc_axi.sv"):
                add_source(rtllib / f)

    # a generated copy of a finn-rtllib file (Reshape_rtl copies dwc_axi.sv) is dropped
    lib_by_name = {p.name: p for p in lib_files.values()}
    for name, f in list(own_files.items()):
        if name in lib_by_name:
            if _file_digest(f) != _file_digest(lib_by_name[name]):
                raise StitchError(f"{f} differs from finn-rtllib's {lib_by_name[name]}")
            del own_files[name]
    # sources: finn-rtllib copies (patched), generated layer files, our kernels
    local_lib = out / "finn-rtllib"
    lib_paths = []
    for rel, real in sorted(lib_files.items(), key=lambda kv: str(kv[0])):
        dst = local_lib / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, dst)
        lib_paths.append(dst)
    apply_patches(out)
    own: list[Path] = []
    if params is not None:
        own = kernel_sources("pixel_in")
        own += [f for f in kernel_sources("pixel_out") if f not in own]
        own = [f for f in own if f.resolve() not in own_files.values()]  # fork/join's too
    top_sv = out / f"{top}.sv"
    top_sv.write_text(render_template(
        TEMPLATE, top=top,
        pixel_kernels=params is not None,
        demod=demod,
        ports=ports,
        streams=list(streams.values()),
        layers=layers,
        fifos=[{"name": n} for n in fifos],
        bypass=bypass,
        net_in=streams[graph_in]["wire"],
        net_out=streams[graph_out]["wire"],
        pixel_in_params=params.hdl_parameters("pixel_in") if params else {},
        pixel_out_params=params.hdl_parameters("pixel_out") if params else {},
    ))
    graph_path = out / "stitched.onnx"
    model.save(str(graph_path))
    ordered = sorted(lib_paths, key=lambda p: 0 if p.stem.endswith("_pkg") else 1)
    design = StitchedDesign(
        top=top,
        out_dir=out,
        sources=ordered + list(own_files.values()) + own + [top_sv],
        graph=graph_path,
        params=params,
        in_bits=int(ports["s_axis"]),
        out_bits=int(ports["m_axis"]),
        tile_shape=tile_shape,
        fifos=fifos,
        bypass_depth=int(bypass["depth"]),
        layer_cycles=layer_cycles,
        data_files=data_files,
        in_channels=channels["in"] if params is None else 1,
        out_channels=channels["out"] if params is None else 1,
        in_beats=1 if demod else channels["input_beats"],
        out_beats=channels["output_beats"],
        demod=demod,
    )
    (out / "design.json").write_text(json.dumps(design.to_dict(), indent=2))
    return design


# -------------------------------------------------------------------- reference


def reference_words(graph: Any, tables: Any, params: PixelKernelParams,
                    tiles: np.ndarray) -> np.ndarray:
    """What the stitched accelerator must emit for ``tiles`` (n, h, w) of camera ADU.

    The host's emulator: ``pixel_in_reference`` -> ``run_hw_graph`` (the hardware-layer
    graph as the host executes it) -> ``pixel_out_reference``.

    Args:
        graph: a ``fluorofpga.host.emulate.HwGraph``.
        tables: the camera's ``SignalTables``.
        params: the pixel kernels' parameters.
        tiles: uint16 ADU tiles.

    Returns:
        Output words (uint32 for float32 output, uint16 otherwise), shape of ``tiles``.
    """
    from fluorofpga.host.emulate import run_hw_graph

    out = []
    for t in np.asarray(tiles):
        q, bypass = pixel_in_reference(tables, t, params)
        r = run_hw_graph(graph, q)
        out.append(pixel_out_reference(tables, bypass, r, params))
    return np.stack(out)


# -------------------------------------------------------------------- simulation


@dataclass
class AccelRun:
    """One simulation of the stitched accelerator.

    Attributes:
        words: output words per tile, shape (n, h, w).
        cycles: clock cycles from the end of reset (or of the table loads) to the last
            output beat.
        tile_done: cycle of each tile's last output beat.
        interval: cycles between the last two tiles' completions (steady state).
        maxcount: FIFO name (and ``bypass``) -> peak occupancy.
        table_cycles: cycles spent loading the tables.
        log: the simulator's log file.
    """

    words: np.ndarray
    cycles: int
    tile_done: list[int]
    interval: int | None
    maxcount: dict[str, int]
    table_cycles: int
    log: Path


#: ``simulate_accelerator(gauge=...)``: which FIFOs become FINN's unbounded fifo_gauge
GAUGE_DEFINES = {"": None, "all": {"FINN_SIMULATION": 1},
                 "bypass": {"FLUOROFPGA_BYPASS_GAUGE": 1}}


def _build(design: StitchedDesign, gauge: str) -> Path:
    if gauge not in GAUGE_DEFINES:
        raise ValueError(f"gauge={gauge!r}: choose one of {sorted(GAUGE_DEFINES)}")
    return verilator_build(design.sources, design.top,
                           design.out_dir / (f"build_gauge_{gauge}" if gauge else "build"),
                           ("-Wno-WIDTH", "-Wno-PINMISSING"), GAUGE_DEFINES[gauge])


def fresh_run_dir(design: StitchedDesign, run_name: str) -> Path:
    """An empty simulation directory ``run_name`` in the design folder, holding the
    design's memory-init files (read relative to it)."""
    run_dir = design.out_dir / run_name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    for f in design.data_files:
        shutil.copy(f, run_dir / f.name)
    return run_dir


def simulate_accelerator(
    design: StitchedDesign,
    tiles: np.ndarray,
    lut_in: np.ndarray | None = None,
    lut_out: np.ndarray | None = None,
    *,
    run_name: str = "run",
    idle_prob: float = 0.0,
    backpressure_prob: float = 0.0,
    seed: int = 0,
    reset_after: int | None = None,
    gauge: str = "",
    pace: int = 0,
    max_cycles: int | None = None,
    cfg: list[list[int]] | None = None,
) -> AccelRun:
    """Stream ``tiles`` of camera ADU through the stitched accelerator in Verilator.

    Args:
        design: from :func:`generate_accelerator`.
        tiles: (n, h, w) unsigned ADU tiles of the design's tile shape (input codes for
            a network-only design).
        lut_in, lut_out: the pixel-in / pixel-out table words (``pixel_in_table``,
            ``pixel_out_table``), loaded before the first pixel (required with pixel
            kernels, refused without).
        run_name: name of the run's directory under the design folder.
        idle_prob: probability of an idle cycle before each input beat.
        backpressure_prob: probability that the output's ``tready`` is low in a cycle.
        seed: seed of the idle / backpressure pattern.
        reset_after: if set, reset the accelerator after this many input pixels of an
            extra first tile (whose output is discarded), then stream ``tiles``.
        gauge: ``"all"``: compile with ``FINN_SIMULATION`` (every FIFO unbounded);
            ``"bypass"``: only the bypass FIFO unbounded; ``""``: as built (FIFO sizing).
        pace: if > 1, one input pixel every ``pace`` cycles (the design's own rate)
            instead of random idle cycles.
        max_cycles: timeout; default 20x the estimate per tile plus table loads.
        cfg: a ``demod`` design's register words of every tile
            (:func:`~fluorofpga.hw.demod_kernel.demod_config_words`), required there and
            refused elsewhere; ``tiles`` are then raw-frame codes ``(n, h, w, 9)``. The
            first tile's load completes before its first pixel (after a reset too); the
            next loads queue behind it (the kernel stages one while a tile streams).

    Raises:
        RuntimeError: the simulation failed (deadlock / timeout, extra or missing
            beats); its log is named in the message.
    """
    tiles = np.asarray(tiles)
    want = (*design.tile_shape, *((design.in_channels,) if design.in_channels > 1 else ()))
    if tiles.ndim != 1 + len(want) or tiles.shape[1:] != want:
        raise ValueError(f"tiles must be (n, {', '.join(map(str, want))}), got {tiles.shape}")
    if tiles.dtype.kind != "u":
        raise ValueError(f"tiles must hold unsigned ADU, got {tiles.dtype}")
    if design.in_channels > 1:  # one word per beat: (n, h, w, beats) -> (n, h, w*beats)
        beats = pack_channels(tiles.reshape(*tiles.shape[:3], design.in_beats, -1),
                              design.in_value_bits)
        tiles = beats.reshape(len(tiles), design.tile_shape[0], -1)
    if (lut_in is None or lut_out is None) != (design.params is None):
        raise ValueError("tables are loaded into a design with pixel kernels, and only there")
    if (cfg is not None) != design.demod or (cfg is not None and len(cfg) != len(tiles)):
        raise ValueError("a demod design takes one register load (cfg) per tile, and only "
                         "a demod design takes them")
    if int(tiles.max(initial=0)) >> design.in_bits:
        raise ValueError(f"tile values exceed the design's {design.in_value_bits}-bit input")
    lut_in = np.zeros(0, np.uint32) if lut_in is None else lut_in
    lut_out = np.zeros(0, np.uint32) if lut_out is None else lut_out
    build_dir = _build(design, gauge)
    run_dir = fresh_run_dir(design, run_name)
    n, (h, w) = len(tiles), design.tile_shape
    n_tables = len(lut_in) + len(lut_out)
    if max_cycles is None:
        max_cycles = 20 * (n + 2) * (design.estimated_cycles + h * w) + 4 * n_tables + 10000
    job = {
        "tiles": [[int(v) for v in t.ravel()] for t in tiles],
        "out_beats_per_tile": h * w * design.out_beats,
        "lut_in": [int(v) for v in np.asarray(lut_in).ravel()],
        "lut_out": [int(v) for v in np.asarray(lut_out).ravel()],
        "idle_prob": idle_prob,
        "backpressure_prob": backpressure_prob,
        "seed": seed,
        "reset_after": reset_after,
        "pace": int(pace),
        "max_cycles": max_cycles,
        "fifos": [*design.fifos, *(["bypass"] if design.params else [])],
        "tlast": design.params is not None,
        "cfg": [[int(w) for w in words] for words in cfg] if cfg is not None else None,
        "result": str(run_dir / "result.json"),
    }
    res = run_cocotb_job(COCOTB_MODULE, design.top, build_dir, run_dir, JOB_ENV, job, seed,
                         "stitched simulation")
    dtype = np.uint32 if design.out_bits > 16 else np.uint16 if design.out_bits > 8 \
        else np.uint8
    words = np.array(res["words"], dtype=object if design.out_bits > 63 else np.int64)
    if design.out_channels > 1:
        words = unpack_channels(words.reshape(n, h, w, design.out_beats),
                                design.out_value_bits,
                                design.out_channels // design.out_beats).reshape(n, h, w, -1)
        dtype = np.uint16 if design.out_value_bits > 8 else np.uint8
    words = words.astype(dtype).reshape(n, h, w, *words.shape[3:])
    done = [int(c) for c in res["tile_done"]]
    return AccelRun(
        words=words,
        cycles=int(res["cycles"]),
        tile_done=done,
        interval=done[-1] - done[-2] if len(done) >= 2 else None,
        maxcount={k: int(v) for k, v in res["maxcount"].items()},
        table_cycles=int(res["table_cycles"]),
        log=run_dir / "sim.log",
    )


def pack_channels(values: np.ndarray, bits: int) -> np.ndarray:
    """``(..., C)`` unsigned values -> one stream word per pixel, channel 0 in the least
    significant ``bits`` (FINN's packing of a folded stream): int64 up to 63 bits, Python
    integers (object array) for wider words (a 9-frame bundle streams 72-bit pixels)."""
    v = np.asarray(values).astype(np.int64)
    if v.min(initial=0) < 0 or int(v.max(initial=0)) >> bits:
        raise ValueError(f"values do not fit {bits}-bit unsigned channels")
    wide = v.shape[-1] * bits > 63
    v = v.astype(object) if wide else v
    shifts = np.array([i * bits for i in range(v.shape[-1])],
                      dtype=object if wide else np.int64)
    return np.bitwise_or.reduce(v << shifts, axis=-1)


def unpack_channels(words: np.ndarray, bits: int, channels: int) -> np.ndarray:
    """Inverse of :func:`pack_channels`: words -> ``(..., channels)`` int64."""
    w = np.asarray(words)
    if w.dtype == object or channels * bits > 63:
        w = w.astype(object)[..., None]
        shifts = np.array([i * bits for i in range(channels)], dtype=object)
        return ((w >> shifts) & ((1 << bits) - 1)).astype(np.int64)
    w = w.astype(np.int64)[..., None]
    return (w >> (np.arange(channels, dtype=np.int64) * bits)) & ((1 << bits) - 1)


def size_fifos(maxcount: Mapping[str, int], margin: float = 0.25, extra: int = 2
               ) -> dict[str, int]:
    """FIFO depths from peak occupancies: ``ceil(peak * (1 + margin)) + extra``.

    Returns:
        FIFO name -> depth (``bypass`` included when measured), never below
        :data:`MIN_FIFO_DEPTH`.
    """
    return {k: max(MIN_FIFO_DEPTH, math.ceil(v * (1 + margin)) + extra)
            for k, v in maxcount.items()}


@dataclass
class FifoSizing:
    """FIFO depths sized from a stitched simulation with unbounded FIFOs.

    Attributes:
        peaks: FIFO name (and ``bypass``) -> peak occupancy in the gauge run.
        depths: the depths set from them (:func:`size_fifos`).
        design: the design regenerated with those depths (graph written back).
    """

    peaks: dict[str, int]
    depths: dict[str, int]
    design: StitchedDesign


def size_accelerator(
    model: Any,
    out_dir: str | Path,
    params: PixelKernelParams | None,
    tiles: np.ndarray,
    lut_in: np.ndarray | None,
    lut_out: np.ndarray | None,
    *,
    margin: float = 0.25,
    **kwargs: Any,
) -> FifoSizing:
    """Size every FIFO (FINN's and the bypass) from stitched simulations.

    1. FINN's FIFOs: the design (``out_dir/gauge``) is simulated with ``FINN_SIMULATION``
       (every FIFO FINN's unbounded ``fifo_gauge``) with the input paced at the design's
       own rate (one pixel every ``estimated_cycles / pixels`` cycles, as a camera or a
       DMA running at the accelerator's throughput delivers them; an unpaced source would
       pile a whole tile into the FIFOs ahead of the slowest layer). Each depth becomes the
       peak occupancy plus ``margin`` (:func:`size_fifos`).
    2. The bypass FIFO: with those depths, only the bypass unbounded, the input NOT paced
       (the network then holds as many pixels as it can): its peak plus ``margin``.
    A network-only design (``params=None``, no tables) has no bypass FIFO: step 2 is
    skipped. Forks and joins (skip connections) are sized like any FIFO: the one on a
    skip branch holds the pixels the other branch's line buffers hold (FINN #1094's hang
    when it cannot). The depths are written into the graph and the design regenerated into
    ``out_dir/sized``; re-simulate it (free-running and under stalls) to prove neither
    deadlock nor throughput loss (the tests and ``benchmarks/rtl.py`` do).

    Args:
        model: from :func:`stitch_graph`.
        kwargs: passed to :func:`generate_accelerator` (``fpgapart``, ``clk_ns``, ``top``).
    """
    out = Path(out_dir)
    gauge = generate_accelerator(model, out / "gauge", params, **kwargs)
    pixels = gauge.tile_shape[0] * gauge.tile_shape[1]
    pace = max(1, gauge.estimated_cycles // pixels)
    run = simulate_accelerator(gauge, tiles, lut_in, lut_out, run_name="gauge_run",
                               gauge="all", pace=pace)
    peaks = {k: v for k, v in run.maxcount.items() if k != "bypass"}
    depths = size_fifos(peaks, margin)
    sized_model = set_fifo_depths(model, depths)
    bypass = None
    if params is not None:
        probe = generate_accelerator(sized_model, out / "bypass_gauge", params, **kwargs)
        bypass_run = simulate_accelerator(probe, tiles, lut_in, lut_out,
                                          run_name="bypass_run", gauge="bypass")
        peaks["bypass"] = bypass_run.maxcount["bypass"]
        bypass = depths["bypass"] = size_fifos({"bypass": peaks["bypass"]}, margin)["bypass"]
    sized = generate_accelerator(sized_model, out / "sized", params, bypass_depth=bypass,
                                 **kwargs)
    (out / "fifo_sizing.json").write_text(json.dumps(
        {"peaks": peaks, "depths": depths, "margin": margin, "pace_cycles_per_pixel": pace},
        indent=2))
    return FifoSizing(peaks=peaks, depths=depths, design=sized)
