"""The shipped denoiser's hardware in Verilator: every layer, and the stitched accelerator.

1. The default bundle is rebuilt with RTL layers only (``mvau_impl="rtl"``, its own target
   throughput), every layer simulated alone (full-range input, no stalls): cycles per
   tile against FINN's estimate.
2. The stitched accelerator (pixel-in -> layers with FINN's DWCs/FIFOs -> pixel-out):
   FIFOs sized from a gauge run, then free-running on whole 128^2 tiles: cycles per tile
   against FINN's estimate (the slowest layer), pixels per clock, latency of the first
   tile, simulation speed, and identical words to the host's emulator; then again under
   random idle / backpressure.

Run: ``cd benchmarks && ../.venv/bin/python rtl.py [--no-layers] [--bundle DIR --results
NAME]`` (about 15 minutes on 2 cores). Writes ``results/rtl.json`` and ``results/rtl.md``
(``NAME.{json,md}`` with ``--results``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import write_results

from fluorofpga.host import load_bundle
from fluorofpga.host.emulate import load_hw_graph
from fluorofpga.hw import HwBuildConfig, build, export_hw_layers
from fluorofpga.hw.pixel_kernels import (
    PixelKernelParams,
    full_range_frame,
    pixel_in_table,
    pixel_out_table,
)
from fluorofpga.hw.rtlsim import (
    full_range_layer_inputs,
    generate_layer_rtl,
    reference_layer,
    rtl_layer_names,
    simulate_layer,
)
from fluorofpga.hw.stitch import (
    reference_words,
    simulate_accelerator,
    size_accelerator,
    stitch_graph,
)
from fluorofpga.microscope import NoiseModel, SignalTables


def camera_tile(tile: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-like tile: blobs on a background through Poisson-Gaussian noise, ADU."""
    yy, xx = np.mgrid[:tile, :tile]
    clean = np.full((tile, tile), 120.0)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, tile), rng.uniform(0, tile), rng.uniform(2, 8)
        clean += rng.uniform(50, 800) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    adu = rng.poisson(clean / 2.0) * 2.0 + 100 + rng.normal(0, 2.5, clean.shape)
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


def main() -> None:
    """Simulate; write the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer runs")
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the shipped "
                    "default bundle)")
    ap.add_argument("--results", default="rtl", help="results file name (e.g. rtl-pynq-z2)")
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    tile = bundle.tile_shape[0]
    cfg = HwBuildConfig(**{**bundle.manifest["build"], "mvau_impl": "rtl",
                           "until": "estimates"})  # the shipped build (RTL layers)
    rng = np.random.default_rng(0)
    out: dict = {"bundle": bundle.name, "tile": tile, "layers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = build(bundle.file("qonnx"), work / "finn", cfg)
        out["finn_estimate_mpix_per_s"] = res.estimates["mpix_per_s"]
        if not args.no_layers:
            for name in rtl_layer_names(res.hw_model):
                layer = generate_layer_rtl(res.hw_model, name, work / "gen" / name)
                x = full_range_layer_inputs(layer, rng)[:1]
                t0 = time.perf_counter()
                y, cycles = simulate_layer(layer, x, work_dir=work / "sim")
                same = bool(np.array_equal(y[0], reference_layer(res.hw_model, name, x[0])))
                out["layers"][name] = {"cycles": cycles, "finn_estimate": layer.exp_cycles,
                                       "identical_to_python": same,
                                       "seconds": time.perf_counter() - t0}
                print(name, cycles, layer.exp_cycles, same, flush=True)
        tables = SignalTables(bundle.signal, NoiseModel(2.0, 9.0))
        params = PixelKernelParams.from_spec(bundle.signal, output="uint16")
        tiles = np.stack([full_range_frame(tables, (tile, tile), rng), camera_tile(tile, rng),
                          camera_tile(tile, rng)])
        lut_in, lut_out = pixel_in_table(tables, params), pixel_out_table(tables, params)
        t0 = time.perf_counter()
        sizing = size_accelerator(stitch_graph(res.hw_model), work / "accel", params,
                                  tiles[:2], lut_in, lut_out)
        out["sizing_seconds"] = time.perf_counter() - t0
        design = sizing.design
        graph = load_hw_graph(export_hw_layers(res.hw_model, work / "hw"))
        expected = reference_words(graph, tables, params, tiles)
        runs = {}
        for label, idle, bp in (("free-running", 0.0, 0.0), ("idle 0.2, backpressure 0.3",
                                                              0.2, 0.3)):
            t0 = time.perf_counter()
            run = simulate_accelerator(design, tiles, lut_in, lut_out, run_name=label[:4],
                                       idle_prob=idle, backpressure_prob=bp, seed=1)
            wall = time.perf_counter() - t0
            runs[label] = {
                "identical_to_emulator": bool(np.array_equal(run.words, expected)),
                "cycles_per_tile": run.interval,
                "pixels_per_clock": tile * tile / run.interval,
                "first_tile_latency_cycles": run.tile_done[0],
                "sim_cycles_per_s": (run.cycles + run.table_cycles) / wall,
                "seconds": wall,
            }
            print(label, runs[label], flush=True)
        out.update({
            "stitched": runs,
            "finn_estimate_cycles_per_tile": design.estimated_cycles,
            "bottleneck": design.bottleneck,
            "fifo_depths": sizing.depths,
            "fifo_peaks": sizing.peaks,
        })
    est = out["finn_estimate_cycles_per_tile"]
    lines = [f"# `{bundle.name}` in Verilator ({tile}^2 tiles, RTL layers, "
             f"FINN estimate {out['finn_estimate_mpix_per_s']:.1f} Mpixel/s)", "",
             "## Stitched accelerator (pixel-in -> layers + DWCs/FIFOs -> pixel-out)", "",
             "| run | == emulator | cycles/tile | FINN estimate | ratio | pixels/clock | "
             "first-tile latency | sim speed |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in out["stitched"].items():
        lines.append(f"| {label} | {'yes' if r['identical_to_emulator'] else 'NO'} | "
                     f"{r['cycles_per_tile']} | {est} | {r['cycles_per_tile'] / est:.3f} | "
                     f"{r['pixels_per_clock']:.3f} | {r['first_tile_latency_cycles']} cycles | "
                     f"{r['sim_cycles_per_s'] / 1e3:.1f} kcycles/s |")
    lines += ["", f"Bottleneck {out['bottleneck']}; FIFO depths sized from a gauge run: bypass "
              f"{out['fifo_depths']['bypass']}, FINN FIFOs "
              f"{sorted(v for k, v in out['fifo_depths'].items() if k != 'bypass')}.", ""]
    if out["layers"]:
        lines += ["## Layers alone (one full-range tile, no stalls)", "",
                  "| layer | == FINN's Python | cycles | FINN estimate | ratio |",
                  "|---|---|---:|---:|---:|"]
        for name, r in out["layers"].items():
            lines.append(f"| {name} | {'yes' if r['identical_to_python'] else 'NO'} | "
                         f"{r['cycles']} | {r['finn_estimate']} | "
                         f"{r['cycles'] / max(1, r['finn_estimate']):.3f} |")
    write_results(args.results, out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
