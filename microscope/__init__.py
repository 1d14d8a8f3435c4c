"""fluorofpga.microscope: the physics and data side of the project (no torch).

Optics (``optics``; lengths in nm in the sample plane, frequencies in cycles/pixel)
    ``airy_psf(na, wavelength_nm, pixel_size_nm, size=None, oversample=4)``
        widefield Airy PSF integrated over camera pixels, odd size, sums to 1.
    ``pupil_psf(na, wavelength_nm, pixel_size_nm, *, n_immersion=1.518, defocus_nm=0.0,
    size=None, oversample=4)``
        scalar pupil-function PSF (immersion index, optional defocus); equals the Airy
        pattern in focus.
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

Structured illumination (``sim``, ``sim_recon``; wave vectors in cycles per camera pixel)
    ``make_pattern(n_angles=3, n_phases=3, k_fraction=0.85, modulation=0.9, ...)`` ->
    ``SimPattern`` (3x3 and the 3-frame DL-SIM variant), ``simulate_sim(specimen_2x,
    pattern, ...)`` -> ``SimRawData`` (``raw`` uint16 "PYX", angles outermost),
    ``sim_ground_truth`` (specimen through the extended SIM OTF; ``units="widefield"``
    for a learned reconstructor's target), ``ideal_otf``, ``cutoff_cycles_per_px``,
    ``illumination``, ``bin_to_camera``, ``space_to_depth`` / ``depth_to_space`` (2×
    image <-> 4 sub-pixel channels: the pixel shuffle of a SIM network's output);
    ``estimate_parameters(raw, ...)`` -> ``SimParameters`` (a sequence of
    ``AngleParameters`` per angle: band separation, FFT cross-correlation, exact sub-pixel
    refinement; ~0.3 s per 512² 3x3 stack), ``wiener_sim(raw, params=None, ...)``
    (generalised Wiener, apodised, on the 2x grid; reuses ``SimParameters`` or a list of
    ``AngleParameters``, estimates when None; ``wiener_w="auto"``, the default, is the
    MMSE filter from the stack's own noise and spectrum, ``measure_wiener_prior`` ->
    ``WienerPrior`` what it measures, a number the classical fixed-w filter),
    ``widefield_from_raw``;
    ``detect_frame_order`` -> ``FrameOrderCheck`` (raw frames are angle-major: frame =
    angle * n_phases + phase; a phase-major stack is reordered with a
    ``FrameOrderWarning``, other orders raise ``FrameOrderError``); ``WeakPatternWarning``
    for angles barely above the noise, ``NoPatternError`` when no angle shows one;
    ``check_parameters(raw, params, ...)`` -> ``ParameterCheck`` (drift of stored
    parameters on a new stack: ``.ok``, ``.reasons``, ``.current``).
    ``SimParameters.save(path)`` / ``SimParameters.load(path)`` / ``load_sim_parameters``
    (versioned JSON with the optics, frame shape and layout; ``check_compatible`` raises
    ``SimParametersMismatch``, unreadable files ``SimParametersError``).

Streaming Wiener SIM (``sim_linear``; the form a Wiener-SIM bundle's hardware runs)
    ``wiener_realspace(photons, params, ...)``: the Wiener reconstruction as a per-pixel
    demodulation plus one 9 -> 4 channel K x K filter (float reference);
    ``design_wiener_filters`` (the filter), ``demodulate_float``;
    ``LinearSimCodes`` (8-bit linear codes: ``step_for``, ``encode``, ``decode``),
    ``DemodRegisters.from_parameters(params, codes)`` / ``.at(y0, x0)`` and
    ``demodulate_int(codes, regs)`` (bit-exact reference of ``hw/rtl/sim_demod.sv``),
    ``fit_output_gain``, ``integer_weights`` (the quantized layer's weights and bias).

Camera with per-pixel maps (``camera``)
    ``SCMOSSensor`` - per-pixel offset/gain/read-noise maps, QE, dark current, hot pixels,
        12/16-bit ADC, rolling-shutter row timing; ``SCMOSSensor.random(shape, rng)``.

Calibration (``calibration``)
    ``calibrate(dark_stack, flat_stacks, qe=None)`` -> ``Calibration`` (offset and
    read-noise maps from darks, gain by the photon transfer curve), ``calibrate_dark``,
    ``photon_transfer`` -> ``PTCResult``, ``find_hot_pixels`` (``repair_hot_pixels``),
    ``shrink_offsets`` (the offset map's MMSE estimate from the darks' means),
    ``Calibration.save`` / ``load_calibration``,
    ``adu_to_electrons`` / ``adu_to_photons`` / ``photons_to_adu``, ``check_shape``;
    errors are ``CalibrationError``.

Signal representation (``signal``) - what the network sees, as closed forms and tables
    ``NoiseModel(a, b, source)`` (``var(y) = a·E[y] + b`` in ADU; ``from_camera``,
    ``from_calibration``), ``gat`` / ``inverse_gat`` (generalised Anscombe, algebraic
    inverse), ``SignalSpec`` (the bundle's fixed codes: GAT input code, noise-residual
    output code, clean code), ``SignalTables(spec, noise, adc_max)`` (``in_lut``,
    ``out_lut``, ``encode``, ``decode``), ``CodeCounts`` (pixels passed through or clipped),
    ``PixelMaps(calibration)`` (per-pixel offset/gain onto a uniform sensor and back).

Noise estimation without a calibration (``noise``)
    ``estimate_noise(frames, adc_max=65535)`` -> ``NoiseEstimate`` (``model``, bins) -
    Foi et al. 2008 style fit on one frame or a stack; ``NoiseEstimationError``.

Datasets (``datasets``)
    ``simulated_pairs_at(photon_levels, n_per_level, shape, seed)``,
    ``TiffFolderDataset(folder, pattern="*.tif", clean_folder=None)`` (noisy-only or paired).

Metrics (``metrics``)
    ``psnr(reference, image, data_range=None)``, ``ssim(reference, image, data_range=None)``,
    ``nrmse_affine(reference, image)`` (CARE's normalised RMSE after an affine fit),
    ``frc(image1, image2)`` -> ``FRCResult``, ``frc_resolution`` (Fourier ring correlation,
    1/7 threshold).

Image I/O (``io``)
    ``read_tiff(path, *, dtype=np.uint16, ndim=(2, 3))``, ``write_tiff(path, array, *,
    axes="TYX", metadata=None)`` (atomic), ``axes_of(path)``, ``tiff_shape``;
    ``write_ome_zarr`` / ``read_ome_zarr`` (NGFF 0.4, axes and pixel size), ``read_image``
    (by suffix); every bad file raises ``ImageFormatError`` (a ``ValueError``).
    ``ImageMeta`` (axes, pixel size and unit, Z step, frame interval) with
    ``read_image_meta(path)`` -> ``(array, meta)`` and ``write_tiff(..., meta=)`` /
    ``write_ome_zarr(..., meta=)``; RGB refused, unnamed axes are ``Q`` (``QYX``).
    ``read_ome_optics(path)`` -> ``{"na", "wavelength_nm"}`` where a TIFF's OME-XML states
    them (objective ``LensNA``, channel ``EmissionWavelength``).
    ``check_output(path, overwrite=False, inputs=())`` raises ``OutputError`` before any
    work (missing/unwritable folder, existing output, output = an input);
    ``atomic_write(path, write)``.
"""

from .calibration import (
    Calibration,
    CalibrationError,
    PTCResult,
    calibrate,
    calibrate_dark,
    find_hot_pixels,
    load_calibration,
    photon_transfer,
    shrink_offsets,
)
from .camera import SCMOSCamera, SCMOSSensor
from .datasets import TiffFolderDataset, simulated_pairs_at
from .io import (
    ImageFormatError,
    ImageMeta,
    OutputError,
    atomic_write,
    axes_of,
    check_output,
    read_image,
    read_image_meta,
    read_ome_optics,
    read_ome_zarr,
    read_tiff,
    tiff_shape,
    write_ome_zarr,
    write_tiff,
)
from .metrics import FRCResult, frc, frc_resolution, nrmse_affine, psnr, ssim
from .noise import NoiseEstimate, NoiseEstimationError, estimate_noise
from .optics import airy_psf, blur, otf, pupil_psf
from .signal import CodeCounts, NoiseModel, SignalSpec, SignalTables, gat, inverse_gat
from .sim import (
    AngleParameters,
    SimPattern,
    SimRawData,
    bin_to_camera,
    cutoff_cycles_per_px,
    depth_to_space,
    ideal_otf,
    illumination,
    make_pattern,
    sim_ground_truth,
    simulate_sim,
    space_to_depth,
)
from .sim_params import (
    FrameOrderCheck,
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
from .sim_prior import WienerPrior
from .sim_recon import (
    check_parameters,
    detect_frame_order,
    estimate_parameters,
    measure_wiener_prior,
    widefield_from_raw,
    wiener_sim,
)
from .simulate import Frame, WidefieldMicroscope, simulate_pairs
from .specimen import render_specimen

__all__ = [
    "CodeCounts",
    "NoiseEstimate",
    "NoiseEstimationError",
    "NoiseModel",
    "SignalSpec",
    "SignalTables",
    "estimate_noise",
    "gat",
    "inverse_gat",
    "AngleParameters",
    "SimPattern",
    "SimRawData",
    "bin_to_camera",
    "cutoff_cycles_per_px",
    "estimate_parameters",
    "ideal_otf",
    "illumination",
    "make_pattern",
    "sim_ground_truth",
    "simulate_sim",
    "widefield_from_raw",
    "wiener_sim",
    "WienerPrior",
    "measure_wiener_prior",
    "FrameOrderCheck",
    "FrameOrderError",
    "NoPatternError",
    "FrameOrderWarning",
    "ParameterCheck",
    "SimParameters",
    "SimParametersError",
    "SimParametersMismatch",
    "WeakPatternWarning",
    "check_parameters",
    "detect_frame_order",
    "load_sim_parameters",
    "Calibration",
    "CalibrationError",
    "FRCResult",
    "PTCResult",
    "SCMOSSensor",
    "TiffFolderDataset",
    "calibrate",
    "calibrate_dark",
    "find_hot_pixels",
    "frc",
    "frc_resolution",
    "load_calibration",
    "nrmse_affine",
    "photon_transfer",
    "read_image",
    "read_ome_optics",
    "read_ome_zarr",
    "shrink_offsets",
    "simulated_pairs_at",
    "tiff_shape",
    "write_ome_zarr",
    "Frame",
    "ImageFormatError",
    "ImageMeta",
    "OutputError",
    "atomic_write",
    "check_output",
    "read_image_meta",
    "SCMOSCamera",
    "WidefieldMicroscope",
    "airy_psf",
    "axes_of",
    "blur",
    "otf",
    "psnr",
    "pupil_psf",
    "read_tiff",
    "render_specimen",
    "space_to_depth",
    "depth_to_space",
    "simulate_pairs",
    "ssim",
    "write_tiff",
]
