"""Board x model: what `fluorofpga compile` estimates for each board.

For every board and model, the folding that ``hw.compile.compile_for_camera`` chooses for a
2048^2 camera at 30 fps (125.8 Mpixel/s) within 85 % of every resource: estimated
Mpixel/s, fps at 512^2 / 1024^2 / 2048^2, LUT / BRAM / DSP utilisation, bottleneck.

Models: the shipped default bundle (trained), and two narrower architectures exported
untrained (cost only: resources and throughput depend on the architecture and bit widths,
not on the trained values) to show what width costs.

Run: ``cd benchmarks && ../.venv/bin/python compile.py`` (about 10 minutes on 2 cores).
Writes ``results/compile.json`` and ``results/compile.md``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from results_io import write_results

from fluorofpga.boards import list_boards
from fluorofpga.host import load_bundle
from fluorofpga.host.tiling import plan_tiles
from fluorofpga.hw.compile import compile_for_camera

CAMERA = (2048, 2048)
FPS = 30.0
FRAMES = (512, 1024, 2048)
#: (name, channels, depth, recipe) of the untrained cost-only architectures
CANDIDATES = (("8x5 w4a4 (untrained, cost only)", 8, 5, "w4a4"),
              ("8x5 w4a8 (untrained, cost only)", 8, 5, "w4a8"))


def _candidate_qonnx(channels: int, depth: int, recipe: str, tile: int, out: Path) -> Path:
    from fluorofpga.models import DenoiserConfig
    from fluorofpga.quantize import untrained_qonnx

    return untrained_qonnx(DenoiserConfig(channels=channels, depth=depth), recipe, tile,
                           out / f"{channels}x{depth}_{recipe}.onnx", scenes=4)


def main() -> None:
    """Compile every model for every board; write the table."""
    bundle = load_bundle()
    tile, halo = bundle.tile_shape[0], bundle.halo
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = [(f"{bundle.name} (shipped)", bundle.file("qonnx"), halo)]
        for name, ch, depth, recipe in CANDIDATES:
            models.append((name, _candidate_qonnx(ch, depth, recipe, tile, work), depth))
        for model_name, qonnx, model_halo in models:
            for board in list_boards():
                t0 = time.perf_counter()
                r = compile_for_camera(qonnx, work / f"{board}_{len(rows)}", board=board,
                                       fps=FPS, frame=CAMERA, tile=tile, halo=model_halo,
                                       signal=bundle.signal).report
                e = r["estimated"]
                fps = {f"{s}": e["tiles_per_s"] / len(plan_tiles((s, s), (tile, tile),
                                                                   model_halo))
                       for s in FRAMES}
                rows.append({"model": model_name, "board": board, "clock_mhz": r["clock_mhz"],
                             "mpix_per_s": e["mpix_per_s"], "fps": fps,
                             "utilisation": r["utilisation"], "bottleneck": e["bottleneck"],
                             "meets_30fps_2048": r["meets_target"], "notes": r["notes"],
                             "seconds": time.perf_counter() - t0})
                print(f"{model_name} on {board}: {e['mpix_per_s']:.1f} Mpixel/s", flush=True)
    lines = ["# Estimated throughput per board and model (`fluorofpga compile`, "
             f"target 2048^2 at {FPS:g} fps, within 85 % of every resource)", "",
             "| model | board | MHz | Mpixel/s | fps 512² | fps 1024² | fps 2048² | LUT | BRAM | "
             "DSP | bottleneck |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        u = r["utilisation"]
        lines.append(
            f"| {r['model']} | {r['board']} | {r['clock_mhz']:g} | {r['mpix_per_s']:.1f} | "
            f"{r['fps']['512']:.0f} | {r['fps']['1024']:.1f} | {r['fps']['2048']:.1f} | "
            f"{u.get('LUT', 0):.0%} | {u.get('BRAM_18K', 0):.0%} | {u.get('DSP', 0):.0%} | "
            f"{r['bottleneck']} |")
    lines += ["", "FINN's estimates (no synthesis here); pixel kernels' tables and the bypass "
              "FIFO included; FIFO depths at FINN's shallow defaults."]
    write_results("compile", {"camera": list(CAMERA), "fps": FPS, "rows": rows},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
