"""Self-supervised fine-tuning on the user's own noisy frames (blind-spot, Noise2Void style).

The network is trained to predict each *masked* pixel from its neighbours only (Krull et
al., Noise2Void, CVPR 2019). In the GAT representation (:mod:`fluorofpga.microscope.signal`)
the noise is unit-variance Gaussian on every camera, which allows a replacement that avoids
N2V's checkerboard artefacts (Höck et al., N2V2, 2022, traced them to copying a random
neighbour's value into the blind spot): a masked pixel gets a *fresh synthetic noisy
value*, the median of its eight neighbours plus unit Gaussian noise, quantised to the
input code. It then looks statistically like any other noisy pixel but carries none of its
own noise, so the net cannot learn the identity, and no neighbour value is duplicated.

The loss is taken only at the masked pixels, against their original noisy GAT value, with
the same residual read-out the hardware uses (``ẑ = ratio·q_in + zero − r``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import median_filter

from fluorofpga.microscope.signal import SignalSpec

from .denoiser import INPUT_BITS, OUTPUT_BITS

_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)


class BlindSpotFrames:
    """Crops of the user's frames (already as input codes) with blind-spot masking.

    Args:
        codes: ``(N, Y, X)`` input codes of the user's noisy frames (``SignalTables.encode``).
        signal: the representation the network works in.
        mask_fraction: fraction of the pixels of each crop that are masked.
        seed: RNG seed.

    ``batch`` returns ``(input, target, mask)`` tensors; :func:`fluorofpga.models.fit`
    takes the loss on the mask only.
    """

    def __init__(
        self, codes: np.ndarray, signal: SignalSpec | None = None, mask_fraction: float = 0.02,
        seed: int = 0,
    ) -> None:
        codes = np.asarray(codes)
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or codes.dtype.kind != "u":
            raise ValueError(f"codes must be unsigned (N, Y, X), got {codes.dtype} {codes.shape}")
        if not 0 < mask_fraction < 0.5:
            raise ValueError(f"mask_fraction must be in (0, 0.5), got {mask_fraction}")
        self.codes = codes
        self.signal = signal or SignalSpec()
        self.mask_fraction = mask_fraction
        self.rng = np.random.default_rng(seed)

    def masked(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(input codes, residual target, mask)`` of one crop of codes."""
        spec = self.signal
        z = crop.astype(np.float64) * spec.in_step
        mask = self.rng.random(crop.shape) < self.mask_fraction
        ring_median = median_filter(z, footprint=_RING, mode="reflect")
        fake = ring_median + self.rng.standard_normal(crop.shape)
        q_in = crop.copy()
        q_in[mask] = spec.input_code(fake[mask])
        target = spec.residual_target(q_in, z)  # the original noisy value at each pixel
        return q_in, target, mask

    def batch(self, batch_size: int, crop: int) -> tuple[torch.Tensor, ...]:
        """Random masked crops with flips/rotations: ``(input, target, mask)`` tensors."""
        n, h, w = self.codes.shape
        if h < crop or w < crop:
            raise ValueError(f"frames of {h}×{w} are smaller than the {crop}-pixel crops")
        xs, ts, ms = [], [], []
        for _ in range(batch_size):
            i = int(self.rng.integers(0, n))
            y = int(self.rng.integers(0, h - crop + 1))
            x = int(self.rng.integers(0, w - crop + 1))
            c = np.rot90(self.codes[i, y : y + crop, x : x + crop], int(self.rng.integers(4)))
            if self.rng.random() < 0.5:
                c = c[:, ::-1]
            q, t, m = self.masked(np.ascontiguousarray(c))
            xs.append(q)
            ts.append(t)
            ms.append(m)
        x_t = torch.from_numpy(np.stack(xs).astype(np.float32)[:, None] / 2.0**INPUT_BITS)
        t_t = torch.from_numpy(np.stack(ts).astype(np.float32)[:, None] / 2.0**OUTPUT_BITS)
        m_t = torch.from_numpy(np.stack(ms)[:, None])
        return x_t, t_t, m_t
