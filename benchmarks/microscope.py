"""Benchmark of the microscope room: simulator throughput and the classical SIM baseline.

    python benchmarks/microscope.py      # writes benchmarks/results/microscope.{json,md}

Throughput: widefield scene rendering and noisy frames at 2048² camera pixels, and a
3x3 SIM acquisition at 512², on this CPU. SIM baseline: on a standard simulated set
(cell-like specimens, NA 1.2, 520 nm, 65 nm pixels, k = 0.85 of the cut-off, m = 0.9,
sCMOS noise) the Wiener-SIM reconstruction with parameters estimated blind from the raw
data, against the ideal extended-OTF image (``sim_ground_truth``): PSNR/SSIM after CARE's
affine intensity fit, NRMSE, and the FRC resolution between two noise realisations,
next to the upsampled widefield image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from results_io import write_results  # sibling module: scripts run from benchmarks/

from fluorofpga.microscope import (
    WidefieldMicroscope,
    estimate_parameters,
    frc_resolution,
    make_pattern,
    nrmse_affine,
    psnr,
    render_specimen,
    sim_ground_truth,
    simulate_sim,
    ssim,
    widefield_from_raw,
    wiener_sim,
)

OPTICS = {"na": 1.2, "wavelength_nm": 520.0, "pixel_size_nm": 65.0}


def _timed(fn, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def throughput() -> dict:
    seeds = iter(range(100))
    scene_s = _timed(lambda: WidefieldMicroscope(shape=(2048, 2048), seed=next(seeds)).photons(),
                     2)
    frames = WidefieldMicroscope(shape=(2048, 2048), seed=0).frames(6)
    next(frames)  # the scene is rendered with the first frame
    frame_s = _timed(lambda: next(frames), 5)
    rng = np.random.default_rng(0)
    spec = render_specimen((1024, 1024), rng, filaments=80, puncta=500, nuclei=0)
    pattern = make_pattern()
    sim_s = _timed(lambda: simulate_sim(spec, pattern, rng=rng, **OPTICS), 2)
    return {
        "widefield_scene_2048_s": scene_s,
        "widefield_noisy_frames_2048_per_s": 1.0 / frame_s,
        "widefield_mpix_per_s": 2048 * 2048 / frame_s / 1e6,
        "sim_3x3_stack_512_s": sim_s,
    }


def _affine(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Image mapped by the least-squares affine fit to the reference (CARE)."""
    a, b = np.polyfit(image.ravel(), reference.ravel(), 1)
    return a * image + b


def sim_baseline(scenes: int, size: int, photons: tuple[float, ...]) -> dict:
    out: dict = {}
    for peak in photons:
        rows: dict[str, list[tuple[float, float, float, float]]] = {}
        freq_err = []
        for seed in range(scenes):
            rng = np.random.default_rng(seed)
            spec = render_specimen((2 * size, 2 * size), rng, filaments=size // 6,
                                   puncta=size, nuclei=1)
            pattern = make_pattern(rng=rng, angle_error_rad=0.01, phase_error_rad=0.0)
            truth = sim_ground_truth(spec, k_fraction=pattern.k_fraction, **OPTICS)
            a = simulate_sim(spec, pattern, peak_photons=peak, rng=rng, **OPTICS)
            b = simulate_sim(spec, pattern, peak_photons=peak, rng=rng, **OPTICS)
            params = estimate_parameters(a.raw, camera=a.camera, **OPTICS)
            for est, true in zip(params, pattern.angle_parameters(**OPTICS), strict=True):
                k = np.hypot(true.kx, true.ky)
                freq_err.append(abs(np.hypot(est.kx, est.ky) / k - 1))
            recon = {
                "widefield (upsampled)": [widefield_from_raw(r.raw, r.camera) for r in (a, b)],
                "Wiener SIM (blind parameters)": [
                    wiener_sim(r.raw, params, camera=r.camera, **OPTICS) for r in (a, b)],
            }
            crop = slice(size // 8, -size // 8)  # away from borders
            t = truth[crop, crop]
            for name, (ia, ib) in recon.items():
                fa = _affine(t, ia[crop, crop])
                rows.setdefault(name, []).append((
                    psnr(t, fa), ssim(t, fa), nrmse_affine(t, ia[crop, crop]),
                    frc_resolution(ia[crop, crop], ib[crop, crop],
                                   pixel_size_nm=OPTICS["pixel_size_nm"] / 2),
                ))
        out[f"{peak:g}"] = {
            name: {"psnr": float(np.mean([r[0] for r in v])),
                   "ssim": float(np.mean([r[1] for r in v])),
                   "nrmse": float(np.mean([r[2] for r in v])),
                   "frc_resolution_nm": float(np.mean([r[3] for r in v]))}
            for name, v in rows.items()
        }
        out[f"{peak:g}"]["max_frequency_error"] = float(max(freq_err)) if freq_err else None
    return out


def table(res: dict) -> str:
    t = res["throughput"]
    lines = ["# Microscope benchmark", "",
             "Simulator throughput (this CPU, numpy/scipy, 2 cores):", "",
             "| what | value |", "|---|---|",
             f"| widefield scene render, 2048² | {t['widefield_scene_2048_s']:.2f} s |",
             f"| noisy sCMOS frames, 2048² | {t['widefield_noisy_frames_2048_per_s']:.2f} "
             f"frames/s ({t['widefield_mpix_per_s']:.1f} Mpixel/s) |",
             f"| 3x3 SIM stack, 512² camera | {t['sim_3x3_stack_512_s']:.2f} s |", "",
             f"SIM baseline vs the extended-OTF ground truth, {res['scenes']} scenes of "
             f"{res['size']}² camera pixels; widefield limit λ/(2NA) = "
             f"{OPTICS['wavelength_nm'] / (2 * OPTICS['na']):.0f} nm:", "",
             "| peak photons | method | PSNR dB | SSIM | NRMSE | FRC resolution nm |",
             "|---|---|---|---|---|---|"]
    for peak, methods in res["sim"].items():
        for name, m in methods.items():
            if name == "max_frequency_error":
                continue
            lines.append(f"| {peak} | {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                         f"{m['nrmse']:.3f} | {m['frc_resolution_nm']:.0f} |")
    errs = [m["max_frequency_error"] for m in res["sim"].values()
            if m["max_frequency_error"] is not None]
    if errs:
        lines += ["", f"Largest blind pattern-frequency error: {100 * max(errs):.3f} %"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    res = {"scenes": args.scenes, "size": args.size, "throughput": throughput(),
           "sim": sim_baseline(args.scenes, args.size, (100.0, 500.0))}
    write_results("microscope", res, table(res))


if __name__ == "__main__":
    main()
