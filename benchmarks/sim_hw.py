"""The learned 3-frame SIM bundle in hardware: what each board sustains, and its RTL.

1. ``compile``: for every board, the folding ``fluorofpga compile`` chooses for a 1024²
   camera at 30 reconstructions/s (3 raw frames each: a 90 fps raw stream, 31.5 Mpixel/s
   of 3-channel pixels) within 85 % of every resource: estimated reconstructions/s at
   512² / 1024² / 2048², utilisation (the three pixel-in tables of the raw frames counted),
   bottleneck.
2. ``rtl``: the bundle's network as RTL (finn-plus RTL layers, FINN's width converters and
   FIFOs, our top level), simulated whole in Verilator through cocotb on one camera tile
   (3-frame SIM group of the simulated camera) and one full-range random tile: words
   compared with the host emulator, cycles per tile against FINN's estimate.

Run: ``cd benchmarks && ../.venv/bin/python sim_hw.py [--model PATH] [--no-rtl]
[--results NAME]`` (about 10 minutes on 2 cores). Writes ``results/sim_hw.json`` and
``results/sim_hw.md`` (the classical Wiener bundle: ``--model ../host/bundles/wiener9
--results sim_hw_wiener9``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import write_results

from fluorofpga.app import compile_inputs
from fluorofpga.boards import list_boards
from fluorofpga.host import default_sim_bundle_path, load_bundle
from fluorofpga.host.tiling import plan_tiles
from fluorofpga.hw.compile import compile_for_camera

CAMERA = (1024, 1024)
FPS = 30.0  # reconstructions per second
FRAMES = (512, 1024, 2048)


def compile_rows(bundle, work: Path) -> list[dict]:
    """One row per board: the folding for CAMERA at FPS reconstructions/s."""
    tile, halo = bundle.tile_shape[0], bundle.halo
    rows = []
    for board in list_boards():
        t0 = time.perf_counter()
        res = compile_for_camera(bundle.file("qonnx"), work / board, board=board,
                                 fps=FPS, frame=CAMERA, **compile_inputs(bundle)).report
        tiles_per_s = res["estimated"]["tiles_per_s"]
        rows.append({
            "board": board, "mpix_per_s": res["estimated"]["mpix_per_s"],
            "reconstructions_per_s": {
                f"{n}x{n}": tiles_per_s / len(plan_tiles((n, n), (tile, tile), halo))
                for n in FRAMES},
            "meets_target": res["meets_target"], "utilisation": res["utilisation"],
            "bottleneck": res["estimated"]["bottleneck"], "notes": res["notes"],
            "seconds": time.perf_counter() - t0})
        print(board, f"{res['estimated']['mpix_per_s']:.1f} Mpixel/s", flush=True)
    return rows


def rtl_run(bundle, work: Path) -> dict:
    """The network's stitched RTL on a camera tile and a full-range tile vs the emulator."""
    from fluorofpga import app
    from fluorofpga.hw.rtlsim_backend import RtlsimAccelerator

    t0 = time.perf_counter()
    rtl = RtlsimAccelerator.from_bundle(bundle, work_dir=work, progress=print)
    build_s = time.perf_counter() - t0
    tiles = app.sample_tiles(bundle, 1, seed=11)
    runs = []
    with bundle.accelerator("emulate") as emu:
        for name, tile in (("camera tile", tiles[0]), ("full-range random tile", tiles[2])):
            x = np.ascontiguousarray(np.moveaxis(tile, 0, -1))
            t1 = time.perf_counter()
            got = rtl.run(x)
            runs.append({"tile": name, "identical": bool(np.array_equal(got, emu.run(x))),
                         "cycles": rtl.cycles[-1], "seconds": time.perf_counter() - t1})
            print(runs[-1], flush=True)
    if bundle.is_wiener:  # raw codes -> one stitched sim_demod + FINN design, vs the host
        runs += wiener_stitched(bundle, work)
        print(runs[-3:], flush=True)
    d = rtl.design
    return {"build_s": build_s, "estimated_cycles": d.estimated_cycles,
            "bottleneck": d.bottleneck, "in_beats_per_pixel": d.in_beats,
            "out_beats_per_pixel": d.out_beats, "fifos": len(d.fifos), "runs": runs}


def wiener_stitched(bundle, work: Path) -> list[dict]:
    """A Wiener-SIM bundle's whole hardware as one stitched design: raw-frame codes and
    each tile's register load into ``sim_demod.sv``, its words through a width converter
    into the FINN layers' RTL (Verilator), compared tile by tile with the host's path
    (``demodulate_int``, then the emulator). Three tiles back to back: a simulated group's
    codes at (17, 40) of its frame, a full-range random tile at (0, 0), another group's
    at (300, 77); the last tile's cycles are the interval between the last two
    completions (steady state)."""
    from fluorofpga.hw.demod_kernel import demod_config_words
    from fluorofpga.hw.rtlsim_backend import wiener_design
    from fluorofpga.hw.stitch import simulate_accelerator
    from fluorofpga.microscope.sim_linear import DemodRegisters, demodulate_int
    from fluorofpga.simhw import design_parameters, wiener_raw_codes

    th, tw = bundle.tile_shape
    camera = wiener_raw_codes(bundle, 2, seed=13)
    raw = [camera[0], np.random.default_rng(14).integers(0, 256, (9, th, tw)).astype(np.uint8),
           camera[1]]
    names = ["camera codes", "full-range random codes", "camera codes"]
    base = DemodRegisters.from_parameters(list(design_parameters(bundle)), bundle.linear_codes)
    regs = [base.at(17, 40), base.at(0, 0), base.at(300, 77)]
    t0 = time.perf_counter()
    design = wiener_design(bundle, work)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    run = simulate_accelerator(design, np.stack([np.moveaxis(q, 0, -1) for q in raw])
                               .astype(np.uint32), cfg=[demod_config_words(r, tw)
                                                        for r in regs])
    seconds = time.perf_counter() - t1
    rows = []
    with bundle.accelerator("emulate") as emu:
        for k, (q, r) in enumerate(zip(raw, regs, strict=True)):
            channels, saturated = demodulate_int(q, r)
            want = emu.run(np.ascontiguousarray(np.moveaxis(channels, 0, -1)))
            cycles = run.tile_done[k] - (run.tile_done[k - 1] if k else 0)
            rows.append({"tile": f"stitched sim_demod + FINN, raw {names[k]}",
                         "identical": bool(np.array_equal(run.words[k], want)),
                         "cycles": int(cycles), "demod_saturated": int(saturated),
                         "seconds": seconds / len(raw), "build_s": build_s})
    return rows


def table(res: dict) -> str:
    m = res["manifest"]
    net = m["network"]
    wiener = net["arch"] == "WienerFilter"
    shape = (f"a designed {net['kernel']}x{net['kernel']} Wiener filter, 9 -> 4 channels"
             if wiener else f"{net['channels']} channels x {net['depth']} layers")
    lines = [
        "# The " + ("classical Wiener-SIM bundle (9 raw frames)" if wiener else
                    "learned 3-frame SIM bundle") + " in hardware", "",
        f"Bundle {m['name']} ({m['recipe']['name']}, {shape}, {net['macs_per_pixel']} MACs "
        f"per camera pixel), tile {m['tile']['height']}² (halo {m['tile']['halo']}). Target: "
        f"a {CAMERA[0]}x{CAMERA[1]} camera at {FPS:g} reconstructions/s "
        f"({m['frames']} raw frames each).",
        "", "| board | Mpixel/s | reconstructions/s at 512² / 1024² / 2048² | target | "
        "LUT | BRAM_18K | DSP | bottleneck |", "|---|---:|---|---|---:|---:|---:|---|"]
    for r in res["compile"]:
        u = r["utilisation"]
        fps = " / ".join(f"{v:.1f}" for v in r["reconstructions_per_s"].values())
        lines.append(f"| {r['board']} | {r['mpix_per_s']:.1f} | {fps} | "
                     f"{'met' if r['meets_target'] else 'missed'} | {u['LUT']:.0%} | "
                     f"{u['BRAM_18K']:.0%} | {u['DSP']:.0%} | {r['bottleneck']} |")
    if res.get("rtl"):
        r = res["rtl"]
        lines += ["", f"Stitched RTL in Verilator ({r['fifos']} FIFOs, {r['in_beats_per_pixel']} "
                  f"input / {r['out_beats_per_pixel']} output beats per pixel; finn-plus build "
                  f"{r['build_s']:.0f} s): FINN estimates {r['estimated_cycles']} cycles per "
                  f"tile (bottleneck {r['bottleneck']}).", "",
                  "| tile | identical to the emulator | cycles | vs estimate |",
                  "|---|---|---:|---:|"]
        for run in r["runs"]:
            lines.append(f"| {run['tile']} | {run['identical']} | {run['cycles']} | "
                         f"{run['cycles'] / r['estimated_cycles'] - 1:+.1%} |")
    if wiener:
        lines += ["", "The demodulation (hw/rtl/sim_demod.sv, one pixel per clock, 8 clocks "
                  "of latency) and the linear pixel-in of the nine raw frames are counted by "
                  "our estimate (sim_demod, sim_pixel_in). The \"stitched\" rows are the "
                  "whole Wiener hardware in one design: raw-frame codes and each tile's "
                  "register load into sim_demod, a width converter (72 -> 24 bits: the first "
                  "layer takes 3 beats a pixel), the FINN layers; three tiles back to back, "
                  "so the first row includes filling the pipeline and the others are the "
                  "interval between completions (steady state). The other rows stream "
                  "demodulated channels into the network alone (one tile each, fill "
                  "included)."]
    else:
        lines += ["", "The pixel-in tables of the three raw frames and the output table run "
                  "on the host in this release; their memories are counted (sim_pixel_in: "
                  "three 65 536-entry tables)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(default_sim_bundle_path()))
    ap.add_argument("--no-rtl", action="store_true", help="skip the RTL simulation")
    ap.add_argument("--results", default="sim_hw", help="results name (benchmarks/results/)")
    args = ap.parse_args()
    bundle = load_bundle(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = {"manifest": {**{k: bundle.manifest[k] for k in ("name", "recipe", "network",
                                                               "tile")},
                            "frames": bundle.frames},
               "camera": list(CAMERA), "fps": FPS,
               "compile": compile_rows(bundle, work / "compile"),
               "rtl": None if args.no_rtl else rtl_run(bundle, work / "rtl")}
    write_results(args.results, res, table(res))


if __name__ == "__main__":
    main()
