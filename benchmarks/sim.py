"""Benchmark of classical SIM: widefield vs Wiener 9-frame reconstruction vs ground truth.

    python benchmarks/sim.py      # writes benchmarks/results/sim.{json,md}

Held-out simulated data (seeds not used by the tests or the other benchmarks): cell-like
specimens at 512² camera pixels, NA 1.2, 520 nm, 65 nm pixels, sCMOS noise, 10 photons
background, with random pattern errors per scene: pattern frequency 0.80–0.90 of the
cut-off, modulation 0.75–0.95, random directions and phase offsets, angle error σ
0.01 rad per angle and phase error σ 0.05 rad per frame (the reconstruction assumes
equidistant phases). At 20, 100, 500 and 2000 peak photons every scene is recorded
twice (independent noise) and compared with the ideal extended-OTF image
(``sim_ground_truth``):

* widefield: the mean of the 9 frames, upsampled 2x (``widefield_from_raw``);
* Wiener 9-frame: ``estimate_parameters`` blind on the raw frames, then ``wiener_sim``
  with its default ``wiener_w="auto"`` (the MMSE filter from the data's own noise and
  spectrum: what ``fluorofpga sim`` runs), and the classical fixed-w filter at
  w = 0.05 (the hardware bundle's), 0.2 and 0.8;
* Wiener with the true pattern (first-frame phases, equidistant steps): how much the
  blind estimation costs;
* Wiener 9-frame in hardware: the same blind parameters, the real-space Wiener of a
  Wiener-SIM bundle designed for them and for the noise prior of the same stack (what
  ``fluorofpga sim --save-params`` then ``fluorofpga sim-bundle`` do: the MMSE filter;
  demodulation + 9x9 filter, 8-bit codes and weights), run by its quantized layer and host code
  (``simhw.emulate_wiener``: what the compiled accelerator returns, by the chain of
  custody), the camera's offset known;
* napari-sim-processor (``ConvSimProcessor``, calibrate + reconstruct) as a peer, only
  when it is importable (it is not installed here);
* the learned 3-frame reconstructor (a SIM bundle, default the shipped
  ``host/bundles/sim3``, through its bit-exact emulated accelerator): every scene is also
  recorded with 3 frames, one per angle at the first phase of that angle (a third of the
  9-frame acquisition's light), with the camera's noise model known (as from
  ``fluorofpga calibrate``). ``--model none`` skips it.

PSNR / SSIM after CARE's affine intensity fit to the truth, on the image without a
border of 1/8 of its side; FRC resolution (1/7 threshold) between the two noise
realisations, each reconstructed on its own. Time per 512² stack: wall clock and CPU
time of the estimation and of the Wiener reconstruction (the 2 cores are shared; the
load average is recorded).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from results_io import write_results  # sibling module: scripts run from benchmarks/

from fluorofpga.microscope import (
    FrameOrderWarning,
    NoiseModel,
    SimPattern,
    WeakPatternWarning,
    estimate_parameters,
    frc,
    make_pattern,
    measure_wiener_prior,
    psnr,
    render_specimen,
    sim_ground_truth,
    simulate_sim,
    ssim,
    widefield_from_raw,
    wiener_sim,
)
from fluorofpga.simhw import emulate_wiener

OPTICS = {"na": 1.2, "wavelength_nm": 520.0, "pixel_size_nm": 65.0}
LEVELS = (20.0, 100.0, 500.0, 2000.0)
BACKGROUND_PHOTONS = 10.0
ANGLE_ERROR_RAD = 0.01
PHASE_ERROR_RAD = 0.05
K_FRACTION = (0.80, 0.90)
MODULATION = (0.75, 0.95)
SEED_OFFSET = 31000  # new seeds: not those of the tests or the other benchmarks
ABBE_NM = OPTICS["wavelength_nm"] / (2 * OPTICS["na"])

WIDEFIELD = "widefield (upsampled)"
WIENER = "Wiener 9-frame (blind, w auto: default)"
ORACLE = "Wiener 9-frame (true parameters)"
PEER = "napari-sim-processor"
LEARNED = "learned 3-frame (quantized, emulated accelerator)"
HARDWARE = "Wiener 9-frame in hardware (blind, MMSE 9x9 filter, 8-bit, emulated)"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "host" / "bundles" / "sim3"
# Fixed Wiener parameters tried besides the default "auto" (``fluorofpga sim --wiener W``):
# at low photon counts a larger w trades resolution for noise.
W_SWEEP = (0.05, 0.2, 0.8)


def peer_class() -> type | None:
    """napari-sim-processor's ConvSimProcessor when the package is importable, else None."""
    for module in ("napari_sim_processor.processors.convSimProcessor",
                   "napari_sim_processor.convSimProcessor"):
        try:
            return __import__(module, fromlist=["ConvSimProcessor"]).ConvSimProcessor
        except ImportError:
            continue
    return None


def peer_reconstruct(cls: type, photons: np.ndarray, k_fraction: float) -> np.ndarray:
    """Calibrate and reconstruct one 9-frame stack with napari-sim-processor (headless)."""
    h = cls(angleSteps=3, phaseSteps=3)
    h.debug = False
    h.magnification = 1.0
    h.pixelsize = OPTICS["pixel_size_nm"] / 1e3  # camera pixel in the sample plane, µm
    h.NA, h.n = OPTICS["na"], 1.518
    h.wavelength = OPTICS["wavelength_nm"] / 1e3
    h.eta = 0.9 * k_fraction  # carrier search radius, as a fraction of the cut-off
    frames = np.ascontiguousarray(photons, dtype=np.float32)
    h.calibrate(frames)
    reconstruct = getattr(h, "reconstruct_rfftw", None) or h.reconstruct_fftw
    return np.asarray(reconstruct(frames), dtype=np.float64)


def acquisition(size: int, seed: int, peak: float) -> tuple:
    """Specimen truth, pattern and two independent noisy recordings of one scene."""
    rng = np.random.default_rng(seed)
    pattern = make_pattern(
        k_fraction=rng.uniform(*K_FRACTION), modulation=rng.uniform(*MODULATION),
        start_angle_rad=rng.uniform(0, np.pi / 3),
        phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, 3)),
        angle_error_rad=ANGLE_ERROR_RAD, phase_error_rad=PHASE_ERROR_RAD, rng=rng,
    )
    specimen = render_specimen((2 * size, 2 * size), rng, filaments=size // 6, puncta=size,
                               nuclei=1)
    truth = sim_ground_truth(specimen, k_fraction=pattern.k_fraction, **OPTICS)
    recordings = [simulate_sim(specimen, pattern, peak_photons=peak,
                               background_photons=BACKGROUND_PHOTONS, rng=rng, **OPTICS)
                  for _ in range(2)]
    three = SimPattern(angles_rad=pattern.angles_rad,
                       phases_rad=tuple((row[0],) for row in pattern.phases_rad),
                       k_fraction=pattern.k_fraction, modulation=pattern.modulation)
    threes = [simulate_sim(specimen, three, peak_photons=peak,
                           background_photons=BACKGROUND_PHOTONS, rng=rng, **OPTICS)
              for _ in range(2)]
    return truth, pattern, recordings, threes


def swept(w: float) -> str:
    """Name of the blind Wiener reconstruction with Wiener parameter ``w``."""
    return f"Wiener 9-frame (blind, w={w:g})"


def frc_nm(first: np.ndarray, second: np.ndarray) -> float | None:
    """FRC resolution (nm) of two realisations; None when the curve never falls below 1/7.

    That happens when the Wiener damping leaves little noise up to the reconstruction's
    support (large w, many photons): beyond the support only correlated leakage (window,
    clipping at 0) is left, the curve stays up to the grid's Nyquist frequency, and that
    frequency is no resolution.
    """
    result = frc(first, second, pixel_size_nm=OPTICS["pixel_size_nm"] / 2)
    return float(result.resolution) if result.crossed else None


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def frc_text(m: dict) -> str:
    if m["frc_resolution_nm"] is None:
        return "not crossed"
    missing = f" ({m['frc_not_crossed']} not crossed)" if m["frc_not_crossed"] else ""
    return f"{m['frc_resolution_nm']:.0f}{missing}"


def affine(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Image mapped by the least-squares affine fit to the reference (CARE)."""
    a, b = np.polyfit(image.ravel(), reference.ravel(), 1)
    return a * image + b


def timed(fn, *args, **kwargs) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def reconstruct(recording, pattern, peer: type | None, times: dict) -> dict[str, np.ndarray]:
    """Every method's image of one recording (timings of the blind Wiener appended).

    The notes the estimation gives (frame order not verified, weak pattern), which
    ``fluorofpga sim`` prints, are counted in ``times["notes"]``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeakPatternWarning)
        warnings.simplefilter("always", FrameOrderWarning)
        params, wall, cpu = timed(estimate_parameters, recording.raw, camera=recording.camera,
                                  **OPTICS)
    for w in caught:
        kind = "weak pattern" if w.category is WeakPatternWarning else "frame order"
        times["notes"][kind] = times["notes"].get(kind, 0) + 1
    times["estimate_wall_s"].append(wall)
    times["estimate_cpu_s"].append(cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameOrderWarning)  # counted above
        wiener, wall, cpu = timed(wiener_sim, recording.raw, params, camera=recording.camera,
                                  **OPTICS)
    times["reconstruct_wall_s"].append(wall)
    times["reconstruct_cpu_s"].append(cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameOrderWarning)  # counted above
        oracle = wiener_sim(recording.raw, pattern.angle_parameters(**OPTICS),
                            camera=recording.camera, **OPTICS)
    cam = recording.camera
    # the user's flow: `sim --save-params` on this stack stores its prior, `sim-bundle`
    # designs the MMSE filter for it (the default)
    prior = measure_wiener_prior(recording.raw, camera=cam, **OPTICS)
    (hw, counts), wall, cpu = timed(emulate_wiener, recording.raw, params, cam.offset_adu,
                                    wiener_w=prior)
    times.setdefault("hardware_wall_s", []).append(wall)
    times.setdefault("hardware_cpu_s", []).append(cpu)
    times.setdefault("hardware_saturated", []).append(
        counts["channel_saturated"] + counts["residual_at_limit"] + counts["above_range"])
    images = {
        WIDEFIELD: widefield_from_raw(recording.raw, recording.camera),
        WIENER: wiener,
        HARDWARE: hw * cam.gain_e_per_adu / cam.qe,
        ORACLE: oracle,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameOrderWarning)  # counted above
        for w in W_SWEEP:
            images[swept(w)] = wiener_sim(recording.raw, params, camera=recording.camera,
                                          wiener_w=w, **OPTICS)
    if peer is not None:
        photons = ((recording.raw.astype(np.float64) - recording.camera.offset_adu)
                   * recording.camera.gain_e_per_adu / recording.camera.qe)
        try:
            images[PEER] = peer_reconstruct(peer, photons, pattern.k_fraction)
        except Exception as exc:  # a peer's failure is a result, reported, not a crash
            times.setdefault("peer_errors", []).append(f"{type(exc).__name__}: {exc}")
    return images


class Learned:
    """A SIM bundle's reconstruction of 3-frame recordings (emulated accelerator)."""

    def __init__(self, path: Path) -> None:
        from fluorofpga.host import load_bundle

        self.bundle = load_bundle(path)
        self.acc = self.bundle.accelerator("emulate")

    def __call__(self, recording, times: dict) -> np.ndarray:
        cam = recording.camera
        noise = NoiseModel.from_camera(cam.gain_e_per_adu, cam.offset_adu, cam.read_noise_e)
        restore = self.bundle.sim_restorer(self.acc, noise, dtype="float32")
        image, wall, cpu = timed(restore, recording.raw)
        times.setdefault("learned_wall_s", []).append(wall)
        times.setdefault("learned_cpu_s", []).append(cpu)
        return np.asarray(image, dtype=np.float64)


def run(size: int, scenes: int, learned: Learned | None = None) -> dict:
    peer = peer_class()
    out: dict = {}
    notes: dict[str, dict[str, int]] = {}
    times: dict[str, list] = {key: [] for key in ("estimate_wall_s", "estimate_cpu_s",
                                                  "reconstruct_wall_s", "reconstruct_cpu_s")}
    crop = slice(size // 8, -size // 8)  # of the 2x grid: a border of 1/16 of the side
    for peak in LEVELS:
        rows: dict[str, list[tuple[float, float, float]]] = {}
        times["notes"] = {}
        for index in range(scenes):
            truth, pattern, recordings, threes = acquisition(
                size, SEED_OFFSET + int(peak) * 100 + index, peak)
            pairs = [reconstruct(r, pattern, peer, times) for r in recordings]
            if learned is not None:
                for images, three in zip(pairs, threes, strict=True):
                    images[LEARNED] = learned(three, times)
            t = truth[crop, crop]
            for name in pairs[0]:
                if name not in pairs[1]:
                    continue
                first, second = pairs[0][name][crop, crop], pairs[1][name][crop, crop]
                fitted = affine(t, first)
                rows.setdefault(name, []).append((
                    psnr(t, fitted), ssim(t, fitted),
                    frc_nm(first, second),
                ))
            print(f"{peak:g} photons, scene {index + 1}/{scenes}", flush=True)
        out[f"{peak:g}"] = {
            name: {"psnr": float(np.mean([r[0] for r in v])),
                   "psnr_min": float(np.min([r[0] for r in v])),
                   "ssim": float(np.mean([r[1] for r in v])),
                   "ssim_min": float(np.min([r[1] for r in v])),
                   "frc_resolution_nm": mean_or_none([r[2] for r in v if r[2] is not None]),
                   "frc_not_crossed": sum(r[2] is None for r in v),
                   "scenes": len(v)}
            for name, v in rows.items()
        }
        notes[f"{peak:g}"] = times["notes"]
    timing = {f"{key}_median": float(np.median(v)) for key, v in times.items()
              if key not in ("peer_errors", "notes")}
    timing["stacks"] = len(times["estimate_wall_s"])
    return {"levels": out, "timing": timing, "notes": notes,
            "learned": None if learned is None else {
                "bundle": learned.bundle.name, "path": str(learned.bundle.path),
                "recipe": learned.bundle.manifest["recipe"]["name"],
                "network": learned.bundle.manifest["network"]},
            "peer": None if peer is None else peer.__module__,
            "peer_errors": times.get("peer_errors", [])}


def where_we_lose(levels: dict) -> list[str]:
    """Levels where the blind Wiener is not better than widefield, metric by metric."""
    lines = []
    for level, methods in levels.items():
        wide, wiener = methods[WIDEFIELD], methods[WIENER]
        worse = [m.upper() for m in ("psnr", "ssim") if wiener[m] <= wide[m]]
        if worse:
            lines.append(f"{level} photons: Wiener below widefield in {' and '.join(worse)} "
                         f"({wiener['psnr']:.2f} vs {wide['psnr']:.2f} dB, SSIM "
                         f"{wiener['ssim']:.3f} vs {wide['ssim']:.3f}) although its FRC "
                         f"resolution is {frc_text(wiener)} vs {frc_text(wide)} nm")
        for w in W_SWEEP:
            tuned = methods[swept(w)]
            if worse and tuned["psnr"] > wide["psnr"] and tuned["ssim"] > wide["ssim"]:
                lines.append(f"{level} photons: with w={w:g} (`--wiener {w:g}`) the Wiener "
                             f"image is above widefield ({tuned['psnr']:.2f} dB, SSIM "
                             f"{tuned['ssim']:.3f}; FRC {frc_text(tuned)} nm)")
                break
        if LEARNED in methods:
            net = methods[LEARNED]
            for name, other in ((WIENER, wiener), (WIDEFIELD, wide)):
                behind = [m.upper() for m in ("psnr", "ssim") if net[m] < other[m]]
                if behind:
                    lines.append(f"{level} photons: the learned 3-frame network is below "
                                 f"{name} in {' and '.join(behind)} ({net['psnr']:.2f} vs "
                                 f"{other['psnr']:.2f} dB, SSIM {net['ssim']:.3f} vs "
                                 f"{other['ssim']:.3f}; FRC {frc_text(net)} vs "
                                 f"{frc_text(other)} nm)")
        hw = methods.get(HARDWARE)
        if hw is not None and (hw["psnr"] < wiener["psnr"] or hw["ssim"] < wiener["ssim"]):
            lines.append(f"{level} photons: the Wiener in hardware (MMSE 9x9, 8-bit) is "
                         f"{wiener['psnr'] - hw['psnr']:+.2f} dB PSNR and "
                         f"{wiener['ssim'] - hw['ssim']:+.3f} SSIM behind the CPU's default "
                         f"(auto) Wiener ({hw['psnr']:.2f} vs {wiener['psnr']:.2f} dB)")
        if hw is not None and (hw["psnr"] <= wide["psnr"] or hw["ssim"] <= wide["ssim"]):
            lines.append(f"{level} photons: the Wiener in hardware is not above widefield "
                         f"({hw['psnr']:.2f} vs {wide['psnr']:.2f} dB, SSIM {hw['ssim']:.3f} "
                         f"vs {wide['ssim']:.3f})")
        oracle = methods[ORACLE]
        if oracle["psnr"] - wiener["psnr"] > 0.5:
            lines.append(f"{level} photons: the blind parameters cost "
                         f"{oracle['psnr'] - wiener['psnr']:.2f} dB against the true pattern")
    return lines


def table(res: dict) -> str:
    t = res["timing"]
    lines = [
        "# Classical SIM: widefield vs Wiener 9-frame", "",
        f"{res['scenes']} held-out scenes per photon level, {res['size']}² camera pixels, "
        f"NA {OPTICS['na']}, {OPTICS['wavelength_nm']:g} nm (widefield limit λ/2NA = "
        f"{ABBE_NM:.0f} nm), {OPTICS['pixel_size_nm']:g} nm pixels, {BACKGROUND_PHOTONS:g} "
        f"photons background; pattern k {K_FRACTION[0]}–{K_FRACTION[1]} of the cut-off, "
        f"modulation {MODULATION[0]}–{MODULATION[1]}, angle error σ {ANGLE_ERROR_RAD} rad, "
        f"phase error σ {PHASE_ERROR_RAD} rad per frame. PSNR/SSIM after an affine fit to "
        "the extended-OTF truth (mean, worst scene); FRC between two noise realisations "
        "(\"not crossed\": the curve stays above 1/7 up to the grid's Nyquist frequency: "
        "the noise is damped up to the reconstruction's support and beyond it only "
        "correlated leakage (window, clipping at 0) is left, so the resolution is the "
        "support limit λ/(2NA(1+k)) ≈ 115 nm, not a measured value). "
        f"Load average during the run {res['load_average'][0]:.1f} / "
        f"{res['load_average'][1]:.1f} on {os.cpu_count()} shared cores.", "",
        "| peak photons | method | PSNR dB (worst) | SSIM (worst) | FRC resolution nm |",
        "|---|---|---|---|---|",
    ]
    for level, methods in res["levels"].items():
        for name, m in methods.items():
            lines.append(f"| {level} | {name} | {m['psnr']:.2f} ({m['psnr_min']:.2f}) | "
                         f"{m['ssim']:.3f} ({m['ssim_min']:.3f}) | "
                         f"{frc_text(m)} |")
    noted = [f"{level} photons: " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())
             for level, kinds in res["notes"].items() if kinds]
    lines += [
        "", f"Notes of the blind estimation ({2 * res['scenes']} stacks per level; "
        "`fluorofpga sim` prints them): " + ("; ".join(noted) if noted else "none") + ".",
    ]
    lines += [
        "", f"Time per {res['size']}² 9-frame stack (median of {t['stacks']}): parameter "
        f"estimation {t['estimate_wall_s_median']:.2f} s wall / "
        f"{t['estimate_cpu_s_median']:.2f} s CPU, Wiener reconstruction "
        f"{t['reconstruct_wall_s_median']:.2f} s wall / {t['reconstruct_cpu_s_median']:.2f} s "
        "CPU.", "",
        "napari-sim-processor: " + (f"run ({res['peer']})" if res["peer"] else
                                    "not importable here, not run (optional peer)") + ".",
    ]
    lines += ["", f"Wiener in hardware: emulated in {t['hardware_wall_s_median']:.2f} s wall / "
              f"{t['hardware_cpu_s_median']:.2f} s CPU per {res['size']}² stack (design, "
              "quantization and the integer pipeline on the CPU; the accelerator's rate is "
              "in `fluorofpga compile`); values at a code limit (input top, demodulated "
              f"channels, output) per stack: median {t['hardware_saturated_median']:.0f}."]
    if res.get("learned"):
        net = res["learned"]["network"]
        lines += ["", f"Learned 3-frame: bundle {res['learned']['bundle']} "
                  f"({res['learned']['recipe']}, {net['channels']} channels x {net['depth']} "
                  f"layers, {net['macs_per_pixel']} MACs per camera pixel), 3 raw frames "
                  "with a third of the 9-frame light, through its emulated accelerator in "
                  f"{t['learned_wall_s_median']:.2f} s wall / {t['learned_cpu_s_median']:.2f} "
                  f"s CPU per {res['size']}² group."]
    if res["peer_errors"]:
        lines.append(f"Peer failures: {len(res['peer_errors'])} ({res['peer_errors'][0]}).")
    losses = where_we_lose(res["levels"])
    lines += ["", "Where we lose:", ""] + [f"- {line}" for line in losses or ["nowhere"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--scenes", type=int, default=4, help="scenes per photon level")
    ap.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="SIM bundle of the learned 3-frame reconstructor ('none': skip it)")
    args = ap.parse_args()
    learned = None if args.model == "none" else Learned(Path(args.model))
    load_start = os.getloadavg()
    result = run(args.size, args.scenes, learned)
    load_end = os.getloadavg()
    res = {"size": args.size, "scenes": args.scenes, "optics": OPTICS,
           "background_photons": BACKGROUND_PHOTONS,
           "pattern_errors": {"angle_rad": ANGLE_ERROR_RAD, "phase_rad": PHASE_ERROR_RAD,
                              "k_fraction": K_FRACTION, "modulation": MODULATION},
           "seed_offset": SEED_OFFSET, "load_average": [load_start[0], load_end[0]], **result}
    write_results("sim", res, table(res))


if __name__ == "__main__":
    main()
