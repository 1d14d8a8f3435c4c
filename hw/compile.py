"""Compiling a bundle's network for a camera: folding, resources, report, Vivado folder.

:func:`compile_for_camera` turns "this camera at N fps on that board" into a FINN build:

1. The rate asked for is ``fps`` frames of whole tiles: the tiles that cover an ``H x W``
   frame restore ``n_tiles * (tile - 2 halo)^2`` pixels (more than ``H * W`` when the last
   row and column overlap), and the target is met when the estimated frames/s reach
   ``fps``. One pipeline takes at most one pixel per clock, and each tile also carries its
   halo, so the ceiling is ``clock * (tile - 2 halo)^2 / tile^2`` useful pixels/s; a target
   above it is reported with that ceiling.
2. finn-plus folds the network (RTL layers only: ``mvau_impl="rtl"``, so every layer can
   be simulated here; weights in LUTRAM when nearly unrolled, else BRAM) for the target;
   the folded graph gets FINN's width converters and FIFOs (:func:`~.stitch.stitch_graph`)
   and its resources are estimated *with* them, plus our pixel kernels' tables and the
   bypass FIFO. If anything exceeds ``max_utilisation`` of the board, the target is lowered
   by bisection to the fastest folding that fits.
3. ``report.json`` (and ``report.md``): Mpixel/s and fps at the board's clock, latency,
   per-layer cycles and resources, utilisation of every resource, the bottleneck, and the
   arithmetic of a target that cannot be met.
4. ``vivado/``: a self-contained folder for a machine with Vivado (the stitched graph, our
   RTL and the top level, the finn-rtllib copy with ``hw/patches`` applied, the build
   config and ``build_bitstream.py``). With ``bitfile=True`` the Vivado steps run here,
   which stops with :class:`~.finn_compat.VivadoMissing` before any work when Vivado is
   absent.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fluorofpga.boards import Board, load_board

from .build import HwBuildConfig, build
from .finn_compat import boot_finn, require_vivado
from .pixel_kernels import PixelKernelParams
from .rtlsim import PATCH_DIR, TEMPLATE_DIR, _finn_rtllib, apply_patches, render_template
from .stitch import generate_accelerator, stitch_graph

_UINT16_MAX = 65535

__all__ = ["CompileError", "CompileResult", "compile_for_camera", "demod_resources",
           "pixel_kernel_resources",
           "sim_table_resources"]

#: resources FINN estimates (its estimates have no flip-flop count)
RESOURCE_KEYS = ("LUT", "BRAM_18K", "URAM", "DSP")
#: fraction of every resource a design may use (routing and the DMA need the rest)
MAX_UTILISATION = 0.85
#: bisection steps when the target does not fit
SEARCH_STEPS = 7


class CompileError(ValueError):
    """Bad compile request (frame smaller than a tile, non-positive fps, ...)."""


@dataclass
class CompileResult:
    """What :func:`compile_for_camera` produced.

    Attributes:
        report: the content of ``report.json``.
        out_dir: the output folder.
        vivado_dir: the folder to copy to a Vivado machine.
    """

    report: dict[str, Any]
    out_dir: Path
    vivado_dir: Path


#: RAMB18 aspect ratios (depth, width) in simple dual-port mode (UG573)
RAMB18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: memories at most this deep are LUTRAM, not block RAM
LUTRAM_DEPTH = 64


def _blocks(depth: int, width: int) -> int:
    """RAMB18s for a ``depth`` x ``width`` memory: the best aspect ratio (0 for LUTRAM)."""
    if depth <= LUTRAM_DEPTH:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in RAMB18_SHAPES)


def pixel_kernel_resources(params: PixelKernelParams, bypass_depth: int) -> dict[str, dict]:
    """Our estimate of the pixel kernels' and the bypass FIFO's memories (RAMB18s).

    The tables dominate: pixel-in ``(adc_max + 1) x (code_bits + 1)``, pixel-out
    ``2**c_bits x data_bits``; the bypass FIFO holds ``bypass_depth`` words of
    ``bypass_bits + 1`` bits. Logic is a few hundred LUTs per kernel (measured in no
    synthesis here: a round figure).
    """
    return {
        "pixel_in": {"LUT": 200, "BRAM_18K": _blocks(params.adc_max + 1, params.code_bits + 1)},
        "pixel_out": {"LUT": 300, "BRAM_18K": _blocks(1 << params.c_bits, params.data_bits)},
        "bypass_fifo": {"LUT": 100, "BRAM_18K": _blocks(bypass_depth, params.bypass_bits + 1)},
    }


def sim_table_resources(frames: int, upscale: int, spec: Any) -> dict[str, dict]:
    """Our estimate of a SIM bundle's table memories at one pixel per clock (RAMB18s).

    ``frames`` pixel-in tables of ``65536 x in_bits`` (one lookup per raw frame and clock)
    and the ``2**out_bits``-entry output table read ``upscale²`` times per clock (LUTRAM
    copies). These kernels are not built in this release (the host applies the tables):
    the figures say what they would take.
    """
    lookups = upscale * upscale
    return {
        "sim_pixel_in": {"LUT": 200 * frames,
                         "BRAM_18K": frames * _blocks(_UINT16_MAX + 1, spec.in_bits + 1)},
        "sim_pixel_out": {"LUT": 100 * lookups + lookups * _blocks(1 << spec.out_bits, 16)},
    }


def demod_resources(angles: int) -> dict[str, dict]:
    """Our estimate of a Wiener-SIM bundle's kernels at one pixel per clock.

    ``sim_demod`` (``hw/rtl/sim_demod.sv``): per angle four 16 x 11-bit products and two
    18-bit gains (DSPs), one more gain for the widefield channels, two dual-port sine
    tables per angle (1024 x 16 bits, RAMB18s). ``sim_pixel_in``: the linear input code
    is ``(ADU − zero) · 1/step`` — a multiply per raw frame, not a 65 536-entry table
    (this replaces :func:`sim_table_resources`' table estimate).
    """
    frames = 3 * angles
    return {"sim_demod": {"DSP": 6 * angles + 1, "LUT": 600 * angles,
                          "BRAM_18K": 2 * angles},
            "sim_pixel_in": {"DSP": frames, "LUT": 100 * frames}}


def _estimate(model: Any, board: Board, params: PixelKernelParams | dict, tile: int
              ) -> dict[str, Any]:
    """Per-node resources and cycles of the stitched graph, with our kernels."""
    boot_finn()
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.util.basic import getHWCustomOp

    stitched = stitch_graph(model, board.fpga_part)
    per_node = res_estimation(stitched, board.fpga_part)
    layers: dict[str, Any] = {}
    for node in stitched.graph.node:
        res = {k: float(v) for k, v in per_node.get(node.name, {}).items()
               if k in RESOURCE_KEYS}
        layers[node.name] = {"op": node.op_type,
                             "cycles": int(getHWCustomOp(node).get_exp_cycles()), **res}
        if node.op_type.startswith("MVAU"):
            layers[node.name]["weights_in"] = getHWCustomOp(node).get_nodeattr("ram_style")
    kernels = params if isinstance(params, dict) else pixel_kernel_resources(params,
                                                                              tile * tile)
    for name, res in kernels.items():
        layers[name] = {"op": "fluorofpga", "cycles": tile * tile, **res}
    total = {k: sum(float(v.get(k, 0.0)) for v in layers.values()) for k in RESOURCE_KEYS}
    util = {k: total[k] / board.resources[k] for k in total if board.resources.get(k)}
    return {"layers": layers, "total": total, "utilisation": util, "stitched": stitched}


def compile_for_camera(
    qonnx: str | Path,
    out_dir: str | Path,
    *,
    board: str,
    fps: float,
    frame: tuple[int, int],
    tile: int,
    halo: int,
    signal: Any,
    max_utilisation: float = MAX_UTILISATION,
    bitfile: bool = False,
    progress: Callable[[str], None] | None = None,
    frames: int = 1,
    upscale: int = 1,
    extra_kernels: dict[str, dict] | None = None,
    demod: bool = False,
) -> CompileResult:
    """Fold, estimate and package a network for ``fps`` frames of ``frame`` on ``board``.

    Args:
        qonnx: the bundle's QONNX model.
        out_dir: output folder (must not exist or be empty; the caller checks overwrite).
        board: board name (``fluorofpga.boards``).
        fps: camera frames per second to sustain.
        frame: camera frame (height, width), pixels.
        tile, halo: the bundle's tile side and halo, pixels.
        signal: the bundle's ``SignalSpec`` (pixel kernel widths).
        max_utilisation: largest fraction of any resource the design may use.
        bitfile: also run the Vivado steps (refused at once without Vivado).
        progress: called with a line per stage.
        frames, upscale: a SIM bundle's raw frames per input and output refinement: the
            frame rate is then reconstructions per second (``frames`` raw camera frames
            each), and the RTL is the network alone (its tables on the host,
            :func:`sim_table_resources` counted).
        extra_kernels: resources of further kernels of ours beside the network (a
            Wiener-SIM bundle's demodulation: :func:`demod_resources`).
        demod: a Wiener-SIM bundle: the Vivado folder's RTL is the whole design,
            ``sim_demod.sv`` in front of the network (``generate_accelerator(demod=True)``).

    Raises:
        CompileError: impossible request (fps <= 0, a frame smaller than the halo...).
        VivadoMissing: ``bitfile`` without Vivado (before any work).
    """
    say = progress or (lambda _m: None)
    b = load_board(board)  # ValueError naming the known boards
    if bitfile:
        require_vivado("Building the bitstream (`fluorofpga compile --bitfile`)")
    if not fps > 0:
        raise CompileError(f"--fps must be positive, got {fps}")
    h, w = (int(v) for v in frame)
    if min(h, w) < 1:
        raise CompileError(f"--frame must be HxW with positive sides, got {frame}")
    from fluorofpga.host.tiling import plan_tiles

    n_tiles = len(plan_tiles((max(h, tile), max(w, tile)), (tile, tile), halo))
    inner = (tile - 2 * halo) ** 2
    required = fps * h * w / 1e6
    # the tile plan covers the frame with whole tiles (the last row and column overlap):
    # the accelerator must restore n_tiles * inner useful pixels a frame, not h * w
    need = fps * n_tiles * inner / 1e6
    ceiling = b.clock_mhz * inner / (tile * tile)
    sim = frames > 1 or upscale > 1
    params: Any = (sim_table_resources(frames, upscale, signal) if sim
                   else PixelKernelParams.from_spec(signal))
    if extra_kernels:
        params = {**params, **extra_kernels}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = HwBuildConfig(board=b.name, tile=tile, halo=halo, mvau_impl="rtl",
                         mvau_wwidth_max=1 << 20, weight_memory="auto")

    def attempt(target: float, k: int) -> tuple[Any, dict[str, Any]]:
        cfg = replace(base, target_mpix_per_s=target)
        say(f"folding for {target:.1f} Mpixel/s")
        res = build(qonnx, out / "search" / f"{k:02d}", cfg)
        return res, _estimate(res.hw_model, b, params, tile)

    t0 = time.perf_counter()
    target = min(need, ceiling)
    tried = []
    res, est = attempt(target, 0)
    tried.append({"target": target, "mpix_per_s": res.estimates["mpix_per_s"],
                  "utilisation": est["utilisation"]})
    best = (res, est) if max(est["utilisation"].values()) <= max_utilisation else None
    if best is None:  # bisect the target down to the fastest folding that fits
        lo, hi = 0.0, target
        for k in range(1, SEARCH_STEPS + 1):
            mid = (lo + hi) / 2
            r, e = attempt(mid, k)
            fits = max(e["utilisation"].values()) <= max_utilisation
            tried.append({"target": mid, "mpix_per_s": r.estimates["mpix_per_s"],
                          "utilisation": e["utilisation"], "fits": fits})
            if fits:
                lo = mid
                if best is None or r.estimates["mpix_per_s"] > best[0].estimates["mpix_per_s"]:
                    best = (r, e)
            else:
                hi = mid
    if best is None:
        raise CompileError(f"{board}: even the most folded network exceeds "
                           f"{max_utilisation:.0%} of a resource ({tried[-1]['utilisation']})")
    res, est = best
    mpix = res.estimates["mpix_per_s"]
    tiles_per_s = res.estimates["tiles_per_s"]
    util = est["utilisation"]
    notes = []
    if need > required * 1.001:
        notes.append(f"the {n_tiles} tiles of {tile}^2 (halo {halo}) that cover a {h}x{w} frame "
                     f"restore {n_tiles * inner} pixels a frame ({n_tiles * inner / (h * w):.2f}"
                     f"x the frame): {need:.1f} Mpixel/s of tiles for {required:.1f} of camera")
    if need > ceiling:
        notes.append(f"{need:.1f} Mpixel/s needs {need / ceiling:.2f} pixels per clock "
                     f"at {b.clock_mhz:g} MHz with {tile}^2 tiles (halo {halo}): one pipeline "
                     f"takes at most one pixel per clock, so {ceiling:.1f} Mpixel/s is the "
                     "ceiling on this board")
    if sim:
        ours = (", ".join(sorted(extra_kernels)) if extra_kernels else
                "the raw frames' pixel-in tables and the output table")
        held = ("sim_demod in front of the network (the demodulation's RTL; the linear "
                "pixel-in runs on the host)" if demod else "the network alone")
        notes.append(f"SIM bundle: {fps:g} reconstructions/s of {frames} raw {h}x{w} frames "
                     f"each ({fps * frames:g} raw camera frames/s) onto a {upscale}x grid; the "
                     f"build folder holds {held} ({ours} are our kernels, counted by our "
                     "estimate; the host runs them in this release)")
    if mpix < need * 0.999:
        binding = max(tried[0]["utilisation"], key=tried[0]["utilisation"].get)
        notes.append(f"the target needs {tried[0]['utilisation'][binding]:.0%} of {binding} "
                     f"at {tried[0]['mpix_per_s']:.1f} Mpixel/s; the fastest folding within "
                     f"{max_utilisation:.0%} of every resource gives {mpix:.1f} Mpixel/s "
                     f"({mpix / need:.0%} of the camera's rate)")
    report = {
        "board": b.name,
        "fpga_part": b.fpga_part,
        "clock_mhz": b.clock_mhz,
        "camera": {"fps": fps, "frame": [h, w], "mpix_per_s": required,
                   "tiled_mpix_per_s": need},
        "tile": tile, "halo": halo, "tiles_per_frame": n_tiles,
        "ceiling_mpix_per_s": ceiling,
        "estimated": {"mpix_per_s": mpix, "tiles_per_s": tiles_per_s,
                      "fps": tiles_per_s / n_tiles,
                      "latency_us": res.estimates["latency_us"],
                      "bottleneck": res.estimates["bottleneck"]},
        "meets_target": tiles_per_s / n_tiles >= fps * 0.999,
        "max_utilisation": max_utilisation,
        "resources": est["total"],
        "capacity": b.resources,
        "utilisation": util,
        "layers": est["layers"],
        "search": tried,
        "notes": notes,
        "fifo_depths": "FINN's shallow defaults: size them with `fluorofpga compile "
                       "--size-fifos` or hw.stitch.size_accelerator (stitched simulation)",
        "seconds": time.perf_counter() - t0,
    }
    say("writing the Vivado build folder")
    vivado, no_kernel = _vivado_folder(out / "vivado", est["stitched"], res,
                                       None if sim else params, b, demod)
    report["vivado_dir"] = str(vivado)
    report["board_kernel"] = not no_kernel
    if no_kernel:
        notes.append(f"no board design for Vivado yet: {no_kernel} (build_bitstream.py "
                     "says so and builds nothing)")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(report_markdown(report))
    if bitfile:  # pragma: no cover - needs Vivado
        import subprocess
        import sys

        subprocess.run([sys.executable, str(vivado / "build_bitstream.py")], check=True)
    return CompileResult(report=report, out_dir=out, vivado_dir=vivado)


#: base name of the built bitstream and its .hwh (``vivado/output/``)
BITSTREAM_NAME = "fluorofpga"
#: module names in the Vivado folder's board design
NET_TOP = "fluorofpga_net"


def _vivado_folder(folder: Path, stitched: Any, res: Any, params: PixelKernelParams | None,
                   b: Board, demod: bool = False) -> tuple[Path, str]:
    """The self-contained folder a user copies to a machine with Vivado, and why it has no
    board kernel ("" when it has one).

    ``rtl/`` is the board design (the network behind the driver's register map,
    :func:`~.kernel.generate_kernel`) that ``block_design.tcl`` builds; a design with
    pixel kernels or the SIM demodulation is also written whole to ``rtl_full/`` (verified
    in simulation, not in this bitstream). A bundle whose pixels are no AXI DMA stream width
    (the SIM bundles) gets no board kernel: the script says why and builds nothing.
    """
    from .kernel import KERNEL_TOP, generate_kernel
    from .stitch import StitchError

    if folder.exists():
        shutil.rmtree(folder)
    net = generate_accelerator(stitched, folder / "rtl", None, fpgapart=b.fpga_part,
                               clk_ns=b.clock_period_ns, top=NET_TOP)
    try:
        kernel = generate_kernel(net)
        note = ""
    except StitchError as err:
        kernel, note = None, str(err)
    full = ""
    if params is not None or demod:
        generate_accelerator(stitched, folder / "rtl_full", params, fpgapart=b.fpga_part,
                             clk_ns=b.clock_period_ns, demod=demod)
        full = "pixel-in, network, pixel-out" if params is not None else \
            "sim_demod in front of the network"
    shutil.copytree(_finn_rtllib(), folder / "finn-rtllib")
    apply_patches(folder)  # the whole finn-rtllib copy, patched, for FINN's IP generation
    shutil.copytree(PATCH_DIR, folder / "patches")
    shutil.copy(net.graph, folder / "stitched.onnx")
    shutil.copy(res.out_dir / "build_config.json", folder / "build_config.json")
    (folder / "build_bitstream.py").write_text(render_template("build_bitstream.py.j2",
        board=b.finn_board, board_name=b.name, fpga_part=b.fpga_part, clk_ns=b.clock_period_ns,
        name=BITSTREAM_NAME, net_top=NET_TOP, kernel_top=KERNEL_TOP if kernel else "",
        kernel_note=note, full_design=full))
    # the folder is copied elsewhere (and renamed by `fluorofpga compile`): its design
    # descriptions name files relative to it
    root = str(folder.absolute()) + "/"
    for design_json in folder.glob("rtl*/design.json"):
        design_json.write_text(design_json.read_text().replace(root, ""))
    if kernel is not None:
        shutil.copy(TEMPLATE_DIR / "VIVADO_NOTES.md", folder / "NOTES.md")
        (folder / "block_design.tcl").write_text(render_template(
            "block_design.tcl.j2", **block_design_vars(b, kernel, folder)))
    return folder, note


def block_design_vars(b: Board, kernel: Any, folder: Path) -> dict[str, Any]:
    """The variables of ``block_design.tcl.j2`` for ``kernel`` (a
    :class:`~.kernel.KernelDesign` generated inside ``folder``) on board ``b``."""
    from .kernel import DMA_INSTANCE, KERNEL_INSTANCE, KERNEL_RANGE

    if not b.vivado_board_part:
        raise CompileError(f"board {b.name}: its JSON names no vivado_board_part")
    return {"name": BITSTREAM_NAME, "fpga_part": b.fpga_part,
            "board_part": b.vivado_board_part, "ps": b.ps, "clock_mhz": b.clock_mhz,
            "mm_width": b.axi_hp_width_bits, "in_stream_bits": kernel.in_width,
            "out_stream_bits": kernel.out_width, "top": kernel.top, "dma_name": DMA_INSTANCE,
            "kernel_name": KERNEL_INSTANCE, "kernel_range": f"0x{KERNEL_RANGE:X}",
            "sources": [s.relative_to(folder.absolute()).as_posix() for s in kernel.sources]}


def report_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the compile report as a readable table."""
    e, cam = report["estimated"], report["camera"]
    lines = [
        f"# fluorofpga compile: {report['board']} ({report['fpga_part']}, "
        f"{report['clock_mhz']:g} MHz)", "",
        f"Camera: {cam['frame'][0]}x{cam['frame'][1]} at {cam['fps']:g} fps = "
        f"{cam['mpix_per_s']:.1f} Mpixel/s; tiles {report['tile']}^2 (halo {report['halo']}), "
        f"{report['tiles_per_frame']} per frame.", "",
        f"Estimated: **{e['mpix_per_s']:.1f} Mpixel/s, {e['fps']:.1f} fps**, latency "
        f"{e['latency_us']:.0f} us, bottleneck {e['bottleneck']}; target "
        f"{'met' if report['meets_target'] else 'NOT met'}.", "",
        "| resource | used | board | utilisation |", "|---|---:|---:|---:|"]
    for k, u in report["utilisation"].items():
        lines.append(f"| {k} | {report['resources'][k]:.0f} | {report['capacity'][k]} | "
                     f"{u:.0%} |")
    lines += ["", "| layer | cycles/tile | LUT | BRAM_18K | DSP |", "|---|---:|---:|---:|---:|"]
    for name, ly in report["layers"].items():
        lines.append(f"| {name} | {ly['cycles']} | {ly.get('LUT', 0):.0f} | "
                     f"{ly.get('BRAM_18K', 0):.0f} | {ly.get('DSP', 0):.0f} |")
    if report["notes"]:
        lines += ["", "Notes:", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"
