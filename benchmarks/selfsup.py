"""Self-supervised fine-tuning on a user's own noisy stack: does it beat the shipped net?

The "user's stack" is the 15 real fluorescence images of ``benchmarks/quality.py``
(centre crops of ``--size``², never used in training), each scaled to a peak of 5, 20 or
100 photons (+2 % background) and recorded by one *foreign* sCMOS camera (the quality
benchmark's), calibrated the user's way. Per photon level, ``fluorofpga train
--self-supervised STACK --calibration CAL`` (``app.make_bundle``: blind-spot fine-tuning
from the shipped weights on the stack alone, QAT, FINN build, chain of custody) makes a
bundle; both it and the shipped bundle then restore the same stack through the bit-exact
emulator (``fluorofpga denoise --calibration``), with non-local means on the GAT image as
the classical reference. PSNR/SSIM in photoelectrons against the noise-free images, as in
``quality.py``. CAREamics N2V2 is not run (its torchvision does not load here, see README).

    python benchmarks/selfsup.py [--size 192 --steps 400 --qat-steps 200]
    # -> benchmarks/results/selfsup.{json,md}
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from quality import BACKGROUND, PHOTONS, calibrate_sensor, foreign_sensor, nlm, on_gat
from results_io import write_results

from fluorofpga import app as facade
from fluorofpga.host import load_bundle
from fluorofpga.microscope import NoiseModel, psnr, ssim, write_tiff
from fluorofpga.microscope.realdata import real_fluorescence_images


def clean_stack(size: int) -> np.ndarray:
    """Unit-peak centre crops (``size``², smaller images skipped) of the real images."""
    crops = []
    for im in real_fluorescence_images():
        h, w = im.image.shape
        if min(h, w) < size:
            continue
        y, x = (h - size) // 2, (w - size) // 2
        crop = np.asarray(im.image[y : y + size, x : x + size], np.float64)
        crops.append(crop / crop.max())
    return np.stack(crops)


def restore_all(bundle, noise, cal, frames: np.ndarray) -> np.ndarray:
    """Every frame through the bundle as deployed (emulator, calibration, float32 ADU)."""
    with bundle.accelerator("emulate") as acc:
        restorer = bundle.restorer(acc, noise, cal, "float32")
        return np.stack([restorer(f) for f in frames]).astype(np.float64)


def main() -> None:
    """Fine-tune per photon level, compare with the shipped bundle; write the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps")
    ap.add_argument("--qat-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=4343)
    args = ap.parse_args()
    torch.set_num_threads(1)
    units = clean_stack(args.size)
    sensor = foreign_sensor(units.shape[1:], args.seed)
    cal = calibrate_sensor(sensor, args.seed + 1)
    noise = NoiseModel.from_calibration(cal, extra_rounding=True)
    shipped = load_bundle()
    rows: dict[str, dict[str, dict[str, float]]] = {}
    info: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cal_path = work / "cal.npz"
        cal.save(cal_path)
        for peak in PHOTONS:
            photons = units * peak + BACKGROUND * peak
            frames = sensor.acquire(photons, np.random.default_rng([args.seed, int(peak)]))
            stack = work / f"stack_{int(peak)}.tif"
            write_tiff(stack, frames)
            t0 = time.perf_counter()
            tuned = facade.make_bundle(work / f"ss_{int(peak)}", facade.BundleRecipe(
                name=f"selfsup-{int(peak)}", self_supervised=str(stack),
                calibration=str(cal_path), train_steps=args.steps, qat_steps=args.qat_steps,
                target_mpix_per_s=39.0, seed=args.seed))
            info[str(int(peak))] = {"seconds": time.perf_counter() - t0,
                                    "bit_exact": bool(tuned.manifest["verification"]
                                                      ["bit_exact"])}

            def electrons(adu: np.ndarray) -> np.ndarray:
                return (adu - sensor.offset_adu) * sensor.gain_e_per_adu - (
                    sensor.dark_electrons())

            with shipped.accelerator("emulate") as acc:
                ref = shipped.restorer(acc, noise, cal, "float32")
                nlm_out = np.stack([on_gat(nlm, ref, noise)(f) for f in frames])
            outs = {"raw frame": frames.astype(np.float64),
                    "NLM on GAT (scikit-image)": nlm_out,
                    "shipped net, deployed": restore_all(shipped, noise, cal, frames),
                    "self-supervised net, deployed": restore_all(tuned, noise, cal, frames)}
            for name, out in outs.items():
                e = [electrons(o) for o in out]
                rows.setdefault(name, {})[str(int(peak))] = {
                    "psnr": float(np.mean([psnr(t, x) for t, x in zip(photons, e,
                                                                         strict=True)])),
                    "ssim": float(np.mean([ssim(t, x) for t, x in zip(photons, e,
                                                                         strict=True)]))}
            print(peak, {k: round(v[str(int(peak))]["psnr"], 2) for k, v in rows.items()},
                  flush=True)
    head = "| method | " + " | ".join(f"{int(p)} photons" for p in PHOTONS) + " |"
    lines = [head, "|---" * (1 + len(PHOTONS)) + "|"]
    for name, per in rows.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{per[str(int(p))]['psnr']:.2f} / {per[str(int(p))]['ssim']:.3f}"
            for p in PHOTONS) + " |")
    table = (f"Self-supervised fine-tuning on a stack of {len(units)} real images "
             f"({args.size}², foreign calibrated camera), {args.steps} + {args.qat_steps} "
             "steps; PSNR dB / SSIM in photoelectrons.\n\n" + "\n".join(lines) + "\n")
    write_results("selfsup", {"photons": PHOTONS, "images": len(units), "size": args.size,
                              "steps": args.steps, "qat_steps": args.qat_steps,
                              "results": rows, "builds": info}, table)


if __name__ == "__main__":
    main()
