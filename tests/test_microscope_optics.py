import numpy as np
import pytest

from fluorofpga.microscope import airy_psf, otf, pupil_psf


def _fwhm_px(psf: np.ndarray) -> float:
    row = psf[psf.shape[0] // 2]
    c = len(row) // 2
    half = row[c] / 2
    right = c + np.argmax(row[c:] < half)
    # linear interpolation between the last sample above and the first below half maximum
    x0, x1 = right - 1, right
    frac = (row[x0] - half) / (row[x0] - row[x1])
    return 2 * (x0 + frac - c)


@pytest.mark.parametrize(("na", "wl", "n"), [(1.4, 520.0, 1.518), (1.2, 600.0, 1.33)])
def test_pupil_psf_fwhm_matches_theory(na, wl, n):
    pixel = 8.0
    psf = pupil_psf(na, wl, pixel, n_immersion=n, size=101, oversample=1)
    fwhm_nm = _fwhm_px(psf) * pixel
    assert fwhm_nm == pytest.approx(0.51 * wl / na, rel=0.05)
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)


def test_pupil_psf_in_focus_equals_airy():
    a = airy_psf(1.2, 520.0, 65.0)
    p = pupil_psf(1.2, 520.0, 65.0)
    assert np.abs(a - p).max() < 0.01 * a.max()


def test_pupil_psf_otf_cut_off_at_2na_over_lambda():
    na, wl, pixel = 1.2, 520.0, 65.0
    o = otf(pupil_psf(na, wl, pixel, size=63, defocus_nm=300.0))
    n = o.shape[0]
    f = np.fft.fftshift(np.fft.fftfreq(n))
    fr = np.hypot(f[:, None], f[None, :])
    cutoff = 2 * na * pixel / wl  # cycles per pixel
    assert o[fr > 1.06 * cutoff].max() < 1e-3
    assert o[(fr > 0.3 * cutoff) & (fr < 0.6 * cutoff)].min() > 1e-3


def test_defocus_spreads_symmetrically_and_conserves_energy():
    peaks = []
    for z in (0.0, 250.0, 500.0, 1000.0):
        plus = pupil_psf(1.3, 520.0, 65.0, defocus_nm=z)
        minus = pupil_psf(1.3, 520.0, 65.0, defocus_nm=-z)
        np.testing.assert_allclose(plus, minus, atol=1e-12)  # scalar, aberration-free
        assert plus.sum() == pytest.approx(1.0, abs=1e-12)
        peaks.append(plus.max())
    assert all(a > b for a, b in zip(peaks, peaks[1:], strict=False))
    # the medium matters off focus: the same NA defocuses differently in water and oil
    water = pupil_psf(1.2, 520.0, 65.0, n_immersion=1.33, defocus_nm=500.0)
    oil = pupil_psf(1.2, 520.0, 65.0, n_immersion=1.518, defocus_nm=500.0)
    assert not np.allclose(water, oil, atol=1e-4)


def test_pupil_psf_rejects_impossible_na():
    with pytest.raises(ValueError, match="immersion"):
        pupil_psf(1.4, 520.0, 65.0, n_immersion=1.33)
