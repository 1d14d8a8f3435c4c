"""Benchmark of the shipped pipeline: restoration quality and speed.

Quality: on a fixed simulated set (widefield cell-like scenes, sCMOS noise) at several
photon levels, PSNR/SSIM against the noise-free ADU image for the raw frame, two
classical baselines (best-sigma Gaussian filter, non-local means on the
variance-stabilised (Anscombe) image), the float network, and the quantized network as
deployed (host emulator, bit-identical to the hardware graph).
Speed: host emulator throughput (CPU, this machine) and FINN's estimates for the
compiled accelerator on each board.

    python benchmarks/pipeline.py            # writes benchmarks/results/pipeline.{json,md}
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from results_io import write_results  # sibling module: scripts run from benchmarks/
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_nl_means

from fluorofpga.host import load_bundle, process_tiled
from fluorofpga.microscope import SCMOSCamera, WidefieldMicroscope, psnr, ssim
from fluorofpga.models import int_to_tensor, load_float_model

PHOTONS = (10.0, 20.0, 40.0, 100.0)


def anscombe_nlm(adu: np.ndarray, cam: SCMOSCamera) -> np.ndarray:
    """NLM on the generalised-Anscombe-stabilised electron image, inverted algebraically."""
    e = (adu.astype(np.float64) - cam.offset_adu) * cam.gain_e_per_adu
    s = cam.read_noise_e
    a = 2.0 * np.sqrt(np.maximum(e + 3.0 / 8.0 + s * s, 0.0))
    d = denoise_nl_means(a, h=0.8, sigma=1.0, patch_size=5, patch_distance=6, fast_mode=True)
    e_hat = (d / 2.0) ** 2 - 3.0 / 8.0 - s * s
    return e_hat / cam.gain_e_per_adu + cam.offset_adu


def best_gaussian(adu: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """Gaussian filter with the sigma that is best for this image (an oracle baseline)."""
    best = max((psnr(truth, gaussian_filter(adu.astype(np.float64), s)), s)
               for s in (0.6, 0.8, 1.0, 1.3, 1.6, 2.0))
    return gaussian_filter(adu.astype(np.float64), best[1]), best[1]


def quality(bundle, scenes: int, size: int) -> dict:
    float_model = load_float_model(bundle.file("float_checkpoint"))
    fin, fout = bundle.input_format, bundle.output_format
    rows: dict[str, dict[str, list[float]]] = {}
    with bundle.accelerator() as acc:
        for peak in PHOTONS:
            for seed in range(scenes):
                mic = WidefieldMicroscope(shape=(size, size), peak_photons=peak, seed=100 + seed)
                truth = mic.clean_adu()
                noisy = next(mic.frames(1)).noisy
                q = fin.to_int(noisy)
                with torch.no_grad():
                    y = float_model(int_to_tensor(q))[0, 0].numpy() * 2**fin.bits
                outs = {
                    "noisy": noisy,
                    "gaussian (oracle sigma)": best_gaussian(noisy, truth)[0],
                    "NLM + Anscombe": anscombe_nlm(noisy, mic.camera),
                    "float net": y * fout.adu_per_lsb + fout.adu_offset,
                    "quantized net (deployed, emulate)": fout.to_adu(
                        process_tiled(q, acc.run, acc.tile_shape, bundle.halo)),
                }
                for name, img in outs.items():
                    r = rows.setdefault(f"{peak:g}", {}).setdefault(name, [])
                    r.append((psnr(truth, img), ssim(truth, img)))
    return {peak: {name: {"psnr": float(np.mean([v[0] for v in vals])),
                          "ssim": float(np.mean([v[1] for v in vals]))}
                   for name, vals in methods.items()}
            for peak, methods in rows.items()}


def speed(bundle, sizes=(512, 1024), repeats: int = 3) -> dict:
    out = {}
    with bundle.accelerator() as acc:
        process = bundle.restorer(acc)
        for size in sizes:
            frame = next(WidefieldMicroscope(shape=(size, size), seed=1).frames(1)).noisy
            process(frame)  # warm-up
            t0 = time.perf_counter()
            for _ in range(repeats):
                process(frame)
            dt = (time.perf_counter() - t0) / repeats
            out[f"{size}x{size}"] = {"fps": 1 / dt, "mpix_per_s": size * size / dt / 1e6}
    return out


def finn_estimates(bundle, boards=("kv260", "pynq-z2")) -> dict:
    from fluorofpga.hw import HwBuildConfig, build

    out = {}
    base = bundle.manifest["build"]
    for board in boards:
        cfg = HwBuildConfig(board=board, tile=base["tile"], halo=base["halo"],
                            target_mpix_per_s=base["target_mpix_per_s"],
                            mvau_wwidth_max=base["mvau_wwidth_max"])
        tmp = Path("build") / f"bench_{board}"
        out[board] = build(bundle.file("qonnx"), tmp, cfg).estimates
    return out


def table(res: dict) -> str:
    lines = [f"# Pipeline benchmark ({res['bundle']}, {res['machine']})", "",
             f"Quality: mean over {res['scenes']} simulated {res['size']}² scenes per photon "
             "level; PSNR dB / SSIM vs the noise-free ADU image.", ""]
    peaks = list(res["quality"])
    methods = list(res["quality"][peaks[0]])
    lines.append("| method | " + " | ".join(f"{p} photons" for p in peaks) + " |")
    lines.append("|---|" + "---|" * len(peaks))
    for m in methods:
        cells = [f"{res['quality'][p][m]['psnr']:.2f} / {res['quality'][p][m]['ssim']:.3f}"
                 for p in peaks]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Host emulator (bit-exact CPU golden model, 1 core numpy):", "",
              "| frame | fps | Mpixel/s |", "|---|---|---|"]
    for k, v in res["emulator_speed"].items():
        lines.append(f"| {k} | {v['fps']:.2f} | {v['mpix_per_s']:.2f} |")
    lines += ["", "FINN estimates for the compiled accelerator (no Vivado: estimates only, "
              "not measured on a board):", "",
              "| board | clock MHz | Mpixel/s | tiles/s | LUT | BRAM_18K | DSP | fits "
              "| bottleneck |",
              "|---|---|---|---|---|---|---|---|---|"]
    for b, e in res["finn_estimates"].items():
        r, cap = e["resources"], e["capacity"]
        lines.append(
            f"| {b} | {e['clock_mhz']:g} | {e['mpix_per_s']:.1f} | {e['tiles_per_s']:.0f} | "
            f"{r.get('LUT', 0):.0f} / {cap['LUT']} | {r.get('BRAM_18K', 0):.0f} / "
            f"{cap['BRAM_18K']} | {r.get('DSP', 0):.0f} / {cap['DSP']} | "
            f"{'yes' if e['fits'] else '**no**'} | {e['bottleneck']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle directory (default: shipped)")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    bundle = load_bundle(args.model)
    t0 = time.perf_counter()
    res = {
        "bundle": bundle.name,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                   "threads",
        "scenes": args.scenes,
        "size": args.size,
        "quality": quality(bundle, args.scenes, args.size),
        "emulator_speed": speed(bundle),
        "finn_estimates": finn_estimates(bundle),
    }
    res["seconds"] = time.perf_counter() - t0
    write_results("pipeline", res, table(res))


if __name__ == "__main__":
    main()
