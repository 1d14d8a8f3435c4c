"""Physics sanity tests for fluorofpga.microscope: optics, specimen, camera, simulator, metrics."""

import dataclasses
import time

import numpy as np
import pytest
from skimage.morphology import skeletonize

import fluorofpga.microscope as mic
from fluorofpga.microscope import (
    SCMOSCamera,
    WidefieldMicroscope,
    airy_psf,
    blur,
    otf,
    psnr,
    render_specimen,
    simulate_pairs,
    ssim,
)

# Reduced coordinate v of the third Airy dark ring.
THIRD_AIRY_ZERO_V = 10.1735


def fwhm_px(profile: np.ndarray) -> float:
    """Full width at half maximum of a single-peaked 1-D profile, linear interpolation."""
    half = profile.max() / 2
    above = np.flatnonzero(profile >= half)
    lo, hi = above[0], above[-1]
    left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
    return right - left


def radial_frequency(n: int) -> np.ndarray:
    f = np.fft.fftshift(np.fft.fftfreq(n))
    return np.hypot(f[:, None], f[None, :])


# --------------------------------------------------------------------------- optics


def test_public_api_is_documented_and_complete():
    assert set(mic.__all__) >= {
        "airy_psf", "otf", "blur", "render_specimen", "SCMOSCamera", "WidefieldMicroscope",
        "Frame", "simulate_pairs", "psnr", "ssim", "ImageFormatError", "read_tiff",
        "write_tiff", "axes_of",
    }  # fmt: skip
    for name in mic.__all__:
        assert name in mic.__doc__, name
        assert hasattr(mic, name), name


@pytest.mark.parametrize(("na", "wavelength"), [(1.2, 520.0), (0.8, 670.0), (1.4, 450.0)])
def test_psf_is_normalised_centred_symmetric_and_holds_three_rings(na, wavelength):
    pixel = 65.0
    psf = airy_psf(na, wavelength, pixel)
    size = psf.shape[0]
    assert psf.dtype == np.float64
    assert psf.shape == (size, size) and size % 2 == 1
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert psf.min() >= 0
    assert np.unravel_index(psf.argmax(), psf.shape) == (size // 2, size // 2)
    np.testing.assert_allclose(psf, psf[::-1, :], atol=1e-15)
    np.testing.assert_allclose(psf, psf.T, atol=1e-15)
    third_ring_px = THIRD_AIRY_ZERO_V * wavelength / (2 * np.pi * na * pixel)
    assert size // 2 >= third_ring_px


@pytest.mark.parametrize(("na", "wavelength"), [(1.2, 520.0), (0.8, 670.0)])
def test_psf_fwhm_matches_airy_theory(na, wavelength):
    pixel = 4.0  # fine sampling so pixel integration barely widens the PSF
    psf = airy_psf(na, wavelength, pixel, size=201)
    measured_nm = fwhm_px(psf[100]) * pixel
    assert measured_nm == pytest.approx(0.51 * wavelength / na, rel=0.05)


def test_psf_pixel_integration_lowers_the_central_pixel():
    # Integrating over coarse pixels averages the peak with its flanks, so the central
    # pixel holds a smaller fraction of the light than with point sampling.
    fine = airy_psf(1.2, 520.0, 130.0, size=15, oversample=16)
    point = airy_psf(1.2, 520.0, 130.0, size=15, oversample=1)
    assert fine[7, 7] < point[7, 7]


@pytest.mark.parametrize("pixel", [40.0, 65.0, 100.0])
def test_otf_support_ends_at_the_diffraction_cutoff(pixel):
    na, wavelength = 1.2, 520.0
    mtf = otf(airy_psf(na, wavelength, pixel, size=65))
    n = mtf.shape[0]
    assert mtf[n // 2, n // 2] == pytest.approx(1.0)
    assert mtf.max() <= 1.0 + 1e-12
    cutoff = 2 * na * pixel / wavelength  # cycles per pixel
    rho = radial_frequency(n)
    assert mtf[rho > 1.05 * cutoff].max() < 2e-3
    assert mtf[rho < 0.5 * cutoff].min() > 0.1


def test_blur_conserves_flux_for_both_boundaries():
    rng = np.random.default_rng(3)
    image = rng.random((70, 90)) * 100
    image[0, 0] = image[-1, 5] = 5e4  # bright points at the edges, where light leaks out
    psf = airy_psf(1.2, 520.0, 65.0)
    for boundary in ("reflect", "periodic"):
        out = blur(image, psf, boundary=boundary)
        assert out.shape == image.shape
        assert out.sum() == pytest.approx(image.sum(), rel=1e-12)


def test_blur_of_a_point_is_the_psf_and_a_constant_stays_constant():
    psf = airy_psf(1.2, 520.0, 65.0)
    k = psf.shape[0]
    image = np.zeros((3 * k, 3 * k))
    image[3 * k // 2, 3 * k // 2] = 1.0
    out = blur(image, psf)
    c = 3 * k // 2
    np.testing.assert_allclose(out[c - k // 2 : c + k // 2 + 1, c - k // 2 : c + k // 2 + 1],
                               psf, atol=1e-12)
    np.testing.assert_allclose(blur(np.full((40, 50), 7.0), psf), 7.0, rtol=1e-12)


def test_optics_rejects_bad_arguments():
    with pytest.raises(ValueError):
        airy_psf(1.2, 520.0, 65.0, size=32)
    with pytest.raises(ValueError):
        airy_psf(-1.0, 520.0, 65.0)
    with pytest.raises(ValueError):
        blur(np.ones((8, 8)), np.ones((3, 3)), boundary="nearest")


# --------------------------------------------------------------------------- specimen


def test_specimen_is_nonnegative_normalised_and_seeded():
    a = render_specimen((96, 128), np.random.default_rng(1))
    b = render_specimen((96, 128), np.random.default_rng(1))
    c = render_specimen((96, 128), np.random.default_rng(2))
    assert a.shape == (96, 128) and a.dtype == np.float64
    assert a.min() >= 0
    assert a.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_specimen_filaments_are_thin_sparse_curves():
    rng = np.random.default_rng(0)
    lines = render_specimen((256, 256), rng, filaments=20, puncta=0, nuclei=0)
    foreground = lines > 0.1
    fraction = foreground.mean()
    assert 0.01 < fraction < 0.3
    # Thin: foreground area per unit skeleton length is a few pixels (line width).
    width = foreground.sum() / skeletonize(foreground).sum()
    assert width < 4.0
    # Nuclei are the opposite: area per skeleton length is large.
    blobs = render_specimen((256, 256), rng, filaments=0, puncta=0, nuclei=2) > 0.1
    assert blobs.sum() / skeletonize(blobs).sum() > 2 * width


def test_specimen_puncta_have_a_range_of_brightness_and_empty_scene_is_zero():
    spots = render_specimen((128, 128), np.random.default_rng(4), filaments=0, puncta=60,
                            nuclei=0)
    neighbours = np.maximum.reduce([np.roll(spots, s, a) for s in (-1, 1) for a in (0, 1)])
    peaks = spots[(spots > neighbours) & (spots > 0.02)]
    assert peaks.size > 20
    assert peaks.max() / np.median(peaks) > 1.5
    empty = render_specimen((16, 16), np.random.default_rng(0), filaments=0, puncta=0,
                            nuclei=0)
    assert not empty.any()


def test_specimen_oversampled_rendering_is_fast():
    rng = np.random.default_rng(0)
    render_specimen((64, 64), rng)
    start = time.perf_counter()
    render_specimen((512, 512), rng)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- camera


@pytest.mark.parametrize("photons", [5.0, 50.0, 500.0])
def test_camera_flat_field_mean_and_variance_match_theory(photons):
    camera = SCMOSCamera()
    frame = camera.acquire(np.full((512, 512), photons), np.random.default_rng(7))
    assert frame.dtype == np.uint16
    adu = frame.astype(np.float64)
    electrons = camera.qe * photons
    mean = electrons / camera.gain_e_per_adu + camera.offset_adu
    variance = (electrons + camera.read_noise_e**2) / camera.gain_e_per_adu**2
    assert adu.mean() == pytest.approx(mean, abs=5 * np.sqrt(variance / adu.size) + 0.01)
    assert adu.var() == pytest.approx(variance, rel=0.03)
    assert camera.expected_adu(np.array([photons]))[0] == pytest.approx(mean)


def test_camera_clips_at_full_scale_and_at_zero():
    camera = SCMOSCamera(bit_depth=12)
    bright = camera.acquire(np.full((32, 32), 1e6), np.random.default_rng(0))
    assert (bright == 2**12 - 1).all()
    no_offset = SCMOSCamera(offset_adu=0.0, read_noise_e=5.0)
    dark = no_offset.acquire(np.zeros((64, 64)), np.random.default_rng(0))
    assert dark.max() < 100  # negative read noise clipped to 0, not wrapped to 65535
    assert (dark == 0).mean() > 0.3


def test_camera_rejects_bad_photons_and_parameters():
    camera = SCMOSCamera()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-negative"):
        camera.acquire(np.array([[1.0, -0.5]]), rng)
    with pytest.raises(ValueError, match="NaN"):
        camera.acquire(np.array([np.nan]), rng)
    for bad in ({"qe": 0.0}, {"qe": 1.5}, {"gain_e_per_adu": 0.0}, {"read_noise_e": -1.0},
                {"bit_depth": 17}, {"bit_depth": 12, "offset_adu": 5000.0}):
        with pytest.raises(ValueError):
            SCMOSCamera(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        camera.qe = 0.5


# --------------------------------------------------------------------------- simulator


def small_microscope(**kwargs) -> WidefieldMicroscope:
    return WidefieldMicroscope(shape=(96, 96), filaments=8, puncta=30, nuclei=1, **kwargs)


def test_simulator_is_reproducible_and_frames_are_new_noise():
    a = [f.noisy for f in small_microscope(seed=5).frames(3)]
    b = [f.noisy for f in small_microscope(seed=5).frames(3)]
    c = next(small_microscope(seed=6).frames(1)).noisy
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert not np.array_equal(a[0], c)
    late = next(small_microscope(seed=5).frames(1, start=2))
    assert late.index == 2
    np.testing.assert_array_equal(late.noisy, a[2])


def test_simulator_photon_scale_and_ground_truth():
    scope = small_microscope(peak_photons=40.0, background_photons=3.0)
    photons = scope.photons()
    assert photons.max() == pytest.approx(43.0)
    assert photons.min() >= 3.0 - 1e-9
    assert scope.photons() is photons  # cached
    cam = scope.camera
    np.testing.assert_allclose(scope.clean_adu(),
                               cam.qe * photons / cam.gain_e_per_adu + cam.offset_adu)
    frames = np.stack([f.noisy for f in scope.frames(32)]).astype(np.float64)
    # Averaging frames converges to the ground truth: residual ≈ noise / √32.
    expected_std = np.sqrt(cam.qe * photons + cam.read_noise_e**2) / cam.gain_e_per_adu
    residual = frames.mean(axis=0) - scope.clean_adu()
    assert abs(residual.mean()) < 0.1
    assert residual.std() == pytest.approx(np.sqrt(np.mean(expected_std**2) / 32), rel=0.1)
    scope.peak_photons = 80.0
    assert scope.photons().max() == pytest.approx(83.0)  # cache invalidated


def test_noisy_psnr_increases_with_light():
    scores = []
    for peak in (5.0, 20.0, 80.0, 320.0):
        scope = small_microscope(peak_photons=peak, seed=1)
        frame = next(scope.frames(1))
        scores.append(psnr(frame.clean_adu, frame.noisy))
    assert all(b > a + 2.0 for a, b in zip(scores, scores[1:], strict=False))


def test_simulate_pairs_shapes_dtypes_and_photon_range():
    camera = SCMOSCamera()
    noisy, clean = simulate_pairs(6, (48, 64), np.random.default_rng(0), peak_photons=(10, 100),
                                  camera=camera, filaments=5, puncta=10, nuclei=1)
    assert noisy.shape == clean.shape == (6, 48, 64)
    assert noisy.dtype == np.uint16 and clean.dtype == np.float32
    background = WidefieldMicroscope().background_photons
    peaks = (clean.max(axis=(1, 2)) - camera.offset_adu) * camera.gain_e_per_adu / camera.qe
    assert ((peaks - background > 10 - 1e-3) & (peaks - background < 100 + 1e-3)).all()
    assert len(np.unique(peaks.round(3))) == 6  # independent levels
    assert not np.array_equal(clean[0], clean[1])  # independent scenes
    again, _ = simulate_pairs(6, (48, 64), np.random.default_rng(0), peak_photons=(10, 100),
                              camera=camera, filaments=5, puncta=10, nuclei=1)
    np.testing.assert_array_equal(noisy, again)
    with pytest.raises(ValueError):
        simulate_pairs(1, (8, 8), np.random.default_rng(0), peak_photons=(0.0, 10.0))


# --------------------------------------------------------------------------- metrics


def test_psnr_matches_gaussian_noise_theory_and_casts_integers():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 1000, (128, 128))
    sigma = 10.0
    noisy = reference + rng.normal(0, sigma, reference.shape)
    expected = 20 * np.log10((reference.max() - reference.min()) / sigma)
    assert psnr(reference, noisy) == pytest.approx(expected, abs=0.1)
    a = np.array([[10, 20], [30, 40]], dtype=np.uint16)
    b = np.array([[12, 18], [30, 41]], dtype=np.uint16)  # b < a would wrap if not cast
    assert psnr(a, b) == pytest.approx(psnr(a.astype(float), b.astype(float)))
    with pytest.raises(ValueError, match="shape"):
        psnr(reference, reference[:-1])


def test_ssim_is_one_for_identical_and_drops_with_noise():
    rng = np.random.default_rng(1)
    reference = render_specimen((64, 64), rng) * 100
    assert ssim(reference, reference) == pytest.approx(1.0)
    low = ssim(reference, reference + rng.normal(0, 2, reference.shape))
    high = ssim(reference, reference + rng.normal(0, 10, reference.shape))
    assert 1.0 > low > high
    stack = np.stack([reference, reference + 1.0])
    assert ssim(stack, stack) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ssim(reference, reference.T[:-1])
