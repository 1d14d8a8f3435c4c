"""`fluorofpga sim`: classical 9-frame SIM of raw TIFF files through the CLI.

The raw files are written with tifffile from the project's SIM simulator (128² camera
pixels, NA 1.2, 520 nm, 65 nm pixels); every check reads the files the command wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from fluorofpga.cli import app
from fluorofpga.microscope import (
    Calibration,
    ImageMeta,
    frc_resolution,
    make_pattern,
    read_image_meta,
    render_specimen,
    sim_ground_truth,
    simulate_sim,
    widefield_from_raw,
    write_ome_zarr,
)

NA, WAVELENGTH, PIXEL_NM = 1.2, 520.0, 65.0
OPTICS = {"na": NA, "wavelength_nm": WAVELENGTH, "pixel_size_nm": PIXEL_NM}
OPTIC_FLAGS = ["--na", str(NA), "--wavelength", str(WAVELENGTH), "--pixel-size",
               str(PIXEL_NM / 1e3)]
ABBE_NM = WAVELENGTH / (2 * NA)  # widefield resolution limit, 217 nm
CUTOFF = 2 * NA / WAVELENGTH * PIXEL_NM  # widefield OTF cut-off, cycles per camera pixel
SIZE = 128
PEAK_PHOTONS = 300.0

runner = CliRunner()


class Result:
    """Exit code, stdout and stderr of one CLI run, with rich's line wrapping undone."""

    def __init__(self, args: list[str]) -> None:
        r = runner.invoke(app, ["sim", *args])
        self.exit_code = r.exit_code
        self.stdout, self.stderr = (" ".join(text.split()) for text in (r.stdout, r.stderr))
        self.output = f"{r.stdout}\n{r.stderr}\n{r.exception!r}"


def run(*args: str | Path | float) -> Result:
    """Invoke ``fluorofpga sim`` (stderr kept apart: notes and errors go there)."""
    return Result([str(a) for a in args])


@pytest.fixture(scope="module")
def scene() -> dict:
    """One specimen, its SIM ground truth and two independent 3x3 acquisitions of it."""
    rng = np.random.default_rng(2026)
    specimen = render_specimen((2 * SIZE, 2 * SIZE), rng, filaments=SIZE // 6, puncta=SIZE,
                               nuclei=0)
    pattern = make_pattern(start_angle_rad=0.3, phase_offsets_rad=(0.4, 2.0, 4.1),
                           angle_error_rad=0.01, phase_error_rad=0.05, rng=rng)
    first, second = (simulate_sim(specimen, pattern, peak_photons=PEAK_PHOTONS, rng=rng,
                                  **OPTICS) for _ in range(2))
    other = make_pattern(start_angle_rad=0.8, phase_offsets_rad=(1.0, 3.0, 5.0))
    return {
        "truth": sim_ground_truth(specimen, k_fraction=pattern.k_fraction, **OPTICS),
        "first": first, "second": second,
        "other_pattern": simulate_sim(specimen, other, peak_photons=PEAK_PHOTONS, rng=rng,
                                      **OPTICS),
    }


def write_plain(path: Path, raw: np.ndarray) -> Path:
    """A multi-page TIFF without axes or calibration (axes read back as QYX)."""
    tifffile.imwrite(path, raw)
    return path


def write_imagej(path: Path, raw: np.ndarray, axes: str = "TYX", interval: float = 0.05
                 ) -> Path:
    """An ImageJ hyperstack with pixel size in µm and a frame interval."""
    metadata = {"axes": axes, "unit": "um"}
    if "T" in axes:
        metadata["finterval"] = interval
    tifffile.imwrite(path, raw, imagej=True, metadata=metadata,
                     resolution=(1e3 / PIXEL_NM, 1e3 / PIXEL_NM))
    return path


def write_ome_with_optics(path: Path, raw: np.ndarray) -> Path:
    """OME-TIFF: pixel size in nm, emission wavelength, objective NA (Instrument element)."""
    tifffile.imwrite(path, raw, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": PIXEL_NM, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": PIXEL_NM, "PhysicalSizeYUnit": "nm",
        "Channel": {"EmissionWavelength": WAVELENGTH, "EmissionWavelengthUnit": "nm"}})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    instrument = (f'<Instrument ID="Instrument:0"><Objective ID="Objective:0:0" '
                  f'LensNA="{NA}"/></Instrument>')
    xml = xml.replace('<Image ID="Image:0"', instrument + '<Image ID="Image:0"', 1)
    xml = xml.replace('<Pixels ', '<InstrumentRef ID="Instrument:0"/>'
                      '<ObjectiveSettings ID="Objective:0:0"/><Pixels ', 1)
    tifffile.tiffcomment(path, xml)
    return path


def phase_major(raw: np.ndarray) -> np.ndarray:
    """The same frames in phase-major order (frame 3j + a = phase j of angle a)."""
    return np.stack([raw[3 * a + j] for j in range(3) for a in range(3)])


def band_correlation(image: np.ndarray, truth: np.ndarray, low: float, high: float) -> float:
    """Spectral correlation with the truth between ``low`` and ``high`` × the widefield
    cut-off (frequencies of the 2x grid expressed in cycles per camera pixel)."""
    crop = slice(SIZE // 8, -SIZE // 8)
    a, b = (x[crop, crop] - x[crop, crop].mean() for x in (image, truth))
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    f = np.fft.fftfreq(a.shape[0]) * 2  # fine-grid cycles/px -> camera cycles/px
    rho = np.hypot(f[:, None], f[None, :]) / CUTOFF
    band = (rho > low) & (rho < high)
    cross = np.sum(fa[band] * np.conj(fb[band])).real
    return float(cross / np.sqrt(np.sum(np.abs(fa[band]) ** 2) * np.sum(np.abs(fb[band]) ** 2)))


def only_output(folder: Path, expected: set[str]) -> None:
    """Nothing but ``expected`` in ``folder`` (no output, no temporary files)."""
    assert {p.name for p in folder.iterdir()} == expected


def test_time_series_reconstructed_on_2x_grid_with_metadata_and_resolution_gain(
        scene: dict, tmp_path: Path) -> None:
    raw = np.concatenate([scene["first"].raw, scene["second"].raw])  # (2·9)YX time series
    src = write_imagej(tmp_path / "raw.tif", raw, interval=0.05)
    out = tmp_path / "sim.tif"
    r = run(src, out, "--na", NA, "--wavelength", WAVELENGTH)  # pixel size from the file
    assert r.exit_code == 0, r.output
    assert "pixel 65 nm (file metadata) -> 32.5 nm" in r.stdout
    assert "reconstructed 2 image(s)" in r.stdout and "s per image" in r.stdout
    assert r.stdout.count("SIM parameters (estimated per stack, angle-major)") == 2
    assert "k/cutoff" in r.stdout and "mod." in r.stdout
    image, meta = read_image_meta(out)
    assert image.shape == (2, 2 * SIZE, 2 * SIZE) and image.dtype == np.float32
    assert meta.axes == "TYX" and meta.spatial_unit == "micrometer"
    assert meta.pixel_size_um == pytest.approx((PIXEL_NM / 2e3, PIXEL_NM / 2e3))
    assert meta.frame_interval_s == pytest.approx(9 * 0.05)  # one SIM image per 9 frames

    # resolution: FRC of the two SIM images against that of the two widefield images
    crop = slice(SIZE // 4, -SIZE // 4)
    wide = [widefield_from_raw(scene[k].raw, scene[k].camera) for k in ("first", "second")]
    frc_sim = frc_resolution(image[0][crop, crop], image[1][crop, crop],
                             pixel_size_nm=PIXEL_NM / 2)
    frc_wide = frc_resolution(wide[0][crop, crop], wide[1][crop, crop],
                              pixel_size_nm=PIXEL_NM / 2)
    assert frc_wide > 0.95 * ABBE_NM
    assert frc_sim < 0.75 * frc_wide and frc_sim < 0.8 * ABBE_NM
    # and the frequencies beyond the widefield cut-off are the specimen's
    beyond = [band_correlation(x, scene["truth"], 1.1, 1.6) for x in (image[0], wide[0])]
    assert beyond[0] > 0.7 and beyond[1] < 0.3


def test_optics_and_pixel_size_from_ome_metadata_units_carried(
        scene: dict, tmp_path: Path) -> None:
    src = write_ome_with_optics(tmp_path / "raw.ome.tif", scene["first"].raw)
    out = tmp_path / "sim.tif"
    r = run(src, out)
    assert r.exit_code == 0, r.output
    assert "NA 1.2 (file metadata)" in r.stdout and "emission 520 nm (file metadata)" in r.stdout
    image, meta = read_image_meta(out)
    assert image.shape == (2 * SIZE, 2 * SIZE) and meta.axes == "YX"
    assert meta.spatial_unit == "nanometer"
    assert (meta.pixel_size_y, meta.pixel_size_x) == pytest.approx((PIXEL_NM / 2,) * 2)

    # the command line overrides the file
    r = run(src, tmp_path / "override.tif", "--na", "1.15")
    assert r.exit_code == 0, r.output
    assert "NA 1.15 (command line)" in r.stdout


def test_ome_zarr_in_and_out(scene: dict, tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    src = tmp_path / "raw.zarr"
    write_ome_zarr(src, scene["first"].raw, meta=ImageMeta(
        "TYX", PIXEL_NM / 1e3, PIXEL_NM / 1e3, frame_interval=0.02))
    out = tmp_path / "sim.zarr"
    r = run(src, out, "--na", NA, "--wavelength", WAVELENGTH)
    assert r.exit_code == 0, r.output
    image, meta = read_image_meta(out)
    assert image.shape == (2 * SIZE, 2 * SIZE) and meta.axes == "YX"
    assert meta.pixel_size_um == pytest.approx((PIXEL_NM / 2e3,) * 2)
    np.testing.assert_allclose(  # the same reconstruction as from a TIFF
        np.asarray(image),
        tifffile.imread(_reconstructed_tiff(scene, tmp_path)), rtol=1e-6, atol=1e-4)


def _reconstructed_tiff(scene: dict, folder: Path) -> Path:
    out = folder / "from_tiff.tif"
    r = run(write_plain(folder / "raw.tif", scene["first"].raw), out, *OPTIC_FLAGS)
    assert r.exit_code == 0, r.output
    return out


def test_missing_optics_is_one_clear_error_and_writes_nothing(scene: dict,
                                                              tmp_path: Path) -> None:
    src = write_plain(tmp_path / "raw.tif", scene["first"].raw)
    r = run(src, tmp_path / "sim.tif")
    assert r.exit_code == 2
    assert r.stderr.count("error:") == 1
    for flag in ("--na", "--wavelength", "--pixel-size"):
        assert flag in r.stderr
    only_output(tmp_path, {"raw.tif"})


def test_phase_major_stack_is_detected_reordered_with_a_note_or_refused(
        scene: dict, tmp_path: Path) -> None:
    raw = scene["first"].raw
    reference = tmp_path / "angle_major.tif"
    assert run(write_plain(tmp_path / "am.tif", raw), reference, *OPTIC_FLAGS).exit_code == 0
    src = write_plain(tmp_path / "pm.tif", phase_major(raw))
    out = tmp_path / "sim.tif"
    r = run(src, out, *OPTIC_FLAGS)
    assert r.exit_code == 0, r.output
    assert "note:" in r.stderr and "phase-major" in r.stderr
    assert "phase-major" in r.stdout  # the parameter table names the order used
    np.testing.assert_allclose(tifffile.imread(out), tifffile.imread(reference), rtol=1e-5,
                               atol=1e-3)

    refused = tmp_path / "refused.tif"
    r = run(src, refused, *OPTIC_FLAGS, "--no-reorder")
    assert r.exit_code == 2 and "phase-major" in r.stderr
    assert not refused.exists()


def test_a_scrambled_stack_is_refused(scene: dict, tmp_path: Path) -> None:
    raw = scene["first"].raw
    scrambled = raw[[0, 4, 8, 3, 7, 2, 6, 1, 5]]  # every "angle" mixes all three
    src = write_plain(tmp_path / "raw.tif", scrambled)
    r = run(src, tmp_path / "sim.tif", *OPTIC_FLAGS)
    assert r.exit_code == 2 and "error:" in r.stderr
    only_output(tmp_path, {"raw.tif"})


def test_widefield_frames_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(9711)
    specimen = render_specimen((2 * SIZE, 2 * SIZE), rng, filaments=SIZE // 6, puncta=SIZE,
                               nuclei=0)
    flat = simulate_sim(specimen, make_pattern(modulation=0.0), peak_photons=PEAK_PHOTONS,
                        rng=rng, **OPTICS)
    src = write_plain(tmp_path / "raw.tif", flat.raw)
    r = run(src, tmp_path / "sim.tif", *OPTIC_FLAGS)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("error:") == 1 and "no illumination pattern found" in r.stderr
    assert "widefield" in r.stderr and "NA, wavelength and pixel size" in r.stderr
    only_output(tmp_path, {"raw.tif"})


@pytest.mark.parametrize("case", ["ten_frames", "float", "single_frame", "z_stack",
                                  "channels", "existing_output"])
def test_bad_input_gets_one_error_and_writes_nothing(case: str, scene: dict,
                                                     tmp_path: Path) -> None:
    raw = scene["first"].raw
    src = tmp_path / "raw.tif"
    expect = {
        "ten_frames": "not a multiple of 9",
        "float": "float32",
        "single_frame": "axes 'YX'",
        "z_stack": "Z stack",
        "channels": "channels",
        "existing_output": "exists",
    }[case]
    if case == "ten_frames":
        write_plain(src, np.concatenate([raw, raw[:1]]))
    elif case == "float":
        write_plain(src, raw.astype(np.float32))
    elif case == "single_frame":
        write_plain(src, raw[0])
    elif case == "z_stack":
        write_imagej(src, raw, axes="ZYX")
    elif case == "channels":
        write_imagej(src, raw[:3], axes="CYX")
    else:
        write_plain(src, raw)
    out = tmp_path / "sim.tif"
    if case == "existing_output":
        out.write_bytes(b"keep me")
    r = run(src, out, *OPTIC_FLAGS)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("error:") == 1 and expect in r.stderr
    if case == "existing_output":
        assert out.read_bytes() == b"keep me"
        only_output(tmp_path, {"raw.tif", "sim.tif"})
    else:
        only_output(tmp_path, {"raw.tif"})


def test_params_round_trip_and_params_that_do_not_fit(scene: dict, tmp_path: Path) -> None:
    src = write_plain(tmp_path / "raw.tif", scene["first"].raw)
    params = tmp_path / "params.json"
    r = run(src, tmp_path / "estimated.tif", *OPTIC_FLAGS, "--save-params", params)
    assert r.exit_code == 0, r.output
    saved = json.loads(params.read_text())
    assert saved["layout"]["frame_shape"] == [SIZE, SIZE]
    assert saved["optics"]["pixel_size_nm"] == pytest.approx(PIXEL_NM)
    true_k = make_pattern().k_fraction * CUTOFF
    for angle in saved["angles"]:
        assert angle["k_cycles_per_px"] == pytest.approx(true_k, rel=1e-3)

    # reused on the same data: the same image, without estimation
    r = run(src, tmp_path / "reused.tif", *OPTIC_FLAGS, "--params", params)
    assert r.exit_code == 0, r.output
    assert "parameter check" in r.stdout and "params.json" in r.stdout
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "reused.tif"),
                                  tifffile.imread(tmp_path / "estimated.tif"))

    # another pixel size, another pattern: one error each, nothing written
    bad = tmp_path / "bad.tif"
    r = run(src, bad, "--na", NA, "--wavelength", WAVELENGTH, "--pixel-size", "0.07",
            "--params", params)
    assert r.exit_code == 2 and "pixel size" in r.stderr and not bad.exists()
    other = write_plain(tmp_path / "other.tif", scene["other_pattern"].raw)
    r = run(other, bad, *OPTIC_FLAGS, "--params", params)
    assert r.exit_code == 2 and r.stderr.count("error:") == 1, r.output
    assert "does not fit" in r.stderr and not bad.exists()
    # parameters of an angle-major stack are not silently applied to a phase-major one
    reordered = write_plain(tmp_path / "pm.tif", phase_major(scene["first"].raw))
    r = run(reordered, bad, *OPTIC_FLAGS, "--params", params)
    assert r.exit_code == 2 and r.stderr.count("error:") == 1, r.output
    assert "phase-major" in r.stderr and "leave out --params" in r.stderr
    assert not bad.exists()


def test_wiener_parameter_trades_resolution_for_noise(scene: dict, tmp_path: Path) -> None:
    src = write_plain(tmp_path / "raw.tif", scene["first"].raw)
    power = {}
    for w in ("0.05", "0.5"):
        out = tmp_path / f"w{w}.tif"
        r = run(src, out, *OPTIC_FLAGS, "--wiener", w)
        assert r.exit_code == 0, r.output
        assert f"Wiener w={w}" in r.stdout
        spectrum = np.abs(np.fft.fft2(tifffile.imread(out).astype(np.float64))) ** 2
        f = np.fft.fftfreq(2 * SIZE) * 2 / CUTOFF  # fraction of the widefield cut-off
        rho = np.hypot(f[:, None], f[None, :])
        power[w] = spectrum[(rho > 1.2) & (rho < 1.8)].sum()
    assert power["0.5"] < 0.5 * power["0.05"]  # the extended band is damped
    r = run(src, tmp_path / "bad.tif", *OPTIC_FLAGS, "--wiener", "0")
    assert r.exit_code == 2 and "Wiener parameter" in r.stderr
    assert not (tmp_path / "bad.tif").exists()


def test_calibration_gives_photons(scene: dict, tmp_path: Path) -> None:
    data = scene["first"]
    rng = np.random.default_rng(5)
    offset = rng.normal(100.0, 4.0, (SIZE, SIZE))  # per-pixel offsets on top of the camera's
    raw = np.clip(data.raw + np.rint(offset - 100.0), 0, 65535).astype(np.uint16)
    cal = tmp_path / "cal.npz"
    Calibration(offset_adu=offset, read_noise_adu=np.full((SIZE, SIZE), 3.5),
                gain_e_per_adu=data.camera.gain_e_per_adu, qe=data.camera.qe).save(cal)
    src = write_plain(tmp_path / "raw.tif", raw)
    out = tmp_path / "sim.tif"
    r = run(src, out, *OPTIC_FLAGS, "--calibration", cal)
    assert r.exit_code == 0, r.output
    assert "intensities in photons" in r.stdout
    image = tifffile.imread(out)
    assert image.mean() == pytest.approx(data.photons.mean(), rel=0.05)


@pytest.mark.parametrize("extra", [["--frames", "3"], ["--backend", "rtlsim"],
                                   ["--backend", "pynq"]])
def test_3_frame_and_hardware_options_without_a_model_are_refused_before_any_work(
        extra: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "does_not_exist.tif"  # not even read: refused before any work
    r = run(missing, tmp_path / "sim.tif", *OPTIC_FLAGS, *extra)
    assert r.exit_code == 2
    assert r.stderr.count("error:") == 1
    assert "needs a SIM bundle (--model)" in r.stderr
    only_output(tmp_path, set())


def test_a_model_that_is_not_a_bundle_is_refused_before_any_work(tmp_path: Path) -> None:
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, np.zeros((3, 32, 32), np.uint16))
    r = run(raw, tmp_path / "sim.tif", "--model", tmp_path / "bundle_dir")
    assert r.exit_code == 2 and r.stderr.count("error:") == 1
    assert "bundle_dir: no such folder" in r.stderr
    only_output(tmp_path, {"raw.tif"})


def test_five_phases_per_angle_with_frames_15(tmp_path: Path) -> None:
    rng = np.random.default_rng(515)
    specimen = render_specimen((2 * SIZE, 2 * SIZE), rng, filaments=SIZE // 6, puncta=SIZE,
                               nuclei=0)
    pattern = make_pattern(n_phases=5, start_angle_rad=0.5, phase_offsets_rad=(0.2, 1.9, 3.3),
                           angle_error_rad=0.01, phase_error_rad=0.05, rng=rng)
    data, again = (simulate_sim(specimen, pattern, peak_photons=PEAK_PHOTONS, rng=rng,
                                **OPTICS) for _ in range(2))
    assert data.raw.shape[0] == 15
    src = write_imagej(tmp_path / "raw5.tif", np.concatenate([data.raw, again.raw]),
                       interval=0.02)
    out = tmp_path / "sim5.tif"
    r = run(src, out, *OPTIC_FLAGS)  # read as 9-frame acquisitions: refused, with the hint
    assert r.exit_code != 0 and "--frames 15" in r.stderr and not out.exists()
    r = run(src, out, *OPTIC_FLAGS, "--frames", 15)
    assert r.exit_code == 0, r.output
    images, meta = read_image_meta(out)
    assert images.shape == (2, 2 * SIZE, 2 * SIZE)
    assert meta.frame_interval_s == pytest.approx(15 * 0.02)  # one SIM image per 15 frames
    image = images[0]
    truth = sim_ground_truth(specimen, k_fraction=pattern.k_fraction, **OPTICS)
    wide = widefield_from_raw(data.raw, data.camera)
    beyond = [band_correlation(x, truth, 1.1, 1.6) for x in (image, wide)]
    assert beyond[0] > 0.7 and beyond[1] < 0.3  # the resolution gain of the 9-frame test
    # the five-phase estimate: every angle's frequency within 0.05 % of the truth
    from fluorofpga import app as facade

    summary = facade.sim(src, tmp_path / "again.tif", frames=15, **{
        "na": NA, "wavelength_nm": WAVELENGTH, "pixel_size_um": PIXEL_NM / 1e3})
    truth_k = [p.k_cycles_per_px for p in pattern.angle_parameters(**OPTICS)]
    for rows in summary["parameters"]:
        assert np.allclose([row["k_cycles_per_px"] for row in rows], truth_k, rtol=5e-4)
    assert summary["reconstructions"] == 2
    bad = run(src, tmp_path / "x.tif", *OPTIC_FLAGS, "--frames", 10)
    assert bad.exit_code != 0 and "3 angles × N phases" in bad.stderr
