"""Signal representation (GAT codes, tables) and noise estimation from the frames."""

import numpy as np
import pytest

from fluorofpga.microscope import (
    NoiseEstimationError,
    NoiseModel,
    SCMOSCamera,
    SignalSpec,
    WidefieldMicroscope,
    calibrate,
    estimate_noise,
    gat,
)
from fluorofpga.microscope.camera import SCMOSSensor


@pytest.mark.parametrize("gain,offset,read", [(0.46, 100, 1.6), (2.0, 300, 2.5), (0.3, 60, 0.9),
                                              (4.0, 1000, 3.5)])
def test_gat_makes_noise_unit_variance_from_dark_to_bright(gain, offset, read):
    cam = SCMOSCamera(qe=1.0, gain_e_per_adu=gain, offset_adu=offset, read_noise_e=read)
    noise = NoiseModel.from_camera(gain, offset, read)
    rng = np.random.default_rng(0)
    for electrons in (10.0, 100.0, 1000.0):
        z = gat(cam.acquire(np.full((200, 200), electrons), rng), noise)
        assert abs(z.std() - 1.0) < 0.06, (electrons, z.std())


def test_input_code_covers_a_thousand_electrons_on_any_camera():
    spec = SignalSpec()
    for gain in (0.3, 1.0, 3.0):
        noise = NoiseModel.from_camera(gain, 100.0, 1.5)
        top_adu = float(np.interp(spec.z_range(), gat(np.arange(70000.0), noise),
                                  np.arange(70000.0)))
        assert 900 < (top_adu - 100.0) * gain < 1100


def test_signal_spec_validation():
    with pytest.raises(ValueError, match="integer"):
        SignalSpec(in_step=0.25, residual_step=0.1)
    with pytest.raises(ValueError, match="code_bits"):
        SignalSpec(code_bits=10)
    with pytest.raises(ValueError, match="unknown"):
        SignalSpec.from_dict({"kind": "gat-residual", "window": 3})
    assert SignalSpec.from_dict(SignalSpec().to_dict()) == SignalSpec()


def _sd_ratio(est: NoiseModel, true: NoiseModel, levels: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(est.variance(levels), 1e-12) / true.variance(levels))


@pytest.mark.parametrize("peak", [20.0, 100.0, 1000.0])
@pytest.mark.parametrize("gain,offset,read", [(0.46, 100, 1.6), (2.0, 300, 2.5), (0.3, 60, 0.9)])
def test_noise_estimated_from_one_frame_matches_the_camera(peak, gain, offset, read):
    cam = SCMOSCamera(gain_e_per_adu=gain, offset_adu=offset, read_noise_e=read)
    mic = WidefieldMicroscope(shape=(256, 256), peak_photons=peak, camera=cam, seed=11)
    est = estimate_noise(next(mic.frames(1)).noisy)
    levels = np.percentile(mic.clean_adu(), [5, 50, 99])
    ratio = _sd_ratio(est.model, NoiseModel.from_camera(gain, offset, read), levels)
    assert np.all(np.abs(ratio - 1) < 0.1), ratio
    assert est.model.source == "estimated"


def test_noise_estimated_from_a_stack_of_dim_frames_matches_the_camera():
    cam = SCMOSCamera(gain_e_per_adu=2.0, offset_adu=300, read_noise_e=2.5)
    mic = WidefieldMicroscope(shape=(128, 128), peak_photons=5.0, camera=cam, seed=4)
    stack = np.stack([f.noisy for f in mic.frames(8)])
    est = estimate_noise(stack)
    assert est.frames_used == 7  # consecutive pairs
    levels = np.percentile(mic.clean_adu(), [5, 50, 99])
    ratio = _sd_ratio(est.model, NoiseModel.from_camera(2.0, 300, 2.5), levels)
    assert np.all(np.abs(ratio - 1) < 0.1), ratio


def test_calibration_noise_model_matches_the_camera():
    sensor = SCMOSSensor.random((64, 64), np.random.default_rng(0), gain_mean_e_per_adu=1.5,
                                offset_mean_adu=200.0, hot_pixel_fraction=0.0)
    rng = np.random.default_rng(1)
    dark = sensor.acquire(np.zeros((20, 64, 64)), rng)
    flats = [sensor.acquire(np.full((8, 64, 64), lv), rng) for lv in (50, 200, 800)]
    model = NoiseModel.from_calibration(calibrate(dark, flats))
    truth_var = (np.mean(sensor.read_noise_e**2) / 1.5**2 + 1 / 12
                 + sensor.qe * 100 / 1.5**2)  # shot noise of 100 photons, in ADU²
    level = 200.0 + sensor.qe * 100 / 1.5
    assert abs(model.variance(level) / truth_var - 1) < 0.08
    assert abs(model.gain_e_per_adu / 1.5 - 1) < 0.05


def test_noise_estimation_refuses_what_it_cannot_do():
    with pytest.raises(NoiseEstimationError, match="raw camera counts"):
        estimate_noise(np.zeros((128, 128), np.float32))
    with pytest.raises(NoiseEstimationError, match="usable pixels"):
        estimate_noise(np.full((40, 40), 100, np.uint16))
    with pytest.raises(NoiseEstimationError, match="too uniform"):
        estimate_noise(np.full((128, 128), 100, np.uint16))
    frame = np.random.default_rng(0).integers(100, 200, (128, 128)).astype(np.uint16)
    with pytest.raises(NoiseEstimationError, match="% of the pixels are at the ADC maximum"):
        estimate_noise(frame, adc_max=150)  # saturation, not a small field, is the cause
    with pytest.raises(NoiseEstimationError, match="at least 70×70"):
        estimate_noise(frame[:64, :64])


def test_pair_table_decode_equals_the_arithmetic_and_counts_the_same():
    from fluorofpga.microscope import CodeCounts, SignalTables

    spec = SignalSpec()
    tables = SignalTables(spec, NoiseModel.from_camera(2.0, 100.0, 1.5), adc_max=4095)
    rng = np.random.default_rng(3)
    adu = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    adu[0, :3] = 4095
    q = tables.encode(adu)
    r = rng.integers(0, 256, q.shape).astype(np.uint8)
    r[1, :5] = 0
    exact = tables.out_lut[spec.combine(q, r)]
    passthrough = (adu >= 4095) | (q >= spec.in_max)
    exact[passthrough] = adu[passthrough]
    c64, c16 = CodeCounts(), CodeCounts()
    assert np.array_equal(tables.decode(adu, q, r, c64), exact)
    u16 = tables.decode(adu, q, r, c16, "uint16")
    assert np.array_equal(u16, np.clip(np.rint(exact), 0, 65535).astype(np.uint16))
    assert np.array_equal(tables.decode(adu, q, r, None, "float32"), exact.astype(np.float32))
    n_sat = int(np.count_nonzero(adu >= 4095))
    assert n_sat >= 3 and c16.saturated == n_sat
    assert c16.above_range == int(passthrough.sum()) - n_sat
    assert c16.residual_at_limit == int(np.count_nonzero((r == 0) | (r == 255)))
    rounded = np.rint(exact)
    assert c16.clipped_output == int(np.count_nonzero((rounded < 0) | (rounded > 65535)))
    assert c64.pixels == c16.pixels == adu.size


def test_a_stack_sees_through_the_sensors_fixed_pattern_a_single_frame_cannot():
    sensor = SCMOSSensor.random((128, 128), np.random.default_rng(2), qe=1.0,
                                offset_mean_adu=1000.0, offset_sd_adu=2.0,
                                gain_mean_e_per_adu=4.0, gain_rel_sd=0.0,
                                read_noise_median_e=3.5, read_noise_log_sd=0.0,
                                hot_pixel_fraction=0.0, dark_current_e_per_s=0.0)
    mic = WidefieldMicroscope(shape=(128, 128), peak_photons=100.0, seed=3)
    photons = np.asarray(mic.photons())
    rng = np.random.default_rng(4)
    stack = np.stack([sensor.acquire(photons, rng) for _ in range(4)])
    true = NoiseModel.from_camera(4.0, 1000.0, 3.5)
    levels = np.percentile(sensor.expected_adu(photons), [5, 50, 99])
    from_stack = _sd_ratio(estimate_noise(stack).model, true, levels)
    from_frame = _sd_ratio(estimate_noise(stack[0]).model, true, levels)
    assert np.all(np.abs(from_stack - 1) < 0.15), from_stack
    assert from_frame[0] > 1.3  # 8 e- rms of offset pattern counted as noise


def test_decode_takes_codes_of_any_integer_type():
    from fluorofpga.microscope import CodeCounts, SignalTables

    tables = SignalTables(SignalSpec(), NoiseModel.from_camera(2.0, 100.0, 1.5), adc_max=4095)
    adu = np.random.default_rng(4).integers(0, 4096, (33, 21)).astype(np.uint16)
    q = tables.encode(adu)
    r = np.random.default_rng(5).integers(0, 256, q.shape)
    want = tables.decode(adu, q, r.astype(np.uint8), CodeCounts(), "uint16")
    for qt, rt in ((np.int64, np.int64), (np.int32, np.uint16), (np.uint8, np.int16)):
        got = tables.decode(adu, q.astype(qt), r.astype(rt), CodeCounts(), "uint16")
        assert np.array_equal(got, want)


def test_tables_shift_a_dark_level_above_the_training_cameras_down_to_it():
    """A camera with more read noise than any training camera (8 e⁻ vs ≤ 4.5 e⁻) is
    coded with its dark level at the spec's ``max_dark_z``, and the output table adds
    the shift back: a clean code round trip still lands on the same ADU."""
    from fluorofpga.microscope import SignalTables

    spec = SignalSpec(max_dark_z=9.083)
    noisy = NoiseModel.from_camera(1.0, 500.0, 8.0)
    assert noisy.dark_adu == 500.0
    z0 = noisy.dark_z()
    assert z0 == pytest.approx(2 * np.sqrt(64 + 1 / 12 + 0.375))
    tables = SignalTables(spec, noisy)
    assert tables.dark_shift == pytest.approx(z0 - 9.083)
    assert tables.in_lut[500] == round(9.083 / spec.in_step)  # the dark level, shifted
    unshifted = SignalTables(SignalSpec(), noisy)
    assert unshifted.in_lut[500] == round(z0 / spec.in_step)
    # residual code "no noise" (r = residual_zero): c = ratio·q, back to about the ADU coded
    adu = np.arange(450, 900, dtype=np.uint16)
    q = tables.encode(adu)
    r = np.full_like(q, spec.residual_zero)
    back = tables.decode(adu, q, r)
    s = spec.in_step
    half_code = (tables.clean_adu((q + 0.5) * s) - tables.clean_adu((q - 0.5) * s)) / 2
    assert np.all(np.abs(back - adu) <= half_code + 1e-9)  # within the code's rounding
    assert tables.max_adu() > unshifted.max_adu()  # the code covers the shift in range
    # cameras the network knows, and models without a known dark level: no shift
    assert SignalTables(spec, NoiseModel.from_camera(1.0, 500.0, 3.0)).dark_shift == 0.0
    blind = NoiseModel(noisy.a, noisy.b, "estimated")
    assert blind.dark_z() is None and SignalTables(spec, blind).dark_shift == 0.0
    np.testing.assert_array_equal(SignalTables(spec, blind).in_lut,
                                  SignalTables(SignalSpec(), blind).in_lut)


def test_dark_level_and_its_limit_survive_serialisation():
    spec = SignalSpec(max_dark_z=9.083)
    assert SignalSpec.from_dict(spec.to_dict()) == spec
    assert "max_dark_z" not in SignalSpec().to_dict()  # older readers never see the key
    with pytest.raises(ValueError, match="max_dark_z"):
        SignalSpec(max_dark_z=-1.0)
    noise = NoiseModel.from_camera(2.0, 300.0, 2.5)
    assert NoiseModel.from_dict(noise.to_dict()) == noise
    assert NoiseModel.from_dict({"a": 0.5, "b": -150.0}).dark_adu is None


def test_estimated_noise_model_knows_the_frames_darkest_level():
    """Without a calibration the darkest level the frame shows stands for the dark level:
    near the camera's offset (a bin of local means: a little noise either way), so a
    9 e⁻ camera still gets about its shift."""
    from fluorofpga.microscope import SignalTables

    gain, offset, read = 1.5, 500.0, 9.0
    cam = SCMOSCamera(qe=1.0, gain_e_per_adu=gain, offset_adu=offset, read_noise_e=read)
    mic = WidefieldMicroscope(shape=(192, 192), peak_photons=300.0, background_photons=3.0,
                              seed=11)
    frame = cam.acquire(np.asarray(mic.photons(), dtype=np.float64), np.random.default_rng(3))
    est = estimate_noise(frame)
    local_sd = read / gain / 5.0  # a 5×5 local mean
    assert est.slope_fitted
    assert offset - 3 * local_sd < est.model.dark_adu < offset + 20.0 / gain
    assert est.summary()["dark_adu"] == est.model.dark_adu
    spec = SignalSpec(max_dark_z=9.083)
    true_shift = SignalTables(spec, NoiseModel.from_camera(gain, offset, read)).dark_shift
    assert SignalTables(spec, est.model).dark_shift == pytest.approx(true_shift, abs=1.5)


def test_a_blank_or_foreign_frame_does_not_spoil_a_stacks_noise_estimate():
    """A dropped (all-zero) frame or a frame of another exposure in a stack: its pairs'
    differences follow the image, not the noise; they are left out and named, and the
    estimate matches the clean stack's (one blank frame once made the gain 24x too large
    and left 44 % of a stack unrestored)."""
    cam = SCMOSCamera(gain_e_per_adu=1.0, offset_adu=100, read_noise_e=2.0)
    mic = WidefieldMicroscope(shape=(128, 128), peak_photons=300.0, camera=cam, seed=5)
    stack = np.stack([f.noisy for f in mic.frames(10)])
    clean = estimate_noise(stack)
    assert clean.frames_skipped == ()
    levels = np.percentile(mic.clean_adu(), [5, 50, 99])
    for k, frame in ((4, np.zeros_like(stack[0])), (6, stack[6] // 2)):
        odd = stack.copy()
        odd[k] = frame
        est = estimate_noise(odd)
        # left out: the frame (and a neighbour whose only sampled pair was with it)
        assert k in est.frames_skipped and set(est.frames_skipped) <= {k - 1, k, k + 1}
        # as close to the clean stack's as another choice of frame pairs gets (the dark
        # level's variance is the least certain: 128² frames hold few dark pixels)
        ratio = _sd_ratio(est.model, clean.model, levels)
        assert np.all(np.abs(ratio - 1) < [0.2, 0.1, 0.1]), (k, ratio)
        assert abs(est.model.gain_e_per_adu / clean.model.gain_e_per_adu - 1) < 0.1
    pair = estimate_noise(np.stack([stack[0], np.zeros_like(stack[0])]))  # one frame left
    assert pair.frames_skipped == (1,) and pair.frames_used == 1
    assert abs(pair.model.gain_e_per_adu / clean.model.gain_e_per_adu - 1) < 0.15
