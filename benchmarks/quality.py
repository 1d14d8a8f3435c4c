"""Restoration quality on data the network never saw, through a camera it was not trained on.

Test sets (nothing here is used in training; the shipped nets see simulated data only):
- ``simulated``: cell-like scenes from new seeds (900+), NA 1.0, 100 nm pixels;
- ``undersampled``: cell-like scenes and textures as 10×–40× air objectives record them
  (seeds 950+, NA 0.3–0.95, 160–650 nm pixels: the PSF within about one pixel);
- ``real``: 15 real fluorescence images (nuclei, neurons, tissue, FISH spots) from four
  PyPI packages installed offline (``fluorofpga.microscope.realdata``: licences and
  citations there), centre crops of at most ``--size``²; they hold some noise of their
  own, so they are a clean-*ish* reference, the same for every method.

Every clean image is scaled to a peak of 5, 20 or 100 photons per pixel (plus 2 % of
background) and recorded by a *foreign* sCMOS camera outside the training ranges (gain
4 e⁻/ADU, offset 1000 ADU with 0.5 ADU = 2 e⁻ rms pixel-to-pixel spread, read noise
3.5 e⁻ median with a log-normal tail, hot pixels). The
camera is calibrated the user's way (simulated dark and flat stacks →
``microscope.calibrate``). Rows:

- raw frame; Gaussian filter with the best σ for each image (an oracle);
- non-local means and total variation (scikit-image) on the GAT-stabilised image with the
  calibration's noise model, algebraic inverse; BM3D the same way when ``bm3d`` is
  installed (optional, non-commercial licence, never vendored);
- the float network (same tables, float residual);
- the quantized network **as deployed**: the bit-exact emulator through
  ``FrameRestorer`` with the calibration (what ``fluorofpga denoise --calibration`` does),
  and with the noise model estimated from the frame (no calibration file).

PSNR/SSIM in detected photoelectrons against the noise-free image (every output is mapped
to electrons with the camera's *true* per-pixel offset, gain and dark signal, so the
per-pixel offset pattern does not count as signal); CPU seconds per 512² frame. Then
every test set again in bright light, 300 to 3000 photons (up to 3× above the training
range), raw frame against the deployed net only.

    python benchmarks/quality.py [--bundle DIR] [--scenes 4] [--size 256]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from results_io import write_results  # sibling module: scripts run from benchmarks/
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from fluorofpga.host import FrameRestorer, load_bundle
from fluorofpga.microscope import (
    NoiseModel,
    SCMOSSensor,
    WidefieldMicroscope,
    airy_psf,
    blur,
    calibrate,
    estimate_noise,
    gat,
    inverse_gat,
    psnr,
    ssim,
)
from fluorofpga.microscope.specimen import random_texture
from fluorofpga.models import int_to_tensor, load_float_model, tensor_to_codes

PHOTONS = (5.0, 20.0, 100.0)
#: Bright light, up to 3× above the training range (peak 1–1000), raw vs deployed only.
BEYOND = (300.0, 1000.0, 3000.0)
BACKGROUND = 0.02
FOREIGN = {"offset_mean_adu": 1000.0, "offset_sd_adu": 0.5, "gain_mean_e_per_adu": 4.0,
           "read_noise_median_e": 3.5, "hot_pixel_fraction": 5e-4}


def foreign_sensor(shape: tuple[int, int], seed: int) -> SCMOSSensor:
    """A camera outside every training range, with per-pixel maps and hot pixels."""
    return SCMOSSensor.random(shape, np.random.default_rng(seed), qe=1.0, **FOREIGN)


def undersampled_scenes(n: int, size: int) -> list[tuple[str, np.ndarray]]:
    """Scenes as 10×–40× air objectives record them: the PSF within about one pixel.

    Alternating cell-like scenes and generic textures (seeds 950+), NA and pixel size
    cycling through 10×/0.3 at 650 nm, 20×/0.75 at 325 nm, 20×/0.5 at 325 nm and 40×/0.95
    at 160 nm pixels (the last one near Nyquist).
    """
    optics = ((0.3, 650.0), (0.75, 325.0), (0.5, 325.0), (0.95, 160.0))
    out = []
    for i in range(n):
        na, px = optics[i % len(optics)]
        if i % 2 == 0:
            mic = WidefieldMicroscope(shape=(size, size), peak_photons=1.0, background_photons=0,
                                      na=na, pixel_size_nm=px, seed=950 + i)
            scene = np.asarray(mic.photons(), dtype=np.float64)
        else:
            rng = np.random.default_rng(950 + i)
            scene = np.clip(blur(random_texture((size, size), rng), airy_psf(na, 520.0, px)),
                            0, None)
        out.append((f"under{950 + i} NA {na} {px:.0f} nm", scene / scene.max()))
    return out


def calibrate_sensor(sensor: SCMOSSensor, seed: int) -> object:
    """Calibrate the way a user does: 20 darks, 4 flat levels of 8 frames."""
    rng = np.random.default_rng(seed)
    shape = sensor.shape
    dark = sensor.acquire(np.zeros((20, *shape)), rng)
    flats = [sensor.acquire(np.full((8, *shape), level), rng) for level in (50, 200, 800, 3000)]
    return calibrate(dark, flats)


def clean_scenes(kind: str, n: int, size: int) -> list[tuple[str, np.ndarray]]:
    """Unit-peak noise-free images of a test set."""
    if kind == "simulated":
        out = []
        for i in range(n):
            mic = WidefieldMicroscope(shape=(size, size), peak_photons=1.0, background_photons=0,
                                      na=1.0, pixel_size_nm=100.0, seed=900 + i)
            out.append((f"sim{900 + i}", np.asarray(mic.photons())))
        return out
    if kind == "undersampled":
        return undersampled_scenes(n, size)
    from fluorofpga.microscope.realdata import real_fluorescence_images

    out = []
    for im in real_fluorescence_images()[:n]:
        h, w = im.image.shape
        y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
        out.append((im.name, im.image[y : y + size, x : x + size]))
    return out


def nlm(z: np.ndarray) -> np.ndarray:
    """NLM tuned for unit-variance noise (scikit-image's recommended h ≈ 0.8 σ)."""
    return denoise_nl_means(z, h=0.8, sigma=1.0, patch_size=5, patch_distance=6, fast_mode=True)


def tv(z: np.ndarray) -> np.ndarray:
    """Chambolle TV on unit-variance noise (weight for σ = 1)."""
    return denoise_tv_chambolle(z, weight=1.0)


def bm3d_or_none() -> Callable[[np.ndarray], np.ndarray] | None:
    """BM3D on unit-variance noise when the optional ``bm3d`` package is installed."""
    try:
        import bm3d
    except ImportError:
        return None
    return lambda z: bm3d.bm3d(z, sigma_psd=1.0)


def on_gat(method: Callable[[np.ndarray], np.ndarray], restorer: FrameRestorer,
           noise: NoiseModel) -> Callable[[np.ndarray], np.ndarray]:
    """Classical denoiser on the calibrated, GAT-stabilised frame, algebraic inverse."""
    def run(frame: np.ndarray) -> np.ndarray:
        z = gat(restorer.to_uniform(frame), noise)
        return restorer.from_uniform(inverse_gat(method(z), noise))
    return run


def float_net(
    model: torch.nn.Module, restorer: FrameRestorer,
) -> Callable[[np.ndarray], np.ndarray]:
    """The float twin through the same tables (float residual, no output rounding)."""
    spec = restorer.tables.spec

    def run(frame: np.ndarray) -> np.ndarray:
        q = restorer.codes(frame)
        with torch.no_grad():
            r = tensor_to_codes(model(int_to_tensor(q)))[0]
        z = (spec.ratio * q.astype(np.float64) + spec.residual_zero - r) * spec.residual_step
        return restorer.from_uniform(restorer.tables.clean_adu(z))
    return run


def calibrated_camera(shape: tuple[int, int], seed: int) -> tuple[SCMOSSensor, object,
                                                                   NoiseModel]:
    """A foreign camera, its calibration (the user's way) and the calibrated noise model."""
    sensor = foreign_sensor(shape, seed)
    cal = calibrate_sensor(sensor, seed + 100)
    return sensor, cal, NoiseModel.from_calibration(cal, extra_rounding=True)


def electrons_of(sensor: SCMOSSensor) -> Callable[[np.ndarray], np.ndarray]:
    """ADU -> detected electrons with the camera's *true* per-pixel offset, gain, dark."""
    def signal(adu: np.ndarray) -> np.ndarray:
        a = np.asarray(adu, dtype=np.float64)
        return (a - sensor.offset_adu) * sensor.gain_e_per_adu - sensor.dark_electrons()
    return signal


def beyond(bundle, kind: str, n: int, size: int, seed: int) -> dict:
    """Raw frame vs the deployed net in bright light (:data:`BEYOND`, up to 3× above the
    training range of 1–1000 photons)."""
    results: dict = {}
    with bundle.accelerator("emulate") as acc:
        for s_idx, (name, unit) in enumerate(clean_scenes(kind, n, size)):
            sensor, cal, noise = calibrated_camera(unit.shape, seed + s_idx)
            deployed = bundle.restorer(acc, noise, cal, "float32")
            signal = electrons_of(sensor)
            for peak in BEYOND:
                photons = unit * peak + BACKGROUND * peak
                frame = sensor.acquire(photons, np.random.default_rng([seed, s_idx, int(peak)]))
                entry = results.setdefault(str(int(peak)), {"raw": [], "deployed": [],
                                                             "images": []})
                entry["raw"].append(psnr(photons, signal(frame)))
                entry["deployed"].append(psnr(photons, signal(deployed(frame))))
                entry["images"].append(name)
    return results


def evaluate(bundle, kind: str, n: int, size: int, seed: int) -> dict:
    """Rows × photon levels of mean PSNR/SSIM (and per-image PSNR) on one test set."""
    scenes = clean_scenes(kind, n, size)
    float_model = load_float_model(bundle.file("float_checkpoint"))
    results: dict = {}
    bm3d = bm3d_or_none()
    with bundle.accelerator("emulate") as acc:
        for s_idx, (name, unit) in enumerate(scenes):
            sensor, cal, noise = calibrated_camera(unit.shape, seed + s_idx)
            deployed = bundle.restorer(acc, noise, cal, "float32")
            for peak in PHOTONS:
                photons = unit * peak + BACKGROUND * peak
                truth = photons  # compared in detected electrons (qe = 1), see signal()
                signal = electrons_of(sensor)
                rng = np.random.default_rng([seed, s_idx, int(peak)])
                frame = sensor.acquire(photons, rng)
                est = estimate_noise(frame).model
                blind = bundle.restorer(acc, est, None, "float32")
                rows: dict[str, Callable[[np.ndarray], np.ndarray]] = {
                    "raw frame": lambda f: f.astype(np.float64),
                    "Gaussian, best σ (oracle)": lambda f, t=truth, d=deployed, e=signal: max(
                        (d.from_uniform(gaussian_filter(d.to_uniform(f).astype(np.float64), s))
                         for s in (0.7, 1.0, 1.4, 2.0, 2.8)),
                        key=lambda g: psnr(t, e(g))),
                    "NLM on GAT (scikit-image)": on_gat(nlm, deployed, noise),
                    "TV on GAT (scikit-image)": on_gat(tv, deployed, noise),
                }
                if bm3d is not None:
                    rows["BM3D on GAT"] = on_gat(bm3d, deployed, noise)
                rows["float net"] = float_net(float_model, deployed)
                rows["quantized net, deployed (calibrated)"] = deployed
                rows["quantized net, deployed (noise estimated)"] = blind
                for row, fn in rows.items():
                    out = signal(fn(frame))
                    entry = results.setdefault(row, {}).setdefault(str(int(peak)), {
                        "psnr": [], "ssim": [], "images": []})
                    entry["psnr"].append(psnr(truth, out))
                    entry["ssim"].append(ssim(truth, out))
                    entry["images"].append(name)
    for row in results.values():
        for entry in row.values():
            entry["psnr_mean"] = float(np.mean(entry["psnr"]))
            entry["ssim_mean"] = float(np.mean(entry["ssim"]))
    return results


def cpu_times(bundle, size: int = 512) -> dict[str, float]:
    """Seconds per ``size``² frame for each method (this CPU, one process)."""
    sensor = foreign_sensor((size, size), 7)
    cal = calibrate_sensor(sensor, 8)
    noise = NoiseModel.from_calibration(cal, extra_rounding=True)
    mic = WidefieldMicroscope(shape=(size, size), peak_photons=20.0, seed=950)
    frame = sensor.acquire(np.asarray(mic.photons()), np.random.default_rng(0))
    float_model = load_float_model(bundle.file("float_checkpoint"))
    times = {}
    with bundle.accelerator("emulate") as acc:
        deployed = bundle.restorer(acc, noise, cal, "float32")
        fns = {"NLM on GAT (scikit-image)": on_gat(nlm, deployed, noise),
               "TV on GAT (scikit-image)": on_gat(tv, deployed, noise),
               "float net": float_net(float_model, deployed),
               "quantized net, deployed (calibrated)": deployed,
               "noise estimation (one frame)": lambda f: estimate_noise(f)}
        bm3d = bm3d_or_none()
        if bm3d is not None:
            fns["BM3D on GAT"] = on_gat(bm3d, deployed, noise)
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(frame)
            times[name] = time.perf_counter() - t0
    return times


def table(results: dict, times: dict[str, float], high: dict | None = None) -> str:
    """Markdown: one table per test set, PSNR / SSIM per photon level, CPU time; then raw
    vs deployed above the training range (``high``: :func:`beyond` per test set)."""
    lines = []
    for kind, rows in results.items():
        levels = [str(int(p)) for p in PHOTONS]
        n = len(next(iter(rows.values()))[levels[0]]["psnr"])
        lines += [f"### {kind} ({n} images, foreign calibrated camera)", "",
                  "| method | " + " | ".join(f"{p} photons" for p in levels)
                  + " | CPU s / 512² |",
                  "|---|" + "---|" * (len(levels) + 1)]
        for row, per in rows.items():
            cells = [f"{per[p]['psnr_mean']:.2f} / {per[p]['ssim_mean']:.3f}" for p in levels]
            t = times.get(row)
            lines.append(f"| {row} | " + " | ".join(cells)
                         + f" | {t:.2f} |" if t is not None else f"| {row} | "
                         + " | ".join(cells) + " | |")
        raw = rows["raw frame"]
        dep = rows["quantized net, deployed (calibrated)"]
        worse = sum(int(d < r) for p in levels
                    for d, r in zip(dep[p]["psnr"], raw[p]["psnr"], strict=True))
        lines += ["", f"Deployed net worse than the raw frame on {worse} of "
                  f"{n * len(levels)} image × level cases.", ""]
    if high:
        levels = [str(int(p)) for p in BEYOND]
        lines += ["### bright light, up to 3× above the training range (peak 1–1000 photons): "
                  "raw frame vs deployed",
                  "", "PSNR dB, mean over the images; in brackets: images where the deployed "
                  "net is worse than the raw frame.", "",
                  "| test set | " + " | ".join(f"{p} photons" for p in levels) + " |",
                  "|---|" + "---|" * len(levels)]
        for kind, per in high.items():
            cells = []
            for p in levels:
                raw, dep = np.array(per[p]["raw"]), np.array(per[p]["deployed"])
                cells.append(f"{raw.mean():.2f} → {dep.mean():.2f} "
                             f"({int((dep < raw).sum())} of {raw.size} worse)")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark and write ``benchmarks/results/quality.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--real", type=int, default=100, help="real images to use (all: 15)")
    ap.add_argument("--results", default="quality", help="results file name (e.g. "
                    "quality-pynq-z2 for another bundle)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = load_bundle(args.bundle)
    sets = {"simulated": (args.scenes, args.seed),
            "undersampled": (args.scenes, args.seed + 2),
            "real": (args.real, args.seed + 1)}
    results, high = {}, {}
    for kind, (n, seed) in sets.items():
        try:
            results[kind] = evaluate(bundle, kind, n, args.size, seed)
            high[kind] = beyond(bundle, kind, n, args.size, seed + 10)
        except ImportError as e:
            print(f"{kind} images skipped: {e}")
    times = cpu_times(bundle)
    write_results(args.results, {"bundle": bundle.name, "photons": PHOTONS,
                              "camera": FOREIGN, "background_fraction": BACKGROUND,
                              "results": results, "above_training_range": high,
                              "cpu_seconds_512": times,
                              "machine": platform.processor() or platform.machine()},
                  table(results, times, high))


if __name__ == "__main__":
    main()
