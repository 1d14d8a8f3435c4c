"""The facade: the one object the CLI, notebooks and tests use.

Each function runs one job end to end across the rooms (data flows
microscope -> models -> quantize -> hw -> host) and returns plain data; the CLI only
parses arguments, draws progress and prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
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
)
from fluorofpga.host.bundle import FORMAT, MANIFEST, MANIFEST_VERSION
from fluorofpga.microscope import (
    ImageFormatError,
    SignalSpec,
    atomic_write,
    check_output,
    psnr,
    read_image_meta,
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
        channels, depth: network size (taken from ``init_bundle`` when fine-tuning).
        scenes: simulated scenes in the training pool (every crop gets a new camera).
        bitfile: also build the board design's bitstream with Vivado (as ``fluorofpga
            compile --bitfile`` at the bundle's target rate) and put it into the bundle.
        self_supervised: a stack of the user's own noisy frames (TIFF or OME-Zarr path or
            fsspec URL): fine-tune on it alone with blind-spot masking instead of training
            on simulated data; ``train_steps`` then counts fine-tuning steps.
        init_bundle: bundle whose float weights fine-tuning starts from (default: the
            shipped one).
        calibration: calibration file of the camera that recorded ``self_supervised``
            (default: the noise model is estimated from the stack).
        init_float: a float checkpoint to quantize instead of training one (its
            architecture replaces ``channels``/``depth``; ``train_steps`` is ignored).
        finetune_steps: with ``init_float``, fine-tune it this many steps on the
            simulated data first (a quarter of the training rate, data seed ``seed + 5``):
            how a float trained on older data is carried over to new training data.
        mvau_impl: ``"rtl"`` (default: every layer has RTL that simulates here, MACs in
            DSPs) or ``"auto"`` (finn-plus' choice; HLS MVAUs need Vitis HLS).
        weight_memory: MVAU weights in LUTRAM or BRAM (``hw.HwBuildConfig``).
        task: ``"denoise"`` or ``"sim"``: a learned 3-frame SIM reconstructor (3 raw
            frames, 3 angles × 1 phase -> 2× image as 4 sub-pixel channels, trained on
            simulated SIM data across optics, patterns, cameras and light levels).
        max_read_noise_e: the training cameras' highest read noise, rms e⁻ (default: the
            ``CameraRange`` default, 4.5). Cameras above 4.5 e⁻ are coded with their dark
            level shifted down to that of a 4.5 e⁻ camera (``SignalSpec.max_dark_z``), in
            training as when deployed.
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
    scenes: int = 256
    bitfile: bool = False
    self_supervised: str | None = None
    init_bundle: str | None = None
    calibration: str | None = None
    init_float: str | None = None
    finetune_steps: int = 0
    mvau_impl: str = "rtl"
    weight_memory: str = "auto"
    task: str = "denoise"
    max_read_noise_e: float | None = None


def make_bundle(
    out_dir: str | Path, spec: BundleRecipe, progress: Progress = _noop, overwrite: bool = False,
) -> Bundle:
    """Train, quantize, export, compile with FINN and package a model bundle.

    Stages: float training on simulated scenes through random cameras (in the GAT-residual
    signal representation) -> QAT from the float checkpoint -> QONNX export (Brevitas ==
    QONNX checked) -> finn-plus build to folded hardware layers and estimates ->
    hardware-layer export for the host -> chain-of-custody verification ->
    ``manifest.json``. The bundle is built in a hidden sibling folder and renamed into
    place at the end, so an interrupted run never leaves a half bundle under ``out_dir``.

    Every argument is checked before any work: the recipe, the board, Vivado for a
    bitstream, and the output folder, which must not exist (or be empty) unless
    ``overwrite`` is given, and then only an earlier bundle is replaced.
    """
    from fluorofpga.boards import load_board
    from fluorofpga.quantize import get_recipe

    recipe = get_recipe(spec.recipe)  # ValueError naming the known recipes
    load_board(spec.board)  # ValueError naming the known boards
    from fluorofpga.host.bundle import TASKS

    if spec.task not in TASKS:
        raise ValueError(f"unknown task {spec.task!r}; choose one of {', '.join(TASKS)}")
    if spec.task == "sim" and spec.self_supervised:
        raise ValueError("self-supervised fine-tuning is for denoisers, not SIM bundles")
    if int(spec.finetune_steps) != spec.finetune_steps or spec.finetune_steps < 0:
        raise ValueError(f"finetune_steps must be an integer >= 0, got {spec.finetune_steps!r}")
    if spec.max_read_noise_e is not None and not (0.5 < spec.max_read_noise_e <= 100):
        raise ValueError("max_read_noise_e must be in (0.5, 100] e-, got "
                         f"{spec.max_read_noise_e!r}")
    if spec.finetune_steps and not spec.init_float:
        raise ValueError("finetune_steps fine-tunes the float checkpoint given as init_float; "
                         "without one, train_steps trains from scratch")
    if spec.bitfile:  # refuse before minutes of training, not after
        from fluorofpga.hw import require_vivado

        require_vivado("Building a bitstream for the bundle")
    out = Path(out_dir)
    _check_bundle_output(out, overwrite)

    import torch

    from fluorofpga.models import (
        SIM_CAMERAS,
        CameraRange,
        DenoiserConfig,
        TrainConfig,
        save_checkpoint,
        train_denoiser,
        training_data,
    )
    from fluorofpga.quantize import export_to_qonnx, quantize_from_float

    user = _self_supervised_codes(spec) if spec.self_supervised else None
    work = out.absolute().with_name(f".{out.absolute().name}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.perf_counter()

    def train_progress(step: int, total: int, loss: float) -> None:
        progress("train", step, total, f"loss {loss:.2e}")

    if user is None:
        sim = spec.task == "sim"
        model_cfg = (DenoiserConfig(channels=spec.channels, depth=spec.depth,
                                    signal=SignalSpec.direct(), in_frames=3, upscale=2)
                     if sim else DenoiserConfig(channels=spec.channels, depth=spec.depth))
        if spec.init_float:
            from fluorofpga.models import load_float_model

            float_model = load_float_model(spec.init_float)
            model_cfg = float_model.config
            if (model_cfg.in_frames > 1) != sim:
                raise ValueError(f"{spec.init_float} holds a network with "
                                 f"{model_cfg.in_frames} input frame(s): it is not a "
                                 f"{spec.task} network")
        cameras = SIM_CAMERAS if sim else CameraRange()
        if model_cfg.signal.max_dark_z is None:  # the dark level every net is trained below
            model_cfg = dataclasses.replace(model_cfg, signal=dataclasses.replace(
                model_cfg.signal, max_dark_z=round(cameras.max_dark_z(), 4)))
            if spec.init_float:
                float_model.config = model_cfg
        if spec.max_read_noise_e is not None:
            cameras = dataclasses.replace(cameras, read_noise_e=(
                cameras.read_noise_e[0], float(spec.max_read_noise_e)))
        tcfg = TrainConfig(steps=spec.train_steps, seed=spec.seed, model=model_cfg,
                           n_scenes=spec.scenes, cameras=cameras,
                           **({"scene_size": 96} if sim else {}))
        if spec.init_float:
            train_log: dict[str, Any] = {"loss": []}
            if spec.finetune_steps:
                from fluorofpga.models import fit

                train_log["loss"] = fit(float_model, training_data(tcfg, spec.seed + 5),
                                        spec.finetune_steps, tcfg.batch_size, tcfg.crop,
                                        tcfg.lr / 4, train_progress)
        else:
            float_model, train_log = train_denoiser(tcfg, train_progress)
        qat_data: Any = training_data(tcfg, spec.seed + 1)
        train_info: dict[str, Any] = {"cameras": tcfg.cameras.to_dict(), "data": (
            "simulated only (microscope room): "
            + ("3-frame SIM (3 angles x 1 phase) of cell-like scenes and textures, random "
               "optics, pattern frequency, modulation, directions, phases and angle errors"
               if sim else "cell-like scenes and textures, random optics: half NA "
               "0.8-1.45 at 60-130 nm pixels, half NA 0.3-1.45 at 60-650 nm"))}
        train_dict, crop = tcfg.to_dict(), tcfg.crop
    else:
        from fluorofpga.models import BlindSpotFrames, fit, load_float_model

        codes, info = user
        init = _denoise_bundle(spec.init_bundle)
        float_model = load_float_model(init.file("float_checkpoint"))
        model_cfg = float_model.config
        crop = min(48, codes.shape[-1], codes.shape[-2])
        torch.manual_seed(spec.seed)
        history = fit(float_model, BlindSpotFrames(codes, model_cfg.signal, seed=spec.seed),
                      spec.train_steps, 16, crop, 5e-4, train_progress)
        train_log = {"loss": history}
        qat_data = BlindSpotFrames(codes, model_cfg.signal, seed=spec.seed + 1)
        train_info = {"self_supervised": {**info, "init_bundle": init.name,
                                          "method": "blind spot (N2V), synthetic-noise "
                                          "replacement in the GAT domain"}}
        train_dict = {"self_supervised": info, "steps": spec.train_steps}
    save_checkpoint(work / "float.pt", float_model, model_cfg, kind="float", train=train_dict)

    def qat_progress(step: int, total: int, loss: float) -> None:
        progress("qat", step, total, f"loss {loss:.2e}")

    torch.manual_seed(spec.seed)
    qmodel, qat_log = quantize_from_float(float_model, recipe, qat_data, spec.qat_steps,
                                          crop=crop, progress=qat_progress)
    save_checkpoint(work / "quant.pt", qmodel, model_cfg, kind="quant", recipe=recipe.to_dict())
    qonnx_path = export_to_qonnx(qmodel, work / "model.qonnx.onnx", (spec.tile, spec.tile))

    hw_cfg = bundle_build_config(spec.board, spec.tile, model_cfg.halo, spec.target_mpix_per_s,
                                 recipe.io_bits, spec.mvau_impl, spec.weight_memory)
    result = _compile_hw(qonnx_path, work, hw_cfg, progress)

    signal = model_cfg.signal
    if user is not None:  # fine-tuned on the user's codes, coded by the init bundle
        signal = dataclasses.replace(signal, max_dark_z=init.signal.max_dark_z)
    manifest = {
        "format": FORMAT,
        "version": MANIFEST_VERSION,
        "name": spec.name,
        "task": "sim" if model_cfg.in_frames > 1 else "denoise",
        "created_by": f"fluorofpga {__version__}",
        "network": {"arch": "PlainDenoiser", "channels": model_cfg.channels,
                    "depth": model_cfg.depth, "receptive_field": model_cfg.receptive_field,
                    "params": model_cfg.params, "macs_per_pixel": model_cfg.macs_per_pixel},
        "recipe": recipe.to_dict(),
        "signal": signal.to_dict(),
        **_io_manifest(signal, model_cfg),
        "tile": {"height": spec.tile, "width": spec.tile, "halo": model_cfg.halo},
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
            "steps": spec.finetune_steps if spec.init_float else spec.train_steps,
            "init_float": spec.init_float,
            "final_loss": float(np.mean(train_log["loss"][-50:])) if train_log["loss"] else None,
            "qat_steps": spec.qat_steps,
            "qat_final_loss": float(np.mean(qat_log[-50:])) if qat_log else None,
            "seed": spec.seed, **train_info,
        },
        "recipe_spec": asdict(spec),
    }
    _seal_and_verify(work, manifest, spec.seed, t0, progress)
    if spec.bitfile:  # pragma: no cover - needs Vivado
        _build_bitstream_into(work, spec, progress)
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return load_bundle(out)


def _build_bitstream_into(work: Path, spec: Any, progress: Progress
                          ) -> None:  # pragma: no cover - needs Vivado
    """Build the board design of the sealed bundle in ``work`` with Vivado and put its
    bitstream into the bundle: ``fluorofpga compile --bitfile`` for the bundle's board at
    its target rate (a 2048² camera), then what ``deploy --bitstream`` does."""
    from fluorofpga.hw.compile import BITSTREAM_NAME, compile_for_camera

    bundle = load_bundle(work)
    side = 2048
    progress("bitstream", 0, 1, "Vivado: board design and bitstream")
    r = compile_for_camera(bundle.file("qonnx"), work / "vivado_build", board=spec.board,
                           fps=spec.target_mpix_per_s * 1e6 / side**2, frame=(side, side),
                           bitfile=True, **compile_inputs(bundle))
    _put_bitstream(work, r.vivado_dir / "output" / f"{BITSTREAM_NAME}.bit")
    progress("bitstream", 1, 1, "in bundle")


#: the raw frames of a 3-frame SIM bundle, in input-channel order
SIM3_ORDER = "3 angles x 1 phase, angle-major: channel a = angle a (PYX axes)"


def _io_manifest(signal: Any, model_cfg: Any) -> dict[str, Any]:
    """The manifest's ``input`` and ``output`` entries of a denoiser or SIM network."""
    if model_cfg.in_frames == 1:
        return {"input": {"bits": signal.in_bits, "signed": False, "meaning": "GAT code",
                          "frames": 1, "order": None, "axes": "YX"},
                "output": {"bits": signal.out_bits, "signed": False,
                           "meaning": "noise residual code", "upscale": 1, "axes": "YX"}}
    return {"input": {"bits": signal.in_bits, "signed": False,
                      "meaning": "GAT code of each raw frame", "frames": model_cfg.in_frames,
                      "order": SIM3_ORDER, "axes": "PYX", "layout": "channels-last tiles"},
            "output": {"bits": signal.out_bits, "signed": False,
                       "meaning": "clean GAT code of each sub-pixel (gat-direct)",
                       "upscale": model_cfg.upscale, "axes": "YX",
                       "subpixels": "channel 2*dy+dx is fine pixel (2y+dy, 2x+dx)",
                       "units": "ADU of the raw frames (a uniform region: the widefield "
                                "value)"}}


def bundle_build_config(board: str, tile: int, halo: int, target_mpix_per_s: float,
                        io_bits: int = 8, mvau_impl: str = "rtl", weight_memory: str = "auto"
                        ) -> Any:
    """The FINN build configuration of a bundle (RTL MVAUs get an unbounded weight-stream
    width: their folding is limited by DSPs, not by FINN's HLS stream cap)."""
    from fluorofpga.hw import BuildUntil, HwBuildConfig

    cfg = HwBuildConfig(board=board, tile=tile, halo=halo, target_mpix_per_s=target_mpix_per_s,
                        io_bits=io_bits, mvau_impl=mvau_impl, weight_memory=weight_memory,
                        until=BuildUntil.ESTIMATES)
    if cfg.mvau_impl.value == "rtl":
        cfg.mvau_wwidth_max = 1 << 20
    return cfg


def _compile_hw(qonnx_path: Path, work: Path, hw_cfg: Any, progress: Progress) -> Any:
    """FINN build into ``work/finn`` and the hardware-layer graph into ``work/hw``."""
    from fluorofpga.hw import build, export_hw_layers

    progress("compile", 0, 1, "FINN build")
    result = build(qonnx_path, work / "finn", hw_cfg)
    export_hw_layers(result.hw_model, work / "hw")
    progress("compile", 1, 1, f"{result.seconds:.0f} s")
    return result


def _seal_and_verify(work: Path, manifest: dict[str, Any], seed: int, t0: float,
                     progress: Progress) -> None:
    """Checksums, chain-of-custody verification and the final manifest of ``work``."""
    manifest["sha256"] = {key: hashlib.sha256((work / rel).read_bytes()).hexdigest()
                          for key, rel in manifest["files"].items() if (work / rel).is_file()}
    manifest.pop("verification", None)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
    progress("verify", 0, 1, "chain of custody")
    manifest["verification"] = verify_bundle(load_bundle(work), seed=seed, progress=progress)
    manifest["seconds"] = time.perf_counter() - t0
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
    progress("verify", 1, 1, "bit-exact" if manifest["verification"]["bit_exact"] else "FAILED")


def rebuild_hardware(bundle_path: str | Path, target_mpix_per_s: float | None = None,
                     board: str | None = None, mvau_impl: str = "rtl",
                     weight_memory: str = "auto", progress: Progress = _noop) -> Bundle:
    """Redo a bundle's FINN build (its QONNX unchanged) and its verification, in place.

    For a new board, throughput target or implementation choice without retraining. The
    new bundle is assembled in a hidden sibling folder and renamed over the old one only
    when it verified bit-exactly; a failure leaves the old bundle untouched.
    """
    from fluorofpga.boards import load_board

    old = load_bundle(bundle_path)
    board = board or old.manifest["build"]["board"]
    load_board(board)
    b = old.manifest["build"]
    hw_cfg = bundle_build_config(board, int(old.tile_shape[0]), int(old.halo),
                                 target_mpix_per_s or float(b["target_mpix_per_s"]),
                                 int(b.get("io_bits", 8)), mvau_impl, weight_memory)
    t0 = time.perf_counter()
    work = old.path.absolute().with_name(f".{old.path.name}.rebuild")
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(old.path, work, ignore=shutil.ignore_patterns("finn", "hw"))
    result = _compile_hw(work / old.manifest["files"]["qonnx"], work, hw_cfg, progress)
    manifest = dict(old.manifest)
    manifest.update(board=board, build=hw_cfg.to_dict(), estimates=result.estimates)
    manifest.setdefault("recipe_spec", {}).update(board=board, mvau_impl=mvau_impl,
                                                  weight_memory=weight_memory,
                                                  target_mpix_per_s=hw_cfg.target_mpix_per_s)
    _seal_and_verify(work, manifest, int(manifest.get("training", {}).get("seed", 0)), t0,
                     progress)
    if not manifest["verification"]["bit_exact"]:
        raise RuntimeError(f"the rebuilt hardware of {old.name} is not bit-exact; the bundle "
                           f"was left unchanged (see {work})")
    backup = old.path.absolute().with_name(f".{old.path.name}.old")
    if backup.exists():
        shutil.rmtree(backup)
    old.path.rename(backup)
    work.rename(old.path)
    shutil.rmtree(backup)
    return load_bundle(old.path)


def _self_supervised_codes(spec: BundleRecipe) -> tuple[np.ndarray, dict[str, Any]]:
    """The user's stack as input codes of the shipped representation, with what was done."""
    from fluorofpga.microscope import NoiseModel, SignalTables, estimate_noise

    stack, meta = _read_input(spec.self_supervised)
    planes = stack.reshape(-1, *stack.shape[-2:])
    if min(planes.shape[-2:]) < 32:
        raise ImageFormatError(f"{spec.self_supervised}: frames of {planes.shape[-2:]} are too "
                               "small to fine-tune on (need ≥ 32×32)")
    signal = _denoise_bundle(spec.init_bundle).signal  # its codes, dark shift included
    if spec.calibration:
        from fluorofpga.microscope import load_calibration
        from fluorofpga.microscope.signal import PixelMaps

        cal = load_calibration(spec.calibration)
        cal.check_shape(planes.shape[1:])
        noise = NoiseModel.from_calibration(cal, extra_rounding=True)
        maps = PixelMaps(cal)
        planes = np.stack([maps.to_uniform(p) for p in planes])
    else:
        noise = estimate_noise(planes).model
    codes = SignalTables(signal, noise).encode(planes)
    return codes, {"stack": str(spec.self_supervised), "axes": meta.axes,
                   "planes": len(planes),
                   "noise": noise.to_dict()}


def _denoise_bundle(path: str | Path | None) -> Bundle:
    """Load a bundle that must be a denoiser (a SIM bundle is refused, naming ``sim``)."""
    bundle = load_bundle(path)
    if bundle.task != "denoise":
        raise ValueError(f"{bundle.path}: bundle {bundle.name} is a {bundle.task} "
                         f"reconstructor ({bundle.frames} raw frames -> {bundle.upscale}x "
                         "image), not a denoiser; run it with `fluorofpga sim --model`")
    return bundle


def _check_bundle_output(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that would lose data: only an old bundle may be replaced."""
    _check_output_folder(out, overwrite, MANIFEST, "the bundle", "a model bundle")


# ------------------------------------------------------------------ chain of custody


def verify_bundle(bundle: Bundle, n_images: int = 2, seed: int = 0,
                  progress: Progress = _noop) -> dict[str, Any]:
    """Run every stage of the bundle on the same integer tiles and compare integers.

    Stages: Brevitas (quantized checkpoint) -> QONNX -> every verified FINN intermediate
    model -> host emulator. Inputs (:func:`sample_tiles`) are simulated camera tiles
    encoded like real ones *and* full-range tiles that reach the top thresholds, zero and
    saturation. Returns ``{"bit_exact": bool, "stages": {name: mismatching pixels},
    "images": tiles compared, "output_range": [min, max] of the reference output,
    "thresholds_exercised": {MultiThreshold: fraction of its thresholds that the tiles put
    inputs on both sides of} (and the same for the camera tiles alone)}``. ``progress``
    is called once per tile and stage (a full-size bundle takes minutes).
    """
    import torch

    from fluorofpga.hw import VERIFIED_STEPS, execute_int, threshold_coverage
    from fluorofpga.models import load_checkpoint
    from fluorofpga.quantize import QuantDenoiser, run_qonnx_int

    if bundle.is_wiener:
        from fluorofpga.quantize.wiener import load_wiener_filter

        qmodel = load_wiener_filter(bundle.file("quant_checkpoint"))
    else:
        config, payload = load_checkpoint(bundle.file("quant_checkpoint"))
        qmodel = QuantDenoiser(config, payload["recipe"]["name"])
        qmodel.load_state_dict(payload["state_dict"])
        qmodel.eval()
    acc = bundle.accelerator("emulate")
    finn_dir = bundle.file("finn_build") / "intermediate_models"
    stages: dict[str, int] = {}
    tiles = sample_tiles(bundle, n_images, seed)
    lo, hi = None, None
    for t, x in enumerate(tiles):  # (H, W) denoiser tiles, (P, H, W) SIM tiles
        progress("verify", t, len(tiles), f"tile {t + 1}/{len(tiles)}: QONNX, Brevitas, "
                 f"{len(VERIFIED_STEPS)} FINN stages, emulator")
        ref = run_qonnx_int(bundle.file("qonnx"), x)
        batch = x[None, None] if x.ndim == 2 else x[None]
        brevitas = qmodel.forward_int(torch.from_numpy(batch.astype(np.int64))).numpy()[0]
        results = {"brevitas": brevitas[0] if x.ndim == 2 else brevitas, "qonnx": ref}
        for step in VERIFIED_STEPS:
            results[f"finn:{step}"] = execute_int(finn_dir / f"{step}.onnx", x)
        emulated = acc.run(x if x.ndim == 2 else np.ascontiguousarray(np.moveaxis(x, 0, -1)))
        results["host:emulate"] = (emulated if x.ndim == 2 else np.moveaxis(emulated, -1, 0)
                                   ).astype(np.int64)
        for name, y in results.items():
            stages[name] = stages.get(name, 0) + int(np.count_nonzero(y != ref))
        lo = int(ref.min()) if lo is None else min(lo, int(ref.min()))
        hi = int(ref.max()) if hi is None else max(hi, int(ref.max()))
    progress("verify", len(tiles), len(tiles), "threshold coverage")
    streamlined = finn_dir / "step_streamline.onnx"
    coverage = {name: c["exercised"] for name, c in
                threshold_coverage(streamlined, tiles, bundle.in_bits).items()}
    camera_only = {name: c["exercised"] for name, c in
                   threshold_coverage(streamlined, tiles[:n_images],
                                      bundle.in_bits).items()}
    return {"bit_exact": all(v == 0 for v in stages.values()), "stages": stages,
            "images": len(tiles), "output_range": [lo, hi],
            "thresholds_exercised": coverage, "thresholds_exercised_camera_only": camera_only}


def sample_tiles(bundle: Bundle, n: int, seed: int) -> list[np.ndarray]:
    """Integer input tiles that exercise the whole input range, for the chain of custody.

    ``n`` tiles cut from simulated camera frames encoded with the bundle's tables (the
    simulated camera's noise model), and as many full-range tiles again: uniform random
    codes, a smooth random field spanning zero to the top code with fine texture, and
    a coarse checkerboard of zeros and top codes, isolated top codes and zeros on a ramp,
    plus one all-zero and one all-top tile.
    Camera tiles alone use a third of the range: a changed weight or shifted upper
    threshold can hide there; the full-range tiles drive activations to their top
    thresholds and to saturation.
    """
    from scipy.ndimage import gaussian_filter

    th, tw = bundle.tile_shape
    top = (1 << bundle.in_bits) - 1
    frames = bundle.frames
    if bundle.is_wiener:  # demodulated channels of simulated 9-frame groups
        from fluorofpga.simhw import wiener_camera_tiles

        tiles = wiener_camera_tiles(bundle, n, seed + 1000)
    elif frames == 1:
        tables = bundle.tables(simulated_camera_noise())
        src = SimulatedCameraSource(n, (max(th, 256), max(tw, 256)), seed=seed + 1000)
        tiles = [tables.encode(frame)[:th, :tw] for _, frame in src]
    else:
        tables = bundle.tables(simulated_camera_noise())
        tiles = [tables.encode(group)[:, :th, :tw]
                 for group in _sim_camera_groups(n, frames, (th, tw), seed + 1000)]
    rng = np.random.default_rng(seed + 2000)
    dtype = tiles[0].dtype
    shape = (th, tw) if frames == 1 else (frames, th, tw)
    for i in range(max(n, 1)):
        field = gaussian_filter(rng.standard_normal(shape), 2.0 + 2 * i,
                                axes=(-2, -1))
        field = (field - field.min()) / max(float(np.ptp(field)), 1e-12) * top
        field += rng.normal(0, top / 16, shape)
        tiles.append(np.clip(np.rint(field), 0, top).astype(dtype))
        tiles.append(rng.integers(0, top + 1, shape).astype(dtype))
    yy, xx = np.indices((th, tw))
    tiles.append(np.broadcast_to(((yy // 3 + xx // 3) % 2) * top, shape).astype(dtype))
    # isolated top codes and zeros on a ramp: the largest residuals a denoiser predicts
    # (its output's top codes, which the smooth and random tiles need not reach)
    ramp = (xx * top) // max(tw - 1, 1)
    spikes = (yy % 5 == 0) & (xx % 5 == 0)
    for value in (top, 0):
        tiles.append(np.broadcast_to(np.where(spikes, value, ramp), shape).astype(dtype))
    tiles.append(np.zeros(shape, dtype))
    tiles.append(np.full(shape, top, dtype))
    return tiles


def _sim_camera_groups(n: int, frames: int, tile: tuple[int, int], seed: int
                       ) -> list[np.ndarray]:
    """``n`` raw 3-frame SIM groups (3 angles x 1 phase) of cell-like scenes recorded by
    the simulated camera at 20 to 2000 photons, cropped to ``tile``."""
    from fluorofpga.microscope import (
        SCMOSCamera,
        make_pattern,
        render_specimen,
        simulate_sim,
    )

    rng = np.random.default_rng(seed)
    h, w = max(tile[0], 64), max(tile[1], 64)
    groups = []
    for i in range(n):
        pattern = make_pattern(n_angles=frames, n_phases=1, k_fraction=0.85,
                               start_angle_rad=float(rng.uniform(0, np.pi)),
                               phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, frames)))
        specimen = render_specimen((2 * h, 2 * w), rng, filaments=h // 6, puncta=h, nuclei=1)
        peak = float(20.0 * 100.0 ** (i / max(n - 1, 1)))
        data = simulate_sim(specimen, pattern, peak_photons=peak, camera=SCMOSCamera(),
                            rng=rng)
        groups.append(data.raw[:, : tile[0], : tile[1]])
    return groups


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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Stream a simulated sCMOS sequence through the accelerator; write TIFF, PNG, JSON.

    Writes ``restored.tif`` (TYX uint16 ADU, with the simulated pixel size),
    ``report.png`` (noisy | restored | truth) and, last, ``report.json``. With
    ``camera_fps`` the camera is paced like a real one and frames that arrive while the
    pipeline is full are dropped and counted; without it the pipeline blocks (nothing
    dropped).

    Everything is checked before streaming: the output folder (its parent must exist and
    be writable), the bundle (a damaged one is refused), and the files of a previous run
    in ``out_dir``, which are refused unless ``overwrite``, and then removed before the
    new run starts (never mixed with it). Frames are written as they come into
    ``restored.partial.tif``, renamed ``restored.tif`` only when the stream completed;
    if the run is interrupted (Ctrl-C) or fails, the partial file stays, clearly named,
    and no report is written.

    Raises:
        OutputError, BundleError: (``ValueError`` subclasses) before anything is written.
    """
    from fluorofpga.host.sinks import KeepOpen, partial_path
    from fluorofpga.microscope import ImageMeta, OutputError, atomic_write

    out = Path(out_dir)
    restored_path = out / "restored.tif"
    outputs = [restored_path, out / "report.png", out / "report.json"]
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another output folder")
    previous = [p for p in (*outputs, partial_path(restored_path)) if p.exists() or p.is_symlink()]
    if previous and not overwrite:
        raise OutputError(
            f"{out} holds the files of a previous run ({', '.join(p.name for p in previous)}); "
            "choose another output folder or pass --overwrite to replace them"
        )
    if out.is_dir():
        for path in outputs:
            check_output(path, overwrite=True)  # the folder is writable, no folder in the way
    else:
        check_output(out)  # its parent exists and is writable
    bundle = _denoise_bundle(bundle_path)  # a damaged bundle is refused before any work
    source = SimulatedCameraSource(frames, (size, size), seed=seed, fps=camera_fps)
    noise = simulated_camera_noise()  # the simulated camera is calibrated by construction
    pixel_um = getattr(source.microscope, "pixel_size_nm", None)
    meta = ImageMeta("TYX", *((pixel_um / 1000.0,) * 2 if pixel_um else (None, None)))
    with bundle.accelerator(backend) as acc:  # a bad backend or no board: refused here
        process = bundle.restorer(acc, noise)
        out.mkdir(exist_ok=True)
        for path in previous:  # the user asked to replace the previous run: all of it, now
            path.unlink()
        sink = TiffSink(restored_path, meta, expected_frames=frames, overwrite=overwrite)
        try:
            pipeline = StreamPipeline(
                source, process, KeepOpen(sink), queue_size=4,
                drop_policy="drop-oldest" if camera_fps else "block",
                progress=lambda s: progress("stream", s.frames_out, frames, f"{s.fps:.1f} fps"),
            )
            stats: StreamStats = pipeline.run()
        except BaseException:
            sink.abort()  # what was streamed stays in restored.partial.tif; no report
            raise
        sink.close()  # complete: restored.partial.tif -> restored.tif
    restored = read_tiff(restored_path)
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
        bundle, noise, [noisy_frames[i] for i in kept[:check_frames]], restored[:check_frames]
    )
    report = {
        "complete": True,
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
        "latency_ms_p50": stats.latency_ms_p50,
        "latency_ms_p95": stats.latency_ms_p95,
        "latency_ms_p99": stats.latency_ms_p99,
        "camera_fps": camera_fps,
        "psnr_noisy": float(np.mean(p_noisy)),
        "psnr_restored": float(np.mean(p_rest)),
        "ssim_noisy": float(np.mean(s_noisy)),
        "ssim_restored": float(np.mean(s_rest)),
        "bit_exact": bit_exact,
        "bit_exact_frames_checked": checked,
        "bit_exact_reference": reason,
        "counts": process.counts.to_dict(),
        "metadata": meta.as_dict(),
        "estimates": bundle.manifest.get("estimates"),
    }
    _report_png(out / "report.png", noisy_frames[kept[0]], restored[0], truth[kept[0]], report)
    text = json.dumps(report, indent=2).encode()
    atomic_write(out / "report.json", lambda fh: fh.write(text))  # last: the run is complete
    return report


def _check_against_qonnx(
    bundle: Bundle, noise: Any, noisy: list[np.ndarray], restored: np.ndarray
) -> tuple[bool | None, int, str]:
    """Recompute restored frames with the bundle's QONNX model (same tables, same tiling).

    Returns ``(bit_exact, frames checked, reference)``; ``bit_exact`` is ``None`` (with
    the reason) when nothing was compared: no frame to check, no qonnx installed (board),
    or a bundle without a loadable QONNX model. It is never ``True`` for zero frames.
    """
    if not noisy:
        return None, 0, "not checked (no frame requested)"
    try:
        from qonnx.core.modelwrapper import ModelWrapper

        from fluorofpga.quantize import run_qonnx_int
    except ImportError as e:  # board install: no qonnx/torch
        return None, 0, f"not checked: {e}"
    from fluorofpga.host import Accelerator, BundleError

    try:
        qonnx_path = bundle.file("qonnx")
    except BundleError as e:
        return None, 0, f"not checked: {e}"
    try:
        model = ModelWrapper(str(qonnx_path))
    except Exception as e:  # onnx/protobuf parse errors have no common base class
        return None, 0, f"not checked: {qonnx_path} does not load ({type(e).__name__}: {e})"

    class QonnxAccelerator(Accelerator):
        name = "qonnx"

        def _compute(self, tile: np.ndarray) -> np.ndarray:
            return run_qonnx_int(model, tile).astype(np.uint8)

    spec = bundle.signal
    with QonnxAccelerator(bundle.tile_shape, spec.in_bits, spec.out_bits) as acc:
        reference = bundle.restorer(acc, noise)
        for frame, got in zip(noisy, restored, strict=False):
            if not np.array_equal(reference(frame), got):
                return False, len(noisy), "QONNX model (qonnx execute_onnx), same tiling"
    return True, len(noisy), "QONNX model (qonnx execute_onnx), same tiling"


def simulated_camera_noise() -> Any:
    """Noise model of the simulated camera (``SCMOSCamera()``), known exactly."""
    from fluorofpga.microscope import NoiseModel, SCMOSCamera

    cam = SCMOSCamera()
    return NoiseModel.from_camera(cam.gain_e_per_adu, cam.offset_adu, cam.read_noise_e)


def _report_png(
    path: Path, noisy: np.ndarray, restored: np.ndarray, truth: np.ndarray, report: dict
) -> None:
    """Write the noisy | restored | truth panel to ``path`` (PNG, atomically)."""
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
    try:
        fig.tight_layout()
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=80))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- denoise


def open_accelerator(bundle: Bundle, backend: str, progress: Progress = _noop) -> Any:
    """The bundle's accelerator for ``backend``: ``emulate`` and ``pynq`` from the host,
    ``rtlsim`` (the network's RTL in Verilator, :mod:`fluorofpga.hw.rtlsim_backend`:
    built and compiled on first use, then cached) from ``hw/``."""
    if backend == "rtlsim":
        from fluorofpga.hw.rtlsim_backend import RtlsimAccelerator

        return RtlsimAccelerator.from_bundle(
            bundle, progress=lambda msg: progress("rtlsim", 0, 0, msg))
    return bundle.accelerator(backend)


def denoise(
    in_path: str | Path,
    out_path: str | Path,
    bundle_path: str | Path | None = None,
    backend: str = "emulate",
    calibration: str | Path | None = None,
    dtype: str = "uint16",
    adc_max: int | None = None,
    overwrite: bool = False,
    axes: str | None = None,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Restore raw camera frames (TIFF or OME-Zarr) into ``out_path``, same axes.

    Any image whose last two axes are ``YX`` is accepted (``YX``, ``TYX``, ``ZYX``,
    ``CYX``, ``TCZYX``...): every plane is restored on its own and written back under the
    same axes with the same pixel size, units and frame interval. A file that does not
    name its axes (a plain 3-D TIFF) is refused unless ``axes`` says what they are. The
    output format
    follows ``out_path``'s suffix (``.tif``/``.tiff`` or ``.zarr``); ``dtype`` is
    ``"uint16"`` (rounded ADU, clipped values counted) or ``"float32"`` (ADU with the
    input's offset and gain, not rounded).

    The network sees the GAT code of every pixel: with ``calibration`` (a file from
    :func:`calibrate_camera`) its per-pixel maps are applied and its noise model used;
    without it the noise model is estimated from the frames themselves (the summary says
    so). Pixels at ``adc_max`` (default: 255 for 8-bit files, 65535 otherwise; 4095 for
    a 12-bit camera must be given) or above the code range pass through unchanged; counts
    of everything passed through or clipped are in the summary.

    Bad input (missing/unreadable/truncated file, float or RGB data, unknown axes, a
    calibration for another sensor, frames too small to estimate the noise, an output
    that exists without ``overwrite``) raises a ``ValueError`` subclass before anything
    is written.
    """
    from fluorofpga.host import OUTPUT_DTYPES

    in_path, out_path = Path(in_path), Path(out_path)
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"--dtype {dtype!r} not supported; choose one of {OUTPUT_DTYPES}")
    if out_path.suffix.lower() not in (".tif", ".tiff", ".zarr"):
        raise ImageFormatError(f"{out_path}: unknown output suffix (use .tif, .tiff or .zarr)")
    check_output(out_path, overwrite, [in_path])
    bundle = _denoise_bundle(bundle_path)
    stack, meta = _read_input(in_path, axes)
    adc_max = _adc_max_for(in_path, stack.dtype, adc_max)
    axes = meta.axes
    planes = stack.reshape(-1, *stack.shape[-2:])
    cal = None
    if calibration is not None:
        from fluorofpga.microscope import load_calibration

        cal = load_calibration(calibration)
        cal.check_shape(planes.shape[1:])
    noise, noise_info = _frames_noise(cal, calibration, planes, in_path, adc_max)
    t0 = time.perf_counter()
    restored = np.empty(planes.shape, np.dtype(dtype))
    with open_accelerator(bundle, backend, progress) as acc:
        process = bundle.restorer(acc, noise, cal, dtype, adc_max)
        for i, plane in enumerate(planes):
            restored[i] = process(plane)
            progress("denoise", i + 1, len(planes), "")
        counts = process.counts.to_dict()
    seconds = time.perf_counter() - t0
    low = below_zero_level(noise, cal)
    counts["below_zero_level"] = (0 if low is None else
                                  int(sum(np.count_nonzero(p < low) for p in planes)))
    result = restored.reshape(stack.shape)
    if out_path.suffix.lower() == ".zarr":
        write_ome_zarr(out_path, result, overwrite=overwrite, meta=meta)
    else:
        write_tiff(out_path, result, meta=meta)
    return {"frames": len(planes), "axes": axes, "shape": list(stack.shape),
            "seconds": seconds, "fps": len(planes) / seconds if seconds > 0 else None,
            "backend": backend, "bundle": bundle.name, "out": str(out_path), "dtype": dtype,
            "calibration": str(calibration) if calibration else None,
            "noise": noise_info, "counts": counts, "metadata": meta.as_dict(),
            "tables": {"max_adu_coded": bundle.tables(noise, adc_max).max_adu(),
                       "adc_max": adc_max}}


#: read-noise standard deviations below the camera's zero level at which a pixel is no
#: camera reading (a blank frame, data that lost the offset)
BELOW_ZERO_SIGMAS = 6.0


def below_zero_level(noise: Any, cal: Any = None) -> Any:
    """The ADU below which a pixel cannot be a reading of this camera: its zero-signal
    level minus :data:`BELOW_ZERO_SIGMAS` of its dark noise; per pixel (offset and read
    noise maps) with a calibration, else one value; None when the dark level is unknown.
    Such pixels are restored from the lowest input code; ``denoise`` counts them."""
    if cal is not None:
        sigma_map = np.maximum(np.asarray(cal.read_noise_adu, np.float64), 0.5)
        return np.asarray(cal.offset_adu, np.float64) - BELOW_ZERO_SIGMAS * sigma_map
    if noise.dark_adu is None:
        return None
    sigma = float(np.sqrt(max(float(noise.variance(noise.dark_adu)), 0.25)))
    return noise.dark_adu - BELOW_ZERO_SIGMAS * sigma


def _frames_noise(cal: Any, calibration: str | Path | None, planes: np.ndarray,
                  in_path: Path, adc_max: int = 65535) -> tuple[Any, dict[str, Any]]:
    """The noise model of a file's frames and where it came from: the calibration's, or
    estimated from ``planes`` (``(N, Y, X)``; an error names ``in_path``)."""
    from fluorofpga.microscope import NoiseModel, estimate_noise

    if cal is not None:
        noise = NoiseModel.from_calibration(cal, extra_rounding=True)
        return noise, {**noise.to_dict(), "from": f"calibration {calibration}"}
    try:
        estimate = estimate_noise(planes, adc_max=adc_max)
    except ValueError as e:
        raise type(e)(f"{in_path}: {e}") from None
    return estimate.model, {**estimate.summary(),
                            "from": "estimated from the frames (no calibration)"}


def _raw_counts(path: str | Path, stack: np.ndarray, purpose: str) -> np.ndarray:
    """``stack`` as raw camera counts, else ImageFormatError naming the problem.

    Unsigned integers pass; wider ones must fit 16 bits (sums of frames, rescaled data do
    not). Signed integers (some acquisition software writes int16 or int32 for a 12- or
    16-bit camera) are taken when no value is negative, as uint8 / uint16 (their pixel type
    then says the ADC range: int8 -> uint8, else uint16). Floats are refused: rescaled or
    processed data have lost the photon statistics. ``purpose`` completes "... needs the
    camera's raw counts" ("denoising", "calibration", "SIM reconstruction").
    """
    kind = stack.dtype.kind
    if kind not in "ui":
        raise ImageFormatError(
            f"{path}: {stack.dtype} data; {purpose} needs the camera's raw counts (uint8/"
            "uint16, or non-negative integers of 16 bits): rescaled or float images have "
            "lost the photon statistics")
    if stack.size == 0 or (kind == "u" and stack.dtype.itemsize <= 2):
        return stack
    low, top = int(stack.min()), int(stack.max())
    if low < 0:
        raise ImageFormatError(
            f"{path}: {stack.dtype} values down to {low}; raw counts of a camera are never "
            "negative: background-subtracted or offset-removed data have lost the camera's "
            "offset, which the noise model needs")
    if top > 65535:
        raise ImageFormatError(
            f"{path}: {stack.dtype} values up to {top}; raw counts of a camera's ADC fit "
            "16 bits (0-65535), which is what the signal tables cover: binned, summed "
            "or rescaled data have lost the camera's noise model")
    if kind == "u":
        return stack  # uint32 / uint64 within 16 bits, as before
    return stack.astype(np.uint8 if stack.dtype.itemsize == 1 else np.uint16)


def _adc_max_for(source: str | Path, dtype: np.dtype, adc_max: int | None) -> int:
    """The ADC saturation value for data of ``dtype``: ``adc_max`` when given (checked
    against what the data can hold), else 255 for 8-bit data and 65535 otherwise."""
    top = 255 if np.dtype(dtype).itemsize == 1 else 65535
    if adc_max is None:
        return top
    if not 1 <= adc_max <= 65535:
        raise ValueError(f"--adc-max must be in 1..65535 ADU, got {adc_max}")
    if adc_max > top:
        raise ValueError(
            f"{source}: --adc-max {adc_max} but the data are {np.dtype(dtype)} (at most "
            f"{top}): an 8-bit camera saturates at {top}, and with a larger value its "
            "saturated pixels would be restored as if they were not; leave --adc-max out")
    return int(adc_max)


def _read_input(path: str | Path, axes: str | None = None) -> tuple[np.ndarray, Any]:
    """Raw camera frames with their calibration: unsigned integers, last two axes ``YX``.

    ``axes`` names axes the file leaves unnamed (``Q``), e.g. ``"TYX"`` for a plain 3-D
    TIFF; it must agree with every axis the file does name.
    """
    stack, meta = read_image_meta(path)
    stack = _raw_counts(path, stack, "denoising")
    if axes is not None:
        axes = axes.upper()
        if len(axes) != stack.ndim or any(f not in ("Q", a) for f, a in
                                           zip(meta.axes, axes, strict=True)):
            raise ImageFormatError(f"{path}: --axes {axes!r} does not fit the file's axes "
                                   f"{meta.axes!r} (shape {stack.shape})")
        meta = meta.with_axes(axes)
    found = meta.axes
    if "Q" in found:
        raise ImageFormatError(
            f"{path}: the file does not say what its axes {found!r} (shape {stack.shape}) "
            "are: time points, Z slices or channels; give them with --axes (e.g. TYX)")
    if not found.endswith("YX") or not set(found[:-2]) <= set("TZC"):
        raise ImageFormatError(f"{path}: axes {found!r} for shape {stack.shape}; expected the "
                               "last two axes to be YX and the others among T, Z, C")
    return stack, meta


def calibrate_camera(
    dark_path: str | Path,
    flat_paths: list[str | Path],
    out_path: str | Path,
    qe: float | None = None,
    camera_serial: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Calibrate an sCMOS camera from a dark stack and >= 3 flat-field stacks.

    Offset and read-noise maps come from the dark stack, the gain from the photon
    transfer curve of the flats. Writes the calibration file to ``out_path`` (used by
    ``denoise --calibration``) atomically and returns its summary.

    Checked before any work: ``out_path`` ends in ``.npz``, is none of the inputs, does
    not exist unless ``overwrite``, and its folder exists and is writable. Each input
    (TIFF or OME-Zarr) must hold unsigned-integer camera counts as a stack of frames:
    axes ``TYX``, or ``QYX`` for a file that does not name its axes (a plain multi-page
    TIFF, whose planes are taken as repeated frames); Z stacks, channels and RGB are
    refused with the axes found. Physically inconsistent stacks (a dark not below the
    flats, flats at one exposure, a non-linear photon transfer curve) are refused by
    :func:`fluorofpga.microscope.calibrate`.

    Raises:
        OutputError, ImageFormatError, CalibrationError: all ``ValueError`` subclasses;
            nothing is written.
    """
    from fluorofpga.microscope import OutputError, calibrate

    out = Path(out_path)
    check_output(out, overwrite, [dark_path, *flat_paths])
    if out.suffix.lower() != ".npz":
        raise OutputError(
            f"{out}: a calibration file is an .npz archive; choose a name ending in .npz "
            "(e.g. camera_calibration.npz)"
        )

    def frames(path: str | Path, role: str) -> np.ndarray:
        stack, meta = read_image_meta(path)
        stack = _raw_counts(path, stack, f"calibration (the {role})")
        if stack.ndim != 3 or meta.axes not in ("TYX", "QYX"):
            hint = {"Z": "a Z stack is not a series of repeated exposures",
                    "C": "channels are not repeated exposures"}  # fmt: skip
            why = next((hint[a] for a in meta.axes[:-2] if a in hint), "")
            raise ImageFormatError(
                f"{path}: the {role} must be a stack of frames (axes TYX) but has axes "
                f"{meta.axes!r} with shape {stack.shape}" + (f"; {why}" if why else "")
            )
        return stack

    dark = frames(dark_path, "dark stack")
    flats = [frames(p, f"flat stack {i}") for i, p in enumerate(flat_paths)]
    cal = calibrate(dark, flats, qe=qe, camera_serial=camera_serial)
    cal.save(out)
    return cal.summary()


# --------------------------------------------------------------------------- compile

#: file that marks a folder written by ``compile`` (only such a folder is replaced)
COMPILE_REPORT = "report.json"


def _check_output_folder(out: Path, overwrite: bool, marker: str, what: str, kind: str
                         ) -> None:
    """Refuse an output folder that would lose data, before any work.

    Only a folder holding ``marker`` (``kind``, e.g. "a model bundle") may be replaced, and
    only with ``overwrite`` (``what`` names its content in the message); the parent must
    exist and be writable.

    Raises:
        OutputError: the reason, naming the folder and what to do.
    """
    from fluorofpga.microscope import OutputError

    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"{out} exists and is not empty; choose a new folder or pass "
                              f"--overwrite to replace {what} in it")
        if not (out / marker).is_file():
            raise OutputError(f"{out} is not {kind} (no {marker}); refusing to replace it "
                              "even with --overwrite")
    check_output(out.absolute().parent / f".{out.name}.probe", overwrite=True)


def parse_frame(frame: str) -> tuple[int, int]:
    """``"2048x2048"`` -> ``(2048, 2048)``; a clear ``ValueError`` otherwise."""
    parts = frame.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--frame {frame!r}: expected HEIGHTxWIDTH in pixels, e.g. 2048x2048")
    return int(parts[0]), int(parts[1])


def compile_inputs(bundle: Bundle) -> dict[str, Any]:
    """What :func:`~fluorofpga.hw.compile.compile_for_camera` needs to know of a bundle
    besides its QONNX: tile, halo, code widths, raw frames per input, upscaling and, for a
    Wiener-SIM bundle, the resources of its demodulation and linear pixel-in kernels."""
    from types import SimpleNamespace

    from fluorofpga.hw.compile import demod_resources

    wiener = bundle.is_wiener
    signal = (SimpleNamespace(in_bits=bundle.in_bits, out_bits=bundle.out_bits) if wiener
              else bundle.signal)
    return {"tile": bundle.tile_shape[0], "halo": bundle.halo, "signal": signal,
            "frames": bundle.frames, "upscale": bundle.upscale,
            "extra_kernels": demod_resources(bundle.frames // 3) if wiener else None,
            "demod": wiener}


def compile_bundle(
    out: str | Path,
    board: str,
    fps: float,
    frame: tuple[int, int],
    bundle_path: str | Path | None = None,
    max_utilisation: float = 0.85,
    bitfile: bool = False,
    overwrite: bool = False,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Compile a bundle's network for a camera on a board (``fluorofpga compile``).

    Folding chosen automatically for ``fps`` frames of ``frame`` pixels (RTL layers, at most
    one pixel per clock, weights in LUTRAM or BRAM per layer), resources with FINN's width
    converters and FIFOs and our pixel kernels, within ``max_utilisation`` of every
    resource; writes ``report.json``/``report.md`` and the ``vivado/`` build folder (see
    :mod:`fluorofpga.hw.compile`). Every argument is checked before any work; with
    ``bitfile`` a missing Vivado is refused at once.
    """
    from fluorofpga.boards import load_board
    from fluorofpga.hw import require_vivado
    from fluorofpga.hw.compile import CompileError, compile_for_camera

    out = Path(out)
    load_board(board)  # ValueError naming the known boards
    if not fps > 0:
        raise CompileError(f"--fps must be positive, got {fps}")
    if not 0 < max_utilisation <= 1:
        raise CompileError(f"--max-utilisation must be in (0, 1], got {max_utilisation}")
    bundle = load_bundle(bundle_path)
    _check_output_folder(out, overwrite, COMPILE_REPORT, "an earlier compile",
                         "a fluorofpga compile folder")
    if bitfile:
        require_vivado("Building the bitstream (`fluorofpga compile --bitfile`)")
    work = out.absolute().with_name(f".{out.absolute().name}.partial")
    if work.exists():
        shutil.rmtree(work)
    result = compile_for_camera(
        bundle.file("qonnx"), work, board=board, fps=fps, frame=frame,
        max_utilisation=max_utilisation, bitfile=bitfile,
        progress=lambda msg: progress("compile", 0, 0, msg), **compile_inputs(bundle))
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    report = dict(result.report)
    report["vivado_dir"] = str(out / "vivado")
    report["bundle"] = bundle.name
    (out / COMPILE_REPORT).write_text(json.dumps(report, indent=2))
    return report


# ------------------------------------------------------------------------------- sim

#: Raw frames per classical SIM reconstruction: 3 angles x 3 phases, angle-major.
SIM_ANGLES, SIM_PHASES = 3, 3
SIM_FRAMES = SIM_ANGLES * SIM_PHASES
#: Backends of ``sim``: the classical reconstruction runs on the CPU ("emulate");
#: the hardware ones need a SIM bundle (issue 9).
SIM_BACKENDS = ("emulate", "rtlsim", "pynq")
SIM_NEEDS_MODEL = ("needs a SIM bundle (--model): 3-frame SIM runs a learned reconstructor "
                   "(`fluorofpga train --task sim`), hardware backends a SIM bundle (that, or "
                   "a classical Wiener bundle from `fluorofpga sim-bundle`); without one the "
                   "classical 9-frame reconstruction runs on the CPU")
#: widefield cut-off 2NA/λ in cycles per camera pixel that the learned SIM networks were
#: trained on (models.SimTriplets): outside it the result is an extrapolation
SIM_TRAINED_CUTOFF = (0.25, 0.48)
_SIM_NA_RANGE = (0.1, 1.7)  # objectives, air to TIRF oil
_SIM_WAVELENGTH_NM = (300.0, 1200.0)  # fluorescence emission
_SIM_MAX_PIXEL_UM = 5.0  # in the sample plane; larger is a camera pixel or nm by mistake
_SIM_SQUARE_TOL = 1e-3  # relative difference of the Y and X pixel sizes still "square"
#: Wiener parameter of ``sim`` (``wiener_sim``'s default): ``"auto"`` is the MMSE filter
#: from the data's own noise and spectrum; a number ``w`` the classical filter (larger is
#: smoother and less noisy).
SIM_WIENER_W = "auto"


def _bundle_filter(bundle: Any) -> Any:
    """The filter a Wiener-SIM bundle was compiled with: ``w`` or its ``WienerPrior``."""
    from fluorofpga.microscope import WienerPrior

    rec = bundle.manifest["reconstruction"]
    if rec.get("wiener_prior") is not None:
        return WienerPrior.from_dict(rec["wiener_prior"])
    return float(rec["wiener_w"])


def _wiener_option(value: float | str) -> float | str:
    """``--wiener``: ``"auto"`` or a number > 0, else one clear error."""
    from fluorofpga.microscope.sim_recon import check_wiener_w

    try:
        return check_wiener_w(value)
    except ValueError:
        raise ValueError(f"--wiener {value!r}: 'auto' (the default: the MMSE filter from the "
                         "data's own noise) or a Wiener parameter w > 0 (larger is "
                         "smoother)") from None


class SimUnavailable(ValueError):
    """A ``sim`` option that needs what does not exist yet (a SIM bundle)."""


def _sim_raw_stacks(path: Path, stack: np.ndarray, axes: str, per: int = 9,
                    what: str = "") -> np.ndarray:
    """``(k, per, Y, X)`` raw SIM stacks of a ``QYX``/``TYX`` file, else ImageFormatError.

    ``per`` raw frames make one reconstruction (9: 3 angles × 3 phases; 3 for a 3-frame
    SIM bundle, described by ``what``).
    """
    what = what or f"{SIM_ANGLES} angles × {SIM_PHASES} phases"
    stack = _raw_counts(path, stack, "SIM reconstruction")
    if stack.ndim != 3 or axes not in ("QYX", "TYX"):
        hint = {"Z": "; a Z stack is not a series of raw SIM frames (if its planes are the "
                     "raw frames, as when Fiji saves a plain stack as slices, re-save them as "
                     "time frames: Image > Hyperstacks > Re-order Hyperstack)",
                "C": "; channels are not raw SIM frames (reconstruct one channel per file)"}
        why = next((hint[a] for a in axes[:-2] if a in hint), "")
        raise ImageFormatError(
            f"{path}: axes {axes!r} with shape {stack.shape}; a SIM raw file is a stack of "
            f"{per}·k frames (axes TYX or a plain multi-page stack){why}")
    if stack.shape[0] % per or stack.shape[0] == 0:
        hint = ""
        if per >= SIM_FRAMES and stack.shape[0] and stack.shape[0] % SIM_ANGLES == 0:
            hint = (f" (with more phases per angle say how many frames make one image: "
                    f"--frames {SIM_ANGLES * 5} for 3 angles × 5 phases)")
        raise ImageFormatError(
            f"{path}: {stack.shape[0]} frames is not a multiple of {per} "
            f"({what} per reconstruction); an incomplete acquisition cannot be "
            f"reconstructed{hint}")
    return stack.reshape(-1, per, *stack.shape[1:])


def _sim_optics(path: Path, meta: Any, na: float | None, wavelength_nm: float | None,
                pixel_size_um: float | None, fallback: dict[str, float] | None = None,
                ) -> tuple[dict[str, float], dict[str, str]]:
    """NA, wavelength (nm) and pixel size (nm) from the command line, else the file, else
    ``fallback`` (a hardware Wiener bundle's design optics, ``pixel_size_nm`` in nm)."""
    from fluorofpga.microscope import read_ome_optics

    stated = read_ome_optics(path)
    file_pixel = meta.pixel_size_um
    if file_pixel is not None and pixel_size_um is None and not np.isclose(
            file_pixel[0], file_pixel[1], rtol=_SIM_SQUARE_TOL, atol=0.0):
        raise ImageFormatError(
            f"{path}: pixels of {file_pixel[0]:g} × {file_pixel[1]:g} µm are not square; "
            "SIM reconstruction needs square pixels (give --pixel-size to override)")
    given = {"na": na, "wavelength_nm": wavelength_nm, "pixel_size_um": pixel_size_um}
    in_file = {**stated, "pixel_size_um": file_pixel[1] if file_pixel else None}
    optics, source = {}, {}
    for key, value in given.items():
        if value is not None:
            optics[key], source[key] = float(value), "command line"
        elif in_file.get(key) is not None:
            optics[key], source[key] = float(in_file[key]), "file metadata"
        elif fallback is not None:
            value = fallback["pixel_size_nm"] / 1e3 if key == "pixel_size_um" else fallback[key]
            optics[key], source[key] = float(value), "bundle design"
    wanted = (("na", "the objective NA", "--na NA"),
              ("wavelength_nm", "the emission wavelength", "--wavelength NM (nm)"),
              ("pixel_size_um", "the pixel size", "--pixel-size UM (camera pixel in the "
               "sample plane, µm)"))
    missing = [(what, flag) for key, what, flag in wanted if key not in optics]
    if missing:
        raise ValueError(
            f"{path}: the file's metadata does not state {' or '.join(w for w, _ in missing)}; "
            f"give {', '.join(f for _, f in missing)}")
    checks = (("na", "--na", *_SIM_NA_RANGE, ""),
              ("wavelength_nm", "--wavelength", *_SIM_WAVELENGTH_NM, " nm"),
              ("pixel_size_um", "--pixel-size", 0.0, _SIM_MAX_PIXEL_UM, " µm"))
    for key, flag, low, high, unit in checks:
        value = optics[key]
        if not (np.isfinite(value) and low < value <= high):
            where = flag if source[key] == "command line" else f"the file's {key}"
            hint = " (in µm: 65 nm is 0.065)" if key == "pixel_size_um" else ""
            raise ValueError(f"{where} = {value:g}{unit} is outside ({low:g}, {high:g}]"
                             f"{unit}{hint}")
    return {"na": optics["na"], "wavelength_nm": optics["wavelength_nm"],
            "pixel_size_nm": 1e3 * optics["pixel_size_um"]}, source


def _sim_output_meta(meta: Any, pixel_size_nm: float | None, axes: str, n_out: int,
                     per: int = SIM_FRAMES) -> Any:
    """The input's calibration on the 2x grid: pixel size halved, frame interval per image
    (``per`` raw frames each); no pixel size stays none."""
    from dataclasses import replace

    from fluorofpga.microscope import ImageMeta

    unit_um = ImageMeta("YX", 1.0, 1.0, spatial_unit=meta.spatial_unit).pixel_size_um[0]
    size = None if pixel_size_nm is None else pixel_size_nm / 1e3 / unit_um / 2
    interval = None if meta.frame_interval is None or n_out == 1 else (
        meta.frame_interval * per)
    return replace(meta, axes=axes, pixel_size_y=size, pixel_size_x=size,
                   frame_interval=interval)


def _sim_param_rows(params: Any, optics: dict[str, float]) -> list[dict[str, Any]]:
    """One JSON-ready row per angle: frequency, period, direction, phase, modulation."""
    from fluorofpga.microscope import cutoff_cycles_per_px

    cutoff = cutoff_cycles_per_px(**optics)
    rows = []
    for a, p in enumerate(params):
        rows.append({
            "angle": a, "kx": p.kx, "ky": p.ky, "k_cycles_per_px": p.k_cycles_per_px,
            "k_fraction_of_cutoff": p.k_cycles_per_px / cutoff,
            "period_nm": optics["pixel_size_nm"] / p.k_cycles_per_px,
            "angle_deg": float(np.degrees(p.angle_rad)), "phase_rad": p.phase_rad,
            "modulation": p.modulation,
            "correlation": params.correlation[a] if params.correlation else None,
        })
    return rows


def sim(
    in_path: str | Path,
    out_path: str | Path,
    *,
    na: float | None = None,
    wavelength_nm: float | None = None,
    pixel_size_um: float | None = None,
    calibration: str | Path | None = None,
    frames: int | None = None,
    params: str | Path | None = None,
    save_params: str | Path | None = None,
    model: str | Path | None = None,
    backend: str = "emulate",
    reorder: bool = True,
    wiener_w: float | str = SIM_WIENER_W,
    overwrite: bool = False,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Classical 2-D SIM reconstruction of raw frame stacks onto the 2x grid.

    Input (TIFF or OME-Zarr): raw camera counts (uint8/uint16), ``9·k`` frames, axes
    ``TYX`` or a plain multi-page stack (``QYX``), i.e. ``k`` consecutive acquisitions of
    3 angles × 3 phases (a time series of SIM images). **Documented frame order:
    angle-major**, frame ``9 t + 3 a + j`` is phase ``j`` of angle ``a`` of image ``t``.
    Every stack's order is checked from the data: a phase-major stack (frame
    ``9 t + 3 j + a``) is read in that order with a note in ``notes`` (with ``reorder``
    False it is refused), any other order is a ``FrameOrderError``; nothing is
    reconstructed silently in the wrong order. ``frames`` = ``3·N`` (``N`` ≥ 3) reads
    acquisitions of 3 angles × ``N`` phases (e.g. 15: five phases per angle, frame
    ``15 t + 5 a + j``); the default is 9.

    Optics: ``na``, ``wavelength_nm`` (emission) and ``pixel_size_um`` (camera pixel in
    the sample plane) override the file's metadata (pixel size from ImageJ/OME/NGFF, NA
    and emission wavelength from OME-XML); what neither gives is an error.

    With ``calibration`` (from :func:`calibrate_camera`) the frames are mapped onto a
    uniform sensor (hot pixels repaired, per-pixel offset and gain) and reconstructed in
    photons (photoelectrons without a QE); without it the reconstruction is in the
    input's units, camera offset included.

    Parameters: estimated on every stack (``estimate_parameters``: 3 angles, frequency,
    phase, modulation); or loaded from ``params`` (a ``SimParameters`` JSON), which must
    have been estimated for this optics and frame size and must still fit the data
    (``check_parameters`` on the first and last stack: a pattern that moved or another
    pattern is an error). ``save_params`` writes the parameters used for the first stack.

    Output: float32 ``(2Y, 2X)`` (one image) or ``TYX`` with ``k`` images, pixel size
    halved, units kept, frame interval = 9 (``frames``) raw frame intervals; written atomically
    (``.tif``/``.tiff`` or ``.zarr``).

    ``wiener_w`` is the Wiener parameter ``w`` (> 0; larger is smoother and less noisy:
    ``benchmarks/sim.py`` finds 0.2 best at 100–500 peak photons and 0.8 at ~20, where the
    default 0.05, best at 2000, falls below widefield).

    With ``model`` (a SIM bundle, e.g. the learned 3-frame reconstructor) the raw frames
    are grouped by the bundle's ``frames`` (3: angle-major, one phase per angle) and
    reconstructed by its network on ``backend`` (``emulate``, ``rtlsim``, ``pynq``); no
    parameters are estimated, optics are optional (:func:`_sim_learned`). With a
    classical Wiener-SIM bundle (``fluorofpga sim-bundle``) the reconstruction above runs
    through the bundle's demodulation and filter on ``backend`` instead of ``wiener_sim``:
    parameters estimated (or loaded) as above and checked against the bundle's design,
    optics defaulting to the design's, ``wiener_w`` the bundle's. ``frames=3`` or a
    hardware backend without ``model`` raise :class:`SimUnavailable` before any work.

    Returns:
        summary: paths, shapes, optics and where they came from, per-stack parameters
        (``parameters[t]``: one row per angle), notes (frame order, weak patterns),
        seconds per stack for estimation and reconstruction.

    Raises:
        ValueError subclasses (``SimUnavailable``, ``OutputError``, ``ImageFormatError``,
        ``CalibrationError``, ``SimParametersError``/``SimParametersMismatch``,
        ``FrameOrderError``): nothing is written.
    """
    import warnings

    from fluorofpga.microscope import (
        FrameOrderError,
        FrameOrderWarning,
        SCMOSCamera,
        SimParameters,
        SimParametersMismatch,
        WeakPatternWarning,
        check_parameters,
        estimate_parameters,
        load_calibration,
        measure_wiener_prior,
        wiener_sim,
    )
    from fluorofpga.microscope.signal import PixelMaps
    from fluorofpga.microscope.sim_recon import wiener_label

    if backend not in SIM_BACKENDS:
        raise ValueError(f"--backend {backend!r} unknown; choose one of {SIM_BACKENDS}")
    if frames is not None and frames != 3 and (frames < SIM_FRAMES or frames % SIM_ANGLES):
        raise ValueError(f"--frames {frames}: SIM reconstructs from 3 angles × N phases "
                         f"(9, 12, 15, … raw frames; N ≥ {SIM_PHASES}) or, with a learned "
                         "model, 3")
    hw_bundle = load_bundle(model) if model is not None else None
    if hw_bundle is not None and hw_bundle.is_wiener:
        if wiener_w != SIM_WIENER_W:
            raise ValueError(f"--wiener: bundle {hw_bundle.name} was compiled with w = "
                             f"{hw_bundle.manifest['reconstruction']['wiener_w']}; build "
                             "another with `fluorofpga sim-bundle --wiener W`")
        if frames not in (None, SIM_FRAMES):
            raise ValueError(f"--frames {frames}: bundle {hw_bundle.name} reconstructs 9 raw "
                             "frames (3 angles × 3 phases)")
        wiener_w = _bundle_filter(hw_bundle)
    elif model is not None:
        unused = [flag for flag, given in (
            ("--params", params is not None), ("--save-params", save_params is not None),
            ("--wiener", wiener_w != SIM_WIENER_W)) if given]
        if unused:
            raise ValueError(f"{', '.join(unused)}: options of the classical reconstruction; "
                             "a learned SIM bundle (--model) estimates no parameters")
        return _sim_learned(in_path, out_path, hw_bundle, frames=frames, na=na,
                            wavelength_nm=wavelength_nm, pixel_size_um=pixel_size_um,
                            calibration=calibration, backend=backend, overwrite=overwrite,
                            progress=progress)
    needs_model = [what for what, asked in (
        ("--frames 3", frames == 3), (f"--backend {backend}", backend != "emulate")) if asked]
    if needs_model and hw_bundle is None:
        raise SimUnavailable(f"{' '.join(needs_model)}: {SIM_NEEDS_MODEL}")
    wiener_w = _wiener_option(wiener_w)
    in_path, out_path = Path(in_path), Path(out_path)
    inputs = [p for p in (in_path, calibration, params) if p is not None]
    if out_path.suffix.lower() not in (".tif", ".tiff", ".zarr"):
        raise ImageFormatError(f"{out_path}: unknown output suffix (use .tif, .tiff or .zarr)")
    check_output(out_path, overwrite, inputs)
    if save_params is not None:
        save_params = Path(save_params)
        if save_params.suffix.lower() != ".json":
            raise ValueError(f"{save_params}: SIM parameters are saved as JSON; choose a name "
                             "ending in .json")
        if save_params.resolve() == out_path.resolve():
            raise ValueError(f"{save_params}: the same path as the output image")
        check_output(save_params, overwrite, inputs)
    stored = SimParameters.load(params) if params is not None else None
    cal = load_calibration(calibration) if calibration is not None else None

    raw, meta = read_image_meta(in_path)
    per = frames or SIM_FRAMES  # raw frames per reconstruction: 3 angles × `phases`
    phases = per // SIM_ANGLES
    stacks = _sim_raw_stacks(in_path, raw, meta.axes, per=per,
                             what=f"{SIM_ANGLES} angles × {phases} phases")
    design = None if hw_bundle is None else hw_bundle.manifest["reconstruction"]
    optics, optics_source = _sim_optics(in_path, meta, na, wavelength_nm, pixel_size_um,
                                        design)
    frame_shape = stacks.shape[2:]
    if hw_bundle is not None:
        from fluorofpga.host.wienerrestore import check_design, check_optics

        check_optics({**design, "bundle": hw_bundle.name}, optics)
        if stored is not None:
            check_design(stored, {**design, "bundle": hw_bundle.name})
    camera = None
    if cal is not None:
        cal.check_shape(frame_shape)
        maps = PixelMaps(cal)
        camera = SCMOSCamera(qe=cal.qe or 1.0, gain_e_per_adu=cal.gain_e_per_adu,
                             offset_adu=maps.offset0)
        stacks = np.stack([[maps.to_uniform(f) for f in stack] for stack in stacks])
    if stored is not None:
        try:
            stored.check_compatible(**optics, n_frames=per, frame_shape=frame_shape)
        except SimParametersMismatch as e:
            raise SimParametersMismatch(
                f"{params}: {e} (fluorofpga sim: leave out --params to estimate them from "
                f"{in_path.name})") from None

    n = len(stacks)
    label = (lambda t: "") if n == 1 else (
        lambda t: f" (stack {t}, frames {per * t}-{per * t + per - 1})")
    out = np.empty((n, 2 * frame_shape[0], 2 * frame_shape[1]), np.float32)
    rows, notes, est_s, rec_s, used = [], [], [], [], []
    resources, hw_info = contextlib.ExitStack(), {}
    if hw_bundle is None:
        def reconstruct(stack: np.ndarray, p: Any) -> np.ndarray:
            return wiener_sim(stack, p, camera=camera, reorder=reorder, wiener_w=wiener_w,
                              **optics)
    else:  # the bundle's demodulation and filter, on its accelerator
        from fluorofpga.microscope.sim_params import frame_permutation

        if cal is not None:  # photons, as the classical reconstruction gives
            zero, scale, add = camera.offset_adu, cal.gain_e_per_adu / (cal.qe or 1.0), 0.0
        else:  # input units: a zero level subtracted (code range) and added back
            zero = float(np.percentile(stacks, 0.1))
            scale, add = 1.0, zero
        acc = resources.enter_context(open_accelerator(hw_bundle, backend, progress))
        restorer = hw_bundle.wiener_restorer(acc, zero)
        hw_info = {"hw_bundle": hw_bundle.name, "backend": backend, "zero_level_adu": zero,
                   "counts": restorer.counts}

        def reconstruct(stack: np.ndarray, p: Any) -> np.ndarray:
            perm = list(frame_permutation(SIM_ANGLES, SIM_PHASES, p.frame_order))
            image = restorer(stack[perm], p) * scale + add
            hw_info["input_step_adu"] = restorer.step
            return image
    with resources:
        for t, stack in enumerate(stacks):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", FrameOrderWarning)
                warnings.simplefilter("always", WeakPatternWarning)
                t0 = time.perf_counter()
                try:
                    if stored is None:
                        p = estimate_parameters(stack, camera=camera, n_angles=SIM_ANGLES,
                                                n_phases=phases, reorder=reorder, **optics)
                    else:
                        p = stored
                        if t in (0, n - 1):
                            check = check_parameters(stack, stored, camera=camera, **optics)
                            if not check.ok:
                                raise SimParametersMismatch(
                                    f"{params} does not fit {in_path}{label(t)}: "
                                    + "; ".join(check.reasons)
                                    + ". The pattern moved or these are another pattern's "
                                    "parameters: re-estimate (leave out --params)")
                    t1 = time.perf_counter()
                    out[t] = reconstruct(stack, p)
                    t2 = time.perf_counter()
                except ValueError as e:
                    if stored is not None and isinstance(e, FrameOrderError):
                        e.args = (f"{e}; {params} was estimated on a {stored.frame_order} stack: "
                                  "leave out --params to estimate the parameters from this one",
                                  *e.args[1:])
                    if n > 1 and not isinstance(e, SimParametersMismatch):
                        e.args = (f"{in_path}{label(t)}: {e}", *e.args[1:])
                    raise
            for w in caught:
                if issubclass(w.category, (FrameOrderWarning, WeakPatternWarning)):
                    notes.append(f"{str(w.message)}{label(t)}")
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            est_s.append(t1 - t0)
            rec_s.append(t2 - t1)
            rows.append(_sim_param_rows(p, optics))
            used.append(p)
            progress("sim", t + 1, n, "")

    out_axes = "YX" if n == 1 else "TYX"
    units = ("input units (camera offset not subtracted: no calibration)" if cal is None
             else "photons" if cal.qe else "photoelectrons (the calibration has no QE)")
    out_meta = _sim_output_meta(meta, optics["pixel_size_nm"], out_axes, n, per=per)
    image = out[0] if n == 1 else out
    if out_path.suffix.lower() == ".zarr":
        write_ome_zarr(out_path, image, overwrite=overwrite, meta=out_meta)
    else:
        write_tiff(out_path, image, meta=out_meta)
    if save_params is not None:  # with the light level's prior: `sim-bundle` designs for it
        prior = measure_wiener_prior(stacks[0], camera=camera, frame_order=used[0].frame_order,
                                     **optics)
        dataclasses.replace(used[0], wiener_prior=prior).save(save_params)
    return {
        "in": str(in_path), "out": str(out_path), "in_axes": meta.axes,
        "in_shape": list(raw.shape), "out_axes": out_axes, "out_shape": list(image.shape),
        "reconstructions": n, "frame_order": [p.frame_order for p in used],
        "optics": optics, "optics_source": optics_source,
        "pixel_size_out_nm": optics["pixel_size_nm"] / 2, "metadata": out_meta.as_dict(),
        "calibration": str(calibration) if calibration else None,
        "units": units,
        "parameters_from": str(params) if params is not None else "estimated per stack",
        "parameters": rows, "notes": notes,
        "estimate_s": est_s, "reconstruct_s": rec_s,
        "seconds_per_reconstruction": float(np.mean(np.add(est_s, rec_s))),
        "saved_params": str(save_params) if save_params is not None else None,
        "wiener_w": wiener_label(wiener_w), **hw_info,
    }


def _learned_sim_optics(
    na: float | None, wavelength_nm: float | None, pixel_size_um: float | None, meta: Any,
) -> tuple[dict[str, float | None], list[str]]:
    """Optics of a learned SIM reconstruction, all optional; returns them and notes.

    The network needs none of them: the pixel size (command line, else the file's
    ``meta``) only sets the output's (halved); NA and wavelength, when both are known, are
    checked against the sampling the network was trained on (a note when outside).
    """
    checks = (("--na", na, *_SIM_NA_RANGE, ""),
              ("--wavelength", wavelength_nm, *_SIM_WAVELENGTH_NM, " nm"),
              ("--pixel-size", pixel_size_um, 0.0, _SIM_MAX_PIXEL_UM, " µm"))
    for flag, value, low, high, unit in checks:
        if value is not None and not (np.isfinite(value) and low < value <= high):
            raise ValueError(f"{flag} {value:g}{unit} is outside ({low:g}, {high:g}]{unit}")
    file_pixel = None if meta is None else meta.pixel_size_um
    pixel_um = pixel_size_um if pixel_size_um is not None else (
        file_pixel[1] if file_pixel else None)
    notes = []
    if pixel_um is None:
        notes.append("no pixel size (file metadata or --pixel-size): the output has none")
    elif na is not None and wavelength_nm is not None:
        cutoff = 2 * na / wavelength_nm * pixel_um * 1e3
        lo, hi = SIM_TRAINED_CUTOFF
        if not lo <= cutoff <= hi:
            notes.append(f"the widefield cut-off 2NA/λ = {cutoff:.3f} cycles per pixel is "
                         f"outside the {lo}-{hi} the network was trained on: the result is "
                         "an extrapolation")
    return {"na": na, "wavelength_nm": wavelength_nm,
            "pixel_size_nm": None if pixel_um is None else 1e3 * float(pixel_um)}, notes


def _sim_learned(
    in_path: str | Path, out_path: str | Path, model: str | Path | Bundle, *,
    frames: int | None, na: float | None, wavelength_nm: float | None,
    pixel_size_um: float | None, calibration: str | Path | None, backend: str,
    overwrite: bool, progress: Progress,
) -> dict[str, Any]:
    """``sim --model``: a learned SIM bundle's reconstruction of raw groups (see :func:`sim`).

    Every group of ``bundle.frames`` raw frames (angle-major: frame ``3 t + a`` is angle
    ``a`` of image ``t``) goes through the pixel-in table, the bundle's accelerator (any
    backend) and the output table onto the 2× grid (:class:`~fluorofpga.host.SimRestorer`).
    The noise model comes from ``calibration`` or is estimated from the frames. Optics
    are optional: the pixel size (command line or file) sets the output's; NA and
    wavelength, when known, are checked against the sampling the network was trained on.
    """
    from fluorofpga.microscope import load_calibration

    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.suffix.lower() not in (".tif", ".tiff", ".zarr"):
        raise ImageFormatError(f"{out_path}: unknown output suffix (use .tif, .tiff or .zarr)")
    inputs = [p for p in (in_path, calibration) if p is not None]
    check_output(out_path, overwrite, inputs)
    bundle = model if isinstance(model, Bundle) else load_bundle(model)
    if bundle.task != "sim":
        raise ValueError(f"{bundle.path}: bundle {bundle.name} is a {bundle.task} bundle, "
                         "not a SIM reconstructor (train one with `fluorofpga train --task "
                         "sim`)")
    per = bundle.frames
    if frames is not None and frames != per:
        raise ValueError(f"--frames {frames}: bundle {bundle.name} reconstructs from {per} "
                         "raw frames")
    cal = load_calibration(calibration) if calibration is not None else None
    raw, meta = read_image_meta(in_path)
    stacks = _sim_raw_stacks(in_path, raw, meta.axes, per, str(bundle.frame_order))
    frame_shape = stacks.shape[2:]
    optics, notes = _learned_sim_optics(na, wavelength_nm, pixel_size_um, meta)
    pixel_um = None if optics["pixel_size_nm"] is None else optics["pixel_size_nm"] / 1e3
    if cal is not None:
        cal.check_shape(frame_shape)
    noise, noise_info = _frames_noise(cal, calibration, stacks.reshape(-1, *frame_shape),
                                      in_path)
    n = len(stacks)
    out = np.empty((n, 2 * frame_shape[0], 2 * frame_shape[1]), np.float32)
    t0 = time.perf_counter()
    with open_accelerator(bundle, backend, progress) as acc:
        restore = bundle.sim_restorer(acc, noise, cal, dtype="float32")
        for t, group in enumerate(stacks):
            out[t] = restore(group)
            progress("sim", t + 1, n, "")
        counts = restore.counts.to_dict()
    seconds = time.perf_counter() - t0
    out_axes = "YX" if n == 1 else "TYX"
    out_meta = _sim_output_meta(meta, None if pixel_um is None else pixel_um * 1e3, out_axes,
                                n, per)
    image = out[0] if n == 1 else out
    if out_path.suffix.lower() == ".zarr":
        write_ome_zarr(out_path, image, overwrite=overwrite, meta=out_meta)
    else:
        write_tiff(out_path, image, meta=out_meta)
    units = ("input units (ADU; a uniform region has the widefield value)" if cal is None
             else "ADU of the calibrated sensor (median offset, PTC gain)")
    return {
        "in": str(in_path), "out": str(out_path), "in_axes": meta.axes,
        "in_shape": list(raw.shape), "out_axes": out_axes, "out_shape": list(image.shape),
        "reconstructions": n, "frames_per_reconstruction": per,
        "frame_order": [str(bundle.frame_order)] * n, "bundle": bundle.name,
        "backend": backend, "noise": noise_info, "counts": counts,
        "optics": optics,
        "pixel_size_out_nm": None if pixel_um is None else pixel_um * 1e3 / 2,
        "metadata": out_meta.as_dict(), "calibration": str(calibration) if calibration
        else None, "units": units, "parameters_from": "none (learned reconstruction)",
        "parameters": [], "notes": notes, "seconds": seconds,
        "seconds_per_reconstruction": seconds / n,
    }


# ------------------------------------------------------------------- bioimage.io


def export_bioimageio(
    out_path: str | Path,
    bundle_path: str | Path | None = None,
    calibration: str | Path | None = None,
    frames: str | Path | None = None,
    adc_max: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Package a bundle's network as a bioimage.io model for one camera, and validate it.

    ``adc_max`` defaults to the frames' pixel type (255 for 8-bit frames) or 65535.

    The model takes raw ADU and returns restored ADU, with the camera's GAT and its
    inverse inside (so it is specific to the camera whose noise model it carries): from
    ``calibration``, or estimated from ``frames`` (a stack of that camera's raw frames).
    Returns the validation summary of ``bioimageio.core``.
    """
    from fluorofpga.microscope import NoiseModel, load_calibration
    from fluorofpga.models import export_bioimageio as export
    from fluorofpga.models import validate_bioimageio

    out = Path(out_path)
    if out.suffix.lower() != ".zip":
        raise ValueError(f"{out}: a bioimage.io package is a .zip file")
    check_output(out, overwrite, [p for p in (calibration, frames) if p is not None])
    if (calibration is None) == (frames is None):
        raise ValueError("give exactly one of --calibration (camera calibration file) or "
                         "--frames (raw frames of the camera, to estimate its noise)")
    bundle = _denoise_bundle(bundle_path)
    if calibration is not None:
        adc_max = _adc_max_for(calibration, np.dtype(np.uint16), adc_max)
        noise = NoiseModel.from_calibration(load_calibration(calibration))
        noise_info = {**noise.to_dict(), "from": f"calibration {calibration}"}
    else:
        stack, _ = _read_input(frames)
        adc_max = _adc_max_for(frames, stack.dtype, adc_max)
        noise, noise_info = _frames_noise(None, None, stack.reshape(-1, *stack.shape[-2:]),
                                          Path(frames), adc_max)
    path = export(bundle.path, out, noise, name=f"fluorofpga {bundle.name}", adc_max=adc_max,
                  overwrite=overwrite)
    return {"path": str(path), "noise": noise_info, **validate_bioimageio(path)}


# --------------------------------------------------------------------------- stream

#: Frames a simulated camera gives when ``frames`` is not set.
SIM_DEFAULT_FRAMES = 100
#: Frames of a file read to estimate the noise when there is no calibration.
NOISE_ESTIMATE_FRAMES = 8


def _sink_kind(sink: str, option: str = "--sink") -> str:
    """``"tiff"``, ``"zarr"`` or ``"zmq"`` for what the user named, else ValueError
    (``option``: how the command calls it; ``--out`` of ``receive`` takes files only)."""
    if "://" in sink:
        return "zmq"
    suffix = Path(sink).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return "tiff"
    if suffix == ".zarr":
        return "zarr"
    network = ("" if option == "--out" else
               ", or a ZeroMQ address tcp://*:PORT (pub+tcp://*:PORT for many viewers)")
    raise ValueError(f"{option} {sink}: give a .tif/.tiff file or a .zarr store{network}")


def _check_sink(sink: str, overwrite: bool, inputs: list[Path], option: str = "--sink"
                ) -> str:
    """Everything about the sink that can be checked before any work; its kind."""
    from fluorofpga.host.sinks import partial_path
    from fluorofpga.microscope import OutputError

    kind = _sink_kind(sink, option)
    if kind == "zmq":
        from fluorofpga.host.netstream import _check_address, _import_zmq

        _import_zmq()
        _check_address(sink.removeprefix("pub+"))
        return kind
    if kind == "zarr":
        try:
            import ome_zarr.writer  # noqa: F401
            import zarr  # noqa: F401
        except ImportError as e:
            raise ImportError(f"{option} {sink}: OME-Zarr output needs zarr and ome-zarr "
                              f"(pip install fluorofpga[zarr]): {e}") from None
    check_output(sink, overwrite, inputs)
    if partial_path(sink).exists() and not overwrite:
        raise OutputError(f"{partial_path(sink)} exists: the partial output of an interrupted "
                          "run; move it away, or pass --overwrite to replace it")
    return kind


def _open_source(
    source: str, frames: int | None, fps: float | None, size: int, seed: int,
    cti: str | None,
) -> tuple[Any, str, Path | None]:
    """The source the user named: ``sim``, ``genicam[:N]`` or a TIFF file/folder.

    Returns ``(source, kind, input path or None)``; raises before any frame is read.
    """
    from fluorofpga.host import GenICamSource, TiffStackSource

    if source == "sim":
        n = SIM_DEFAULT_FRAMES if frames is None else frames
        return (SimulatedCameraSource(n, (size, size), seed=seed, fps=fps,
                                      ground_truth_frames=0), "sim", None)  # nothing kept
    if source == "genicam" or source.startswith("genicam:"):
        index = source.partition(":")[2] or "0"
        if not index.isdigit():
            raise ValueError(f"--source {source}: the camera is genicam or genicam:N "
                             "(N = 0, 1, ... among the cameras found)")
        return GenICamSource(int(index), frames, cti=cti, fps=fps), "genicam", None
    path = Path(source)
    if not path.exists():
        raise ValueError(f"--source {source}: no such file or folder (a source is sim, "
                         "genicam[:N], a TIFF stack or a folder of TIFFs)")
    return TiffStackSource(path, fps=fps), "tiff", path


def _first_frames(source: Any, n: int) -> np.ndarray:
    frames = []
    for _, frame in source:
        frames.append(np.array(frame))
        if len(frames) >= n:
            break
    return np.stack(frames)


def _take(source: Any, n: int | None) -> Any:
    """The first ``n`` frames of ``source`` (all when ``n`` is None), indices kept."""
    if n is None:
        yield from source
        return
    if n <= 0:
        return
    for k, (index, frame) in enumerate(source):
        yield index, frame
        if k + 1 >= n:
            return


#: Raw frames a simulated SIM camera gives in ``stream(sim=True)`` without ``frames``.
SIM_STREAM_DEFAULT_FRAMES = 10 * SIM_FRAMES
#: Groups between drift checks of the fixed SIM parameters in ``stream(sim=True)``.
SIM_CHECK_EVERY = 10
#: What the SIM mode of ``stream`` runs on until a SIM bundle exists (issue 9).
SIM_STREAM_ON = ("the CPU (the board's ARM): classical Wiener (--model SIM_BUNDLE runs a "
                 "learned reconstructor on the accelerator)")


def _stream_sim(
    source: str, sink: str, *, bundle_path: str | Path | None, backend: str,
    frames: int | None, fps: float | None, drop: str, calibration: str | Path | None,
    queue_size: int, size: int, seed: int, cti: str | None, overwrite: bool,
    progress: Callable[[StreamStats], None] | None,
    on_start: Callable[[StreamPipeline], None] | None, na: float | None,
    wavelength_nm: float | None, pixel_size_um: float | None, params: str | Path | None,
    wiener_w: float, check_every: int,
) -> dict[str, Any]:
    """The SIM mode of :func:`stream` (see there); raw frames grouped, Wiener on the CPU."""
    from fluorofpga.host import GenICamSource, KeepOpen, TiffStackSource, open_sink
    from fluorofpga.host.simstream import SimGrouper, SimReconstructor, SimulatedSimCameraSource
    from fluorofpga.host.sinks import BackgroundSink
    from fluorofpga.microscope import (
        ImageMeta,
        SCMOSCamera,
        SimParameters,
        SimParametersMismatch,
        load_calibration,
    )
    from fluorofpga.microscope.signal import PixelMaps

    bundle, hw_bundle = None, None
    if bundle_path is not None:  # a SIM bundle on the accelerator
        bundle = load_bundle(bundle_path)
        if bundle.task != "sim":
            raise ValueError(f"--model {bundle_path}: bundle {bundle.name} is a {bundle.task} "
                             "bundle; --sim needs a SIM bundle (`fluorofpga train --task "
                             "sim`) or none (classical Wiener on the CPU)")
        if bundle.is_wiener:  # the classical reconstruction, its filter on the accelerator
            hw_bundle, bundle = bundle, None
            if wiener_w != SIM_WIENER_W:
                raise ValueError(f"--wiener: bundle {hw_bundle.name} was compiled with w = "
                                 f"{hw_bundle.manifest['reconstruction']['wiener_w']}")
            wiener_w = _bundle_filter(hw_bundle)
        elif params is not None:
            raise ValueError("--params: parameters of the classical reconstruction; a learned "
                             "SIM bundle (--model) estimates none")
    if bundle_path is None and backend != "emulate":
        raise SimUnavailable(f"--backend {backend} with --sim: {SIM_NEEDS_MODEL}")
    phases = SIM_PHASES if bundle is None else bundle.frames // SIM_ANGLES
    design = None if hw_bundle is None else {**hw_bundle.manifest["reconstruction"],
                                             "bundle": hw_bundle.name}
    per = SIM_ANGLES * phases
    wiener_w = _wiener_option(wiener_w)
    if int(check_every) != check_every or check_every < 0:
        raise ValueError(f"--check-every must be an integer >= 0 (0: never), got {check_every}")
    camera_source = source == "sim" or source == "genicam" or source.startswith("genicam:")
    path = None if camera_source else Path(source)
    if path is not None and not path.exists():
        raise ValueError(f"--source {source}: no such file or folder (a source is sim, "
                         "genicam[:N], a TIFF stack or a folder of TIFFs)")
    learned = bundle is not None and source != "sim"  # the network needs no optics
    if camera_source and not learned:  # no file metadata to fall back on
        given = (("--na NA", na), ("--wavelength NM", wavelength_nm),
                 ("--pixel-size UM", pixel_size_um))
        missing = [flag for flag, value in given if value is None]
        if missing and design is None:
            raise ValueError(f"--sim needs the optics of the {source} camera: give "
                             f"{', '.join(missing)} (objective NA, emission wavelength in nm, "
                             "camera pixel in the sample plane in µm)")
        optics, optics_source = _sim_optics(Path(source), ImageMeta("TYX"), na, wavelength_nm,
                                            pixel_size_um, design)
    sink_kind = _check_sink(sink, overwrite, [p for p in (path, calibration, params) if p])
    stored = SimParameters.load(params) if params is not None else None
    cal = load_calibration(calibration) if calibration is not None else None
    if source == "sim":
        n = SIM_STREAM_DEFAULT_FRAMES if frames is None else frames
        src: Any = SimulatedSimCameraSource(n, (size, size), seed=seed, fps=fps,
                                            na=optics["na"],
                                            wavelength_nm=optics["wavelength_nm"],
                                            pixel_size_nm=optics["pixel_size_nm"],
                                            phases=phases)
        frame_shape: tuple[int, int] | None = (size, size)
        meta_in = None
    elif camera_source:
        index = source.partition(":")[2] or "0"
        if not index.isdigit():
            raise ValueError(f"--source {source}: the camera is genicam or genicam:N")
        src = GenICamSource(int(index), frames, cti=cti, fps=fps)
        frame_shape, meta_in = None, None
    else:
        src = TiffStackSource(path, fps=fps, any_axis=True)  # raw SIM frames, any axis
        frame_shape, meta_in = src.frame_shape, src.meta
        if not learned:
            optics, optics_source = _sim_optics(path, meta_in or ImageMeta("TYX"), na,
                                                wavelength_nm, pixel_size_um, design)
    notes: list[str] = []
    if learned:
        optics, notes = _learned_sim_optics(na, wavelength_nm, pixel_size_um, meta_in)
        optics_source = {k: "command line" for k, v in
                         (("na", na), ("wavelength_nm", wavelength_nm),
                          ("pixel_size_um", pixel_size_um)) if v is not None}
        if pixel_size_um is None and optics["pixel_size_nm"] is not None:
            optics_source["pixel_size_um"] = "file metadata"
    camera, maps = (src.camera if source == "sim" else None), None
    if cal is not None:
        if frame_shape is not None:
            cal.check_shape(frame_shape)
        maps = PixelMaps(cal)
        camera = SCMOSCamera(qe=cal.qe or 1.0, gain_e_per_adu=cal.gain_e_per_adu,
                             offset_adu=maps.offset0)
    if stored is not None:
        try:
            stored.check_compatible(**optics, n_frames=SIM_FRAMES,
                                    frame_shape=frame_shape or stored.frame_shape)
        except SimParametersMismatch as e:
            raise SimParametersMismatch(f"{params}: {e} (leave out --params to estimate them "
                                        "from the first complete group)") from None
    pixel_nm = optics["pixel_size_nm"]
    if meta_in is not None and meta_in.pixel_size_um is not None:
        out_meta = _sim_output_meta(meta_in, pixel_nm, "TYX", 2, per)
    else:
        half = None if pixel_nm is None else pixel_nm / 2e3
        out_meta = ImageMeta("TYX", half, half, frame_interval=per / fps if fps else None)
    n_raw = {"sim": lambda: src.n_frames, "genicam": lambda: frames,
             "tiff": lambda: min(len(src), frames or len(src))}[
        "sim" if source == "sim" else "genicam" if camera_source else "tiff"]()
    expected = None if n_raw is None else n_raw // per
    grouper = SimGrouper(src, max_frames=frames, phases=phases)
    if bundle is None:
        hardware = None
        if hw_bundle is not None:
            from fluorofpga.host.wienerrestore import check_design, check_optics

            check_optics(design, optics)
            if stored is not None:
                check_design(stored, design)
            hardware = hw_bundle.wiener_restorer(
                open_accelerator(hw_bundle, backend),
                None if camera is None else camera.offset_adu)
        recon: Any = SimReconstructor(**optics, params=stored, camera=camera, pixel_maps=maps,
                                      wiener_w=wiener_w, check_every=check_every,
                                      hardware=hardware)
        computed_on = SIM_STREAM_ON if hw_bundle is None else (
            f"the {backend} accelerator: classical Wiener bundle {hw_bundle.name} "
            "(parameter estimation on the CPU)")
    else:
        recon = _LearnedSimStream(bundle, open_accelerator(bundle, backend), cal,
                                  camera if source == "sim" else None)
        computed_on = (f"the {backend} accelerator: learned {bundle.frames}-frame "
                       f"reconstructor {bundle.name}")
    out = BackgroundSink(open_sink(sink, out_meta, dtype="float32", expected_frames=expected,
                                   overwrite=overwrite), queue_size=2)  # fmt: skip
    try:
        stats = _run_to_sink(StreamPipeline(grouper, recon, KeepOpen(out),
                                            queue_size=queue_size, drop_policy=drop,
                                            progress=progress), out, on_start)
    finally:
        if bundle is not None or hw_bundle is not None:
            recon.close()
    first = grouper.first_indices
    units = ("ADU of the raw frames (learned reconstruction: a uniform region has the "
             "widefield value)" if bundle is not None and cal is None else
             "ADU of the calibrated sensor" if bundle is not None else
             "photons (the simulated camera)" if source == "sim" and cal is None else
             "input units (camera offset not subtracted: no calibration)" if cal is None else
             "photons" if cal.qe else "photoelectrons (the calibration has no QE)")
    return {
        "complete": True,
        "mode": "sim",
        "computed_on": computed_on,
        "frames_per_group": per,
        "stopped_early": stats.stopped_early,
        "source": source,
        "sink": getattr(out, "endpoint", None) or sink,
        "sink_kind": sink_kind,
        "backend": backend,
        "drop_policy": drop,
        **grouper.summary(),
        "groups_expected": expected,
        "groups_reconstructed": stats.frames_out,
        "groups_dropped": stats.dropped,  # whole groups, when reconstruction fell behind
        "dropped_groups_first_frame": [int(first[g]) for g in stats.dropped_indices],
        "reconstructions_per_s": stats.fps,
        "reconstructions_per_s_rolling": stats.fps_rolling,
        "seconds": stats.seconds,
        **{k: v for k, v in stats.to_dict().items() if k.startswith("latency_ms")},
        "read_ms_mean": stats.read_ms_mean,
        "process_ms_mean": stats.process_ms_mean,
        "stage_ms_mean": stats.stage_ms_mean,  # pack / accelerate / unpack with a bundle
        "handoff_ms_mean": stats.write_ms_mean,
        "write_ms_mean": out.write_ms_mean,
        "camera_lost": getattr(src, "camera_lost", None),
        "optics": optics,
        "optics_source": optics_source,
        "pixel_size_out_nm": None if pixel_nm is None else pixel_nm / 2,
        "notes": notes,
        "out_shape": None if frame_shape is None else [2 * frame_shape[0], 2 * frame_shape[1]],
        "units": units,
        "reconstruction": recon.summary(),
        "parameters_from": (str(params) if params is not None else "none (learned "
                            "reconstruction)" if bundle is not None else "estimated from the "
                            "first complete group"),
        "parameters": (_sim_param_rows(recon.params, optics)
                       if bundle is None and recon.params else None),
        "metadata": out_meta.as_dict(),
    }


class _LearnedSimStream:
    """The ``process`` of ``stream --sim --model``: a SIM bundle's reconstruction of each
    group on its accelerator; the noise model from the calibration, the simulated
    camera, or estimated once from the first group (and then fixed)."""

    def __init__(self, bundle: Bundle, acc: Any, cal: Any, camera: Any) -> None:
        from fluorofpga.microscope import NoiseModel

        self.bundle, self.acc, self.cal = bundle, acc, cal
        self.restore: Any = None
        self.noise_from = "estimated from the first complete group"
        self.noise: Any = None
        if cal is not None:
            self.noise = NoiseModel.from_calibration(cal, extra_rounding=True)
            self.noise_from = "calibration"
        elif camera is not None:
            self.noise = NoiseModel.from_camera(camera.gain_e_per_adu, camera.offset_adu,
                                                camera.read_noise_e)
            self.noise_from = "the simulated camera"

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        """Reconstruct one raw group -> float32 image on the 2x grid."""
        return self._unpack(self._accelerate(self._pack(stack)))

    def stages(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """The restorer's pack / accelerate / unpack (run on their own threads by the
        stream); the restorer is made by the first group's pack."""
        return [("pack", self._pack), ("accelerate", self._accelerate),
                ("unpack", self._unpack)]

    def _pack(self, stack: np.ndarray) -> Any:
        if self.restore is None:
            if self.noise is None:
                from fluorofpga.microscope import estimate_noise

                self.noise = estimate_noise(np.asarray(stack)).model
            self.restore = self.bundle.sim_restorer(self.acc, self.noise, self.cal,
                                                    dtype="float32")
        return self.restore.pack(np.asarray(stack))

    def _accelerate(self, packed: Any) -> Any:
        return self.restore.accelerate(packed)

    def _unpack(self, packed: Any) -> np.ndarray:
        return self.restore.unpack(packed)

    def close(self) -> None:
        """Release the accelerator."""
        self.acc.close()

    def summary(self) -> dict[str, Any]:
        """Noise model and counted pixels, as plain JSON."""
        return {"bundle": self.bundle.name, "noise_from": self.noise_from,
                "noise": None if self.noise is None else self.noise.to_dict(),
                "counts": None if self.restore is None else self.restore.counts.to_dict()}


def _run_to_sink(pipeline: StreamPipeline, out: Any,
                 on_start: Callable[[StreamPipeline], None] | None) -> StreamStats:
    """Run ``pipeline`` into ``out``: closed when the run ends, aborted on any error or
    interrupt (the partial output stays, clearly marked; a receiver is told)."""
    if on_start is not None:
        on_start(pipeline)
    try:
        stats = pipeline.run()
    except BaseException:
        out.abort()
        raise
    out.close()
    return stats


def stream(
    source: str,
    sink: str | Path,
    bundle_path: str | Path | None = None,
    backend: str = "emulate",
    frames: int | None = None,
    fps: float | None = None,
    drop: str | None = None,
    calibration: str | Path | None = None,
    dtype: str | None = None,
    adc_max: int | None = None,
    queue_size: int = 4,
    size: int = 512,
    seed: int = 0,
    cti: str | None = None,
    overwrite: bool = False,
    progress: Callable[[StreamStats], None] | None = None,
    on_start: Callable[[StreamPipeline], None] | None = None,
    *,
    sim: bool = False,
    na: float | None = None,
    wavelength_nm: float | None = None,
    pixel_size_um: float | None = None,
    params: str | Path | None = None,
    wiener_w: float | str = SIM_WIENER_W,
    check_every: int = SIM_CHECK_EVERY,
) -> dict[str, Any]:
    """Stream frames from a camera or files through the accelerator into a sink, live.

    The one entry point the ``fluorofpga stream`` command, the board notebooks and the
    tests share.

    Args:
        source: ``"sim"`` (the simulated sCMOS camera, ``size`` x ``size``),
            ``"genicam"`` / ``"genicam:N"`` (a GenICam camera through ``harvesters``;
            needs ``calibration``), or a TIFF stack / folder of TIFFs (read lazily).
        sink: ``*.tif``/``*.tiff`` (frame by frame), ``*.zarr`` (OME-Zarr, chunk by
            chunk) or ``tcp://*:PORT`` (ZeroMQ PUSH; ``pub+tcp://...`` for PUB) for
            ``fluorofpga receive`` on a PC.
        bundle_path: model bundle (default: the shipped one).
        backend: ``"emulate"`` or ``"pynq"``.
        frames: stop after this many frames (default: all of a file, 100 simulated,
            a camera until stopped).
        fps: camera frame rate (simulated/GenICam) or replay rate of a file.
        drop: ``"block"`` (lose nothing; a file) or ``"drop-oldest"`` (a live camera
            keeps up; every drop counted and listed), or ``"drop-newest"``. Default:
            ``drop-oldest`` for a camera (GenICam, or simulated with ``fps``), whose
            driver would otherwise lose frames uncounted while the stream waits;
            ``block`` otherwise.
        calibration: camera calibration file (``fluorofpga calibrate``); without it the
            simulated camera's own model is used, or the noise is estimated from the
            first frames of a file.
        dtype, adc_max: output dtype (default uint16; SIM mode writes float32 and refuses
            uint16) and ADC saturation, as for :func:`denoise` (default from the source's
            pixel type: 255 for 8-bit frames, else 65535).
        queue_size: frames buffered between camera and accelerator.
        size, seed: frame side and seed of the simulated camera.
        cti: GenTL producer file of a GenICam camera (default ``$GENICAM_GENTL64_PATH``).
        overwrite: replace an existing output (and a partial one of an earlier run).
        progress: called with the live :class:`~fluorofpga.host.StreamStats` after
            every frame (e.g. :func:`fluorofpga.host.live_display`).
        on_start: called with the pipeline before it runs (to call ``stop()`` on it,
            e.g. from a Ctrl-C handler or a notebook button).
        sim: **SIM mode**: the source gives raw SIM frames (3 angles × 3 phases,
            angle-major; the simulated SIM camera for ``"sim"``); they are grouped by 9
            (:class:`~fluorofpga.host.simstream.SimGrouper`: a group with a lost frame,
            frames out of order or the stream ending mid-group is discarded and counted
            as an event, with its frame indices) and every complete group is
            reconstructed with the classical Wiener **on the CPU** (the board's ARM; no
            SIM bundle exists yet, so ``bundle_path`` and a backend other than
            ``emulate`` are refused) into one ``float32`` image on the 2x grid, pixel
            size halved. ``frames`` counts raw frames (default 90 simulated), ``fps`` is
            the raw frame rate, ``queue_size`` and ``drop`` act on whole groups.
        na, wavelength_nm, pixel_size_um: SIM optics (objective NA, emission nm, camera
            pixel in the sample plane µm); required for a camera, else from the file's
            metadata when it states them.
        params: fixed ``SimParameters`` JSON (``fluorofpga sim --save-params``); default:
            estimated once from the first complete group, then fixed.
        wiener_w: Wiener parameter of the SIM mode.
        check_every: SIM drift check (``check_parameters``) every this many groups (0:
            never); drifted parameters are replaced by the re-estimated ones, reported.

    Every argument is checked before any work (bundle, source, sink location and
    writability, overwrite, calibration against the frame size, backend). A file sink
    writes ``<name>.partial.<ext>`` and renames it only when the stream completed (or
    was ended with ``stop()``); after a failure or an interruption the partial output
    stays, clearly named. A ZeroMQ receiver is told the stream ended incomplete.

    Returns:
        A summary: frames in/out, dropped and their indices, fps, latency percentiles,
        per-stage times, restorer counts, noise model, the output written.

    Raises:
        ValueError (OutputError, ImageFormatError, BundleError, CalibrationError, ...),
        ImportError (optional package missing), AcceleratorError: before any work.
    """
    from fluorofpga.host import OUTPUT_DTYPES, KeepOpen, open_sink
    from fluorofpga.host.sinks import BackgroundSink
    from fluorofpga.host.stream import normalize_drop_policy
    from fluorofpga.microscope import ImageMeta, NoiseModel, estimate_noise, load_calibration

    live = source.startswith("genicam") or (source == "sim" and fps is not None)
    drop = normalize_drop_policy(drop if drop is not None else
                                 ("drop-oldest" if live else "block"))  # fmt: skip
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise ValueError(f"--dtype {dtype!r} not supported; choose one of {OUTPUT_DTYPES}")
    if frames is not None and (int(frames) != frames or frames < 1):
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if fps is not None and not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    if int(queue_size) != queue_size or queue_size < 1:
        raise ValueError(f"queue size must be >= 1, got {queue_size}")
    sink = str(sink)
    if sim:
        if dtype not in (None, "float32"):
            raise ValueError(f"--dtype {dtype} with --sim: SIM images are written as float32 "
                             "(reconstructed values, not camera counts)")
        return _stream_sim(source, sink, bundle_path=bundle_path, backend=backend,
                           frames=frames, fps=fps, drop=drop, calibration=calibration,
                           queue_size=queue_size, size=size, seed=seed, cti=cti,
                           overwrite=overwrite, progress=progress, on_start=on_start, na=na,
                           wavelength_nm=wavelength_nm, pixel_size_um=pixel_size_um,
                           params=params, wiener_w=wiener_w, check_every=check_every)
    dtype = dtype or "uint16"
    src, kind, in_path = _open_source(source, frames, fps, size, seed, cti)
    sink_kind = _check_sink(sink, overwrite, [in_path] if in_path else [])
    bundle = _denoise_bundle(bundle_path)
    frame_shape = (size, size) if kind == "sim" else getattr(src, "frame_shape", None)
    # a file's (or camera's) pixel type bounds its ADC: 8-bit data saturate at 255
    adc_max = _adc_max_for(source, getattr(src, "dtype", np.uint16), adc_max)
    cal = None
    if calibration is not None:
        cal = load_calibration(calibration)
        if frame_shape is not None:
            cal.check_shape(frame_shape)
        noise = NoiseModel.from_calibration(cal, extra_rounding=True)
        noise_info: dict[str, Any] = {**noise.to_dict(), "from": f"calibration {calibration}"}
    elif kind == "sim":
        noise = simulated_camera_noise()
        noise_info = {**noise.to_dict(), "from": "the simulated camera (known exactly)"}
    elif kind == "tiff":
        first = _first_frames(src, NOISE_ESTIMATE_FRAMES)
        try:
            estimate = estimate_noise(first, adc_max=adc_max)
        except ValueError as e:
            raise type(e)(f"{source}: {e}; give --calibration") from None
        noise = estimate.model
        noise_info = {**estimate.summary(),
                      "from": f"estimated from the first {len(first)} frame(s)"}  # fmt: skip
    else:
        raise ValueError("a live camera needs --calibration (a file from `fluorofpga "
                         "calibrate`): its noise model cannot be estimated before streaming")
    if kind == "sim":
        pixel_nm = getattr(src.microscope, "pixel_size_nm", None)
        meta = ImageMeta("TYX", *((pixel_nm / 1000.0,) * 2 if pixel_nm else (None, None)),
                         frame_interval=1.0 / fps if fps else None)  # fmt: skip
    elif kind == "tiff":
        meta = src.meta
    else:
        meta = ImageMeta("TYX", frame_interval=1.0 / fps if fps else None)
    expected = {"sim": lambda: src.n_frames, "tiff": lambda: min(len(src), frames or len(src)),
                "genicam": lambda: frames}[kind]()  # fmt: skip
    with open_accelerator(bundle, backend) as acc:  # bad backend, no board: refused
        process = bundle.restorer(acc, noise, cal, dtype, adc_max)
        # the sink writes on its own thread (a bounded queue, nothing dropped), so file and
        # network writes overlap the accelerator
        out = BackgroundSink(open_sink(sink, meta, dtype=dtype, expected_frames=expected,
                                       overwrite=overwrite), queue_size=2)  # fmt: skip
        stats = _run_to_sink(StreamPipeline(_take(src, frames), process, KeepOpen(out),
                                            queue_size=queue_size, drop_policy=drop,
                                            progress=progress), out, on_start)
        counts = process.counts.to_dict()
    written = getattr(out, "endpoint", None) or sink
    return {
        "complete": True,
        "stopped_early": stats.stopped_early,
        "source": source,
        "sink": written,
        "sink_kind": sink_kind,
        "backend": backend,
        "bundle": bundle.name,
        "drop_policy": drop,
        "frames_expected": expected,
        "camera_lost": getattr(src, "camera_lost", None),  # lost before reaching us
        "source_axes": ("TYX" if getattr(src, "time_axis", True) else
                        "not named in the file: frames taken as time points (TYX)"),
        **{k: v for k, v in stats.to_dict().items() if k not in ("drop_policy", "queued")},
        "handoff_ms_mean": stats.write_ms_mean,  # handing a frame to the writer thread
        "write_ms_mean": out.write_ms_mean,  # the sink's own write, on its thread
        "mpix_per_s": stats.fps * float(np.prod(frame_shape)) / 1e6 if frame_shape else None,
        "counts": counts,
        "tables": {"max_adu_coded": process.tables.max_adu(), "adc_max": adc_max},
        "noise": noise_info,
        "metadata": meta.as_dict() if meta is not None else None,
    }


# --------------------------------------------------------------------------- receive


class _LazySink:
    """Creates the file sink at the first frame, with its dtype and the sender's metadata."""

    def __init__(self, path: str, source: Any, overwrite: bool) -> None:
        self.path, self.source, self.overwrite = path, source, overwrite
        self.sink: Any = None

    def write(self, index: int, frame: np.ndarray) -> None:
        """Forward one frame (creating the sink first)."""
        if self.sink is None:
            from fluorofpga.host import open_sink
            from fluorofpga.microscope import ImageMeta

            sent = self.source.meta
            try:
                meta = ImageMeta(**sent) if sent else None
            except TypeError as e:
                raise ValueError(f"the sender's metadata is not an ImageMeta ({e})") from None
            self.sink = open_sink(self.path, meta, dtype=frame.dtype.name,
                                  overwrite=self.overwrite)  # fmt: skip
        self.sink.write(index, frame)

    def close(self) -> None:
        """Finish the file (nothing was received: nothing is created)."""
        if self.sink is not None:
            self.sink.close()

    def abort(self) -> None:
        """Keep what was received as the marked partial output."""
        if self.sink is not None:
            self.sink.abort()


def receive(
    connect: str,
    out: str | Path,
    pattern: str = "pull",
    frames: int | None = None,
    timeout_s: float = 30.0,
    overwrite: bool = False,
    view: bool = False,
    progress: Callable[[StreamStats], None] | None = None,
) -> dict[str, Any]:
    """Receive a ``fluorofpga stream --sink tcp://...`` on a PC and write it to a file.

    Args:
        connect: the sender's address, ``tcp://BOARD:PORT``.
        out: ``*.tif``/``*.tiff`` or ``*.zarr``, written frame by frame with the
            sender's calibration (``<name>.partial.*`` until the stream completed).
        pattern: ``"pull"`` (the sender's default PUSH) or ``"sub"`` (``pub+tcp://``).
        frames: stop after this many frames (default: until the sender's end message).
        timeout_s: seconds without a message before the stream counts as broken.
        overwrite: replace an existing output.
        view: also show the frames live in napari (napari must be installed).
        progress: called with the live stats after every frame.

    Returns:
        A summary: frames, messages lost on the way (``missed``, PUB/SUB), gaps in the
        sender's frame indices (frames it dropped), the output.

    Raises:
        ValueError, ImportError: before any work (address, output, napari for ``view``);
        StreamIncomplete: the sender ended incomplete or went silent (the partial file
        stays).
    """
    from fluorofpga.host import StreamPipeline, ZmqSource

    out = str(out)
    if _sink_kind(out, "--out") == "zmq":
        raise ValueError(f"--out {out}: receive writes a .tif/.tiff file or a .zarr store")
    if not timeout_s > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout_s!r}")
    _check_sink(out, overwrite, [], "--out")
    if view:
        try:
            import napari  # noqa: F401
        except ImportError as e:
            raise ImportError(f"--view shows the frames in napari, which is not installed "
                              f"(pip install 'napari[all]'): {e}") from None
    source = ZmqSource(connect, pattern=pattern, timeout_s=timeout_s, n_frames=frames)
    sink = _LazySink(out, source, overwrite)
    indices: list[int] = []

    def keep(index: int, frame: np.ndarray) -> None:
        indices.append(index)

    pipeline = StreamPipeline(((i, f) for i, f in _indexed(source, keep)), lambda f: f, sink,
                              drop_policy="block", progress=progress)  # fmt: skip
    stats = _run_with_napari(pipeline, out) if view else pipeline.run()
    gaps = sum(b - a - 1 for a, b in zip(indices, indices[1:], strict=False) if b > a + 1)
    return {"out": out if sink.sink is not None else None, "frames": stats.frames_out,
            "missed": source.missed, "sender_dropped": gaps, "complete": source.complete,
            "fps": stats.fps, "seconds": stats.seconds, "metadata": source.meta}  # fmt: skip


def _indexed(source: Any, keep: Callable[[int, np.ndarray], None]) -> Any:
    for index, frame in source:
        keep(index, frame)
        yield index, frame


def _run_with_napari(pipeline: StreamPipeline, title: str) -> StreamStats:
    """Run ``pipeline`` in a thread while napari shows its newest frame; wait for both."""
    import threading

    import napari
    from qtpy.QtCore import QTimer

    latest: dict[str, Any] = {}
    inner = pipeline.process
    pipeline.process = lambda f: latest.__setitem__("frame", f) or inner(f)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["stats"] = pipeline.run()
        except BaseException as e:  # re-raised below in the calling thread
            box["error"] = e

    viewer = napari.Viewer(title=f"fluorofpga receive -> {title}")
    layer: dict[str, Any] = {}

    def refresh() -> None:
        frame = latest.pop("frame", None)
        if frame is None:
            return
        if "image" not in layer:
            layer["image"] = viewer.add_image(frame, name="live")
        else:
            layer["image"].data = frame

    timer = QTimer()
    timer.timeout.connect(refresh)
    timer.start(50)
    worker = threading.Thread(target=run, name="fluorofpga-receive", daemon=True)
    worker.start()
    napari.run()  # until the window is closed
    timer.stop()
    if worker.is_alive():
        pipeline.stop()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["stats"]


# ---------------------------------------------------------------------------- deploy

#: What the board's Python needs beyond the PYNQ image (which brings pynq and numpy 1.x).
BOARD_REQUIREMENTS = (
    "numpy<2",
    "tifffile>=2023.1",
    "scipy>=1.10",
    "scikit-image>=0.21",
    "matplotlib>=3.7",
    "typer>=0.12",
    "rich>=13",
    "pyzmq>=25",
    # the compiled pixel kernels; 32-bit ARM (Pynq-Z2) has no wheels: numpy loops instead
    "numba>=0.59; platform_machine == 'aarch64'",
)
#: The parts of the package the board runs: (folder in the package, file patterns).
BOARD_PACKAGE = (
    (".", ("__init__.py", "app.py", "cli.py")),
    ("host", ("*.py",)),
    ("boards", ("*.py", "*.json")),
    ("microscope", ("*.py",)),
)
BOARD_NOTEBOOKS = ("1_check_board.ipynb", "2_denoise_live.ipynb", "3_sim_live.ipynb",
                   "4_benchmark_dma.ipynb")
DEPLOY_MANIFEST = "deploy.json"
NO_BITSTREAM_NOTE = "NO_BITSTREAM.txt"


def _check_deploy_output(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that would lose data: only an earlier deploy is replaced."""
    _check_output_folder(out, overwrite, DEPLOY_MANIFEST, "an earlier deploy",
                         "a fluorofpga deploy folder")


def bitstream_part(path: str | Path) -> str:
    """The FPGA part named in a Xilinx ``.bit`` header (field ``b``), e.g. ``7z020clg400``.

    Raises:
        ValueError: not a readable Xilinx bitstream (no header of fields a-e).
    """
    path = Path(path)
    try:
        head = path.read_bytes()[:1024]
    except OSError as e:
        raise ValueError(f"--bitstream {path}: cannot read it ({e.strerror})") from None
    pos = 2 + int.from_bytes(head[:2], "big") if len(head) > 2 else 0
    pos += 2  # the 16-bit field after the magic block
    fields: dict[str, str] = {}
    while pos + 3 <= len(head) and head[pos:pos + 1] in (b"a", b"b", b"c", b"d"):
        n = int.from_bytes(head[pos + 1:pos + 3], "big")
        fields[chr(head[pos])] = head[pos + 3:pos + 3 + n].rstrip(b"\0").decode("ascii",
                                                                                "replace")
        pos += 3 + n
    if "b" not in fields or head[pos:pos + 1] != b"e":
        raise ValueError(f"--bitstream {path}: not a Xilinx .bit file (no header naming its "
                         "part); give the .bit Vivado wrote (vivado/output/fluorofpga.bit)")
    return fields["b"]


def _same_part(header_part: str, board_part: str) -> bool:
    """A .bit header's part (Vivado writes e.g. ``7z020clg400``, without ``xc`` and speed
    grade) names the board's part (``xc7z020clg400-1``)."""
    def norm(p: str) -> str:
        p = p.lower().replace("-", "")
        return p[2:] if p.startswith("xc") else p

    return norm(board_part).startswith(norm(header_part)) or norm(header_part).startswith(
        norm(board_part))


def _given_bitstream(path: str | Path, board: Any) -> Path:
    """Check a bitstream given to ``deploy``: a Xilinx .bit for ``board``'s part with its
    ``.hwh`` beside it (PYNQ loads both)."""
    path = Path(path)
    if path.suffix != ".bit" or not path.is_file():
        raise ValueError(f"--bitstream {path}: no such .bit file")
    if not path.with_suffix(".hwh").is_file():
        raise ValueError(f"--bitstream {path}: the {path.stem}.hwh Vivado writes beside it is "
                         "missing; PYNQ cannot load the overlay without it (copy both)")
    part = bitstream_part(path)
    if not _same_part(part, board.fpga_part):
        raise ValueError(f"--bitstream {path} is for part {part}, the {board.name} has "
                         f"{board.fpga_part}; build it for --board {board.name}")
    return path


def _put_bitstream(bundle_dir: Path, bit: Path) -> None:
    """Copy ``bit`` and its .hwh into a bundle folder and record it in the manifest."""
    from fluorofpga.host.bundle import MANIFEST

    dest = bundle_dir / "bitstream"
    dest.mkdir(exist_ok=True)
    for src in (bit, bit.with_suffix(".hwh")):
        shutil.copy2(src, dest / src.name)
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["files"]["bitstream"] = f"bitstream/{bit.name}"
    digests = manifest.get("sha256")
    if isinstance(digests, dict):
        digests["bitstream"] = hashlib.sha256(bit.read_bytes()).hexdigest()
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))


def deploy(
    board: str, out: str | Path, bundle_path: str | Path | None = None,
    overwrite: bool = False, sim_bundle_path: str | Path | None = None,
    bitstream_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the folder a user copies onto the board (``scp -r OUT xilinx@board:``).

    Contents: ``bundle/`` (the model bundle, default the shipped one compiled for
    ``board``: :func:`~fluorofpga.host.shipped_bundle_path`; with its bitstream and
    ``.hwh`` when it was built with Vivado; otherwise ``NO_BITSTREAM.txt`` says so and
    what still works),
    ``notebooks/`` (the board notebooks), ``fluorofpga/`` (the package parts the board
    runs: ``host``, ``boards``, ``microscope``, the facade and CLI; no torch, FINN or
    ``hw``), ``requirements.txt`` (board side: pynq and numpy 1.x come with the PYNQ
    image), ``README.txt`` and ``deploy.json`` (what was deployed). ``sim_bundle/``: a
    SIM bundle for notebook 3 (``sim_bundle_path``, default the shipped learned 3-frame
    one when it is installed; ``"none"`` leaves it out). ``bitstream_path``: a ``.bit``
    built from ``fluorofpga compile``'s Vivado folder (its ``.hwh`` beside it, its part the
    board's), put into the deployed bundle (``bundle/bitstream/``, manifest
    ``files["bitstream"]`` with its SHA-256), replacing one the bundle had; the source
    bundle is not changed.

    Checked before anything is written: the board name, the bundle (intact, compiled for
    ``board``), the output folder (its parent exists and is writable; an existing
    non-empty folder only with ``overwrite``, and then only an earlier deploy). The
    folder is built beside ``out`` under a hidden name and renamed into place.

    Raises:
        ValueError (OutputError, BundleError): before anything is written.
    """
    import fnmatch
    import uuid

    from fluorofpga.boards import load_board
    from fluorofpga.host import BundleError

    target = load_board(board)  # unknown boards: ValueError naming the known ones
    out = Path(out)
    _check_deploy_output(out, overwrite)
    from fluorofpga.host import default_sim_bundle_path, shipped_bundle_path

    bundle = _denoise_bundle(bundle_path if bundle_path is not None
                             else shipped_bundle_path(target.name))

    sim_bundle = None
    if sim_bundle_path is None and default_sim_bundle_path().is_dir():
        sim_bundle_path = default_sim_bundle_path()
    if sim_bundle_path is not None and str(sim_bundle_path) != "none":
        sim_bundle = load_bundle(sim_bundle_path)
        if sim_bundle.task != "sim":
            raise BundleError(f"--sim-model {sim_bundle_path}: bundle {sim_bundle.name} is a "
                              f"{sim_bundle.task} bundle, not a SIM bundle")
    built_for = bundle.manifest.get("board") or (bundle.manifest.get("estimates") or {}).get(
        "board")
    if built_for and built_for != target.name:
        raise BundleError(f"bundle {bundle.name} was compiled for {built_for}, not "
                          f"{target.name}; train/compile it with --board {target.name}")
    bitstream = None
    if bitstream_path is not None:
        bitstream = _given_bitstream(bitstream_path, target)
    elif "bitstream" in bundle.manifest.get("files", {}):
        bitstream = bundle.file("bitstream")
        if not bitstream.with_suffix(".hwh").is_file():
            raise BundleError(f"{bitstream}: the .hwh beside it is missing; the board cannot "
                              "load the overlay without it; re-create the bundle")
    package = Path(__file__).parent
    notebooks = package / "host" / "notebooks"
    missing = [n for n in BOARD_NOTEBOOKS if not (notebooks / n).is_file()]
    if missing:
        raise FileNotFoundError(f"notebooks {missing} missing from {notebooks}; reinstall "
                                "fluorofpga")
    staging = out.absolute().parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    try:
        shutil.copytree(bundle.path, staging / "bundle",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        if bitstream_path is not None and bitstream is not None:
            _put_bitstream(staging / "bundle", bitstream)
        if sim_bundle is not None:
            shutil.copytree(sim_bundle.path, staging / "sim_bundle",
                            ignore=shutil.ignore_patterns("__pycache__"))
        (staging / "notebooks").mkdir()
        for name in BOARD_NOTEBOOKS:
            shutil.copy2(notebooks / name, staging / "notebooks" / name)
        files: list[str] = []
        for folder, patterns in BOARD_PACKAGE:
            dest = staging / "fluorofpga" / folder
            dest.mkdir(parents=True, exist_ok=True)
            for path in sorted((package / folder).iterdir()):
                if path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in patterns):
                    shutil.copy2(path, dest / path.name)
                    files.append(str(Path("fluorofpga", folder, path.name)))
        requirements = ("# board side: pynq and numpy 1.x come with the PYNQ image\n"
                        + "\n".join(BOARD_REQUIREMENTS) + "\n")  # fmt: skip
        (staging / "requirements.txt").write_text(requirements)
        if bitstream is None:
            (staging / NO_BITSTREAM_NOTE).write_text(
                f"The bundle {bundle.name} has no bitstream: it was built without Vivado\n"
                "(`fluorofpga train --bitfile` needs Vivado). On the board the `emulate`\n"
                "backend works (CPU, slow); the `pynq` backend and notebooks 1 and 4 need\n"
                "the bitstream and its .hwh in bundle/ (manifest files['bitstream']):\n"
                "`fluorofpga compile --model BUNDLE --board NAME ...` writes a vivado/\n"
                "folder whose build_bitstream.py makes it on a machine with Vivado, and\n"
                "`fluorofpga deploy ... --bitstream vivado/output/fluorofpga.bit` puts it here.\n")
        (staging / "README.txt").write_text(
            f"fluorofpga for {target.description} ({target.name}), PYNQ {target.pynq_image}\n\n"
            "Copy this folder onto the board (scp -r), then on the board:\n"
            "  pip install -r requirements.txt\n"
            "  export PYTHONPATH=$PWD\n"
            "  python -m fluorofpga.cli stream --source sim --model bundle --backend pynq "
            "--sink out.tif --frames 100\n"
            "or open notebooks/ in the board's Jupyter (1_check_board first).\n")
        record = {"format": "fluorofpga-deploy", "version": 1, "fluorofpga": __version__,
                  "board": target.name, "bundle": bundle.name,
                  "sim_bundle": None if sim_bundle is None else sim_bundle.name,
                  "bitstream": bitstream is not None,
                  "bitstream_from": None if bitstream_path is None else str(bitstream),
                  "notebooks": list(BOARD_NOTEBOOKS),
                  "package_files": files, "requirements": list(BOARD_REQUIREMENTS)}
        (staging / DEPLOY_MANIFEST).write_text(json.dumps(record, indent=2))
        if out.exists():
            trash = out.absolute().parent / f".{out.name}.{uuid.uuid4().hex}.old"
            os.replace(out, trash)
            try:
                os.replace(staging, out)
            except BaseException:
                os.replace(trash, out)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    note = None if bitstream else (f"no bitstream in bundle {bundle.name} (built without "
                                   f"Vivado): see {out / NO_BITSTREAM_NOTE}")  # fmt: skip
    return {**record, "out": str(out), "note": note}
