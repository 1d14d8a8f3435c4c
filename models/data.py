"""Training data for the denoiser: physically simulated scenes seen through many cameras.

Every training crop gets its own camera (gain, offset, read noise), light level (peak
photons, background) and noise draw, so the network learns the signal representation
(:mod:`fluorofpga.microscope.signal`), not one camera: raw ADU -> GAT input code, and
the target is the noise residual code against the GAT of the noise-free image. The
noise model used for the transform is perturbed by a few per cent on part of the crops,
as a noise model estimated from the frames would be.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from fluorofpga.microscope.signal import NoiseModel, SignalSpec, gat

from .denoiser import INPUT_BITS, OUTPUT_BITS

#: Optics of the training scenes: half from high-NA objectives sampled near Nyquist
#: (``NYQUIST_OPTICS``), half from ``BROAD_OPTICS``, 10× air to 100× oil, from oversampled
#: (PSF several pixels wide) to undersampled (PSF well inside one pixel). Each is
#: ``((NA min, max) uniform, (pixel nm min, max) log-uniform)``.
NYQUIST_OPTICS = ((0.8, 1.45), (60.0, 130.0))
BROAD_OPTICS = ((0.3, 1.45), (60.0, 650.0))


def draw_optics(rng: np.random.Generator) -> tuple[float, float]:
    """``(NA, pixel size nm)`` of one training scene (see :data:`BROAD_OPTICS`)."""
    (na_lo, na_hi), (px_lo, px_hi) = NYQUIST_OPTICS if rng.random() < 0.5 else BROAD_OPTICS
    return float(rng.uniform(na_lo, na_hi)), _log_uniform(rng, px_lo, px_hi)


@dataclass(frozen=True)
class CameraRange:
    """Ranges the training cameras and light levels are drawn from (per crop).

    Attributes:
        gain_e_per_adu: (min, max) conversion gain, e⁻/ADU (log-uniform).
        offset_adu: (min, max) offset, ADU (uniform).
        read_noise_e: (min, max) read noise, rms e⁻ (uniform).
        peak_photons: (min, max) detected photons at the brightest pixel (log-uniform).
        background_fraction: (min, max) background as a fraction of the peak (uniform).
        noise_model_error: relative error applied to the noise model's variance on
            half of the crops (as from an estimated noise model).
        read_noise_log_sd: (min, max) log-sd of the per-pixel read noise (sCMOS pixels
            each have their own amplifier; the noise model only knows the rms).
    """

    gain_e_per_adu: tuple[float, float] = (0.2, 5.0)
    offset_adu: tuple[float, float] = (50.0, 500.0)
    read_noise_e: tuple[float, float] = (0.5, 4.5)
    peak_photons: tuple[float, float] = (1.0, 1000.0)
    background_fraction: tuple[float, float] = (0.0, 0.15)
    noise_model_error: float = 0.06
    read_noise_log_sd: tuple[float, float] = (0.0, 0.4)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return asdict(self)

    def max_dark_z(self) -> float:
        """GAT value of zero signal at the highest read noise (``2·sqrt(σ² + 3/8)``): the
        darkest level a net trained on these cameras has seen at every gain
        (``SignalSpec.max_dark_z``)."""
        return 2.0 * math.sqrt(self.read_noise_e[1] ** 2 + 0.375)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def record_frames(
    photons: np.ndarray, cams: CameraRange, rng: np.random.Generator,
) -> tuple[np.ndarray, Any, Callable[[np.ndarray], np.ndarray]]:
    """Record noise-free photon frames with one random camera drawn from ``cams``.

    Every frame of ``photons`` (any shape; a SIM group is ``(F, H, W)``) gets Poisson +
    per-pixel Gaussian read noise and ADC rounding from the same camera. Returns the ADU
    frames, the noise model the transform uses (perturbed by up to
    ``cams.noise_model_error`` on half of the calls, as an estimated model would be, with
    the variance kept right at the median level) and the camera's photons -> expected ADU
    map (for targets).
    """
    g = _log_uniform(rng, *cams.gain_e_per_adu)
    offset = rng.uniform(*cams.offset_adu)
    read = rng.uniform(*cams.read_noise_e)
    log_sd = rng.uniform(*cams.read_noise_log_sd)
    read_map = read * np.exp(rng.normal(-log_sd**2, log_sd, photons.shape[-2:]))  # rms ≈ read
    electrons = rng.poisson(photons) + rng.standard_normal(photons.shape) * read_map
    adu = np.clip(np.rint(electrons / g + offset), 0, 65535)

    def to_adu(p: np.ndarray) -> np.ndarray:
        return np.asarray(p) / g + offset

    noise = NoiseModel.from_camera(g, offset, read)
    if rng.random() < 0.5 and cams.noise_model_error > 0:
        err = cams.noise_model_error
        level = float(np.median(to_adu(photons)))
        var_at = noise.variance(level) * (1 + rng.uniform(-err, err))
        a = noise.a * (1 + rng.uniform(-err, err))
        noise = NoiseModel(a, var_at - a * level)
    return adu, noise, to_adu


def encode_noisy(
    photons: np.ndarray, spec: SignalSpec, cams: CameraRange, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One training pair from a noise-free photon image: ``(input codes, residual target)``.

    Draws a camera from ``cams``, records ``photons`` with Poisson + Gaussian noise and ADC
    rounding (:func:`record_frames`), transforms both the noisy and the noise-free image
    with that camera's noise model (perturbed on half of the calls), and returns uint codes
    and the float target in residual-code units. A camera whose dark level lies above
    ``spec.max_dark_z`` is shifted down to it, as :class:`SignalTables` does when deployed.
    """
    adu, noise, to_adu = record_frames(photons, cams, rng)
    shift = spec.dark_shift(noise, float(to_adu(0.0)))
    q = spec.input_code(gat(adu, noise) - shift)
    target = spec.residual_target(q, gat(to_adu(photons), noise) - shift)
    return q, target


class SimulatedPairs:
    """A pool of noise-free simulated scenes; every crop is recorded by a new random camera.

    Half of the scenes are cell-like (filaments, puncta, nuclei: ``WidefieldMicroscope``),
    half generic fluorescence textures (``specimen.random_texture``), each through a PSF
    of random NA and pixel size (:func:`draw_optics`): from oversampled 100× oil images
    to undersampled 10×–20× ones, whose pixel-scale
    structure a network trained on Nyquist-sampled scenes alone smooths away as noise
    (measured: up to 4.5 dB worse than the raw frame at 1000 photons).

    Args:
        n_scenes: scenes in the pool (cell-like specimens, random optics).
        scene_shape: shape of each scene, camera pixels.
        signal: the representation the network works in.
        cameras: camera and light-level ranges.
        seed: RNG seed; the same seed gives the same pool and the same batches.
    """

    def __init__(
        self,
        n_scenes: int,
        scene_shape: tuple[int, int],
        signal: SignalSpec | None = None,
        cameras: CameraRange | None = None,
        seed: int = 0,
    ) -> None:
        from fluorofpga.microscope import SCMOSCamera, WidefieldMicroscope, airy_psf, blur
        from fluorofpga.microscope.specimen import random_texture

        self.signal = signal or SignalSpec()
        self.cameras = cameras or CameraRange()
        self.rng = np.random.default_rng(seed)
        scenes = []
        for i in range(int(n_scenes)):
            if i % 2:  # generic textures: nuclei, chromatin, tissue, diffuse stain
                na, px = draw_optics(self.rng)
                psf = airy_psf(na, 520.0, px)
                tex = blur(random_texture(tuple(scene_shape), self.rng), psf)
                scenes.append(np.clip(tex, 0, None) / max(float(tex.max()), 1e-12))
                continue
            na, px = draw_optics(self.rng)
            mic = WidefieldMicroscope(
                shape=tuple(scene_shape), peak_photons=1.0, background_photons=0.0,
                camera=SCMOSCamera(qe=1.0), seed=int(self.rng.integers(0, 2**31)),
                na=na, pixel_size_nm=px,
                filaments=int(self.rng.integers(0, 60)), puncta=int(self.rng.integers(0, 400)),
                nuclei=int(self.rng.integers(0, 6)),
            )
            scenes.append(np.asarray(mic.photons(), dtype=np.float64))
        self.scenes = np.stack(scenes)

    def pair(self, scene: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Record a unit-peak ``scene`` at a random light level through a random camera."""
        cams = self.cameras
        peak = _log_uniform(self.rng, *cams.peak_photons)
        background = peak * self.rng.uniform(*cams.background_fraction)
        return encode_noisy(scene * peak + background, self.signal, cams, self.rng)

    def batch(self, batch_size: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops, flips, rotations: ``(input, target)`` tensors ``(N, 1, crop, crop)``.

        Input is ``q / 2**INPUT_BITS``; target is the residual code / ``2**OUTPUT_BITS``.
        """
        n, h, w = self.scenes.shape
        xin, tgt = [], []
        for _ in range(batch_size):
            i = int(self.rng.integers(0, n))
            y = int(self.rng.integers(0, h - crop + 1))
            x = int(self.rng.integers(0, w - crop + 1))
            scene = np.rot90(self.scenes[i, y : y + crop, x : x + crop], int(self.rng.integers(4)))
            if self.rng.random() < 0.5:
                scene = scene[:, ::-1]
            q, t = self.pair(scene)
            xin.append(q)
            tgt.append(t)
        x_t = torch.from_numpy(np.stack(xin).astype(np.float32)[:, None] / 2.0**INPUT_BITS)
        t_t = torch.from_numpy(np.stack(tgt).astype(np.float32)[:, None] / 2.0**OUTPUT_BITS)
        return x_t, t_t


def int_to_tensor(q: np.ndarray) -> torch.Tensor:
    """Integer codes (…, H, W) -> float tensor (N, 1, H, W) on the network's input scale."""
    q = np.asarray(q)
    if q.ndim == 2:
        q = q[None]
    return torch.from_numpy(q.astype(np.float32)[:, None] / 2.0**INPUT_BITS)


def tensor_to_codes(y: torch.Tensor) -> np.ndarray:
    """Float network output (N, 1, H, W) -> float residual codes (N, H, W), not rounded."""
    return y.detach().numpy()[:, 0] * 2.0**OUTPUT_BITS
