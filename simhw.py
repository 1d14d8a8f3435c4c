"""Classical Wiener SIM in hardware: building its bundle and feeding it data.

``fluorofpga sim-bundle --params P.json --out DIR`` turns the parameters of an
instrument's pattern (saved by ``fluorofpga sim --save-params``) into a bundle: the
real-space Wiener filter of :mod:`fluorofpga.microscope.sim_linear` is designed for that
pattern and optics, quantized into a one-layer Brevitas network
(:mod:`fluorofpga.quantize.wiener`), exported to QONNX, compiled by FINN like every other
bundle and checked bit-exact along the chain. The demodulation (the position-dependent
half) is our own RTL kernel, ``hw/rtl/sim_demod.sv``, whose registers the host sets from
the measured parameters at run time.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from fluorofpga import __version__
from fluorofpga.host import Bundle, load_bundle
from fluorofpga.host.bundle import FORMAT, MANIFEST_VERSION

__all__ = ["WIENER_ORDER", "design_parameters", "emulate_wiener", "make_wiener_bundle",
           "wiener_camera_tiles", "wiener_raw_codes"]

#: the raw frames of a 9-frame Wiener-SIM bundle, in input order
WIENER_ORDER = "3 angles x 3 phases, angle-major: frame 3a + j = phase j of angle a"


def _progress_noop(stage: str, done: int, total: int, message: str = "") -> None:
    return None


def design_filter(params: Any, wiener_w: float | str = "auto") -> Any:
    """The filter a Wiener-SIM bundle is designed with: ``"auto"`` (the default) is the
    MMSE filter for the prior saved with ``params`` (``fluorofpga sim --save-params``: the
    light level of that stack), a number ``w`` the classical fixed-w filter.

    Raises:
        ValueError: ``"auto"`` with parameters that carry no prior, or a bad ``w``.
    """
    from fluorofpga.microscope.sim_recon import WIENER_AUTO, check_wiener_w

    wiener_w = check_wiener_w(wiener_w)
    if wiener_w != WIENER_AUTO:
        return wiener_w
    prior = getattr(params, "wiener_prior", None)
    if prior is None:
        raise ValueError(
            "--wiener auto: these SIM parameters carry no noise prior (saved by an earlier "
            "fluorofpga, or from a camera that samples at the optical cut-off); re-save them "
            "with `fluorofpga sim RAW.tif OUT.tif --save-params P.json` on a stack at the "
            "light level you will image at, or design the classical filter with --wiener W "
            "(e.g. 0.05)")
    return prior


def _design(params: Any, wiener_w: Any, kernel: int, codes: Any) -> dict[str, Any]:
    """The manifest's ``reconstruction`` entry."""
    from fluorofpga.microscope import WienerPrior
    from fluorofpga.microscope.sim_linear import DESIGN_TOLERANCE

    prior = wiener_w if isinstance(wiener_w, WienerPrior) else None
    return {
        "kind": "wiener", "apodization": "otf",
        "wiener_w": "auto" if prior is not None else float(wiener_w),
        **({} if prior is None else {"wiener_prior": prior.to_dict()}),
        "kernel": int(kernel), "na": params.na, "wavelength_nm": params.wavelength_nm,
        "pixel_size_nm": params.pixel_size_nm, "n_phases": params.n_phases,
        "frame_shape": list(params.frame_shape),
        "angles": [{"kx": p.kx, "ky": p.ky, "phase_rad": p.phase_rad,
                    "modulation": p.modulation} for p in params],
        "tolerance": DESIGN_TOLERANCE,
        "demodulation": {"kernel": "hw/rtl/sim_demod.sv",
                         "reference": "fluorofpga.microscope.sim_linear.demodulate_int",
                         "registers": "set at run time from the measured parameters"},
    }


def design_layer(params: Any, wiener_w: Any, kernel: int) -> tuple[Any, Any]:
    """The quantized filter layer of a Wiener-SIM bundle for ``params`` (``SimParameters``
    with their optics) and its integer representation ``LinearSimCodes``; ``wiener_w`` a
    number or a ``WienerPrior`` (:func:`design_filter`)."""
    from fluorofpga.microscope.sim_linear import (
        LinearSimCodes,
        design_wiener_filters,
        fit_output_gain,
        integer_weights,
    )
    from fluorofpga.quantize.wiener import wiener_filter_model

    weights = design_wiener_filters(list(params), wiener_w=wiener_w, kernel=kernel,
                                    na=params.na, wavelength_nm=params.wavelength_nm,
                                    pixel_size_nm=params.pixel_size_nm)
    codes = fit_output_gain(weights, LinearSimCodes())
    return wiener_filter_model(*integer_weights(weights, codes)), codes


def make_wiener_bundle(
    out_dir: str | Path,
    params: Any,
    *,
    wiener_w: float | str = "auto",
    kernel: int = 9,
    board: str = "kv260",
    tile: int = 128,
    target_mpix_per_s: float = 32.0,
    name: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Any = _progress_noop,
) -> Bundle:
    """Design, quantize, compile and verify a Wiener-SIM bundle for one pattern.

    Args:
        out_dir: the bundle folder (must not exist or be empty, unless ``overwrite``
            and it holds a bundle).
        params: ``SimParameters`` of the instrument (optics, 3 angles × 3 phases).
        wiener_w: ``"auto"`` (the MMSE filter for the light level of the stack the
            parameters were saved from, :func:`design_filter`) or a Wiener parameter ``w``
            (the classical filter, as ``fluorofpga sim --wiener W``).
        kernel: filter side in camera pixels (odd; 9: within ~1 dB of the FFT
            Wiener on held-out data, ``benchmarks/sim.py``).
        board, tile, target_mpix_per_s: FINN build (camera pixels per second: 30
            reconstructions/s of a 1024² camera are 31.5 Mpixel/s).
        name: bundle name (default ``wiener9-k<K>``).
        seed: seed of the verification tiles.
        overwrite: replace an earlier bundle in ``out_dir``.
        progress: ``progress(stage, done, total, message)``.
    """
    from fluorofpga.app import (
        _check_bundle_output,
        _compile_hw,
        _seal_and_verify,
        bundle_build_config,
    )
    from fluorofpga.boards import load_board
    from fluorofpga.microscope import SimParameters
    from fluorofpga.quantize import export_to_qonnx
    from fluorofpga.quantize.wiener import save_wiener_filter

    if not isinstance(params, SimParameters):
        raise TypeError("params must be SimParameters (fluorofpga sim --save-params)")
    if len(params) != 3 or params.n_phases != 3:
        raise ValueError(f"a Wiener-SIM bundle reconstructs 3 angles × 3 phases; these "
                         f"parameters have {len(params)} × {params.n_phases}")
    load_board(board)
    wiener_w = design_filter(params, wiener_w)
    out = Path(out_dir)
    _check_bundle_output(out, overwrite)
    t0 = time.perf_counter()
    progress("design", 0, 1, "Wiener filter")
    model, codes = design_layer(params, wiener_w, kernel)
    progress("design", 1, 1, f"{kernel}x{kernel}, output gain {codes.out_gain:.3f}")
    work = out.absolute().with_name(f".{out.absolute().name}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    design = _design(params, wiener_w, kernel, codes)
    save_wiener_filter(work / "quant.pt", model, design=design)
    qonnx_path = export_to_qonnx(model, work / "model.qonnx.onnx", (tile, tile))
    hw_cfg = bundle_build_config(board, tile, model.config.halo, target_mpix_per_s)
    result = _compile_hw(qonnx_path, work, hw_cfg, progress)
    cfg = model.config
    manifest = {
        "format": FORMAT, "version": MANIFEST_VERSION,
        "name": name or f"wiener9-k{kernel}", "task": "sim",
        "created_by": f"fluorofpga {__version__}",
        "network": {"arch": "WienerFilter", "kernel": kernel, "depth": 1,
                    "receptive_field": cfg.receptive_field, "params": cfg.params,
                    "macs_per_pixel": cfg.macs_per_pixel,
                    "weights": "designed (generalised Wiener, real space), not trained"},
        "recipe": {"name": "w8a8", "weight_bits": 8, "io_bits": 8, "per_channel": True},
        "signal": codes.to_dict(),
        "input": {"bits": 8, "signed": False, "frames": 9, "order": WIENER_ORDER,
                  "axes": "PYX", "layout": "channels-last tiles",
                  "meaning": "demodulated channels c0, Re z, Im z per angle (sim_demod "
                             "output; the host or the kernel computes them from linear "
                             "raw-frame codes)"},
        "output": {"bits": 8, "signed": False, "upscale": 2, "axes": "YX",
                   "meaning": "linear code of each sub-pixel (out_gain per input code, "
                              "out_zero at zero signal)",
                   "subpixels": "channel 2*dy+dx is fine pixel (2y+dy, 2x+dx)",
                   "units": "ADU of the raw frames (a uniform region: the widefield value)"},
        "reconstruction": design,
        "tile": {"height": tile, "width": tile, "halo": cfg.halo},
        "board": board, "build": hw_cfg.to_dict(), "estimates": result.estimates,
        "files": {"quant_checkpoint": "quant.pt", "qonnx": "model.qonnx.onnx",
                  "hw_layers": "hw/hw_layers.json", "finn_build": "finn"},
        "training": {"steps": 0, "data": "none: the weights are the designed Wiener filter"},
    }
    _seal_and_verify(work, manifest, seed, t0, progress)
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return load_bundle(out)


def design_parameters(bundle: Bundle) -> Any:
    """The design pattern of a Wiener-SIM bundle as ``SimParameters``."""
    from fluorofpga.microscope import AngleParameters, SimParameters

    d = bundle.manifest["reconstruction"]
    angles = [AngleParameters(a["kx"], a["ky"], a["phase_rad"], a["modulation"])
              for a in d["angles"]]
    return SimParameters(angles, na=d["na"], wavelength_nm=d["wavelength_nm"],
                         pixel_size_nm=d["pixel_size_nm"], n_phases=d["n_phases"],
                         frame_shape=tuple(d["frame_shape"]))


def wiener_camera_tiles(bundle: Bundle, n: int, seed: int) -> list[np.ndarray]:
    """``n`` accelerator input tiles (demodulated channels, ``(9, th, tw)`` uint8) of
    simulated 9-frame SIM groups with the bundle's design pattern, 20 to 2000 photons,
    encoded and demodulated as the host does."""
    from fluorofpga.microscope.sim_linear import DemodRegisters, demodulate_int

    regs = DemodRegisters.from_parameters(list(design_parameters(bundle)), bundle.linear_codes)
    return [demodulate_int(q, regs)[0] for q in wiener_raw_codes(bundle, n, seed)]


def wiener_raw_codes(bundle: Bundle, n: int, seed: int) -> list[np.ndarray]:
    """``n`` tiles of linear raw-frame codes ``(9, th, tw)`` uint8 (the demodulation's
    input) of simulated 9-frame SIM groups with the bundle's design pattern, 20 to 2000
    photons, encoded as the host does (step from the group itself)."""
    from fluorofpga.microscope import SCMOSCamera, SimPattern, render_specimen, simulate_sim

    params = design_parameters(bundle)
    codes = bundle.linear_codes
    th, tw = bundle.tile_shape
    cutoff = 2 * params.na / params.wavelength_nm * params.pixel_size_nm
    pattern = SimPattern(
        angles_rad=tuple(p.angle_rad for p in params),
        phases_rad=tuple(tuple(p.phase_rad + 2 * np.pi * j / 3 for j in range(3))
                         for p in params),
        k_fraction=float(np.mean([p.k_cycles_per_px for p in params]) / cutoff),
        modulation=float(np.mean([p.modulation for p in params])))
    rng = np.random.default_rng(seed)
    camera = SCMOSCamera()
    tiles = []
    for i in range(n):
        specimen = render_specimen((2 * th, 2 * tw), rng, filaments=th // 6, puncta=th,
                                   nuclei=1)
        peak = float(20.0 * 100.0 ** (i / max(n - 1, 1)))
        raw = simulate_sim(specimen, pattern, peak_photons=peak, camera=camera, rng=rng,
                           na=params.na, wavelength_nm=params.wavelength_nm,
                           pixel_size_nm=params.pixel_size_nm).raw
        above = raw.astype(np.float64) - camera.offset_adu
        tiles.append(codes.encode(above, codes.step_for(above)))
    return tiles


def emulate_wiener(raw: np.ndarray, params: Any, zero_adu: float, *, wiener_w: Any = "auto",
                   kernel: int = 9) -> tuple[np.ndarray, dict[str, int]]:
    """What a Wiener-SIM bundle designed for ``params`` returns for ``raw``, without a
    FINN build: the same design, quantized layer and host code
    (:class:`~fluorofpga.host.wienerrestore.WienerSimRestorer`), the filter run by the
    Brevitas layer, which the chain of custody proves equal to the compiled hardware.

    Args:
        raw: ``(9, Y, X)`` unsigned raw frames, angle-major.
        params: one ``AngleParameters`` per angle (with optics: ``SimParameters``).
        zero_adu: the camera's zero level.
        wiener_w: as :func:`make_wiener_bundle` (``"auto"``: the prior saved with
            ``params``), or a ``WienerPrior`` to design the MMSE filter with.
        kernel: as :func:`make_wiener_bundle`.

    Returns:
        ``(2Y, 2X)`` ADU above ``zero_adu``, and the restorer's counts.
    """
    import torch

    from fluorofpga.host import Accelerator
    from fluorofpga.host.wienerrestore import WienerSimRestorer
    from fluorofpga.microscope import WienerPrior

    if not isinstance(wiener_w, WienerPrior):
        wiener_w = design_filter(params, wiener_w)
    model, codes = design_layer(params, wiener_w, kernel)
    halo = model.config.halo
    tile = (raw.shape[1] + 2 * halo, raw.shape[2] + 2 * halo)

    class _Layer(Accelerator):
        name = "brevitas"

        def _compute(self, x: np.ndarray) -> np.ndarray:
            batch = torch.from_numpy(np.moveaxis(x, -1, 0)[None].astype(np.int64))
            return np.moveaxis(model.forward_int(batch).numpy()[0], 0, -1).astype(np.uint8)

    design = _design(params, wiener_w, kernel, codes)
    with _Layer(tile, in_channels=3 * len(params), out_channels=4) as acc:
        restore = WienerSimRestorer(acc, codes, design, halo, zero_adu)
        image = restore(raw, list(params))
    return image, restore.counts


def simulated_camera_parameters(shape: tuple[int, int] = (512, 512), peak_photons: float = 500.0,
                                seed: int = 0) -> Any:
    """The design parameters of the shipped Wiener-SIM bundle: the simulated SIM camera's
    pattern (``stream --sim --source sim``) and the noise prior of one of its stacks at
    ``peak_photons`` (what ``fluorofpga sim --save-params`` saves for a real instrument).

    ``make bundle-wiener`` writes them to ``host/bundles/wiener9-design.json`` and builds
    the bundle from that file.
    """
    import dataclasses

    from fluorofpga.host.simstream import SimulatedSimCameraSource
    from fluorofpga.microscope import SimParameters, measure_wiener_prior

    cam = SimulatedSimCameraSource(9, shape, peak_photons=peak_photons, seed=seed)
    raw = cam.raw_group(np.random.default_rng(seed + 1))
    params = SimParameters(tuple(cam.pattern.angle_parameters(**cam.optics)), n_phases=3,
                           frame_shape=tuple(shape), **cam.optics)
    prior = measure_wiener_prior(raw, camera=cam.camera, **cam.optics)
    return dataclasses.replace(params, wiener_prior=prior)
