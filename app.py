"""The facade: the one object the CLI, notebooks and tests use.

Each function runs one job end to end across the rooms (data flows
microscope -> models -> quantize -> hw -> host) and returns plain data; the CLI only
parses arguments, draws progress and prints.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluorofpga import __version__
from fluorofpga.host import (
    Bundle,
    SimulatedCameraSource,
    StreamPipeline,
    StreamStats,
    TiffSink,
    load_bundle,
    process_tiled,
)
from fluorofpga.host.bundle import FORMAT, MANIFEST, MANIFEST_VERSION
from fluorofpga.microscope import (
    ImageFormatError,
    psnr,
    read_ome_zarr,
    read_tiff,
    ssim,
    write_ome_zarr,
    write_tiff,
)

#: (stage name, done, total, message) -> None
Progress = Callable[[str, int, int, str], None]


def _noop(stage: str, done: int, total: int, message: str = "") -> None:
    pass


# --------------------------------------------------------------------------- training


@dataclass
class BundleRecipe:
    """Everything that defines a bundle build (saved into the manifest).

    Attributes:
        name: bundle name.
        recipe: quantization recipe name (see ``fluorofpga.quantize.RECIPES``).
        train_steps: float training steps.
        qat_steps: quantization-aware fine-tuning steps.
        board: target board name.
        tile: compiled tile side, pixels.
        target_mpix_per_s: throughput target for FINN folding, Mpixel/s.
        seed: RNG seed of data and weights.
        channels, depth: network size.
        bitfile: also generate IP, stitch and synthesise a bitstream (needs Vivado).
    """

    name: str = "denoise-w4a8"
    recipe: str = "w4a8"
    train_steps: int = 1500
    qat_steps: int = 600
    board: str = "kv260"
    tile: int = 128
    target_mpix_per_s: float = 10.0
    seed: int = 0
    channels: int = 16
    depth: int = 5
    bitfile: bool = False


def make_bundle(out_dir: str | Path, spec: BundleRecipe, progress: Progress = _noop) -> Bundle:
    """Train, quantize, export, compile with FINN and package a model bundle.

    Stages: float training on simulated pairs -> QAT from the float checkpoint -> QONNX
    export (Brevitas == QONNX checked) -> finn-plus build to folded hardware layers and
    estimates -> hardware-layer export for the host -> chain-of-custody verification
    -> ``manifest.json``.
    """
    import torch

    from fluorofpga.hw import BuildUntil, HwBuildConfig, build, export_hw_layers, require_vivado
    from fluorofpga.models import (
        DenoiserConfig,
        SimulatedPairs,
        TrainConfig,
        save_checkpoint,
        train_denoiser,
    )
    from fluorofpga.quantize import export_to_qonnx, get_recipe, quantize_from_float

    if spec.bitfile:  # refuse before minutes of training, not after
        require_vivado("Building a bitstream for the bundle")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    model_cfg = DenoiserConfig(channels=spec.channels, depth=spec.depth)
    tcfg = TrainConfig(steps=spec.train_steps, seed=spec.seed, model=model_cfg)

    def train_progress(step: int, total: int, loss: float) -> None:
        progress("train", step, total, f"loss {loss:.2e}")

    float_model, train_log = train_denoiser(tcfg, train_progress)
    save_checkpoint(out / "float.pt", float_model, model_cfg, kind="float", train=tcfg.to_dict())

    recipe = get_recipe(spec.recipe)
    data = SimulatedPairs(
        tcfg.n_scenes, (tcfg.scene_size, tcfg.scene_size), model_cfg.normalization,
        tcfg.peak_photons, spec.seed + 1,
    )

    def qat_progress(step: int, total: int, loss: float) -> None:
        progress("qat", step, total, f"loss {loss:.2e}")

    torch.manual_seed(spec.seed)
    qmodel, qat_log = quantize_from_float(float_model, recipe, data, spec.qat_steps,
                                          progress=qat_progress)
    save_checkpoint(out / "quant.pt", qmodel, model_cfg, kind="quant", recipe=recipe.to_dict())
    qonnx_path = export_to_qonnx(qmodel, out / "model.qonnx.onnx", (spec.tile, spec.tile))

    progress("compile", 0, 1, "FINN build")
    hw_cfg = HwBuildConfig(
        board=spec.board, tile=spec.tile, halo=model_cfg.halo,
        target_mpix_per_s=spec.target_mpix_per_s, io_bits=recipe.io_bits,
        until=BuildUntil.BITFILE if spec.bitfile else BuildUntil.ESTIMATES,
    )
    result = build(qonnx_path, out / "finn", hw_cfg)
    export_hw_layers(result.hw_model, out / "hw")
    progress("compile", 1, 1, f"{result.seconds:.0f} s")

    norm = model_cfg.normalization
    fmt = {"bits": recipe.io_bits, "signed": False, "adu_offset": norm.adu_offset,
           "adu_per_lsb": norm.adu_per_lsb}
    manifest = {
        "format": FORMAT,
        "version": MANIFEST_VERSION,
        "name": spec.name,
        "task": "denoise",
        "created_by": f"fluorofpga {__version__}",
        "network": {"arch": "PlainDenoiser", **model_cfg.to_dict(),
                    "receptive_field": model_cfg.receptive_field},
        "recipe": recipe.to_dict(),
        "input": {**fmt, "frames": 1, "axes": "YX"},
        "output": {**fmt, "upscale": 1, "axes": "YX"},
        "tile": {"height": spec.tile, "width": spec.tile, "halo": model_cfg.halo},
        "camera": training_camera(),
        "board": spec.board,
        "build": hw_cfg.to_dict(),
        "estimates": result.estimates,
        "files": {
            "float_checkpoint": "float.pt",
            "quant_checkpoint": "quant.pt",
            "qonnx": "model.qonnx.onnx",
            "hw_layers": "hw/hw_layers.json",
            "finn_build": "finn",
        },
        "training": {
            "steps": spec.train_steps, "final_loss": float(np.mean(train_log["loss"][-50:])),
            "qat_steps": spec.qat_steps,
            "qat_final_loss": float(np.mean(qat_log[-50:])) if qat_log else None,
            "seed": spec.seed,
        },
        "recipe_spec": asdict(spec),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    bundle = load_bundle(out)
    progress("verify", 0, 1, "chain of custody")
    manifest["verification"] = verify_bundle(bundle, seed=spec.seed)
    manifest["seconds"] = time.perf_counter() - t0
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    progress("verify", 1, 1, "bit-exact" if manifest["verification"]["bit_exact"] else "FAILED")
    return load_bundle(out)


def training_camera() -> dict[str, float]:
    """The simulated sCMOS camera the training pairs come from (recorded in manifests)."""
    from dataclasses import asdict

    from fluorofpga.microscope import SCMOSCamera

    return asdict(SCMOSCamera())


# ------------------------------------------------------------------ chain of custody


def verify_bundle(bundle: Bundle, n_images: int = 2, seed: int = 0) -> dict[str, Any]:
    """Run every stage of the bundle on the same integer tiles and compare integers.

    Stages: Brevitas (quantized checkpoint) -> QONNX -> every verified FINN intermediate
    model -> host emulator. Inputs are simulated camera tiles normalised like real ones.
    Returns ``{"bit_exact": bool, "stages": {name: mismatching pixels}, "images": n}``.
    """
    import torch

    from fluorofpga.hw import VERIFIED_STEPS, execute_int
    from fluorofpga.models import load_checkpoint
    from fluorofpga.quantize import QuantDenoiser, run_qonnx_int

    config, payload = load_checkpoint(bundle.file("quant_checkpoint"))
    qmodel = QuantDenoiser(config, payload["recipe"]["name"])
    qmodel.load_state_dict(payload["state_dict"])
    qmodel.eval()
    acc = bundle.accelerator("emulate")
    finn_dir = bundle.file("finn_build") / "intermediate_models"
    stages: dict[str, int] = {}
    for x in sample_tiles(bundle, n_images, seed):
        ref = run_qonnx_int(bundle.file("qonnx"), x)
        results = {
            "brevitas": qmodel.forward_int(torch.from_numpy(x[None, None].astype(np.int64)))
            .numpy()[0, 0],
            "qonnx": ref,
        }
        for step in VERIFIED_STEPS:
            results[f"finn:{step}"] = execute_int(finn_dir / f"{step}.onnx", x)
        results["host:emulate"] = acc.run(x).astype(np.int64)
        for name, y in results.items():
            stages[name] = stages.get(name, 0) + int(np.count_nonzero(y != ref))
    return {"bit_exact": all(v == 0 for v in stages.values()), "stages": stages,
            "images": n_images}


def sample_tiles(bundle: Bundle, n: int, seed: int) -> list[np.ndarray]:
    """``n`` integer tiles cut from simulated camera frames, normalised as the bundle says."""
    th, tw = bundle.tile_shape
    src = SimulatedCameraSource(n, (max(th, 256), max(tw, 256)), seed=seed + 1000)
    return [bundle.input_format.to_int(frame)[:th, :tw] for _, frame in src]


# ---------------------------------------------------------------------------- demo


def demo(
    out_dir: str | Path,
    bundle_path: str | Path | None = None,
    frames: int = 20,
    size: int = 512,
    seed: int = 0,
    backend: str = "emulate",
    camera_fps: float | None = None,
    check_frames: int = 2,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Stream a simulated sCMOS sequence through the accelerator; write TIFF, PNG, JSON.

    Writes ``restored.tif`` (TYX uint16 ADU), ``report.png`` (noisy | restored | truth)
    and ``report.json``. With ``camera_fps`` the camera is paced like a real one and
    frames that arrive while the pipeline is full are dropped and counted; without it
    the pipeline blocks (nothing dropped).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(bundle_path)
    source = SimulatedCameraSource(frames, (size, size), seed=seed, fps=camera_fps)
    with bundle.accelerator(backend) as acc:
        process = bundle.restorer(acc)
        sink = TiffSink(out / "restored.tif")
        pipeline = StreamPipeline(
            source, process, sink, queue_size=4,
            drop_policy="drop_newest" if camera_fps else "block",
            progress=lambda s: progress("stream", s.frames_out, frames, f"{s.fps:.1f} fps"),
        )
        stats: StreamStats = pipeline.run()
    restored = read_tiff(out / "restored.tif")
    if restored.ndim == 2:
        restored = restored[None]
    kept = [i for i in range(frames) if i not in set(stats.dropped_indices)]
    truth = {i: source.ground_truth(i) for i in kept}
    noisy_frames = dict(SimulatedCameraSource(frames, (size, size), seed=seed))
    p_noisy = [psnr(truth[i], noisy_frames[i]) for i in kept]
    p_rest = [psnr(truth[i], restored[k]) for k, i in enumerate(kept)]
    s_noisy = [ssim(truth[i], noisy_frames[i]) for i in kept]
    s_rest = [ssim(truth[i], restored[k]) for k, i in enumerate(kept)]
    bit_exact, checked, reason = _check_against_qonnx(
        bundle, [noisy_frames[i] for i in kept[:check_frames]], restored[:check_frames]
    )
    report = {
        "frames": frames,
        "frames_out": stats.frames_out,
        "dropped": stats.dropped,
        "dropped_indices": stats.dropped_indices,
        "backend": backend,
        "bundle": bundle.name,
        "frame_shape": [size, size],
        "tile": list(bundle.tile_shape),
        "halo": bundle.halo,
        "fps": stats.fps,
        "mpix_per_s": stats.fps * size * size / 1e6,
        "latency_ms_mean": stats.latency_ms_mean,
        "camera_fps": camera_fps,
        "psnr_noisy": float(np.mean(p_noisy)),
        "psnr_restored": float(np.mean(p_rest)),
        "ssim_noisy": float(np.mean(s_noisy)),
        "ssim_restored": float(np.mean(s_rest)),
        "bit_exact": bit_exact,
        "bit_exact_frames_checked": checked,
        "bit_exact_reference": reason,
        "estimates": bundle.manifest.get("estimates"),
    }
    _report_png(out / "report.png", noisy_frames[kept[0]], restored[0], truth[kept[0]], report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _check_against_qonnx(
    bundle: Bundle, noisy: list[np.ndarray], restored: np.ndarray
) -> tuple[bool | None, int, str]:
    """Recompute restored frames with the bundle's QONNX model (tiled identically)."""
    try:
        from fluorofpga.quantize import run_qonnx_int
    except ImportError as e:  # board install: no qonnx/torch
        return None, 0, f"not checked: {e}"
    qonnx = bundle.file("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(qonnx))
    fin, fout = bundle.input_format, bundle.output_format
    for frame, got in zip(noisy, restored, strict=False):
        q = fin.to_int(frame)
        ref = process_tiled(q, lambda t: run_qonnx_int(model, t), bundle.tile_shape, bundle.halo)
        if ref.min() < 0 or ref.max() >= 2**fout.bits:
            return False, len(noisy), "QONNX output outside the output format's range"
        if not np.array_equal(fout.to_adu(ref.astype(np.uint16)), got):
            return False, len(noisy), "QONNX model (qonnx execute_onnx), same tiling"
    return True, len(noisy), "QONNX model (qonnx execute_onnx), same tiling"


def _report_png(
    path: Path, noisy: np.ndarray, restored: np.ndarray, truth: np.ndarray, report: dict
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(truth, [0.5, 99.8])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    panels = [
        (noisy, f"noisy (PSNR {report['psnr_noisy']:.1f} dB)"),
        (restored, f"restored, {report['backend']} (PSNR {report['psnr_restored']:.1f} dB)"),
        (truth, "ground truth (noise-free ADU)"),
    ]
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(
        f"{report['bundle']}: {report['frames_out']}/{report['frames']} frames, "
        f"{report['dropped']} dropped, {report['fps']:.2f} fps, bit-exact: {report['bit_exact']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- denoise


def denoise(
    in_path: str | Path,
    out_path: str | Path,
    bundle_path: str | Path | None = None,
    backend: str = "emulate",
    calibration: str | Path | None = None,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Restore a uint16 YX or TYX TIFF or OME-Zarr into ``out_path`` (same axes, uint16).

    The output format follows ``out_path``'s suffix (``.tif``/``.tiff`` or ``.zarr``).

    With ``calibration`` (a file from :func:`calibrate_camera`), the user's camera is
    mapped into the electrons-per-step of the camera the network was trained for
    (hot pixels repaired, per-pixel offsets removed, gain applied) and the result mapped
    back to the user's ADU; without it the bundle's ADU normalisation is used as is.

    Bad input (missing/unreadable/truncated file, wrong dtype or dimensions, a
    calibration for another sensor size) raises a ``ValueError`` subclass before anything
    is written.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.resolve() == in_path.resolve():
        raise ImageFormatError(f"{in_path}: refusing to overwrite the input; choose another OUT")
    if out_path.suffix.lower() not in (".tif", ".tiff", ".zarr"):
        raise ImageFormatError(f"{out_path}: unknown output suffix (use .tif, .tiff or .zarr)")
    stack = _read_stack(in_path)
    squeeze = stack.ndim == 2
    frames = stack[None] if squeeze else stack
    bundle = load_bundle(bundle_path)
    cal = None
    if calibration is not None:
        from fluorofpga.microscope import load_calibration

        cal = load_calibration(calibration)
        cal.check_shape(frames.shape[1:])
    t0 = time.perf_counter()
    restored = np.empty_like(frames)
    with bundle.accelerator(backend) as acc:
        process = bundle.restorer(acc) if cal is None else _calibrated_restorer(bundle, acc, cal)
        for i, frame in enumerate(frames):
            restored[i] = process(frame)
            progress("denoise", i + 1, len(frames), "")
    seconds = time.perf_counter() - t0
    result, axes = (restored[0], "YX") if squeeze else (restored, "TYX")
    if out_path.suffix.lower() == ".zarr":
        write_ome_zarr(out_path, result, axes=axes)
    else:
        write_tiff(out_path, result, axes=axes)
    return {"frames": len(frames), "shape": list(frames.shape[1:]), "seconds": seconds,
            "fps": len(frames) / seconds if seconds > 0 else None, "backend": backend,
            "bundle": bundle.name, "out": str(out_path),
            "calibration": str(calibration) if calibration else None}


def _read_stack(path: Path) -> np.ndarray:
    """A uint16 YX or TYX image from a TIFF or an OME-Zarr store."""
    if path.suffix.lower() != ".zarr":
        return read_tiff(path)
    stack, axes = read_ome_zarr(path)
    if stack.dtype != np.uint16 or axes not in ("YX", "TYX"):
        raise ImageFormatError(
            f"{path}: expected uint16 YX or TYX, found {stack.dtype} with axes {axes!r}")
    return stack


def _training_camera(bundle: Bundle) -> dict[str, float]:
    """Camera the bundle's network was trained for (manifest ``camera``)."""
    cam = bundle.manifest.get("camera")
    if cam is None:
        raise ValueError(f"bundle {bundle.name} does not record its training camera; "
                         "re-create it with `fluorofpga train` to use --calibration")
    return cam


def _calibrated_restorer(bundle: Bundle, acc: Any, cal: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``process(user ADU frame) -> user ADU frame`` through the training camera's units."""
    train = _training_camera(bundle)
    fin, fout = bundle.input_format, bundle.output_format
    e_per_lsb_in = fin.adu_per_lsb * train["gain_e_per_adu"]
    e_per_lsb_out = fout.adu_per_lsb * train["gain_e_per_adu"]
    pedestal_in = (train["offset_adu"] - fin.adu_offset) * train["gain_e_per_adu"]
    pedestal_out = (train["offset_adu"] - fout.adu_offset) * train["gain_e_per_adu"]
    top_in = 2**fin.bits - 1

    def process(frame: np.ndarray) -> np.ndarray:
        electrons = cal.adu_to_electrons(cal.repair_hot_pixels(frame))
        q = np.clip(np.rint((electrons + pedestal_in) / e_per_lsb_in), 0, top_in)
        out = process_tiled(q.astype(fin.dtype), acc.run, acc.tile_shape, bundle.halo)
        e_out = out.astype(np.float64) * e_per_lsb_out - pedestal_out
        adu = e_out / cal.gain + cal.offset_adu
        return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)

    return process


def calibrate_camera(
    dark_path: str | Path,
    flat_paths: list[str | Path],
    out_path: str | Path,
    qe: float | None = None,
    camera_serial: str = "",
) -> dict[str, Any]:
    """Calibrate an sCMOS camera from a dark TYX stack and >= 3 flat-field TYX stacks.

    Offset and read-noise maps come from the dark stack, the gain from the photon
    transfer curve of the flats. Writes the calibration file to ``out_path`` (used by
    ``denoise --calibration``) and returns its summary.
    """
    from fluorofpga.microscope import calibrate

    dark = read_tiff(dark_path, ndim=(3,))
    flats = [read_tiff(p, ndim=(3,)) for p in flat_paths]
    cal = calibrate(dark, flats, qe=qe, camera_serial=camera_serial)
    cal.save(out_path)
    return cal.summary()
