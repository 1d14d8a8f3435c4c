"""fluorofpga.microscope: the physics and data side of the project (no torch).

Optics (``optics``; lengths in nm in the sample plane, frequencies in cycles/pixel)
    ``airy_psf(na, wavelength_nm, pixel_size_nm, size=None, oversample=4)``
        widefield Airy PSF integrated over camera pixels, odd size, sums to 1.
    ``otf(psf)``
        |OTF|, fftshifted, 1 at DC.
    ``blur(image, psf, *, boundary="reflect")``
        FFT convolution, same shape, flux-conserving (mirror or periodic boundary).

Specimens (``specimen``)
    ``render_specimen(shape, rng, *, filaments=30, puncta=200, nuclei=3, oversample=2)``
        cell-like fluorophore density (filaments, puncta, nuclei), ≥ 0, max 1.

Camera (``camera``)
    ``SCMOSCamera(qe, gain_e_per_adu, offset_adu, read_noise_e, bit_depth)``
        ``.acquire(photons, rng)`` → uint16 ADU with Poisson + Gaussian noise;
        ``.expected_adu(photons)`` → noise-free float64 ADU.

Simulation (``simulate``)
    ``WidefieldMicroscope(shape, na, wavelength_nm, pixel_size_nm, peak_photons,
    background_photons, camera, seed, ...)``
        ``.photons()``, ``.clean_adu()`` (ground truth), ``.frames(n)`` → ``Frame``\\ s
        (``index``, ``noisy`` uint16, ``clean_adu`` float64).
    ``simulate_pairs(n, shape, rng, peak_photons=(10, 100), camera=None, **kwargs)``
        ``(noisy uint16 NYX, clean_adu float32 NYX)`` training pairs.

Metrics (``metrics``)
    ``psnr(reference, image, data_range=None)``, ``ssim(reference, image, data_range=None)``.

Image I/O (``io``)
    ``read_tiff(path, *, dtype=np.uint16, ndim=(2, 3))``, ``write_tiff(path, array, *,
    axes="TYX", metadata=None)`` (atomic), ``axes_of(path)``; every bad file raises
    ``ImageFormatError`` (a ``ValueError``).
"""

from .camera import SCMOSCamera
from .io import ImageFormatError, axes_of, read_tiff, write_tiff
from .metrics import psnr, ssim
from .optics import airy_psf, blur, otf
from .simulate import Frame, WidefieldMicroscope, simulate_pairs
from .specimen import render_specimen

__all__ = [
    "Frame",
    "ImageFormatError",
    "SCMOSCamera",
    "WidefieldMicroscope",
    "airy_psf",
    "axes_of",
    "blur",
    "otf",
    "psnr",
    "read_tiff",
    "render_specimen",
    "simulate_pairs",
    "ssim",
    "write_tiff",
]
