"""Structured illumination: forward model, parameter estimation, Wiener reconstruction.

Reference values come from optics theory: the incoherent OTF of a circular pupil, the
camera-pixel transfer sinc, the SIM support (1 + k_fraction) × 2NA/λ, the Abbe limit.
"""

import json
import warnings

import numpy as np
import pytest

from fluorofpga.microscope import sim_recon
from fluorofpga.microscope.metrics import psnr
from fluorofpga.microscope.optics import airy_psf, blur
from fluorofpga.microscope.sim import (
    SimPattern,
    ideal_otf,
    make_pattern,
    sim_ground_truth,
    simulate_sim,
)
from fluorofpga.microscope.sim_params import (
    FrameOrderError,
    FrameOrderWarning,
    NoPatternError,
    ParameterCheck,
    SimParameters,
    SimParametersError,
    SimParametersMismatch,
    WeakPatternWarning,
    load_sim_parameters,
)
from fluorofpga.microscope.sim_recon import (
    check_parameters,
    check_wiener_w,
    detect_frame_order,
    estimate_parameters,
    widefield_from_raw,
    wiener_sim,
)
from fluorofpga.microscope.specimen import render_specimen

NA, WAVELENGTH, PIXEL = 1.2, 520.0, 65.0
OPTICS = {"na": NA, "wavelength_nm": WAVELENGTH, "pixel_size_nm": PIXEL}
CUTOFF = 2 * NA / WAVELENGTH * PIXEL  # widefield OTF cut-off, cycles per camera pixel
ABBE_NM = WAVELENGTH / (2 * NA)
# The forward model's PSF reaches v = 2π NA r / λ = 35 (≈ 11 Airy rings).
SIM_PSF_SIZE = 2 * int(np.ceil(35.0 * WAVELENGTH / (2 * np.pi * NA * PIXEL / 2))) + 1


def cell_scene(n_camera: int, seed: int) -> np.ndarray:
    """Filaments and puncta on the 2× grid (fine pixels of PIXEL / 2)."""
    rng = np.random.default_rng(seed)
    fine = (2 * n_camera, 2 * n_camera)
    return render_specimen(fine, rng, filaments=n_camera // 6, puncta=n_camera, nuclei=0)


def two_lines_scene(n_camera: int, separation_nm: float, seed: int):
    """Two short parallel vertical lines in the centre of a cell scene (kept clear)."""
    n = 2 * n_camera
    centre = n_camera  # fine-grid column between the lines
    separation_fine = separation_nm / (PIXEL / 2)
    x = np.arange(n) + 0.5
    lines = np.zeros((n, n))
    rows = slice(n_camera - 30, n_camera + 30)
    for xc in (centre - separation_fine / 2, centre + separation_fine / 2):
        lines[rows] += np.exp(-0.5 * ((x - xc) / 0.5) ** 2)[None, :]
    scene = cell_scene(n_camera, seed)
    scene[n_camera - 50 : n_camera + 50, centre - 30 : centre + 30] = 0
    return lines + scene, centre, separation_fine


def line_dip(image: np.ndarray, centre: int, separation_fine: float, n_camera: int) -> float:
    """1 − (minimum between the lines) / (lower of the two line maxima), rows averaged."""
    profile = image[n_camera - 20 : n_camera + 20, centre - 8 : centre + 8].mean(axis=0)
    xs = np.arange(centre - 8, centre + 8) + 0.5
    half = separation_fine / 2
    left = profile[np.abs(xs - (centre - half)) < 1.5].max()
    right = profile[np.abs(xs - (centre + half)) < 1.5].max()
    middle = profile[np.abs(xs - centre) < 1].min()
    return float(1 - middle / min(left, right))


def frc(a: np.ndarray, b: np.ndarray, lo: float, hi: float) -> float:
    """Fourier ring correlation of two 2×-grid images in a ring (cycles / camera px)."""
    n = a.shape[0]
    window = np.outer(np.hanning(n), np.hanning(n))
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)
    f = np.fft.fftfreq(n, d=0.5)
    rho = np.hypot(f[:, None], f[None, :])
    ring = (rho >= lo) & (rho < hi)
    num = np.sum(fa[ring] * np.conj(fb[ring])).real
    return float(num / np.sqrt(np.sum(np.abs(fa[ring]) ** 2) * np.sum(np.abs(fb[ring]) ** 2)))


def wrapped(angle: float) -> float:
    return float(np.angle(np.exp(1j * angle)))


# ----------------------------------------------------------------------------- forward


def test_pattern_layout_and_the_three_frame_variant():
    pattern = make_pattern(3, 3)
    assert pattern.n_frames == 9
    np.testing.assert_allclose(np.diff(pattern.angles_rad), np.pi / 3)
    np.testing.assert_allclose(np.diff(pattern.phases_rad[1]), 2 * np.pi / 3)
    dl = make_pattern(3, 1)
    assert (dl.n_angles, dl.n_phases) == (3, 1)
    one_angle = make_pattern(1, 3)
    assert (one_angle.n_angles, one_angle.n_phases) == (1, 3)
    k = pattern.k_cycles_per_px(**OPTICS)
    assert k == pytest.approx(0.85 * CUTOFF)
    np.testing.assert_allclose(np.hypot(*pattern.wave_vectors(**OPTICS).T), k)

    rng = np.random.default_rng(0)
    specimen = cell_scene(32, seed=1)
    for pat, frames in ((dl, 3), (one_angle, 3), (pattern, 9)):
        data = simulate_sim(specimen, pat, rng=rng, **OPTICS)
        assert data.axes == "PYX"
        assert data.raw.shape == (frames, 32, 32) and data.raw.dtype == np.uint16
        assert data.clean.shape == data.raw.shape and data.clean.dtype == np.float64


def test_random_errors_have_the_requested_spread():
    rng = np.random.default_rng(2)
    errors_a, errors_p = [], []
    for _ in range(300):
        pat = make_pattern(angle_error_rad=0.01, phase_error_rad=0.1, rng=rng)
        nominal = make_pattern()
        errors_a.append(np.subtract(pat.angles_rad, nominal.angles_rad))
        errors_p.append(np.subtract(pat.phases_rad, nominal.phases_rad))
    assert np.std(errors_a) == pytest.approx(0.01, rel=0.1)
    assert np.std(errors_p) == pytest.approx(0.1, rel=0.1)
    with pytest.raises(ValueError, match="rng"):
        make_pattern(phase_error_rad=0.1)


def test_frames_are_ordered_angles_outermost_at_the_pattern_frequency():
    """Uniform dye: each frame is 1 + m·MTF(k)·cos(...); its peak sits at its angle's k."""
    n = 128
    pattern = make_pattern(3, 3, k_fraction=0.6, modulation=0.8)
    data = simulate_sim(
        np.ones((2 * n, 2 * n)), pattern, peak_photons=1000, background_photons=0,
        rng=np.random.default_rng(0), **OPTICS,
    )
    vectors = pattern.wave_vectors(**OPTICS)
    freqs = np.fft.fftfreq(n)
    c = slice(16, n - 16)  # away from the mirrored border
    y, x = np.mgrid[c, c] + 0.5
    for index, frame in enumerate(data.photons):
        kx, ky = vectors[index // pattern.n_phases]
        spectrum = np.abs(np.fft.fft2(frame - frame.mean()))
        iy, ix = np.unravel_index(np.argmax(spectrum), spectrum.shape)
        # the peak is the +k or −k bin nearest the pattern frequency
        distance = min(
            np.hypot(freqs[ix] - s * kx, freqs[iy] - s * ky) for s in (1, -1)
        )
        assert distance <= 1.0 / n
        # modulation depth at exactly k: theory m · OTF(|k|) · sinc(kx) sinc(ky)
        region = frame[c, c]
        amplitude = 2 * abs(np.mean(region * np.exp(-2j * np.pi * (kx * x + ky * y))))
        expected = 0.8 * ideal_otf(np.hypot(kx, ky), CUTOFF) * np.sinc(kx) * np.sinc(ky)
        assert amplitude / region.mean() == pytest.approx(expected, rel=0.05)


def test_mean_over_the_phases_of_each_angle_is_the_widefield_image():
    specimen = cell_scene(48, seed=3)
    pattern = make_pattern(3, 3, phase_offsets_rad=(0.4, 2.0, 5.0))
    data = simulate_sim(
        specimen, pattern, peak_photons=300, background_photons=7,
        rng=np.random.default_rng(1), **OPTICS,
    )
    blurred = blur(specimen, airy_psf(NA, WAVELENGTH, PIXEL / 2, size=SIM_PSF_SIZE))
    widefield = blurred.reshape(48, 2, 48, 2).sum(axis=(1, 3))
    widefield = widefield / widefield.max() * 300 + 7
    for a in range(3):
        np.testing.assert_allclose(data.photons[3 * a : 3 * a + 3].mean(axis=0), widefield,
                                   rtol=1e-9, atol=1e-9)
    # the noisy frames scatter around the expected ADU, never systematically off
    residual = data.raw.astype(float).mean(axis=0) - data.clean.mean(axis=0)
    assert abs(residual.mean()) < 0.5


def test_ground_truth_is_the_specimen_seen_through_the_extended_otf():
    specimen = np.zeros((128, 128))
    specimen[64, 64] = 1.0
    truth = sim_ground_truth(specimen, k_fraction=0.85, **OPTICS)
    assert truth.max() == pytest.approx(1.0) and truth.min() >= 0
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(truth)))
    spectrum /= spectrum.max()
    f = np.fft.fftshift(np.fft.fftfreq(128, d=0.5))  # cycles per camera pixel
    rho = np.hypot(f[:, None], f[None, :])
    extended = 1.85 * CUTOFF
    assert spectrum[(rho > 1.3 * CUTOFF) & (rho < 1.5 * CUTOFF)].mean() > 0.02
    assert spectrum[rho > 1.05 * extended].max() < 0.01


# ------------------------------------------------------------------------- bad input


def test_bad_input_gets_a_clear_error():
    good = np.ones((9, 32, 32))
    with pytest.raises(ValueError, match="PYX"):
        estimate_parameters(np.ones((32, 32)), **OPTICS)
    with pytest.raises(ValueError, match="8 frames"):
        estimate_parameters(np.ones((8, 32, 32)), **OPTICS)
    nan = good.copy()
    nan[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_parameters(nan, **OPTICS)
    negative = good.copy()
    negative[4, 1, 1] = -1
    with pytest.raises(ValueError, match="non-negative"):
        estimate_parameters(negative, **OPTICS)
    with pytest.raises(ValueError, match="phases"):
        estimate_parameters(np.ones((3, 32, 32)), n_phases=1, **OPTICS)
    params = make_pattern().angle_parameters(**OPTICS)
    with pytest.raises(ValueError, match="multiple"):
        wiener_sim(np.ones((8, 32, 32)), params, **OPTICS)
    with pytest.raises(ValueError, match="NaN"):
        wiener_sim(nan, params, **OPTICS)
    with pytest.raises(ValueError, match="PYX"):
        widefield_from_raw(np.ones(32))
    with pytest.raises(ValueError, match="even"):
        simulate_sim(np.ones((33, 32)), make_pattern(), rng=np.random.default_rng(), **OPTICS)
    with pytest.raises(ValueError, match="non-negative"):
        simulate_sim(-np.ones((32, 32)), make_pattern(), rng=np.random.default_rng(), **OPTICS)
    with pytest.raises(ValueError, match="2-D"):
        sim_ground_truth(np.ones((2, 32, 32)), **OPTICS)
    with pytest.raises(ValueError, match="modulation"):
        SimPattern(angles_rad=(0.0,), phases_rad=((0.0,),), modulation=1.5)


# ------------------------------------------------------------------------- estimation


def test_estimation_recovers_frequency_angle_phase_and_modulation():
    rng = np.random.default_rng(7)
    pattern = make_pattern(
        k_fraction=0.85, modulation=0.9, phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, 3)),
        angle_error_rad=0.02, rng=rng,
    )
    data = simulate_sim(cell_scene(256, seed=4), pattern, peak_photons=500,
                        background_photons=10, rng=rng, **OPTICS)
    estimated = estimate_parameters(data.raw, camera=data.camera, **OPTICS)  # speed: benchmark
    for est, true in zip(estimated, pattern.angle_parameters(**OPTICS), strict=True):
        assert abs(est.k_cycles_per_px / true.k_cycles_per_px - 1) < 0.005
        assert abs(np.rad2deg(wrapped(est.angle_rad - true.angle_rad))) < 0.5
        assert abs(wrapped(est.phase_rad - true.phase_rad)) < 0.2
        assert est.modulation == pytest.approx(0.9, abs=0.1)
        assert est.k_fraction(**OPTICS) == pytest.approx(0.85, rel=0.005)


# ------------------------------------------------- estimation accuracy, order, reuse

FREQUENCY_TOLERANCE = 1e-4  # 0.01 % of |k|: the target for noise-free and 100-photon data


def random_acquisition(n: int, seed: int, peak_photons: float, *, n_phases: int = 3):
    """A cell scene under a pattern with random direction, phases and angle errors."""
    rng = np.random.default_rng(seed)
    pattern = make_pattern(
        3, n_phases, start_angle_rad=rng.uniform(0, np.pi / 3),
        phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, 3)),
        angle_error_rad=0.01, phase_error_rad=0.0, rng=rng,
    )
    data = simulate_sim(cell_scene(n, seed=seed), pattern, peak_photons=peak_photons,
                        background_photons=10, rng=rng, **OPTICS)
    return data, pattern


def parameter_errors(estimated, pattern) -> np.ndarray:
    """Per angle: relative |k| error, angle error (rad), phase error (rad), modulation."""
    rows = []
    for est, true in zip(estimated, pattern.angle_parameters(**OPTICS), strict=True):
        rows.append((
            est.k_cycles_per_px / true.k_cycles_per_px - 1,
            wrapped(est.angle_rad - true.angle_rad),
            wrapped(est.phase_rad - true.phase_rad),
            est.modulation,
        ))
    return np.array(rows)


def test_an_angle_whose_blind_estimate_breaks_the_shared_period_is_refused():
    """On a 32² field one angle's blind search once locked onto a noise peak at 1.3x the
    cut-off while the others found 0.85x, and the stack was reconstructed with it: one
    instrument's angles share one grating period, so that estimate is refused (larger
    fields of the same stack are estimated as before)."""
    rng = np.random.default_rng(9712)
    pattern = make_pattern(start_angle_rad=0.3)
    data = simulate_sim(cell_scene(128, seed=9712), pattern, peak_photons=500.0,
                        background_photons=10, rng=rng, **OPTICS)
    full = estimate_parameters(data.raw, camera=data.camera, **OPTICS)
    ks = [a.k_cycles_per_px for a in full]
    assert max(ks) / min(ks) - 1 < 0.01
    refused = 0
    for corner in range(0, 96, 16):  # small fields of the same stack
        crop = np.ascontiguousarray(data.raw[:, corner:corner + 32, corner:corner + 32])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = estimate_parameters(crop, camera=data.camera, **OPTICS)
        except NoPatternError as e:
            refused += "share one grating period" in str(e)
            continue
        except FrameOrderError:
            continue
        ks = [a.k_cycles_per_px for a in got]
        assert max(ks) / np.median(ks) - 1 <= 0.10 and 1 - min(ks) / np.median(ks) <= 0.10
    assert refused >= 3  # without the check, 5 of these 6 fields came back inconsistent


@pytest.fixture(scope="module")
def large_acquisitions():
    """Two 512² stacks, random pattern directions and phases, 100 photons peak."""
    return [random_acquisition(512, seed, 100.0) for seed in (31, 32)]


def test_frequency_is_unbiased_on_noise_free_data(large_acquisitions):
    """The old grid search had a +0.04 % bias even without noise; now ~1e-7."""
    errors = [
        parameter_errors(estimate_parameters(data.photons, **OPTICS), pattern)
        for data, pattern in large_acquisitions
    ]
    for seed in (33, 34):  # and smaller frames, other random directions
        data, pattern = random_acquisition(128, seed, 500.0)
        errors.append(parameter_errors(estimate_parameters(data.photons, **OPTICS), pattern))
    assert np.abs(np.concatenate(errors[:2])[:, 0]).max() < 1e-6  # 512²: ~1.5e-8
    errors = np.concatenate(errors)
    assert np.abs(errors[:, 0]).max() < 2e-5  # 128²: ~5e-6 (the border weighs more)
    assert abs(errors[:, 0].mean()) < 1e-5
    assert np.rad2deg(np.abs(errors[:6, 1])).max() < 1e-5  # degrees, 512²
    assert np.rad2deg(np.abs(errors[:, 1])).max() < 2e-3  # degrees, 128²: ~4e-4
    assert np.abs(errors[:, 2]).max() < 2e-3  # rad: ~6e-4
    np.testing.assert_allclose(errors[:, 3], 0.9, atol=2e-3)


def test_frequency_angle_and_phase_at_100_photons(large_acquisitions):
    errors = np.concatenate([
        parameter_errors(estimate_parameters(data.raw, camera=data.camera, **OPTICS), pattern)
        for data, pattern in large_acquisitions
    ])
    assert np.abs(errors[:, 0]).max() <= FREQUENCY_TOLERANCE
    assert np.rad2deg(np.abs(errors[:, 1])).max() < 0.01  # degrees
    assert np.abs(errors[:, 2]).max() < 0.1  # rad
    np.testing.assert_allclose(errors[:, 3], 0.9, atol=0.05)  # noise-corrected modulation


def test_estimation_is_robust_at_20_photons():
    """256², 20 photons peak (~5 photons mean signal on 10 of background).

    Looser bounds, from 12 random scenes: |k| within 0.25 % (worst seen 0.12 %), angle
    within 0.15° (0.07°), phase within 0.6 rad (0.37), modulation 0.9 within 0.25.
    """
    for seed in (41, 42):
        data, pattern = random_acquisition(256, seed, 20.0)
        estimated = estimate_parameters(data.raw, camera=data.camera, **OPTICS)
        errors = parameter_errors(estimated, pattern)
        assert np.abs(errors[:, 0]).max() < 2.5e-3
        assert np.rad2deg(np.abs(errors[:, 1])).max() < 0.15
        assert np.abs(errors[:, 2]).max() < 0.6
        np.testing.assert_allclose(errors[:, 3], 0.9, atol=0.25)
        assert min(estimated.correlation) > 0.05  # a real fit, not noise


@pytest.mark.parametrize("peak_photons", [20.0, 2000.0])
def test_frames_without_a_pattern_are_refused_not_reconstructed(peak_photons):
    """Widefield frames (modulation 0) given as SIM: the blind search finds only noise
    peaks (at the edge of its range, band correlation ~0.1), so it refuses, at any light
    level; with a guess the user vouches for the pattern and gets weak-pattern notes."""
    rng = np.random.default_rng(9710)
    pattern = make_pattern(start_angle_rad=0.4, modulation=0.0)
    data = simulate_sim(cell_scene(128, seed=9710), pattern, peak_photons=peak_photons,
                        background_photons=10, rng=rng, **OPTICS)
    with pytest.raises(NoPatternError, match="no illumination pattern found in any angle"):
        estimate_parameters(data.raw, camera=data.camera, **OPTICS)
    with pytest.warns(WeakPatternWarning):
        estimate_parameters(data.raw, camera=data.camera, guess=pattern.angle_parameters(**OPTICS),
                            **OPTICS)
    # the same scene with a pattern at the lowest light level is estimated (no refusal)
    lit = simulate_sim(cell_scene(128, seed=9710), make_pattern(start_angle_rad=0.4),
                       peak_photons=20.0, background_photons=10, rng=rng, **OPTICS)
    estimate_parameters(lit.raw, camera=lit.camera, **OPTICS)


@pytest.fixture(scope="module")
def small_acquisition():
    """A 128² stack at 300 photons and its estimated parameters."""
    data, pattern = random_acquisition(128, 51, 300.0)
    return data, pattern, estimate_parameters(data.raw, camera=data.camera, **OPTICS)


def to_phase_major(stack: np.ndarray, n_angles: int = 3, n_phases: int = 3) -> np.ndarray:
    """Angle-major (frame a·P + j) → phase-major (frame j·A + a)."""
    return stack.reshape(n_angles, n_phases, *stack.shape[1:]).swapaxes(0, 1).reshape(
        stack.shape)


def test_documented_order_passes_and_is_recorded(small_acquisition):
    data, pattern, params = small_acquisition
    assert isinstance(params, SimParameters) and params.frame_order == "angle-major"
    assert params.notes == ()
    check = detect_frame_order(data.raw, camera=data.camera, **OPTICS)
    assert check.found == "angle-major" and check.contrast > 0.5
    assert check.groups == ((0, 1, 2), (3, 4, 5), (6, 7, 8))
    # measured phase steps of the frames: 2πj/3 (the simulated pattern has no phase errors;
    # single frames on 128² give them to ~0.05 rad)
    np.testing.assert_allclose(params.phase_steps_rad, [[0, 2 * np.pi / 3, 4 * np.pi / 3]] * 3,
                               atol=0.2)


def test_phase_major_stack_is_reordered_with_a_warning(small_acquisition):
    data, pattern, reference = small_acquisition
    stack = to_phase_major(data.raw)
    assert detect_frame_order(stack, camera=data.camera, **OPTICS).found == "phase-major"
    with pytest.warns(FrameOrderWarning, match="phase-major"):
        params = estimate_parameters(stack, camera=data.camera, **OPTICS)
    assert params.frame_order == "phase-major"
    assert any("phase-major" in note for note in params.notes)
    errors = parameter_errors(params, pattern)
    assert np.abs(errors[:, 0]).max() < 1e-3 and np.abs(errors[:, 2]).max() < 0.1
    # reconstructing the phase-major stack with them equals the angle-major result
    np.testing.assert_allclose(
        wiener_sim(stack, params, camera=data.camera, **OPTICS),
        wiener_sim(data.raw, list(params), camera=data.camera, **OPTICS),
    )
    # a plain list of angles says nothing about the layout: the stack is checked again
    with pytest.warns(FrameOrderWarning):
        wiener_sim(stack, list(reference), camera=data.camera, **OPTICS)
    with pytest.raises(FrameOrderError, match="phase-major") as refused:
        estimate_parameters(stack, camera=data.camera, reorder=False, **OPTICS)
    assert refused.value.found == "phase-major"
    assert refused.value.groups == ((0, 3, 6), (1, 4, 7), (2, 5, 8))


def test_shuffled_frames_are_refused(small_acquisition):
    data, pattern, params = small_acquisition
    shuffled = data.raw[[0, 4, 8, 3, 7, 2, 6, 1, 5]]  # neither angle- nor phase-major
    with pytest.raises(FrameOrderError, match="neither") as refused:
        estimate_parameters(shuffled, camera=data.camera, **OPTICS)
    assert refused.value.found == "unknown"
    assert set(refused.value.groups) == {(0, 5, 7), (1, 3, 8), (2, 4, 6)}
    with pytest.raises(FrameOrderError):  # never reconstructed silently
        wiener_sim(shuffled, params, camera=data.camera, **OPTICS)
    swapped = data.raw[[0, 1, 3, 2, 4, 5, 6, 7, 8]]  # one frame moved to another angle
    with pytest.raises(FrameOrderError):
        estimate_parameters(swapped, camera=data.camera, **OPTICS)


def test_shuffled_phases_within_an_angle_are_refused():
    """With 5 phases the order of an angle's frames matters (3 phases: any order works)."""
    data, pattern = random_acquisition(128, 61, 300.0, n_phases=5)
    params = estimate_parameters(data.raw, camera=data.camera, n_phases=5, **OPTICS)
    np.testing.assert_allclose(params.phase_steps_rad[1], 2 * np.pi * np.arange(5) / 5,
                               atol=0.2)
    shuffled = data.raw.copy()
    shuffled[5:10] = data.raw[[5, 7, 9, 6, 8]]  # angle 1, phases 0 2 4 1 3
    with pytest.raises(FrameOrderError, match="angle 1") as refused:
        estimate_parameters(shuffled, camera=data.camera, n_phases=5, **OPTICS)
    assert refused.value.found == "phases shuffled"


def test_parameters_round_trip_through_json(small_acquisition, tmp_path):
    _, _, params = small_acquisition
    path = tmp_path / "sim_params.json"
    params.save(path)
    document = json.loads(path.read_text())
    assert document["format"] == "fluorofpga-sim-parameters" and document["version"] == 1
    assert document["optics"] == {"na": NA, "wavelength_nm": WAVELENGTH, "pixel_size_nm": PIXEL}
    assert document["layout"] == {"n_angles": 3, "n_phases": 3, "frame_order": "angle-major",
                                  "frame_shape": [128, 128]}
    first = document["angles"][0]
    assert first["kx"] == params[0].kx and first["angle_rad"] == params[0].angle_rad
    assert first["phase_step_rad"] == pytest.approx(2 * np.pi / 3)
    loaded = SimParameters.load(path)
    assert loaded == params and load_sim_parameters(path) == params
    assert list(loaded) == list(params)  # exact floats
    document["version"] = 2
    path.write_text(json.dumps(document))
    with pytest.raises(SimParametersError, match="version 2"):
        SimParameters.load(path)
    path.write_text("not json")
    with pytest.raises(SimParametersError, match="JSON"):
        SimParameters.load(path)
    with pytest.raises(SimParametersError, match="no such"):
        SimParameters.load(tmp_path / "missing.json")


def test_parameters_for_other_optics_or_layout_are_refused(small_acquisition, tmp_path):
    data, _, params = small_acquisition
    path = tmp_path / "sim_params.json"
    params.save(path)
    loaded = SimParameters.load(path)
    with pytest.raises(SimParametersMismatch, match="pixel size 65 nm \\(data: 70 nm\\)"):
        wiener_sim(data.raw, loaded, camera=data.camera, na=NA, wavelength_nm=WAVELENGTH,
                   pixel_size_nm=70.0)
    with pytest.raises(SimParametersMismatch) as refused:  # one error naming everything
        wiener_sim(data.raw[:6, :64, :64], loaded, camera=data.camera, na=1.4,
                   wavelength_nm=600.0, pixel_size_nm=PIXEL)
    message = str(refused.value)
    for part in ("NA 1.2", "wavelength 520 nm", "9 frames", "128 × 128"):
        assert part in message
    with pytest.raises(SimParametersMismatch, match="wavelength"):
        check_parameters(data.raw, loaded, camera=data.camera, na=NA, wavelength_nm=600.0,
                         pixel_size_nm=PIXEL)


def test_reused_parameters_reconstruct_exactly_like_re_estimation(
    small_acquisition, tmp_path, monkeypatch
):
    data, _, params = small_acquisition
    blind = wiener_sim(data.raw, camera=data.camera, **OPTICS)  # estimates internally
    params.save(tmp_path / "p.json")
    loaded = SimParameters.load(tmp_path / "p.json")

    def no_estimation(*args, **kwargs):
        raise AssertionError("parameters were re-estimated")

    monkeypatch.setattr(sim_recon, "estimate_parameters", no_estimation)
    reused = wiener_sim(data.raw, loaded, camera=data.camera, **OPTICS)
    np.testing.assert_array_equal(reused, blind)


def test_drift_check_accepts_the_same_pattern_and_reports_drift(small_acquisition):
    data, pattern, params = small_acquisition
    rng = np.random.default_rng(71)
    again = simulate_sim(cell_scene(128, seed=72), pattern, peak_photons=300,
                         background_photons=10, rng=rng, **OPTICS)  # other cells, same pattern
    check = check_parameters(again.raw, params, camera=again.camera, **OPTICS)
    assert check.ok, check.reasons
    assert min(check.correlation_ratio) > 0.98
    assert max(check.drift_fourier_px) < 0.03  # estimation noise on 128², 300 photons

    drifted = SimPattern(
        angles_rad=pattern.angles_rad,
        phases_rad=tuple(tuple(p + 0.5 for p in row) for row in pattern.phases_rad),
        k_fraction=pattern.k_fraction * 1.004,  # 0.4 %: ~1/2 Fourier pixel on 128²
        modulation=pattern.modulation,
    )
    moved = simulate_sim(cell_scene(128, seed=72), drifted, peak_photons=300,
                         background_photons=10, rng=rng, **OPTICS)
    check = check_parameters(moved.raw, params, camera=moved.camera, **OPTICS)
    assert not check.ok
    assert any("wave vector moved by" in reason for reason in check.reasons)
    assert any("phase moved" in reason for reason in check.reasons)
    np.testing.assert_allclose(check.frequency_drift, 4e-3, rtol=0.2)
    np.testing.assert_allclose(check.drift_fourier_px, 4e-3 * 0.85 * CUTOFF * 128, rtol=0.2)
    np.testing.assert_allclose(np.abs(check.phase_drift_rad), 0.5, atol=0.15)
    errors = parameter_errors(check.current, drifted)  # the re-estimate fits the new pattern
    assert np.abs(errors[:, 0]).max() < 1e-3
    assert isinstance(check, ParameterCheck)


# --------------------------------------------------------------------- reconstruction


def test_reconstruction_separates_two_lines_at_0p7_abbe_that_widefield_cannot():
    n = 128
    specimen, centre, sep = two_lines_scene(n, 0.7 * ABBE_NM, seed=5)
    rng = np.random.default_rng(11)
    pattern = make_pattern(phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, 3)))
    data = simulate_sim(specimen, pattern, peak_photons=300, background_photons=10,
                        rng=rng, **OPTICS)
    params = estimate_parameters(data.raw, camera=data.camera, **OPTICS)
    sim = wiener_sim(data.raw, params, camera=data.camera, **OPTICS)
    widefield = widefield_from_raw(data.raw, camera=data.camera)
    ideal = sim_ground_truth(specimen, k_fraction=0.85, **OPTICS)
    assert sim.shape == widefield.shape == specimen.shape
    ideal_dip = line_dip(ideal, centre, sep, n)
    assert ideal_dip > 0.2  # theory: the extended OTF resolves them
    assert line_dip(widefield, centre, sep, n) < 0.05
    assert line_dip(sim, centre, sep, n) > 0.2
    assert line_dip(sim, centre, sep, n) == pytest.approx(ideal_dip, abs=0.07)


@pytest.fixture(scope="module")
def two_acquisitions():
    """One scene, one pattern, two independent noise realisations."""
    n = 128
    specimen = cell_scene(n, seed=8)
    pattern = make_pattern(phase_offsets_rad=(1.0, 2.5, 4.0))
    results = []
    for seed in (21, 22):
        data = simulate_sim(specimen, pattern, peak_photons=500, background_photons=10,
                            rng=np.random.default_rng(seed), **OPTICS)
        params = estimate_parameters(data.raw, camera=data.camera, **OPTICS)
        results.append((
            wiener_sim(data.raw, params, camera=data.camera, **OPTICS),
            widefield_from_raw(data.raw, camera=data.camera),
        ))
    return specimen, results


def test_reconstruction_correlates_with_the_sim_ground_truth_better_than_widefield(
    two_acquisitions,
):
    specimen, [(sim, widefield), _] = two_acquisitions
    truth = sim_ground_truth(specimen, k_fraction=0.85, **OPTICS)
    c = slice(32, -32)  # away from the faded border
    r_sim = np.corrcoef(sim[c, c].ravel(), truth[c, c].ravel())[0, 1]
    r_wf = np.corrcoef(widefield[c, c].ravel(), truth[c, c].ravel())[0, 1]
    assert r_sim > 0.95
    assert r_sim > r_wf + 0.03


def _fitted_psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR after the least-squares affine fit of ``image`` to ``reference`` (as CARE)."""
    a, b = np.polyfit(image.ravel(), reference.ravel(), 1)
    return psnr(reference, a * image + b)


@pytest.mark.parametrize("peak", [20, 2000])
def test_auto_wiener_beats_the_fixed_filter_and_widefield_at_low_and_high_light(peak):
    """The default MMSE filter (``wiener_w="auto"``): noise and specimen spectrum measured
    on the data. At 20 photons the classical w = 0.05 falls below widefield; auto must
    not. At 2000 it must keep the extended resolution's gain."""
    n = 128
    specimen = cell_scene(n, seed=31)
    pattern = make_pattern(start_angle_rad=0.3, phase_offsets_rad=(0.4, 2.2, 5.0),
                           modulation=0.8)
    data = simulate_sim(specimen, pattern, peak_photons=peak, background_photons=10,
                        rng=np.random.default_rng(32), **OPTICS)
    params = pattern.angle_parameters(**OPTICS)  # the true pattern: the filters compared
    truth = sim_ground_truth(specimen, k_fraction=pattern.k_fraction, **OPTICS)
    c = slice(32, -32)
    score = {w: _fitted_psnr(truth[c, c], wiener_sim(data.raw, params, camera=data.camera,
                                                      wiener_w=w, **OPTICS)[c, c])
             for w in ("auto", 0.05, 0.8)}
    wide = _fitted_psnr(truth[c, c], widefield_from_raw(data.raw, camera=data.camera)[c, c])
    assert score["auto"] > score[0.05] + (1.0 if peak == 20 else -0.2)
    assert score["auto"] > score[0.8] - 0.2
    assert score["auto"] > wide + (0.5 if peak == 20 else 5.0)


def test_auto_wiener_falls_back_to_a_fixed_w_with_a_note_when_noise_cannot_be_measured():
    """Camera pixels too coarse for any frequency beyond the optical cut-off: the noise
    cannot be told from the signal, so w = 0.05 is used, and said so."""
    optics = {"na": 1.4, "wavelength_nm": 500.0, "pixel_size_nm": 100.0}  # cut-off 0.56
    pattern = make_pattern(phase_offsets_rad=(0.4, 2.2, 5.0), k_fraction=0.8)
    rng = np.random.default_rng(33)
    specimen = render_specimen((128, 128), rng, filaments=10, puncta=64, nuclei=0)
    data = simulate_sim(specimen, pattern, peak_photons=500, rng=rng, **optics)
    params = pattern.angle_parameters(**optics)
    with pytest.warns(WeakPatternWarning, match="noise cannot be measured"):
        auto = wiener_sim(data.raw, params, camera=data.camera, **optics)
    assert np.array_equal(auto, wiener_sim(data.raw, params, camera=data.camera,
                                           wiener_w=0.05, **optics))


def test_wiener_prior_scales_with_light_and_round_trips():
    """The measured noise-to-signal prior: about ∝ 1/photons, a falling specimen power law,
    JSON round trip, bad values refused."""
    from fluorofpga.microscope.sim_prior import WienerPrior
    from fluorofpga.microscope.sim_recon import measure_wiener_prior

    specimen = cell_scene(128, seed=34)
    pattern = make_pattern(phase_offsets_rad=(0.4, 2.2, 5.0), modulation=0.8)
    priors = []
    for peak in (100, 1000):
        data = simulate_sim(specimen, pattern, peak_photons=peak, background_photons=10,
                            rng=np.random.default_rng(35), **OPTICS)
        priors.append(measure_wiener_prior(data.raw, camera=data.camera, **OPTICS))
    dim, bright = priors
    # 10x the light: ε falls 10x, more where the fixed background dominates the noise
    assert 8 < dim.ratio_at_cutoff / bright.ratio_at_cutoff < 30
    assert -4 < dim.slope < 0 and -4 < bright.slope < 0
    assert dim(2 * CUTOFF) > dim(CUTOFF) > dim(0.5 * CUTOFF)  # noise wins at high |k|
    assert WienerPrior.from_dict(dim.to_dict()) == dim
    # saved with the parameters (`sim --save-params`), read back; older files have none
    params = SimParameters(tuple(pattern.angle_parameters(**OPTICS)), n_phases=3,
                           frame_shape=(128, 128), wiener_prior=dim, **OPTICS)
    document = json.loads(json.dumps(params.to_dict()))
    assert SimParameters.from_dict(document).wiener_prior == dim
    del document["wiener_prior"]
    assert SimParameters.from_dict(document).wiener_prior is None
    document["wiener_prior"] = {"ratio_at_cutoff": -1, "slope": -1, "cutoff": 0.3,
                                "rho_min": 0.01}
    with pytest.raises(SimParametersError, match="ratio_at_cutoff"):
        SimParameters.from_dict(document)
    assert dim.for_light(10.0).ratio_at_cutoff == pytest.approx(dim.ratio_at_cutoff / 10)
    with pytest.raises(ValueError, match="ratio_at_cutoff"):
        WienerPrior(-1.0, -2.0, CUTOFF, 0.01)
    with pytest.raises(ValueError, match="slope"):
        WienerPrior(1.0, 2.0, CUTOFF, 0.01)
    with pytest.raises(ValueError, match="not a Wiener prior"):
        WienerPrior.from_dict({"slope": -2})


def test_wiener_parameter_is_auto_or_a_positive_number():
    assert check_wiener_w("auto") == check_wiener_w(" AUTO ") == "auto"
    assert check_wiener_w("0.2") == check_wiener_w(0.2) == 0.2
    for bad in ("bogus", "", 0, -1, float("nan"), float("inf"), "-0.1"):
        with pytest.raises(ValueError, match="'auto' or a number > 0"):
            check_wiener_w(bad)
    with pytest.raises(ValueError, match="'auto' or a number > 0"):
        wiener_sim(np.ones((9, 32, 32)), None, wiener_w="bogus", **OPTICS)


def test_reconstruction_spectral_support_extends_past_1p5_widefield_cutoff(two_acquisitions):
    """Fourier ring correlation of two noise realisations: signal, not noise, out there."""
    _, [(sim_a, wf_a), (sim_b, wf_b)] = two_acquisitions
    ring = (1.5 * CUTOFF, 1.6 * CUTOFF)
    assert frc(sim_a, sim_b, *ring) > 1 / 7
    assert abs(frc(wf_a, wf_b, *ring)) < 1 / 7
    # inside the widefield band both carry signal
    assert frc(wf_a, wf_b, 0.5 * CUTOFF, 0.6 * CUTOFF) > 0.5
