"""Training data for the denoiser, built on the ``microscope`` simulator."""

from __future__ import annotations

import numpy as np
import torch

from .denoiser import INPUT_BITS, Normalization


def adu_to_int(adu: np.ndarray, norm: Normalization) -> np.ndarray:
    """Camera ADU -> integer network pixels (round half to even, clip to the bit width)."""
    q = np.rint((np.asarray(adu, dtype=np.float64) - norm.adu_offset) / norm.adu_per_lsb)
    return np.clip(q, 0, 2**norm.bits - 1).astype(np.uint8 if norm.bits <= 8 else np.uint16)


def adu_to_target(clean_adu: np.ndarray, norm: Normalization) -> np.ndarray:
    """Clean expected ADU -> float target in integer-pixel units (not rounded)."""
    t = (np.asarray(clean_adu, dtype=np.float64) - norm.adu_offset) / norm.adu_per_lsb
    return np.clip(t, 0, 2**norm.bits - 1).astype(np.float32)


def int_to_tensor(q: np.ndarray) -> torch.Tensor:
    """Integer pixels (…, H, W) -> float tensor (N, 1, H, W) on the network's input scale."""
    q = np.asarray(q)
    if q.ndim == 2:
        q = q[None]
    return torch.from_numpy(q.astype(np.float32)[:, None] / 2.0**INPUT_BITS)


class SimulatedPairs:
    """A fixed pool of simulated (noisy, clean) scenes, sampled as random crops.

    Args:
        n_scenes: number of independent simulated scenes in the pool.
        scene_shape: shape of each scene in camera pixels.
        norm: ADU <-> integer mapping.
        peak_photons: range of peak photon levels (sampled log-uniformly per scene).
        seed: RNG seed; the same seed gives the same pool and the same crops.
    """

    def __init__(
        self,
        n_scenes: int,
        scene_shape: tuple[int, int],
        norm: Normalization,
        peak_photons: tuple[float, float] = (10.0, 100.0),
        seed: int = 0,
    ) -> None:
        from fluorofpga.microscope import simulate_pairs

        self.rng = np.random.default_rng(seed)
        noisy, clean = simulate_pairs(n_scenes, scene_shape, self.rng, peak_photons=peak_photons)
        self.inputs = adu_to_int(noisy, norm)
        self.targets = adu_to_target(clean, norm)

    def batch(self, batch_size: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops with random flips/rotations: (input, target) tensors (N,1,crop,crop)."""
        n, h, w = self.inputs.shape
        idx = self.rng.integers(0, n, batch_size)
        ys = self.rng.integers(0, h - crop + 1, batch_size)
        xs = self.rng.integers(0, w - crop + 1, batch_size)
        xin, tgt = [], []
        for i, y, x in zip(idx, ys, xs, strict=True):
            a = self.inputs[i, y : y + crop, x : x + crop]
            b = self.targets[i, y : y + crop, x : x + crop]
            k = int(self.rng.integers(0, 4))
            a, b = np.rot90(a, k), np.rot90(b, k)
            if self.rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            xin.append(a)
            tgt.append(b)
        scale = 2.0**INPUT_BITS
        x_t = torch.from_numpy(np.stack(xin).astype(np.float32)[:, None] / scale)
        t_t = torch.from_numpy(np.stack(tgt).astype(np.float32)[:, None] / scale)
        return x_t, t_t
