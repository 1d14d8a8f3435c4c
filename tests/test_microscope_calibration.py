"""sCMOS sensor model and calibration tests: known simulated truth is recovered."""

import dataclasses

import numpy as np
import pytest

from fluorofpga.microscope.calibration import (
    Calibration,
    CalibrationError,
    calibrate,
    calibrate_dark,
    find_hot_pixels,
    load_calibration,
    photon_transfer,
    shrink_offsets,
)
from fluorofpga.microscope.camera import SCMOSSensor

SHAPE = (48, 64)
N_DARK = 200
FLAT_PHOTONS = (20, 50, 100, 200, 400, 800, 1600, 3200)
N_FLAT = 20


def vignetted(photons: float, shape=SHAPE) -> np.ndarray:
    """A flat with 20 % fall-off to the corners, as real flats have."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = ((yy - shape[0] / 2) / shape[0]) ** 2 + ((xx - shape[1] / 2) / shape[1]) ** 2
    return photons * (1 - 0.4 * r2)


def acquisition(seed: int, n_flat: int = N_FLAT, levels=FLAT_PHOTONS, **sensor_kwargs):
    rng = np.random.default_rng(seed)
    sensor = SCMOSSensor.random(SHAPE, rng, **sensor_kwargs)
    dark = sensor.acquire(np.zeros((N_DARK, *SHAPE)), rng)
    flats = [sensor.acquire(np.broadcast_to(vignetted(p), (n_flat, *SHAPE)), rng) for p in levels]
    return sensor, dark, flats


@pytest.fixture(scope="module")
def measured():
    sensor, dark, flats = acquisition(1)
    return sensor, dark, flats, calibrate(dark, flats, qe=sensor.qe, camera_serial="SN-1")


# --------------------------------------------------------------------------- sensor model


def test_random_sensor_has_the_requested_spreads():
    sensor = SCMOSSensor.random((256, 256), np.random.default_rng(0), hot_pixel_fraction=0.01)
    assert np.mean(sensor.offset_adu) == pytest.approx(100, abs=0.05)
    assert np.std(sensor.offset_adu) == pytest.approx(2, rel=0.02)
    assert np.std(sensor.gain_e_per_adu) / np.mean(sensor.gain_e_per_adu) == pytest.approx(
        0.03, rel=0.03
    )
    assert np.median(sensor.read_noise_e) == pytest.approx(1.4, rel=0.02)
    assert np.mean(sensor.read_noise_e) > np.median(sensor.read_noise_e)  # right tail
    assert sensor.hot_pixels.mean() == pytest.approx(0.01, rel=0.1)
    dark = sensor.dark_current_e_per_s
    assert dark[sensor.hot_pixels].min() > 100 * np.median(dark[~sensor.hot_pixels])
    with pytest.raises(ValueError):
        sensor.offset_adu[0, 0] = 5  # maps are read-only


def test_sensor_pixel_statistics_match_theory():
    rng = np.random.default_rng(3)
    sensor = SCMOSSensor.random((4, 5), rng, exposure_s=0.5)
    photons = np.full((20000, 4, 5), 30.0)
    frames = sensor.acquire(photons, rng).astype(np.float64)
    electrons = sensor.qe * 30.0 + sensor.dark_electrons()
    mean = electrons / sensor.gain_e_per_adu + sensor.offset_adu
    var = (electrons + sensor.read_noise_e**2) / sensor.gain_e_per_adu**2 + 1 / 12
    np.testing.assert_allclose(frames.mean(axis=0), mean, rtol=2e-3)
    np.testing.assert_allclose(frames.var(axis=0), var, rtol=0.05)
    np.testing.assert_allclose(sensor.expected_adu(photons[0]), mean)


def test_sensor_clips_at_its_bit_depth_and_validates():
    rng = np.random.default_rng(0)
    sensor = SCMOSSensor.random((8, 8), rng, bit_depth=12)
    assert sensor.acquire(np.full((8, 8), 1e6), rng).max() == 4095
    with pytest.raises(ValueError, match="non-negative"):
        sensor.acquire(np.full((8, 8), -1.0), rng)
    with pytest.raises(ValueError, match="finite"):
        sensor.acquire(np.full((8, 8), np.nan), rng)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        sensor.acquire(np.zeros((8, 9)), rng)
    with pytest.raises(ValueError, match="bit_depth"):
        SCMOSSensor.random((8, 8), rng, bit_depth=14)
    with pytest.raises(ValueError, match="gain"):
        SCMOSSensor(offset_adu=np.full((2, 2), 100.0), gain_e_per_adu=0.0, read_noise_e=1.0)


def test_rolling_shutter_row_times():
    sensor = SCMOSSensor.random((100, 8), np.random.default_rng(0), line_time_us=10.0,
                                exposure_s=0.02)  # fmt: skip
    t0, t1 = sensor.row_times(0), sensor.row_times(1)
    np.testing.assert_allclose(np.diff(t0), 10e-6)
    assert t1[0] == pytest.approx(0.02 + 100 * 10e-6)
    assert sensor.timing_metadata()["shutter"] == "rolling"
    global_shutter = SCMOSSensor.random((100, 8), np.random.default_rng(0))
    assert np.all(global_shutter.row_times(2) == global_shutter.row_times(2)[0])


# --------------------------------------------------------------------------- calibration


def test_dark_maps_recover_offset_and_read_noise(measured):
    sensor, _, _, cal = measured
    true_offset = sensor.offset_adu + sensor.dark_electrons() / sensor.gain_e_per_adu
    # read noise as measured includes quantisation and dark shot noise
    true_sigma = np.sqrt(
        sensor.read_noise_adu**2 + sensor.dark_electrons() / sensor.gain_e_per_adu**2 + 1 / 12
    )
    standard_error = true_sigma / np.sqrt(N_DARK)
    assert np.all(np.abs(cal.offset_adu - true_offset) < 5 * standard_error)
    relative = cal.read_noise_adu / true_sigma - 1
    assert abs(np.median(relative)) < 0.01
    # per pixel, a std from T frames has relative sd 1/sqrt(2(T-1)) = 5 %
    assert np.std(relative) == pytest.approx(1 / np.sqrt(2 * (N_DARK - 1)), rel=0.15)
    assert np.median(np.abs(cal.read_noise_e / sensor.read_noise_e - 1)) < 0.05


@pytest.mark.parametrize("spread, columns", [(0.0, 0.0), (0.05, 1.5), (3.0, 0.0)])
def test_offset_map_is_shrunk_by_its_measurement_error(spread, columns):
    """20 darks measure each offset to ±σ/√20; where the sensor's own pixel-to-pixel
    spread is smaller, the shrunk map is much closer to the truth, where it is larger the
    map is left as measured; column structure is kept; atypical pixels move ≤ 2 s.e."""
    rng = np.random.default_rng(31)
    shape, frames = (96, 128), 20
    sensor = SCMOSSensor.random(shape, rng, offset_mean_adu=500.0, offset_sd_adu=spread,
                                gain_mean_e_per_adu=4.0, read_noise_median_e=3.5,
                                hot_pixel_fraction=5e-4)
    truth = sensor.offset_adu + rng.normal(0, columns, shape[1])[None, :]
    ys, xs = rng.integers(0, shape[0], 20), rng.integers(0, shape[1], 20)
    truth[ys, xs] += rng.choice([-1.0, 1.0], 20) * rng.uniform(3, 20, 20)  # atypical pixels
    sensor = dataclasses.replace(sensor, offset_adu=truth)
    truth = truth + sensor.dark_electrons() / sensor.gain_e_per_adu
    means, noise = calibrate_dark(sensor.acquire(np.zeros((frames, *shape)), rng))
    hot = find_hot_pixels(means, noise)
    shrunk, info = shrink_offsets(means, noise, frames, hot)
    typical = ~hot
    raw_err = np.sqrt(np.mean((means - truth)[typical] ** 2))
    err = np.sqrt(np.mean((shrunk - truth)[typical] ** 2))
    if spread + columns == 0:
        assert err < 0.4 * raw_err
        assert info["mean_weight"] < 0.3
    elif spread < 0.1:
        assert err < 0.7 * raw_err  # the columns are prior structure, not shrunk away
    else:
        assert err == pytest.approx(raw_err, rel=0.02)
        assert info["prior_sd_adu"] == pytest.approx(spread, rel=0.1)
    se = noise / np.sqrt(frames)
    assert np.all(np.abs(shrunk - means) <= 2.0 * se + 1e-12)  # limited translation
    np.testing.assert_array_equal(shrunk[hot], means[hot])
    with pytest.raises(CalibrationError, match="≥ 2 dark frames"):
        shrink_offsets(means, noise, 1)


def test_photon_transfer_recovers_gain_within_3_percent():
    for seed in range(3):
        sensor, dark, flats = acquisition(10 + seed)
        cal = calibrate(dark, flats)
        true_gain = np.mean(sensor.gain_e_per_adu)
        assert cal.gain_e_per_adu == pytest.approx(true_gain, rel=0.03)
        assert all(cal.ptc["used"])
        assert max(abs(r) for r in cal.ptc["residual_rel"]) < 0.02


def test_ptc_excludes_saturated_and_flickering_levels():
    sensor, dark, flats = acquisition(5, levels=(*FLAT_PHOTONS, 60000), bit_depth=16)
    rng = np.random.default_rng(0)
    flicker = flats[3].astype(np.float64) * rng.normal(1, 0.05, (N_FLAT, 1, 1))
    flats[3] = np.clip(np.rint(flicker), 0, 65535).astype(np.uint16)
    offset, _ = calibrate_dark(dark)
    ptc = photon_transfer(flats, offset)
    assert ptc.saturated.tolist() == [False] * len(FLAT_PHOTONS) + [True]
    assert not ptc.used[3] and not ptc.used[-1]
    assert ptc.used.sum() == len(FLAT_PHOTONS) - 1
    assert ptc.residual_rel[3] > 0.05
    assert ptc.gain_e_per_adu == pytest.approx(np.mean(sensor.gain_e_per_adu), rel=0.03)


def test_8_bit_camera_saturates_at_255():
    """8-bit frames: a level at the ADC's top (255) is flagged saturated and not fitted
    (the default clip level was 4095 for any data that fits 12 bits)."""
    levels = (20, 50, 100, 200, 400, 3000)
    sensor, dark, flats = acquisition(6, levels=levels, bit_depth=12, offset_mean_adu=10.0,
                                      gain_mean_e_per_adu=4.0, hot_pixel_fraction=0.0)
    # an 8-bit ADC: the sensor's values clipped at 255
    dark, *flats = (np.minimum(s, 255).astype(np.uint8) for s in (dark, *flats))
    assert np.mean(flats[-1] == 255) > 0.5
    offset, _ = calibrate_dark(dark)
    ptc = photon_transfer(flats, offset)
    assert ptc.saturation_adu == 255
    assert ptc.saturated.tolist() == [False] * (len(levels) - 1) + [True]
    assert not ptc.used[-1]
    assert ptc.gain_e_per_adu == pytest.approx(np.mean(sensor.gain_e_per_adu), rel=0.05)


def test_gain_map_when_enough_frames():
    sensor, dark, flats = acquisition(7, n_flat=100)
    cal = calibrate(dark, flats)
    assert cal.gain_map_e_per_adu is not None
    error = cal.gain_map_e_per_adu / sensor.gain_e_per_adu - 1
    assert abs(np.median(error)) < 0.03
    assert np.std(error) < 1.5 * cal.gain_map_rel_error
    few = calibrate(dark, [f[:5] for f in flats])
    assert few.gain_map_e_per_adu is None  # 5 frames per level cannot give 10 % per pixel


def test_conversions_round_trip_and_recover_photons(measured):
    sensor, _, _, cal = measured
    photons = vignetted(500.0)
    mean_adu = sensor.acquire(np.broadcast_to(photons, (200, *SHAPE)),
                              np.random.default_rng(9)).mean(axis=0)  # fmt: skip
    recovered = cal.adu_to_photons(mean_adu)
    assert np.median(recovered / photons) == pytest.approx(1.0, rel=0.03)
    np.testing.assert_allclose(cal.photons_to_adu(cal.adu_to_photons(mean_adu)), mean_adu)
    electrons = cal.adu_to_electrons(mean_adu)
    np.testing.assert_allclose(electrons, cal.adu_to_photons(mean_adu) * cal.qe)


def test_save_load_round_trip(tmp_path, measured):
    *_, cal = measured
    path = tmp_path / "cam.npz"
    cal.save(path)
    back = load_calibration(path)
    np.testing.assert_array_equal(back.offset_adu, cal.offset_adu)
    np.testing.assert_array_equal(back.read_noise_adu, cal.read_noise_adu)
    assert back.gain_e_per_adu == cal.gain_e_per_adu
    assert back.camera_serial == "SN-1" and back.qe == cal.qe
    assert back.summary() == cal.summary()
    assert back.offset_shrinkage == cal.offset_shrinkage is not None
    assert back.summary()["sensor_shape"] == list(SHAPE)


def test_load_rejects_foreign_and_future_files(tmp_path, measured):
    *_, cal = measured
    with pytest.raises(CalibrationError, match="no such"):
        load_calibration(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CalibrationError, match="no header"):
        load_calibration(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CalibrationError, match="not an .npz archive") as err:
        load_calibration(tmp_path / "text.npz")
    assert "pickle" not in str(err.value)  # never the advice to load it unsafely
    import tifffile

    tifffile.imwrite(tmp_path / "dark.tif", np.zeros((4, 4), np.uint16))
    with pytest.raises(CalibrationError, match="a TIFF image.*`fluorofpga calibrate` wrote"):
        load_calibration(tmp_path / "dark.tif")
    cal.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as z:
        arrays = dict(z)
    arrays["header"] = np.array(str(arrays["header"]).replace('"version": 1', '"version": 2'))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(CalibrationError, match="version 2"):
        load_calibration(tmp_path / "future.npz")
    with np.load(tmp_path / "c.npz") as z:
        arrays = dict(z)
    arrays["offset_adu"] = arrays["offset_adu"].astype(np.float64)
    arrays["offset_adu"][0, 0] = np.nan  # a damaged map: the file is named
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(CalibrationError, match=r"nan.npz: .*NaN"):
        load_calibration(tmp_path / "nan.npz")


def test_wrong_sensor_size_is_reported(measured):
    *_, cal = measured
    with pytest.raises(CalibrationError, match="48×64 sensor but the frames are 512×512"):
        cal.adu_to_photons(np.zeros((512, 512)))
    with pytest.raises(CalibrationError, match="48×64 sensor"):
        cal.check_shape((3, 64, 48))
    cal.check_shape((3, *SHAPE))  # a TYX stack of the right size is fine


def with_nan(dark: np.ndarray) -> np.ndarray:
    out = dark.astype(np.float32)
    out[3, 2, 1] = np.nan
    return out


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (with_nan, "NaN"),
        (lambda d: d.astype(np.float32) - 200, "negative"),
        (lambda d: d[:5], "at least 10"),
        (lambda d: d[0], "TYX"),
    ],
)
def test_bad_dark_stacks_raise(measured, bad, message):
    _, dark, flats, _ = measured
    with pytest.raises(CalibrationError, match=message):
        calibrate(bad(dark), flats)


def test_bad_flats_raise(measured):
    _, dark, flats, _ = measured
    with pytest.raises(CalibrationError, match="≥ 3"):
        calibrate(dark, flats[:2])
    with pytest.raises(CalibrationError, match="list of TYX"):
        calibrate(dark, flats[0])
    with pytest.raises(CalibrationError, match="at least 2"):
        calibrate(dark, [f[:1] for f in flats])
    with pytest.raises(CalibrationError, match="48×32 frames but the dark stack is 48×64"):
        calibrate(dark, [f[:, :, :32] for f in flats])
    with pytest.raises(CalibrationError, match="≥ 0"):
        Calibration(np.zeros(SHAPE), -np.ones(SHAPE), 0.5)


def test_hot_pixels_found_saved_and_repaired(tmp_path):
    from fluorofpga.microscope import calibrate, load_calibration

    rng = np.random.default_rng(21)
    sensor = SCMOSSensor.random((64, 64), rng, hot_pixel_fraction=0.01, exposure_s=0.1)
    truth = sensor.hot_pixels
    assert truth.sum() >= 20
    dark = sensor.acquire(np.zeros((60, 64, 64)), rng)
    flats = [sensor.acquire(np.full((6, 64, 64), lvl), rng) for lvl in (50.0, 200.0, 800.0)]
    cal = calibrate(dark, flats)
    found = cal.hot_pixels
    assert (found & truth).sum() >= 0.9 * truth.sum()  # recall
    assert (found & ~truth).sum() <= 0.002 * truth.size  # few false alarms
    cal.save(tmp_path / "c.npz")
    again = load_calibration(tmp_path / "c.npz")
    assert np.array_equal(again.hot_pixels, found)
    assert cal.summary()["hot_pixels"] == int(found.sum())
    frame = sensor.acquire(np.full((64, 64), 100.0), rng)
    fixed = cal.repair_hot_pixels(frame)
    assert np.array_equal(fixed[~found], frame[~found])
    assert fixed[found].mean() < frame[found].mean()


# ------------------------------------------------- physically inconsistent stacks are refused


def test_flats_all_at_one_exposure_are_refused():
    # the slope of a line through one cluster of points is noise: the gain came out 25x
    # wrong before this check
    _, dark, flats = acquisition(30, levels=(500,) * 6)
    with pytest.raises(CalibrationError, match=r"span only a factor 1 .* at least a factor 2"):
        calibrate(dark, flats)
    _, dark, flats = acquisition(31, levels=(500, 600, 700, 800))  # a factor 1.6
    with pytest.raises(CalibrationError, match="span only a factor 1.6"):
        calibrate(dark, flats)


def test_dark_brighter_than_the_flats_is_refused():
    rng = np.random.default_rng(32)
    sensor = SCMOSSensor.random(SHAPE, rng)
    flats = [sensor.acquire(np.full((N_FLAT, *SHAPE), p), rng) for p in (50.0, 200.0, 800.0)]
    lit_dark = sensor.acquire(np.full((40, *SHAPE), 100.0), rng)  # shutter open
    with pytest.raises(CalibrationError, match="dark stack is brighter than flat stack 0"):
        calibrate(lit_dark, flats)
    swapped = sensor.acquire(np.full((40, *SHAPE), 800.0), rng)  # a flat given as the dark
    dark = sensor.acquire(np.zeros((N_FLAT, *SHAPE)), rng)
    with pytest.raises(CalibrationError, match="brighter than flat stack"):
        calibrate(swapped, [dark, *flats[:2]])


def test_flat_not_clearly_above_the_dark_is_refused():
    rng = np.random.default_rng(33)
    sensor = SCMOSSensor.random(SHAPE, rng)
    dark = sensor.acquire(np.zeros((100, *SHAPE)), rng)
    unlit = sensor.acquire(np.zeros((N_FLAT, *SHAPE)), rng)  # the lamp was off
    flats = [unlit, *(sensor.acquire(np.full((N_FLAT, *SHAPE), p), rng) for p in (100.0, 800.0))]
    with pytest.raises(CalibrationError, match="flat stack 0 is not clearly brighter than"):
        calibrate(dark, flats)


def test_dim_flats_are_accepted_when_their_mean_is_significant():
    # 5 photons per pixel is below the read noise of one frame, but the mean over
    # 3072 pixels x 50 frames is far above the dark: physically fine
    sensor, dark, flats = acquisition(34, n_flat=50, levels=(5, 10, 20, 40))
    cal = calibrate(dark, flats)
    assert cal.gain_e_per_adu == pytest.approx(np.mean(sensor.gain_e_per_adu), rel=0.05)


def test_non_linear_camera_response_is_refused():
    # a knee (gain switching): variance no longer proportional to the signal above it
    rng = np.random.default_rng(35)
    sensor = SCMOSSensor.random(SHAPE, rng)
    dark = sensor.acquire(np.zeros((100, *SHAPE)), rng)
    offset = float(dark.mean())

    def knee(stack):
        signal = stack.astype(np.float64) - offset
        signal = np.where(signal > 300, 300 + (signal - 300) * 0.5, signal)
        return np.rint(signal + offset).astype(np.uint16)

    flats = [knee(sensor.acquire(np.full((N_FLAT, *SHAPE), p), rng)) for p in FLAT_PHOTONS]
    with pytest.raises(CalibrationError, match=r"not a line.* 3 of 8 unsaturated levels"):
        calibrate(dark, flats)


def test_ptc_that_misses_the_dark_read_noise_is_refused():
    # a camera that filters noise on bright frames: the PTC stays a line over the used
    # levels but no longer meets the dark's temporal variance at zero signal
    rng = np.random.default_rng(36)
    sensor = SCMOSSensor.random(SHAPE, rng)
    dark = sensor.acquire(np.zeros((100, *SHAPE)), rng)

    def filtered(stack):
        frames = stack.astype(np.float64)
        if frames.mean() - dark.mean() > 100:
            frames = (frames + np.roll(frames, 1, axis=0)) / 2
        return np.rint(frames).astype(np.uint16)

    flats = [filtered(sensor.acquire(np.full((N_FLAT, *SHAPE), p), rng))
             for p in (20, 50, 100, 200, 400)]  # fmt: skip
    offset, read_noise = calibrate_dark(dark)
    ptc = photon_transfer(flats, offset)  # on its own the curve is acceptable ...
    assert ptc.gain_e_per_adu > 2 * np.mean(sensor.gain_e_per_adu)  # ... and wrong
    with pytest.raises(CalibrationError, match="meets zero signal at a variance of"):
        calibrate(dark, flats)
    with pytest.raises(CalibrationError, match="same camera mode"):
        photon_transfer(flats, offset, read_variance_adu2=float(np.mean(read_noise**2)))
