"""Training data for the learned 3-frame SIM reconstructor, simulated only.

A pool of scenes, each a specimen on the 2× grid imaged by 2-D SIM with 3 angles × 1
phase (the 3-frame acquisition of deep-learning SIM) with its own random optics and
pattern (frequency, modulation, directions, phases, angle errors), kept noise-free in
widefield units (:func:`~fluorofpga.microscope.sim_ground_truth` with
``units="widefield"``). Every crop is then recorded at a random light level through a
new random camera (:func:`~fluorofpga.models.data.record_frames`, the same cameras as
the denoiser's training), so the network learns the signal representation, not one
camera:

* input: the 3 raw frames as GAT codes (``signal.in_step``), channels in acquisition
  order (angle 0, 1, 2);
* target: the extended-OTF image on the 2× grid in the same camera's GAT units, as
  ``gat-direct`` output codes, rearranged into ``4`` sub-pixel channels
  (channel ``2·dy + dx`` is fine pixel ``(2y + dy, 2x + dx)``; :func:`space_to_depth`).

Augmentation: rotations by 90° (a rotated set of 3 equally spaced angles is another valid
one; mirror images are not used, they would reverse the angle order).
"""

from __future__ import annotations

import numpy as np
import torch

from fluorofpga.microscope.signal import SignalSpec, gat
from fluorofpga.microscope.sim import space_to_depth

from .data import CameraRange, _log_uniform, record_frames
from .denoiser import INPUT_BITS, OUTPUT_BITS

#: light levels and cameras of the SIM training data (peak photons of the widefield image)
SIM_CAMERAS = CameraRange(peak_photons=(5.0, 2500.0), background_fraction=(0.0, 0.1))


class SimTriplets:
    """A pool of noise-free 3-frame SIM scenes; every crop through a new random camera.

    Args:
        n_scenes: scenes in the pool.
        scene_size: side of each scene in camera pixels (the specimen is drawn at 2×).
        signal: the representation (``gat-direct``; default ``SignalSpec.direct()``).
        cameras: camera and light-level ranges (default :data:`SIM_CAMERAS`).
        seed: RNG seed; the same seed gives the same pool and batches.
        progress: optional ``(done, total)`` callback while the pool is simulated.
    """

    def __init__(
        self,
        n_scenes: int,
        scene_size: int = 96,
        signal: SignalSpec | None = None,
        cameras: CameraRange | None = None,
        seed: int = 0,
        progress: object = None,
    ) -> None:
        from fluorofpga.microscope import (
            make_pattern,
            render_specimen,
            sim_ground_truth,
            simulate_sim,
        )
        from fluorofpga.microscope.specimen import random_texture

        self.signal = signal or SignalSpec.direct()
        if self.signal.kind != "gat-direct":
            raise ValueError("the SIM reconstructor outputs clean GAT codes: signal kind "
                             f"must be 'gat-direct', got {self.signal.kind!r}")
        self.cameras = cameras or SIM_CAMERAS
        self.rng = rng = np.random.default_rng(seed)
        n, s = int(n_scenes), int(scene_size)
        self.frames = np.empty((n, 3, s, s), dtype=np.float32)
        self.truth = np.empty((n, 2 * s, 2 * s), dtype=np.float32)
        self.optics: list[dict[str, float]] = []
        for i in range(n):
            na = float(rng.uniform(1.0, 1.45))
            wavelength = float(rng.uniform(480.0, 680.0))
            cutoff = float(rng.uniform(0.25, 0.48))  # widefield cut-off, cycles/camera px
            pixel = cutoff * wavelength / (2 * na)
            pattern = make_pattern(
                n_angles=3, n_phases=1, k_fraction=float(rng.uniform(0.7, 0.95)),
                modulation=float(rng.uniform(0.5, 0.95)),
                start_angle_rad=float(rng.uniform(0, np.pi)),
                phase_offsets_rad=tuple(rng.uniform(0, 2 * np.pi, 3)),
                angle_error_rad=0.02, phase_error_rad=0.0, rng=rng)
            if i % 3 == 2:
                specimen = random_texture((2 * s, 2 * s), rng)
            else:
                specimen = render_specimen(
                    (2 * s, 2 * s), rng, filaments=int(rng.integers(2, s // 3)),
                    puncta=int(rng.integers(0, 2 * s)), nuclei=int(rng.integers(0, 2)))
            optics = {"na": na, "wavelength_nm": wavelength, "pixel_size_nm": pixel}
            data = simulate_sim(specimen, pattern, peak_photons=1.0, background_photons=0.0,
                                rng=rng, **optics)
            self.frames[i] = data.photons
            self.truth[i] = sim_ground_truth(specimen, k_fraction=pattern.k_fraction,
                                             units="widefield", **optics)
            self.optics.append({**optics, "k_fraction": pattern.k_fraction,
                                "modulation": pattern.modulation})
            if callable(progress):
                progress(i + 1, n)

    def group(
        self, frames: np.ndarray, truth: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Record unit-peak ``frames`` ``(3, H, W)`` at a random light level and camera.

        Returns the input codes ``(3, H, W)``, the target output codes (float)
        ``(4, H, W)`` of ``truth`` ``(2H, 2W)``, and the light level and background.
        """
        cams = self.cameras
        peak = _log_uniform(self.rng, *cams.peak_photons)
        background = peak * self.rng.uniform(*cams.background_fraction)
        adu, noise, to_adu = record_frames(frames * peak + background, cams, self.rng)
        shift = self.signal.dark_shift(noise, float(to_adu(0.0)))
        q = self.signal.input_code(gat(adu, noise) - shift)
        z_clean = gat(to_adu(truth * peak + background), noise) - shift
        target = space_to_depth(self.signal.direct_target(z_clean))
        return q, target, {"peak_photons": peak, "background_photons": background}

    def batch(self, batch_size: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops: ``(input (N, 3, crop, crop), target (N, 4, crop, crop))`` tensors.

        Input is ``q / 2**INPUT_BITS``; target is the output code / ``2**OUTPUT_BITS``.
        """
        n, _, h, w = self.frames.shape
        xin, tgt = [], []
        for _ in range(batch_size):
            i = int(self.rng.integers(0, n))
            y = int(self.rng.integers(0, h - crop + 1))
            x = int(self.rng.integers(0, w - crop + 1))
            k = int(self.rng.integers(4))
            frames = np.rot90(self.frames[i, :, y : y + crop, x : x + crop], k, axes=(1, 2))
            truth = np.rot90(self.truth[i, 2 * y : 2 * (y + crop), 2 * x : 2 * (x + crop)], k)
            q, t, _ = self.group(frames.astype(np.float64), truth.astype(np.float64))
            xin.append(q)
            tgt.append(t)
        x_t = torch.from_numpy(np.stack(xin).astype(np.float32) / 2.0**INPUT_BITS)
        t_t = torch.from_numpy(np.stack(tgt).astype(np.float32) / 2.0**OUTPUT_BITS)
        return x_t, t_t
