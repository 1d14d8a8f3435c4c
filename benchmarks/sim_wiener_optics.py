"""The hardware Wiener SIM on other optics: a bundle designed per instrument, measured.

    python benchmarks/sim_wiener_optics.py   # writes benchmarks/results/sim_wiener_optics.{json,md}

``fluorofpga sim-bundle`` designs the filter for an instrument's optics and pattern. This
checks the design beyond the shipped bundle's NA 1.2 / 520 nm / 65 nm: for each optics
(widefield cut-off from 0.22 to 0.43 cycles per camera pixel) and light level, two held-out
256² scenes (seeds of their own) with random pattern errors are reconstructed with blind
parameters by the CPU Wiener (FFT, automatic: the MMSE filter for the stack's own noise
prior) and by the bundle designed for the same prior (``sim --save-params`` then
``sim-bundle``: the MMSE 9x9 filter), its quantized layer and host code
(``simhw.emulate_wiener``: what the compiled accelerator returns, by the chain of
custody); PSNR after an affine fit to the extended-OTF truth, 1/8 border left out;
counts of values at a code limit.
"""

from __future__ import annotations

import warnings

import numpy as np
from results_io import write_results  # sibling module: scripts run from benchmarks/

from fluorofpga.microscope import (
    cutoff_cycles_per_px,
    estimate_parameters,
    make_pattern,
    measure_wiener_prior,
    psnr,
    render_specimen,
    sim_ground_truth,
    simulate_sim,
    widefield_from_raw,
    wiener_sim,
)
from fluorofpga.simhw import emulate_wiener

OPTICS = ({"na": 1.2, "wavelength_nm": 520.0, "pixel_size_nm": 65.0},
          {"na": 1.4, "wavelength_nm": 520.0, "pixel_size_nm": 80.0},
          {"na": 1.45, "wavelength_nm": 600.0, "pixel_size_nm": 70.0},
          {"na": 1.0, "wavelength_nm": 600.0, "pixel_size_nm": 65.0})
LEVELS = (100.0, 500.0, 2000.0)
SCENES = 2
SIZE = 256
SEED_OFFSET = 52000  # new seeds: not those of the tests or the other benchmarks


def fitted_psnr(truth: np.ndarray, image: np.ndarray) -> float:
    """PSNR after the least-squares affine fit (CARE), without a border of 1/8."""
    c = slice(SIZE // 4, -SIZE // 4)  # of the 2x grid
    a, b = np.polyfit(image[c, c].ravel(), truth[c, c].ravel(), 1)
    return float(psnr(truth[c, c], a * image[c, c] + b))


def scene(optics: dict, peak: float, seed: int) -> dict:
    """Widefield, CPU Wiener and hardware Wiener PSNR of one held-out acquisition."""
    rng = np.random.default_rng(seed)
    pattern = make_pattern(k_fraction=rng.uniform(0.8, 0.9), modulation=rng.uniform(0.75, 0.95),
                           start_angle_rad=rng.uniform(0, np.pi / 3),
                           phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, 3)),
                           angle_error_rad=0.01, phase_error_rad=0.05, rng=rng)
    specimen = render_specimen((2 * SIZE, 2 * SIZE), rng, filaments=SIZE // 6, puncta=SIZE,
                               nuclei=1)
    truth = sim_ground_truth(specimen, k_fraction=pattern.k_fraction, **optics)
    data = simulate_sim(specimen, pattern, peak_photons=peak, rng=rng, **optics)
    cam = data.camera
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = estimate_parameters(data.raw, camera=cam, **optics)
        fft = wiener_sim(data.raw, params, camera=cam, **optics)  # auto: the stack's prior
        prior = measure_wiener_prior(data.raw, camera=cam, **optics)
    # the bundle a user builds from this stack (`sim --save-params`, `sim-bundle`): MMSE
    hw, counts = emulate_wiener(data.raw, params, cam.offset_adu, wiener_w=prior)
    return {"widefield": fitted_psnr(truth, widefield_from_raw(data.raw, cam)),
            "cpu": fitted_psnr(truth, fft), "hardware": fitted_psnr(truth, hw),
            "at_limit": counts["above_range"] + counts["channel_saturated"]
            + counts["residual_at_limit"]}


def main() -> None:
    rows = []
    for i, optics in enumerate(OPTICS):
        for peak in LEVELS:
            runs = [scene(optics, peak, SEED_OFFSET + 1000 * i + int(peak) + s)
                    for s in range(SCENES)]
            rows.append({**optics, "cutoff": cutoff_cycles_per_px(**optics), "peak": peak,
                         **{k: float(np.mean([r[k] for r in runs])) for k in runs[0]}})
            print(rows[-1], flush=True)
    lines = ["# The hardware Wiener SIM on other optics", "",
             f"{SCENES} held-out {SIZE}² scenes per row, blind parameters, MMSE 9x9 least-"
             "squares filter designed for each scene's optics, pattern and noise prior "
             "against the CPU's automatic (MMSE) Wiener, 8-bit codes and weights "
             "(`simhw.emulate_wiener`); PSNR dB after an affine fit to the extended-OTF truth.",
             "", "| NA | emission nm | pixel nm | cut-off c/px | peak photons | widefield | "
             "Wiener CPU | Wiener hardware | hardware − CPU | values at a code limit |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['na']:g} | {r['wavelength_nm']:g} | {r['pixel_size_nm']:g} | "
                     f"{r['cutoff']:.3f} | {r['peak']:g} | {r['widefield']:.2f} | "
                     f"{r['cpu']:.2f} | {r['hardware']:.2f} | "
                     f"{r['hardware'] - r['cpu']:+.2f} | {r['at_limit']:.0f} |")
    write_results("sim_wiener_optics", {"rows": rows, "scenes": SCENES, "size": SIZE,
                                        "seed_offset": SEED_OFFSET}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
