"""What the calibration's offset map costs the restoration: plain dark means vs shrunk.

A per-pixel offset measured as the mean of ``T`` darks carries an error of
``read noise / √T`` (0.8 e⁻ rms for 3.5 e⁻ and 20 darks). The restoration subtracts the
map from the frame and adds it back to the restored image, so that error stays in the
output as a fixed pattern, as large as the whole signal of a 1-photon pixel.
``microscope.calibrate`` now shrinks each mean by its measurement error
(``shrink_offsets``: empirical Bayes towards column/row medians, limited translation).

Cameras: the quality benchmark's foreign camera (gain 4 e⁻/ADU, offset 1000 ADU, read
noise 3.5 e⁻ median with a log-normal tail, hot pixels) with a true pixel-to-pixel offset
spread of 0, 0.5 and 2 ADU (0, 2, 8 e⁻ rms), calibrated from 20 or 100 darks (and 4 flat
levels of 8 frames). Scenes: 2 held-out simulated scenes (seeds 900+) and 4 real images
(``microscope.realdata``), 192² crops, peak 5 / 20 / 100 photons + 2 % background. Rows:
the offset map's rms error (electrons) and PSNR (dB, electrons, true per-pixel offsets as
in ``quality.py``) of the deployed net (bit-exact emulator, ``denoise --calibration``)
and of non-local means on the GAT, with each map, and with no calibration at all (the
noise model estimated from the frame: ``denoise`` without ``--calibration``).

    python benchmarks/calibration.py   (~5 min)
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from quality import (  # sibling module: scripts run from benchmarks/
    BACKGROUND,
    FOREIGN,
    PHOTONS,
    clean_scenes,
    electrons_of,
    nlm,
    on_gat,
)
from results_io import write_results

from fluorofpga.host import load_bundle
from fluorofpga.microscope import (
    NoiseModel,
    SCMOSSensor,
    calibrate,
    calibrate_dark,
    estimate_noise,
    psnr,
)

SPREADS_ADU = (0.0, 0.5, 2.0)
DARKS = (20, 100)


def calibrations(sensor: SCMOSSensor, darks: int, seed: int) -> dict[str, object]:
    """The user's calibration (``darks`` darks, 4 flat levels of 8 frames; shrunk offset
    map) and the same calibration with the plain dark means as its offset map."""
    rng = np.random.default_rng(seed)
    dark = sensor.acquire(np.zeros((darks, *sensor.shape)), rng)
    flats = [sensor.acquire(np.full((8, *sensor.shape), level), rng)
             for level in (50, 200, 800, 3000)]
    shrunk = calibrate(dark, flats)
    means, _ = calibrate_dark(dark)
    return {"plain means": dataclasses.replace(shrunk, offset_adu=means, offset_shrinkage=None),
            "shrunk (shipped)": shrunk}


def main() -> None:
    """Run the comparison and write ``benchmarks/results/calibration.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--seed", type=int, default=6100)
    args = ap.parse_args()
    bundle = load_bundle(None)
    scenes = clean_scenes("simulated", 2, args.size) + clean_scenes("real", 4, args.size)
    results: dict = {}
    with bundle.accelerator("emulate") as acc:
        for spread in SPREADS_ADU:
            for darks in DARKS:
                key = f"spread {spread:g} ADU, {darks} darks"
                cell = results.setdefault(key, {})
                for s_idx, (_, unit) in enumerate(scenes):
                    seed = args.seed + 10 * s_idx
                    camera = dict(FOREIGN, offset_sd_adu=spread)
                    sensor = SCMOSSensor.random(unit.shape, np.random.default_rng(seed), qe=1.0,
                                                **camera)
                    signal = electrons_of(sensor)
                    gain = sensor.gain_e_per_adu
                    truth_offset = sensor.offset_adu + sensor.dark_electrons() / gain
                    cals = calibrations(sensor, darks, seed + 1)
                    if darks == DARKS[0]:  # and no calibration at all, noise from the frame
                        cals["no calibration (noise estimated)"] = None
                    for label, cal in cals.items():
                        row = cell.setdefault(label, {"offset_error_e": [], "deployed": {},
                                                      "nlm": {}})
                        if cal is not None:
                            typical = ~cal.hot_pixels
                            error_e = (cal.offset_adu - truth_offset) * gain
                            row["offset_error_e"].append(float(np.sqrt(np.mean(
                                error_e[typical] ** 2))))
                        for peak in PHOTONS:
                            photons = unit * peak + BACKGROUND * peak
                            frame = sensor.acquire(photons,
                                                   np.random.default_rng([seed, int(peak)]))
                            noise = (NoiseModel.from_calibration(cal, extra_rounding=True)
                                     if cal is not None else estimate_noise(frame).model)
                            deployed = bundle.restorer(acc, noise, cal, "float32")
                            for name, fn in (("deployed", deployed),
                                             ("nlm", on_gat(nlm, deployed, noise))):
                                row[name].setdefault(str(int(peak)), []).append(
                                    psnr(photons, signal(fn(frame))))
                print(key, flush=True)
    lines = ["| camera (true offset spread), darks | offset map | map error e⁻ rms | "
             + " | ".join(f"deployed {p:g} ph" for p in PHOTONS) + " | "
             + " | ".join(f"NLM {p:g} ph" for p in PHOTONS) + " |",
             "|---|---|---|" + "---|" * (2 * len(PHOTONS))]
    for key, cell in results.items():
        for label, row in cell.items():
            row["offset_error_e_mean"] = (float(np.mean(row["offset_error_e"]))
                                          if row["offset_error_e"] else float("nan"))
            means = {name: {p: float(np.mean(v)) for p, v in row[name].items()}
                     for name in ("deployed", "nlm")}
            row["psnr_mean"] = means
            err = row["offset_error_e_mean"]
            lines.append(f"| {key} | {label} | {'—' if np.isnan(err) else f'{err:.2f}'} | "
                         + " | ".join(f"{means['deployed'][str(int(p))]:.2f}" for p in PHOTONS)
                         + " | "
                         + " | ".join(f"{means['nlm'][str(int(p))]:.2f}" for p in PHOTONS)
                         + " |")
    table = ("Offset map of the calibration: plain dark means vs shrunk "
             f"({len(scenes)} scenes: 2 simulated, 4 real; {args.size}²; mean PSNR dB in "
             "electrons)\n\n" + "\n".join(lines) + "\n")
    write_results("calibration", {"camera": FOREIGN, "spreads_adu": SPREADS_ADU,
                                  "darks": DARKS, "photons": PHOTONS,
                                  "scenes": [n for n, _ in scenes], "results": results}, table)


if __name__ == "__main__":
    main()
