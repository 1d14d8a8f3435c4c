"""Synthetic fluorescent specimens: a cell-like scene of filaments, puncta and nuclei.

Lengths are in camera pixels unless a name says otherwise. The scene is drawn on a grid
``oversample`` times finer than the camera and then averaged onto camera pixels, so
sub-pixel structure (filaments thinner than a pixel) is integrated like a real sensor.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Filaments (microtubule-like): thin, stiff, gently curved.
_FILAMENT_STEP_FINE = 0.5  # arc length between deposited points (fine pixels)
_FILAMENT_WIDTH_SIGMA_FINE = 0.5  # Gaussian line width (fine pixels)
_FILAMENT_PERSISTENCE_PX = 150.0  # heading random-walk persistence length (camera px)
_FILAMENT_LENGTH_FRACTION = (0.2, 0.8)  # length relative to the image diagonal
_FILAMENT_BRIGHTNESS = (0.3, 1.0)
# Puncta / vesicles: diffraction-limited-ish spots.
_PUNCTA_SIGMA_PX = (0.4, 1.5)
_PUNCTA_BRIGHTNESS = (0.2, 1.0)
# Nuclei: large, dim, textured ellipses.
_NUCLEUS_SEMI_AXIS_FRACTION = (0.06, 0.14)  # of the shorter image side
_NUCLEUS_EDGE_PX = 1.5  # width of the soft edge
_NUCLEUS_BRIGHTNESS = (0.15, 0.4)
_NUCLEUS_TEXTURE_SIGMA_PX = 2.0
_NUCLEUS_TEXTURE_DEPTH = 0.5  # relative modulation of the texture


def _splat(grid: np.ndarray, y: np.ndarray, x: np.ndarray, weight: np.ndarray) -> None:
    """Add point weights to ``grid`` with bilinear interpolation, dropping outside points."""
    h, w = grid.shape
    y0 = np.floor(y).astype(np.intp)
    x0 = np.floor(x).astype(np.intp)
    fy, fx = y - y0, x - x0
    flat = grid.reshape(-1)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = yy[inside] * w + xx[inside]
            flat += np.bincount(idx, weights=(weight * wy * wx)[inside], minlength=h * w)


def _filaments(fine_shape: tuple[int, int], n: int, oversample: int, rng: np.random.Generator):
    """Return (y, x, weight) of points along ``n`` smooth random-walk filaments."""
    h, w = fine_shape
    diagonal = float(np.hypot(h, w))
    step = _FILAMENT_STEP_FINE
    persistence_fine = _FILAMENT_PERSISTENCE_PX * oversample
    # A line of weight b·√(2π)·σ per unit length blurred by a Gaussian σ peaks at ≈ b.
    line_density = np.sqrt(2 * np.pi) * _FILAMENT_WIDTH_SIGMA_FINE
    ys, xs, ws = [], [], []
    for _ in range(n):
        length = rng.uniform(*_FILAMENT_LENGTH_FRACTION) * diagonal
        steps = max(2, int(length / step))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(
            rng.normal(0.0, np.sqrt(step / persistence_fine), steps)
        )
        start_y, start_x = rng.uniform(0, h), rng.uniform(0, w)
        ys.append(start_y + np.cumsum(step * np.sin(heading)))
        xs.append(start_x + np.cumsum(step * np.cos(heading)))
        brightness = rng.uniform(*_FILAMENT_BRIGHTNESS)
        ws.append(np.full(steps, brightness * line_density * step))
    if not ys:
        empty = np.empty(0)
        return empty, empty, empty
    return np.concatenate(ys), np.concatenate(xs), np.concatenate(ws)


def _puncta(grid: np.ndarray, n: int, oversample: int, rng: np.random.Generator) -> None:
    """Add ``n`` Gaussian spots of random size and peak brightness to ``grid``."""
    if n == 0:
        return
    h, w = grid.shape
    sigma = rng.uniform(*_PUNCTA_SIGMA_PX, n) * oversample
    peak = rng.uniform(*_PUNCTA_BRIGHTNESS, n)
    cy, cx = rng.uniform(0, h, n), rng.uniform(0, w, n)
    half = int(np.ceil(3 * _PUNCTA_SIGMA_PX[1] * oversample))
    offsets = np.arange(-half, half + 1)
    # Window of integer pixels around each centre: (n, k) rows and columns.
    rows = np.floor(cy).astype(np.intp)[:, None] + offsets[None, :]
    cols = np.floor(cx).astype(np.intp)[:, None] + offsets[None, :]
    gy = np.exp(-0.5 * ((rows + 0.5 - cy[:, None]) / sigma[:, None]) ** 2)
    gx = np.exp(-0.5 * ((cols + 0.5 - cx[:, None]) / sigma[:, None]) ** 2)
    values = peak[:, None, None] * gy[:, :, None] * gx[:, None, :]
    rr = np.broadcast_to(rows[:, :, None], values.shape)
    cc = np.broadcast_to(cols[:, None, :], values.shape)
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    idx = rr[inside] * w + cc[inside]
    grid.reshape(-1)[:] += np.bincount(idx, weights=values[inside], minlength=h * w)


def _nuclei(grid: np.ndarray, n: int, oversample: int, rng: np.random.Generator) -> None:
    """Add ``n`` soft-edged, textured ellipses to ``grid``."""
    h, w = grid.shape
    short_side = min(h, w)
    edge = _NUCLEUS_EDGE_PX * oversample
    for _ in range(n):
        a, b = rng.uniform(*_NUCLEUS_SEMI_AXIS_FRACTION, 2) * short_side
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        reach = int(np.ceil(max(a, b) + 4 * edge))
        y_lo, y_hi = max(0, int(cy) - reach), min(h, int(cy) + reach + 1)
        x_lo, x_hi = max(0, int(cx) - reach), min(w, int(cx) + reach + 1)
        if y_lo >= y_hi or x_lo >= x_hi:
            continue
        yy = np.arange(y_lo, y_hi)[:, None] + 0.5 - cy
        xx = np.arange(x_lo, x_hi)[None, :] + 0.5 - cx
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        # Signed distance (approximately, in fine pixels) from the ellipse boundary.
        radius = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        distance = (radius - 1.0) * min(a, b)
        mask = 0.5 * (1.0 - np.tanh(distance / edge))
        texture = ndimage.gaussian_filter(
            rng.standard_normal(mask.shape), _NUCLEUS_TEXTURE_SIGMA_PX * oversample
        )
        texture /= texture.std() + np.finfo(float).tiny
        modulation = np.clip(1.0 + _NUCLEUS_TEXTURE_DEPTH * texture / 2, 0.0, None)
        brightness = rng.uniform(*_NUCLEUS_BRIGHTNESS)
        grid[y_lo:y_hi, x_lo:x_hi] += brightness * mask * modulation


def render_specimen(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    filaments: int = 30,
    puncta: int = 200,
    nuclei: int = 3,
    oversample: int = 2,
) -> np.ndarray:
    """Fluorophore density of a widefield, cell-like scene, integrated onto camera pixels.

    The scene contains ``filaments`` thin curvilinear filaments (stiff random walks,
    microtubule-like, about one fine pixel wide), ``puncta`` Gaussian spots of random
    size and brightness (vesicles), and ``nuclei`` large dim ellipses with a smooth
    random texture. It is drawn on a grid ``oversample`` times finer than ``shape`` and
    averaged over each camera pixel's ``oversample × oversample`` block.

    Args:
        shape: camera image shape ``(Y, X)``.
        rng: random generator; the scene is a deterministic function of its state.
        filaments, puncta, nuclei: number of each structure (≥ 0).
        oversample: fine-grid subdivisions per camera pixel and axis (≥ 1).

    Returns:
        float64 array of ``shape``, ≥ 0, scaled so its maximum is 1 (all zeros if the
        scene is empty).
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive ints, got {shape!r}")
    for name, count in (("filaments", filaments), ("puncta", puncta), ("nuclei", nuclei)):
        if int(count) != count or count < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {count!r}")
    if int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    oversample = int(oversample)
    fine_shape = (int(shape[0]) * oversample, int(shape[1]) * oversample)

    lines = np.zeros(fine_shape)
    _splat(lines, *_filaments(fine_shape, int(filaments), oversample, rng))
    fine = ndimage.gaussian_filter(lines, _FILAMENT_WIDTH_SIGMA_FINE)
    _puncta(fine, int(puncta), oversample, rng)
    _nuclei(fine, int(nuclei), oversample, rng)

    density = fine.reshape(shape[0], oversample, shape[1], oversample).mean(axis=(1, 3))
    np.clip(density, 0.0, None, out=density)
    peak = density.max()
    return density / peak if peak > 0 else density


def random_texture(
    shape: tuple[int, int], rng: np.random.Generator, *, oversample: int = 2,
) -> np.ndarray:
    """A generic fluorescence-like texture, ≥ 0, max 1: what cell-like scenes do not cover.

    A random field with a ``1/f^β`` power spectrum (β in 1.5–3.5: from grainy to smooth,
    like chromatin, cytoplasm or tissue) is given one of three looks: exponentiated
    (bright sparse clumps), thresholded into blobs with soft edges (nuclei, vesicles of any
    size), or taken as is above its median (diffuse stain); it is then multiplied by a
    smooth random mask so that dark background and bright regions alternate. Drawn on a
    grid ``oversample`` times finer than ``shape``, averaged onto camera pixels.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive ints, got {shape!r}")
    fine = (int(shape[0]) * oversample, int(shape[1]) * oversample)

    def power_law_field(beta: float) -> np.ndarray:
        fy = np.fft.fftfreq(fine[0])[:, None]
        fx = np.fft.rfftfreq(fine[1])[None, :]
        f = np.hypot(fy, fx)
        f[0, 0] = 1.0
        spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
        spectrum *= f ** (-beta / 2)
        spectrum[0, 0] = 0.0
        field = np.fft.irfft2(spectrum, s=fine)
        return (field - field.mean()) / (field.std() + 1e-12)

    base = power_law_field(float(rng.uniform(1.5, 3.5)))
    look = int(rng.integers(3))
    if look == 0:
        tex = np.exp(float(rng.uniform(0.5, 1.5)) * base)
    elif look == 1:
        edge = float(rng.uniform(0.05, 0.4))
        tex = 1.0 / (1.0 + np.exp(-(base - rng.uniform(-0.5, 1.5)) / edge))
    else:
        tex = np.maximum(base - np.median(base), 0.0)
    mask = power_law_field(3.5)
    tex = tex * (1.0 / (1.0 + np.exp(-(mask - rng.uniform(-1.0, 1.0)) / 0.3)))
    density = tex.reshape(shape[0], oversample, shape[1], oversample).mean(axis=(1, 3))
    peak = density.max()
    return density / peak if peak > 0 else density
