"""Image quality metrics against a noise-free reference (wrapping scikit-image)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _prepare(
    reference: np.ndarray, image: np.ndarray, data_range: float | None
) -> tuple[np.ndarray, np.ndarray, float]:
    reference = np.asarray(reference, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape:
        raise ValueError(
            f"reference and image shapes differ: {reference.shape} vs {image.shape}"
        )
    if data_range is None:
        data_range = float(reference.max() - reference.min())
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(
            f"data_range must be > 0 (got {data_range!r}); a constant reference needs an "
            "explicit data_range"
        )
    return reference, image, float(data_range)


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference``.

    ``data_range`` defaults to ``reference.max() - reference.min()``. Both arrays are cast
    to float64 and must have the same shape; any number of dimensions.
    """
    reference, image, data_range = _prepare(reference, image, data_range)
    return float(peak_signal_noise_ratio(reference, image, data_range=data_range))


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity of ``image`` against ``reference``.

    ``data_range`` defaults to ``reference.max() - reference.min()`` (of the whole
    array). Both arrays are cast to float64 and must have the same shape. 2-D arrays are
    compared as one image; for 3-D arrays (a ``TYX`` stack) the result is the mean of the
    per-frame SSIMs. Each image must be at least 7 × 7 pixels.
    """
    reference, image, data_range = _prepare(reference, image, data_range)
    if reference.ndim == 2:
        return float(structural_similarity(reference, image, data_range=data_range))
    if reference.ndim == 3:
        scores = [
            structural_similarity(ref, img, data_range=data_range)
            for ref, img in zip(reference, image, strict=True)
        ]
        return float(np.mean(scores))
    raise ValueError(f"ssim needs a YX image or a TYX stack, got shape {reference.shape}")
