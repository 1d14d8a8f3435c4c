"""Quality against hardware cost: which networks are worth putting in the FPGA.

Every candidate (width × depth × quantization recipe) is trained on simulated data
(short CPU trainings, the same for all), quantized and exported; the shipped default
bundle (its full training) is measured beside them. For each board, the folding that
``fluorofpga compile`` chooses (``hw.compile.compile_for_camera``: RTL MVAUs, width
converters, FIFOs and our pixel kernels counted, within 85 % of every resource) for a
2048² camera at 30 fps gives the estimated Mpixel/s. Quality is measured as in
``benchmarks/quality.py`` (held-out simulated scenes through a foreign, calibrated camera)
on the quantized net as deployed: its Brevitas integer forward is bit-identical to the
host emulator and the hardware graph (chain-of-custody tests), and untiled equals tiled,
so whole frames are run through it directly.

Trained candidates are cached (``--cache``, keyed by candidate and training settings), so
the hardware part can be re-run without retraining.

    python benchmarks/pareto.py [--steps 2000 --qat-steps 400 --scenes 3]
    # -> benchmarks/results/pareto.{json,md}, benchmarks/results/pareto.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from quality import BACKGROUND, PHOTONS, calibrate_sensor, clean_scenes, foreign_sensor
from results_io import RESULTS, write_results

from fluorofpga.boards import load_board
from fluorofpga.host import load_bundle
from fluorofpga.hw.compile import compile_for_camera
from fluorofpga.microscope import NoiseModel, SignalSpec, SignalTables, psnr, ssim
from fluorofpga.microscope.signal import PixelMaps
from fluorofpga.models import DenoiserConfig, SimulatedPairs, TrainConfig, train_denoiser
from fluorofpga.models.denoiser import load_checkpoint, save_checkpoint
from fluorofpga.quantize import QuantDenoiser, export_to_qonnx, get_recipe, quantize_from_float

CANDIDATES = [  # (channels, depth, recipe)
    (4, 5, "w4a8"),
    (8, 5, "w4a4"),
    (8, 5, "w4a8"),
    (8, 7, "w4a8"),
    (16, 5, "w4a6"),
    (16, 7, "w4a6"),
    (16, 7, "w4a8"),
]
BOARDS = ("kv260", "pynq-z2")
BUDGET = 0.85
TILE = 128
CAMERA = (2048, 2048)  # at 30 fps: 125.8 Mpixel/s, more than any board gives
FPS = 30.0
CACHE = Path(__file__).parent / ".cache" / "pareto"


def throughput(qonnx: Path, halo: int, board: str, work: Path) -> dict:
    """What ``fluorofpga compile`` estimates on ``board`` within ``BUDGET``."""
    r = compile_for_camera(qonnx, work / board, board=board, fps=FPS, frame=CAMERA,
                           tile=TILE, halo=halo, signal=SignalSpec(),
                           max_utilisation=BUDGET).report
    return {"mpix_per_s": r["estimated"]["mpix_per_s"], "utilisation": r["utilisation"],
            "resources": r["resources"], "bottleneck": r["estimated"]["bottleneck"]}


def quality(qmodel, n_scenes: int, size: int, seed: int) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM (electrons) of the quantized net as deployed, per photon level."""
    spec = SignalSpec()
    out: dict[str, dict[str, list[float]]] = {}
    for i, (_, unit) in enumerate(clean_scenes("simulated", n_scenes, size)):
        sensor = foreign_sensor(unit.shape, seed + i)
        cal = calibrate_sensor(sensor, seed + 100 + i)
        maps = PixelMaps(cal)
        tables = SignalTables(spec, NoiseModel.from_calibration(cal, extra_rounding=True))
        for peak in PHOTONS:
            photons = unit * peak + BACKGROUND * peak
            frame = sensor.acquire(photons, np.random.default_rng([seed, i, int(peak)]))
            uniform = maps.to_uniform(frame)
            q = tables.encode(uniform)
            r = qmodel.forward_int(torch.from_numpy(q[None, None].astype(np.int64)))[0, 0]
            adu = maps.from_uniform(tables.decode(uniform, q, r.numpy()))
            electrons = (adu - sensor.offset_adu) * sensor.gain_e_per_adu - sensor.dark_electrons()
            e = out.setdefault(str(int(peak)), {"psnr": [], "ssim": []})
            e["psnr"].append(psnr(photons, electrons))
            e["ssim"].append(ssim(photons, electrons))
    return {p: {"psnr": float(np.mean(v["psnr"])), "ssim": float(np.mean(v["ssim"]))}
            for p, v in out.items()}


def trained(channels: int, depth: int, recipe: str, args) -> QuantDenoiser:
    """The candidate trained and quantized (from the cache when it was before)."""
    key = f"{channels}x{depth}_{recipe}_s{args.steps}_q{args.qat_steps}_seed{args.seed}.pt"
    path = Path(args.cache) / key
    model_cfg = DenoiserConfig(channels=channels, depth=depth)
    if path.is_file():
        qmodel = QuantDenoiser(model_cfg, recipe)
        qmodel.load_state_dict(load_checkpoint(path)[1]["state_dict"])
        return qmodel.eval()
    tcfg = TrainConfig(steps=args.steps, seed=args.seed, model=model_cfg)
    float_model, _ = train_denoiser(tcfg)
    data = SimulatedPairs(tcfg.n_scenes, (tcfg.scene_size, tcfg.scene_size), model_cfg.signal,
                          tcfg.cameras, args.seed + 1)
    qmodel, _ = quantize_from_float(float_model, get_recipe(recipe), data, args.qat_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, qmodel, model_cfg, kind="quant")
    return qmodel


def measure(name: str, qmodel: QuantDenoiser, recipe: str, args, work: Path) -> dict:
    """Quality of the deployed quantized net and its throughput on every board."""
    t0 = time.perf_counter()
    cfg = qmodel.config
    qonnx = export_to_qonnx(qmodel, work / "m.onnx", (TILE, TILE))
    row = {"name": name, "channels": cfg.channels, "depth": cfg.depth, "recipe": recipe,
           "params": cfg.params, "macs_per_pixel": cfg.macs_per_pixel,
           "quality": quality(qmodel, args.scenes, args.size, args.seed + 77)}
    row["boards"] = {b: throughput(qonnx, cfg.halo, b, work) for b in BOARDS}
    row["seconds"] = time.perf_counter() - t0
    print(json.dumps({k: row[k] for k in ("name", "quality")}),
          {b: round(v["mpix_per_s"], 1) for b, v in row["boards"].items()}, flush=True)
    return row


def table(rows: list[dict]) -> str:
    """Markdown table: quality per photon level, throughput and utilisation per board."""
    head = ("| net | recipe | params | MAC/px | " + " | ".join(f"PSNR {p}" for p in PHOTONS)
            + " | " + " | ".join(f"{b} Mpix/s (LUT/BRAM/DSP %)" for b in BOARDS) + " |")
    lines = [head, "|" + "---|" * (4 + len(PHOTONS) + len(BOARDS))]
    for r in rows:
        cells = [f"{r['quality'][str(int(p))]['psnr']:.2f}" for p in PHOTONS]
        for b in BOARDS:
            e = r["boards"][b]
            u = e.get("utilisation", {})
            cells.append(f"{e['mpix_per_s']:.1f} ({100 * u.get('LUT', 0):.0f}/"
                         f"{100 * u.get('BRAM_18K', 0):.0f}/{100 * u.get('DSP', 0):.0f})")
        lines.append(f"| {r['name']} | {r['recipe']} | {r['params']} | "
                     f"{r['macs_per_pixel']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """PSNR at each photon level against estimated Mpixel/s, one panel per board."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BOARDS), figsize=(6 * len(BOARDS), 4.5), squeeze=False)
    for ax, b in zip(axes[0], BOARDS, strict=True):
        for p, marker in zip(PHOTONS, "os^", strict=True):
            xs = [r["boards"][b]["mpix_per_s"] for r in rows]
            ys = [r["quality"][str(int(p))]["psnr"] for r in rows]
            ax.scatter(xs, ys, marker=marker, label=f"{int(p)} photons")
            for r, x, y in zip(rows, xs, ys, strict=True):
                ax.annotate(f"{r['name']} {r['recipe']}", (x, y), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel(f"estimated Mpixel/s on {b} (≤ {BUDGET:.0%} of every resource)")
        ax.set_ylabel("PSNR (dB), deployed quantized net")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    """Run every candidate and write ``benchmarks/results/pareto.{json,md,png}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--qat-steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(CACHE), help="folder of trained candidates")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for b in BOARDS:
        load_board(b)
    rows = []
    shipped = load_bundle()
    config, payload = load_checkpoint(shipped.file("quant_checkpoint"))
    recipe = payload["recipe"]["name"]
    qmodel = QuantDenoiser(config, recipe)
    qmodel.load_state_dict(payload["state_dict"])
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(measure(f"{config.channels}×{config.depth} shipped (full training)",
                            qmodel.eval(), recipe, args, Path(tmp)))
    for channels, depth, recipe in CANDIDATES:
        qmodel = trained(channels, depth, recipe, args)
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(f"{channels}×{depth}", qmodel, recipe, args, Path(tmp)))
    plot(rows, RESULTS / "pareto.png")
    write_results("pareto", {"budget": BUDGET, "tile": TILE, "photons": PHOTONS,
                             "camera_target": {"frame": CAMERA, "fps": FPS},
                             "steps": args.steps, "qat_steps": args.qat_steps, "rows": rows},
                  table(rows))


if __name__ == "__main__":
    main()
