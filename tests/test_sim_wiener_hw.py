"""Classical Wiener SIM in hardware: real-space design, integer demodulation, bundle, CLI.

The user's path is exercised end to end: `fluorofpga sim --save-params` on a raw stack,
`fluorofpga sim-bundle --params` (design, Brevitas, QONNX, FINN, chain of custody) and
`fluorofpga sim --model` through the bundle's emulated accelerator, every result read
back from the files written.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from fluorofpga.cli import app
from fluorofpga.host import BundleError, default_bundle_path, load_bundle
from fluorofpga.microscope import (
    SimParameters,
    estimate_parameters,
    make_pattern,
    psnr,
    render_specimen,
    sim_ground_truth,
    simulate_sim,
    widefield_from_raw,
    wiener_sim,
)
from fluorofpga.microscope.sim_linear import (
    DemodRegisters,
    LinearSimCodes,
    demodulate_float,
    demodulate_int,
    wiener_realspace,
)
from fluorofpga.microscope.sim_recon import measure_wiener_prior

OPTICS = {"na": 1.2, "wavelength_nm": 520.0, "pixel_size_nm": 65.0}
FLAGS = ["--na", "1.2", "--wavelength", "520", "--pixel-size", "0.065"]
SIZE = 96
WIENER9 = default_bundle_path().parent / "wiener9"  # the shipped Wiener-SIM bundle
runner = CliRunner()


def interior(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border]


def fitted_psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR after the least-squares affine fit of ``image`` to ``reference``."""
    a, b = np.polyfit(image.ravel(), reference.ravel(), 1)
    return float(psnr(reference, a * image + b))


@pytest.fixture(scope="module")
def acquisition() -> dict:
    rng = np.random.default_rng(4242)
    specimen = render_specimen((2 * SIZE, 2 * SIZE), rng, filaments=SIZE // 6, puncta=SIZE,
                               nuclei=0)
    pattern = make_pattern(start_angle_rad=0.2, phase_offsets_rad=(0.3, 1.9, 4.4),
                           modulation=0.85, angle_error_rad=0.01, rng=rng)
    data = simulate_sim(specimen, pattern, peak_photons=500.0, rng=rng, **OPTICS)
    params = estimate_parameters(data.raw, camera=data.camera, **OPTICS)
    other = make_pattern(start_angle_rad=0.9, phase_offsets_rad=(1.0, 3.0, 5.0))
    return {"raw": data.raw, "camera": data.camera, "params": params,
            "truth": sim_ground_truth(specimen, k_fraction=pattern.k_fraction, **OPTICS),
            "other": simulate_sim(specimen, other, peak_photons=500.0, rng=rng,
                                  **OPTICS).raw}


def test_real_space_wiener_is_the_fft_wiener(acquisition: dict) -> None:
    """The streaming decomposition (demodulation + 9x9 filter) reproduces the FFT
    Wiener away from the borders, and both beat widefield against the truth."""
    cam = acquisition["camera"]
    photons = (acquisition["raw"].astype(float) - cam.offset_adu) * cam.gain_e_per_adu / cam.qe
    params = list(acquisition["params"])
    fft = wiener_sim(acquisition["raw"], params, camera=cam, clip_negative=False, wiener_w=0.05,
                     **OPTICS)  # the fixed-w filter the hardware implements
    real = wiener_realspace(photons, params, **OPTICS)
    b = SIZE // 4
    assert psnr(interior(fft, b), interior(real, b), data_range=np.ptp(interior(fft, b))) > 35
    truth = interior(acquisition["truth"], b)
    wide = interior(widefield_from_raw(acquisition["raw"], cam), b)
    assert fitted_psnr(truth, interior(real, b)) > fitted_psnr(truth, wide) + 2


def test_mmse_design_follows_the_automatic_fft_wiener_and_beats_the_fixed_one(
        acquisition: dict) -> None:
    """Designed with the prior measured on the stack (what ``wiener_sim`` does with
    ``wiener_w="auto"``), the 9x9 streaming filter reproduces the FFT MMSE Wiener and is
    closer to the truth than the classical fixed-w design."""
    cam = acquisition["camera"]
    photons = (acquisition["raw"].astype(float) - cam.offset_adu) * cam.gain_e_per_adu / cam.qe
    params = list(acquisition["params"])
    prior = measure_wiener_prior(acquisition["raw"], camera=cam, **OPTICS)
    assert prior is not None
    fft = wiener_sim(acquisition["raw"], params, camera=cam, clip_negative=False,
                     wiener_w=prior, **OPTICS)
    assert np.array_equal(fft, wiener_sim(acquisition["raw"], params, camera=cam,
                                          clip_negative=False, **OPTICS))  # auto = measured
    mmse = wiener_realspace(photons, params, wiener_w=prior, **OPTICS)
    fixed = wiener_realspace(photons, params, **OPTICS)
    b = SIZE // 4
    assert psnr(interior(fft, b), interior(mmse, b), data_range=np.ptp(interior(fft, b))) > 35
    truth = interior(acquisition["truth"], b)
    assert fitted_psnr(truth, interior(mmse, b)) > fitted_psnr(truth, interior(fixed, b)) + 0.2


def test_integer_demodulation_follows_the_float_one(acquisition: dict) -> None:
    """demodulate_int (the RTL's reference) decodes to the float demodulation within its
    rounding, and a tile's registers (`at`) give the frame's result on that tile."""
    codes = LinearSimCodes()
    cam = acquisition["camera"]
    above = acquisition["raw"].astype(float) - cam.offset_adu
    step = codes.step_for(above)
    q = codes.encode(above, step)
    params = list(acquisition["params"])
    regs = DemodRegisters.from_parameters(params, codes)
    channels, saturated = demodulate_int(q, regs)
    assert saturated == 0
    ref = demodulate_float(q.astype(float) - codes.in_zero, params)
    gains = np.tile([codes.wide_gain, codes.channel_gain, codes.channel_gain], 3)
    zeros = np.tile([codes.wide_zero, 128, 128], 3)
    decoded = (channels.astype(float) - zeros[:, None, None]) / gains[:, None, None]
    # rounding of the code (0.5) plus the 10-bit phase table (|z| · 2π/2048)
    tol = 0.5 / gains.min() + np.abs(ref).max() * 2 * np.pi / 2048 + 0.05
    assert np.abs(decoded - ref).max() < tol
    y0, x0 = 17, 40
    tile, _ = demodulate_int(np.ascontiguousarray(q[:, y0:y0 + 32, x0:x0 + 24]),
                             regs.at(y0, x0))
    np.testing.assert_array_equal(tile, channels[:, y0:y0 + 32, x0:x0 + 24])


def test_demodulation_counts_saturation() -> None:
    """Extreme codes saturate the channels and are counted, not wrapped."""
    codes = LinearSimCodes()
    params = list(SimParameters.from_dict(json.loads(json.dumps(_params_doc())), "test"))
    regs = DemodRegisters.from_parameters(params, codes)
    q = np.zeros((9, 4, 4), np.uint8)
    q[0::3] = 255  # u0 = 255, u1 = u2 = 0: |A| = 510, far beyond the band channels' range
    channels, saturated = demodulate_int(q, regs)
    assert saturated > 0
    assert channels.dtype == np.uint8 and {0, 255} & set(np.unique(channels))


def _params_doc() -> dict:
    pattern = make_pattern()
    params = SimParameters(tuple(pattern.angle_parameters(**OPTICS)), n_phases=3,
                           frame_shape=(SIZE, SIZE), **OPTICS)
    return params.to_dict()


@pytest.fixture(scope="module")
def built(acquisition: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The user's flow: save the parameters, build the bundle (32² tiles)."""
    folder = tmp_path_factory.mktemp("wiener")
    raw = folder / "raw.tif"
    tifffile.imwrite(raw, acquisition["raw"])
    r = runner.invoke(app, ["sim", str(raw), str(folder / "classical.tif"), *FLAGS,
                            "--save-params", str(folder / "p.json")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sim-bundle", "--params", str(folder / "p.json"), "--out",
                            str(folder / "bundle"), "--tile", "32", "--target-mpix", "4"])
    assert r.exit_code == 0, r.output
    return {"folder": folder, "raw": raw, "bundle": folder / "bundle"}


def test_bundle_is_bit_exact_along_the_chain_with_full_range_tiles(built: dict) -> None:
    bundle = load_bundle(built["bundle"])
    v = bundle.manifest["verification"]
    assert v["bit_exact"] and all(n == 0 for n in v["stages"].values())
    assert "host:emulate" in v["stages"] and "finn:step_convert_to_hw" in v["stages"]
    assert v["output_range"] == [0, 255]  # full-range tiles reach both ends
    assert all(f == 1.0 for f in v["thresholds_exercised"].values())
    assert bundle.is_wiener and bundle.frames == 9 and bundle.upscale == 2
    assert bundle.manifest["network"]["macs_per_pixel"] == 9 * 4 * 9 * 9
    # designed by default as the MMSE filter for the light level `sim --save-params` saw
    rec = bundle.manifest["reconstruction"]
    saved = SimParameters.load(built["folder"] / "p.json").wiener_prior
    assert rec["wiener_w"] == "auto" and saved is not None
    assert rec["wiener_prior"] == saved.to_dict()
    with pytest.raises(BundleError, match="linear"):
        _ = bundle.signal


def test_sim_model_reconstructs_like_the_classical_wiener(built: dict,
                                                          acquisition: dict) -> None:
    folder = built["folder"]
    out = folder / "hw.tif"
    r = runner.invoke(app, ["sim", str(built["raw"]), str(out), *FLAGS, "--model",
                            str(built["bundle"])])
    assert r.exit_code == 0, r.output
    assert "hardware Wiener" in " ".join(r.stdout.split())
    hw = tifffile.imread(out)
    classical = tifffile.imread(folder / "classical.tif")
    assert hw.shape == classical.shape == (2 * SIZE, 2 * SIZE)
    b = SIZE // 4
    truth = interior(acquisition["truth"], b)
    wide = interior(widefield_from_raw(acquisition["raw"], acquisition["camera"]), b)
    got, ref = fitted_psnr(truth, interior(hw, b)), fitted_psnr(truth, interior(classical, b))
    assert got > fitted_psnr(truth, wide) + 2  # super-resolution, not widefield
    # the 9x9 filter, 8-bit codes and 8-bit weights cost ~1 dB here (README)
    assert got > ref - 3.0
    # input units: a uniform region has the widefield value (offset included)
    assert abs(interior(hw, b).mean() / interior(classical, b).mean() - 1) < 0.02


def test_another_pattern_or_option_is_one_clear_error(built: dict, acquisition: dict) -> None:
    folder = built["folder"]
    other = folder / "other.tif"
    tifffile.imwrite(other, acquisition["other"])
    cases = [
        ([str(other), str(folder / "o1.tif"), *FLAGS], "compiled for"),
        ([str(built["raw"]), str(folder / "o2.tif"), *FLAGS, "--wiener", "0.2"], "--wiener"),
        ([str(built["raw"]), str(folder / "o3.tif"), "--na", "1.4", "--wavelength", "520",
          "--pixel-size", "0.065"], "na"),
    ]
    for args, message in cases:
        r = runner.invoke(app, ["sim", *args, "--model", str(built["bundle"])])
        assert r.exit_code != 0
        assert message in " ".join(r.stderr.split()), r.output
        assert not Path(args[1]).exists()


def test_emulate_wiener_is_the_bundle_path(built: dict, acquisition: dict) -> None:
    """simhw.emulate_wiener (the benchmark's row) returns exactly what the compiled
    bundle's emulated accelerator returns through the host code."""
    from fluorofpga.simhw import emulate_wiener

    params = SimParameters.load(built["folder"] / "p.json")
    zero = acquisition["camera"].offset_adu
    emulated, _ = emulate_wiener(acquisition["raw"], params, zero)
    bundle = load_bundle(built["bundle"])
    with bundle.accelerator("emulate") as acc:
        restorer = bundle.wiener_restorer(acc, zero)
        np.testing.assert_array_equal(restorer(acquisition["raw"], params), emulated)
        assert restorer.counts["pixels"] == 4 * SIZE * SIZE


def test_stream_sim_through_the_shipped_wiener_bundle(tmp_path: Path) -> None:
    """The simulated SIM camera's pattern is the shipped bundle's design: `stream --sim
    --model` reconstructs live through it, optics taken from the bundle."""
    out = tmp_path / "live.tif"
    r = runner.invoke(app, ["stream", "--sim", "--source", "sim", "--size", "128",
                            "--frames", "18", "--model", str(WIENER9),
                            "--sink", str(out)])
    assert r.exit_code == 0, r.output
    assert "classical Wiener bundle wiener9" in " ".join(r.stdout.split())
    images = tifffile.imread(out)
    assert images.shape == (2, 256, 256)
    assert np.isfinite(images).all() and images.mean() > 0


def test_staged_wiener_stream_is_the_reconstructor_group_by_group(tmp_path: Path) -> None:
    """`stream --sim --model wiener9/` runs parameters + demodulation, the filter and the
    pixel-out on their own threads; the images are bit-identical to calling a
    SimReconstructor with the same bundle on each group, parameters estimated once."""
    from fluorofpga import app as facade
    from fluorofpga.host.simstream import SimGrouper, SimReconstructor, SimulatedSimCameraSource

    out = tmp_path / "live.tif"
    r = facade.stream("sim", str(out), bundle_path=WIENER9, frames=27, size=96, sim=True,
                      seed=3)
    assert r["groups_reconstructed"] == 3
    assert set(r["stage_ms_mean"]) == {"pack", "accelerate", "unpack"}
    images = tifffile.imread(out)
    bundle = load_bundle(WIENER9)
    design = bundle.manifest["reconstruction"]
    optics = {"na": design["na"], "wavelength_nm": design["wavelength_nm"],
              "pixel_size_nm": design["pixel_size_nm"]}
    cam = SimulatedSimCameraSource(27, (96, 96), seed=3, **optics)  # the stream's camera
    with bundle.accelerator("emulate") as acc:
        recon = SimReconstructor(**optics, camera=cam.camera,
                                 hardware=bundle.wiener_restorer(acc, cam.camera.offset_adu))
        for got, (_, stack) in zip(images, SimGrouper(cam), strict=True):
            np.testing.assert_array_equal(got, recon(stack))
    assert r["reconstruction"]["counts"] == dict(recon.hardware.counts)


@pytest.mark.slow
def test_stitched_demodulation_and_filter_are_the_hosts_path(built: dict, verilator: str,
                                                             tmp_path: Path) -> None:
    """The whole Wiener hardware in one stitched design (sim_demod.sv -> width converter ->
    the FINN layers' RTL) in Verilator: raw-frame codes and each tile's register load in,
    the same output codes as the host's path (demodulate_int, then the emulator), under
    random idle and backpressure, for a camera tile away from the frame origin and a
    full-range random tile (the demodulation saturates); and again after a reset in the
    middle of a tile."""
    from fluorofpga.hw.demod_kernel import demod_config_words
    from fluorofpga.hw.rtlsim_backend import wiener_design
    from fluorofpga.hw.stitch import simulate_accelerator
    from fluorofpga.simhw import design_parameters, wiener_raw_codes

    bundle = load_bundle(built["bundle"])
    th, tw = bundle.tile_shape
    base = DemodRegisters.from_parameters(list(design_parameters(bundle)),
                                          bundle.linear_codes)
    rng = np.random.default_rng(8)
    raw = [wiener_raw_codes(bundle, 1, seed=5)[0],
           rng.integers(0, 256, (9, th, tw)).astype(np.uint8)]
    regs = [base.at(29, 61), base.at(0, 0)]
    want = []
    with bundle.accelerator("emulate") as emu:
        for q, r in zip(raw, regs, strict=True):
            channels, saturated = demodulate_int(q, r)
            want.append(emu.run(np.ascontiguousarray(np.moveaxis(channels, 0, -1))))
    assert saturated > 0  # the full-range tile reaches the demodulation's limits
    design = wiener_design(bundle, tmp_path)
    assert design.demod and design.in_bits == 72 and design.in_channels == 9
    tiles = np.stack([np.moveaxis(q, 0, -1) for q in raw]).astype(np.uint32)
    cfg = [demod_config_words(r, tw) for r in regs]
    for name, kw in (("stalls", {"idle_prob": 0.2, "backpressure_prob": 0.2, "seed": 3}),
                     ("reset", {"reset_after": th * tw // 3})):
        run = simulate_accelerator(design, tiles, cfg=cfg, run_name=name, **kw)
        for k in range(len(raw)):
            np.testing.assert_array_equal(run.words[k], want[k], err_msg=f"{name}, tile {k}")
    assert want[0].min() < want[0].max()  # a real image, not a constant
    with pytest.raises(ValueError, match="register load"):
        simulate_accelerator(design, tiles)  # a demod design without its loads


def test_sim_bundle_bad_input_is_one_error_and_writes_nothing(built: dict,
                                                              tmp_path: Path) -> None:
    params = built["folder"] / "p.json"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    no_prior = tmp_path / "no_prior.json"  # as saved by an earlier fluorofpga
    document = json.loads(params.read_text())
    del document["wiener_prior"]
    no_prior.write_text(json.dumps(document))
    cases = [
        (["--params", str(tmp_path / "missing.json")], "missing.json"),
        (["--params", str(bad_json)], "bad.json"),
        (["--params", str(params), "--kernel", "8"], "odd"),
        (["--params", str(params), "--wiener", "-1"], "wiener_w"),
        (["--params", str(params), "--wiener", "bogus"], "wiener_w"),
        (["--params", str(params), "--board", "nosuchboard"], "nosuchboard"),
        (["--params", str(no_prior)], "no noise prior"),  # auto needs the saved light level
    ]
    for args, message in cases:
        out = tmp_path / "b"
        r = runner.invoke(app, ["sim-bundle", *args, "--out", str(out), "--tile", "32"])
        assert r.exit_code != 0, args
        assert message in " ".join(r.stderr.split()), (args, r.output)
        assert not out.exists()
        assert not any(p.name.startswith(".b") for p in tmp_path.iterdir())
    # an existing bundle is replaced only with --overwrite
    r = runner.invoke(app, ["sim-bundle", "--params", str(params), "--out",
                            str(built["bundle"]), "--tile", "32"])
    assert r.exit_code != 0 and "overwrite" in " ".join(r.stderr.split())
    assert load_bundle(built["bundle"]).manifest["verification"]["bit_exact"]


def test_a_phase_major_stack_is_reordered_for_the_hardware_too(built: dict,
                                                              acquisition: dict) -> None:
    """The estimation finds a phase-major stack (a note) and the bundle's demodulation
    gets the frames in its angle-major order: the same image as from the angle-major file."""
    folder = built["folder"]
    raw = acquisition["raw"]
    swapped = folder / "phase_major.tif"
    tifffile.imwrite(swapped, np.stack([raw[3 * a + j] for j in range(3) for a in range(3)]))
    outs = []
    for name, src in (("am.tif", built["raw"]), ("pm.tif", swapped)):
        r = runner.invoke(app, ["sim", str(src), str(folder / name), *FLAGS, "--model",
                                str(built["bundle"]), "--overwrite"])
        assert r.exit_code == 0, r.output
        outs.append(tifffile.imread(folder / name))
    assert "phase-major" in " ".join(r.stderr.split())
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-3 * float(outs[0].max()))


def test_calibration_gives_photons_through_the_bundle(built: dict, acquisition: dict,
                                                      tmp_path: Path) -> None:
    """With a calibration (per-pixel offsets) the bundle's reconstruction is in photons,
    as the CPU Wiener's: the same mean as the classical reconstruction of the same file."""
    from fluorofpga.microscope import Calibration

    cam = acquisition["camera"]
    rng = np.random.default_rng(6)
    offset = rng.normal(cam.offset_adu, 3.0, (SIZE, SIZE))
    raw = np.clip(acquisition["raw"] + np.rint(offset - cam.offset_adu), 0, 65535)
    src = tmp_path / "raw.tif"
    tifffile.imwrite(src, raw.astype(np.uint16))
    cal = tmp_path / "cal.npz"
    Calibration(offset_adu=offset, read_noise_adu=np.full((SIZE, SIZE), 1.0),
                gain_e_per_adu=cam.gain_e_per_adu, qe=cam.qe).save(cal)
    images = []
    for name, extra in (("cpu.tif", []), ("hw.tif", ["--model", str(built["bundle"])])):
        r = runner.invoke(app, ["sim", str(src), str(tmp_path / name), *FLAGS,
                                "--calibration", str(cal), *extra])
        assert r.exit_code == 0, r.output
        images.append(tifffile.imread(tmp_path / name))
    b = SIZE // 4
    cpu, hw = (interior(im, b) for im in images)
    assert hw.mean() == pytest.approx(cpu.mean(), rel=0.03)
    assert fitted_psnr(interior(acquisition["truth"], b), hw) > 35


def test_compile_writes_the_whole_wiener_hardware_for_vivado(built: dict,
                                                            tmp_path: Path) -> None:
    """`fluorofpga compile` of a Wiener-SIM bundle: reconstructions/s estimated with the
    demodulation's resources counted, and a Vivado folder whose RTL is the whole design
    (sim_demod.sv, its sine tables and the width converter in front of the network)."""
    out = tmp_path / "c"
    r = runner.invoke(app, ["compile", "--model", str(built["bundle"]), "--board", "kv260",
                            "--fps", "30", "--frame", "256x256", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert "sim_demod" in report["layers"]  # its resources counted beside the network's
    assert any("sim_demod in front of the network" in n for n in report["notes"])
    rtl = out / "vivado" / "rtl_full"  # rtl/: the board design (the network alone)
    design = json.loads((rtl / "design.json").read_text())
    assert design["demod"] and design["in_bits"] == 72 and design["in_channels"] == 9
    names = {Path(s).name for s in design["sources"]}
    assert {"sim_demod.sv", "dwc_axi.sv"} <= names
    assert (rtl / "sim_demod_tables.svh").is_file()
    top = (rtl / f"{design['top']}.sv").read_text()
    assert "sim_demod u_sim_demod" in top and "s_axis_cfg_tdata" in top
    # the board design: the network alone behind the driver's registers (the host
    # demodulates and streams the 9 channels, one a DMA beat, as the pynq backend does)
    assert report["board_kernel"]
    kernel = (out / "vivado" / "rtl" / "fluorofpga_kernel.sv").read_text()
    assert ".IN_CHANNELS(9), .OUT_CHANNELS(4)" in kernel and ".IN_BEATS(9)" in kernel
    tcl = (out / "vivado" / "block_design.tcl").read_text()
    assert "set in_bits      8" in tcl and "set out_bits     8" in tcl


def test_data_far_from_the_designed_light_level_gets_a_note() -> None:
    """The shipped bundle's MMSE filter is designed for the simulated camera at 500
    photons: a stream at that light says nothing, one at 20 photons is told to rebuild."""
    from fluorofpga.host.simstream import SimulatedSimCameraSource
    from fluorofpga.microscope.sim_params import LightLevelWarning

    bundle = load_bundle(WIENER9)
    for peak, noted in ((500.0, False), (20.0, True)):
        camera = SimulatedSimCameraSource(9, (128, 128), peak_photons=peak, seed=3)
        raw = camera.raw_group(np.random.default_rng(4))
        with bundle.accelerator("emulate") as acc:
            restorer = bundle.wiener_restorer(acc, camera.camera.offset_adu)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                restorer(raw, list(SimParameters.load(WIENER9.parent / "wiener9-design.json")))
                restorer(raw, list(SimParameters.load(WIENER9.parent / "wiener9-design.json")))
        light = [w for w in caught if issubclass(w.category, LightLevelWarning)]
        assert len(light) == (1 if noted else 0), [str(w.message) for w in caught]
        if noted:
            assert "less light" in str(light[0].message)
            assert "sim-bundle --params" in str(light[0].message)
