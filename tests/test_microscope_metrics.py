"""CARE's NRMSE and Fourier ring correlation against theory and known band limits."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fluorofpga.microscope.metrics import frc, frc_resolution, nrmse_affine

N = 256


def band_limited(cutoff: float, rng: np.random.Generator, n: int = N) -> np.ndarray:
    """White noise with every frequency above ``cutoff`` (cycles/pixel) removed."""
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    scene = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * (f <= cutoff)).real
    return scene / scene.std()


# --------------------------------------------------------------------------- NRMSE


def test_nrmse_affine_is_invariant_to_affine_changes_of_the_image():
    rng = np.random.default_rng(0)
    reference = gaussian_filter(rng.random((64, 64)), 2) * 1000 + 100
    image = reference + rng.normal(0, 5, reference.shape)
    base = nrmse_affine(reference, image)
    assert base > 0
    for scale, shift in [(3.0, 0.0), (0.01, -7.0), (-2.0, 1e4)]:
        assert nrmse_affine(reference, scale * image + shift) == pytest.approx(base, rel=1e-9)
    assert nrmse_affine(reference, 0.5 * reference + 3) == pytest.approx(0.0, abs=1e-12)


def test_nrmse_affine_matches_its_definition_and_grows_with_noise():
    rng = np.random.default_rng(1)
    reference = gaussian_filter(rng.random((64, 64)), 2)
    lo, hi = np.percentile(reference, (0.1, 99.9))
    noise = rng.normal(size=reference.shape)
    # with a little noise the best affine fit is ~identity after normalisation, so
    # NRMSE ≈ noise sd in units of the percentile range
    sigma = 1e-3 * (hi - lo)
    assert nrmse_affine(reference, reference + sigma * noise) == pytest.approx(1e-3, rel=0.05)
    values = [nrmse_affine(reference, reference + s * (hi - lo) * noise) for s in (0.01, 0.1, 1)]
    assert values[0] < values[1] < values[2]


def test_nrmse_affine_rejects_bad_input():
    a = np.ones((8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        nrmse_affine(np.arange(64.0).reshape(8, 8), np.ones((8, 9)))
    with pytest.raises(ValueError, match="NaN"):
        nrmse_affine(np.arange(64.0).reshape(8, 8), np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="constant"):
        nrmse_affine(a, a)


# --------------------------------------------------------------------------- FRC


@pytest.mark.parametrize("cutoff", [0.125, 0.25])
@pytest.mark.parametrize("noise", [0.3, 1.0])
def test_frc_finds_a_known_band_limit(cutoff, noise):
    rng = np.random.default_rng(int(cutoff * 1000 + noise * 10))
    scene = band_limited(cutoff, rng)
    result = frc(scene + noise * rng.normal(size=scene.shape),
                 scene + noise * rng.normal(size=scene.shape))  # fmt: skip
    assert result.crossed
    assert result.resolution == pytest.approx(1 / cutoff, rel=0.15)
    assert result.frequencies[-1] == pytest.approx(0.5)


def test_frc_curve_equals_signal_fraction_for_a_white_scene():
    rng = np.random.default_rng(2)
    scene = rng.normal(size=(N, N))  # white: SNR is the same at every frequency
    for sigma in (0.5, 1.0, 2.0):
        result = frc(scene + sigma * rng.normal(size=scene.shape),
                     scene + sigma * rng.normal(size=scene.shape), window="none")  # fmt: skip
        expected = 1 / (1 + sigma**2)  # S / (S + N)
        assert np.mean(result.correlation[10:]) == pytest.approx(expected, abs=0.02)


def test_frc_more_noise_gives_worse_resolution_and_pixel_size_scales():
    rng = np.random.default_rng(3)
    scene = gaussian_filter(rng.normal(size=(N, N)), 2.0, mode="wrap")
    scene /= scene.std()
    resolutions = []
    for sigma in (0.03, 0.3, 1.0):
        a = scene + sigma * rng.normal(size=scene.shape)
        b = scene + sigma * rng.normal(size=scene.shape)
        resolutions.append(frc_resolution(a, b))
    assert resolutions[0] < resolutions[1] < resolutions[2]
    assert frc_resolution(a, b, pixel_size_nm=65.0) == pytest.approx(65.0 * resolutions[2])


def test_frc_of_independent_noise_does_not_resolve_anything():
    rng = np.random.default_rng(4)
    result = frc(rng.normal(size=(128, 128)), rng.normal(size=(128, 128)))
    assert abs(np.mean(result.correlation)) < 0.02
    assert result.resolution_frequency < 0.1


def test_frc_rejects_bad_input():
    a = np.zeros((32, 32))
    with pytest.raises(ValueError, match="shapes differ"):
        frc(a, np.zeros((32, 31)))
    with pytest.raises(ValueError, match="NaN"):
        frc(a, np.full((32, 32), np.nan))
    with pytest.raises(ValueError, match="YX"):
        frc(np.zeros((2, 32, 32)), np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="window"):
        frc(a, a, window="kaiser")
