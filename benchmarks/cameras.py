"""The deployed denoiser on cameras outside its training range, calibrated the user's way.

The shipped nets were trained on cameras with gain 0.2–5 e⁻/ADU, offset 50–500 ADU and
read noise 0.5–4.5 e⁻ (``models.CameraRange``). Here: a CCD-like camera (6 e⁻), a noisier
one (9 e⁻), a high-gain camera (0.25 e⁻/ADU, 1.2 e⁻), a 12-bit camera (2 e⁻/ADU) and one
whose offset sits 3 ADU above zero (negative read noise clipped by the ADC), each with
hot pixels, calibrated from 20 darks and 4 flat levels (``microscope.calibrate``).
Scenes: 2 held-out simulated scenes and 4 real images (``microscope.realdata``), 192²,
peak 5 / 20 / 100 photons + 2 % background. PSNR dB in electrons against the noise-free
image (true per-pixel offsets and gains, as in ``quality.py``) of: the raw frame,
non-local means on the GAT, and the deployed net (bit-exact emulator, ``denoise
--calibration``) with and without the dark-level shift of the tables
(``SignalSpec.max_dark_z``: a camera whose zero-signal GAT lies above the training
cameras' is coded as if it were at their top), and without a calibration (noise model and
dark level estimated from the frame, ``denoise`` without ``--calibration``).

    python benchmarks/cameras.py   (~6 min)
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from quality import BACKGROUND, PHOTONS, clean_scenes, electrons_of, nlm, on_gat
from results_io import write_results

from fluorofpga.host import FrameRestorer, load_bundle
from fluorofpga.microscope import (
    NoiseModel,
    SCMOSSensor,
    SignalTables,
    calibrate,
    estimate_noise,
    psnr,
)

CAMERAS = {
    "CCD-like, 6 e⁻ read noise": dict(offset_mean_adu=500.0, offset_sd_adu=0.0,
                                      gain_mean_e_per_adu=1.0, read_noise_median_e=6.0),
    "9 e⁻ read noise": dict(offset_mean_adu=500.0, offset_sd_adu=0.0,
                            gain_mean_e_per_adu=1.5, read_noise_median_e=9.0),
    "high gain 0.25 e⁻/ADU": dict(offset_mean_adu=100.0, offset_sd_adu=0.0,
                                  gain_mean_e_per_adu=0.25, read_noise_median_e=1.2),
    "12-bit, 2 e⁻/ADU": dict(offset_mean_adu=100.0, offset_sd_adu=0.3,
                             gain_mean_e_per_adu=2.0, read_noise_median_e=2.0, bit_depth=12),
    "offset 3 ADU (clipped at 0)": dict(offset_mean_adu=3.0, offset_sd_adu=0.0,
                                        gain_mean_e_per_adu=1.0, read_noise_median_e=1.5),
}


def main() -> None:
    """Run every camera and write ``benchmarks/results/cameras.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--seed", type=int, default=8800)
    args = ap.parse_args()
    bundle = load_bundle(None)
    unshifted = dataclasses.replace(bundle.signal, max_dark_z=None)
    scenes = clean_scenes("simulated", 2, args.size) + clean_scenes("real", 4, args.size)
    results: dict = {}
    with bundle.accelerator("emulate") as acc:
        for cam_name, camera in CAMERAS.items():
            rows: dict = results.setdefault(cam_name, {})
            for s_idx, (_, unit) in enumerate(scenes):
                seed = args.seed + 10 * s_idx
                sensor = SCMOSSensor.random(unit.shape, np.random.default_rng(seed), qe=1.0,
                                            hot_pixel_fraction=5e-4, **camera)
                rng = np.random.default_rng(seed + 1)
                dark = sensor.acquire(np.zeros((20, *unit.shape)), rng)
                top = 0.3 * sensor.max_adu * float(np.median(sensor.gain_e_per_adu))
                flats = [sensor.acquire(np.full((8, *unit.shape), f * top), rng)
                         for f in (0.02, 0.08, 0.3, 1.0)]
                cal = calibrate(dark, flats)
                noise = NoiseModel.from_calibration(cal, extra_rounding=True)
                adc = sensor.max_adu
                deployed = bundle.restorer(acc, noise, cal, "float32", adc_max=adc)
                plain = FrameRestorer(acc, SignalTables(unshifted, noise, adc), bundle.halo,
                                      cal, "float32")
                rows.setdefault("dark shift, GAT units", []).append(
                    deployed.tables.dark_shift)
                signal = electrons_of(sensor)
                for peak in PHOTONS:
                    photons = unit * peak + BACKGROUND * peak
                    frame = sensor.acquire(photons, np.random.default_rng([seed, int(peak)]))
                    blind = bundle.restorer(acc, estimate_noise(frame, adc_max=adc).model,
                                            None, "float32", adc_max=adc)
                    for row, fn in (("raw frame", lambda f: f.astype(np.float64)),
                                    ("NLM on GAT", on_gat(nlm, deployed, noise)),
                                    ("deployed, no dark shift", plain),
                                    ("deployed (shipped)", deployed),
                                    ("deployed, no calibration", blind)):
                        rows.setdefault(row, {}).setdefault(str(int(peak)), []).append(
                            psnr(photons, signal(fn(frame))))
            print(cam_name, flush=True)
    lines = ["| camera | dark shift (σ) | method | "
             + " | ".join(f"{p:g} photons" for p in PHOTONS) + " |",
             "|---|---|---|" + "---|" * len(PHOTONS)]
    for cam_name, rows in results.items():
        shift = float(np.mean(rows["dark shift, GAT units"]))
        for row, per in rows.items():
            if row.startswith("dark shift"):
                continue
            means = {p: float(np.mean(v)) for p, v in per.items()}
            per["mean"] = means
            lines.append(f"| {cam_name} | {shift:.2f} | {row} | "
                         + " | ".join(f"{means[str(int(p))]:.2f}" for p in PHOTONS) + " |")
    table = (f"Deployed denoiser on cameras outside the training range ({len(scenes)} scenes: "
             f"2 simulated, 4 real; {args.size}²; mean PSNR dB in electrons)\n\n"
             + "\n".join(lines) + "\n")
    write_results("cameras", {"cameras": CAMERAS, "photons": PHOTONS,
                              "scenes": [n for n, _ in scenes], "results": results}, table)


if __name__ == "__main__":
    main()
