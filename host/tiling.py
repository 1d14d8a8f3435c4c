"""Tiling with halo and stitching for fixed-size accelerators (pure numpy).

The accelerator is compiled for one tile size and pads with zeros inside every
3x3 convolution. To make a tiled run *bit-identical* to running the same network
on the whole frame, :func:`plan_tiles` places windows of exactly ``tile_shape``
that always lie inside the frame, and lets each window contribute only pixels
that are at least ``halo`` pixels (the network's receptive-field radius) away
from every window edge that is not also a frame edge. Zero padding then only
influences pixels it would also influence in an untiled run: the frame borders.

Frames smaller than the tile along an axis are padded by reflection (at the end
of that axis) up to the tile size and cropped back afterwards. Exact equality
with an untiled run is then *not* guaranteed near the padded borders, because
the network sees reflected pixels where an untiled run would see zeros.

Arrays are ``(..., Y, X)``: tiling acts on the last two axes, leading axes (for
example ``C`` of a ``CYX`` stack of SIM phases) are carried through unchanged.
The processing function may change the leading axes but must keep the last two
(no upscaling here).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Tile", "extract", "plan_tiles", "process_tiled", "stitch", "tile"]


@dataclass(frozen=True)
class Tile:
    """One window of a tiling plan.

    Attributes:
        y0: Row of the window origin in the frame (pixels).
        x0: Column of the window origin in the frame (pixels).
        height: Window height (the accelerator's tile height, pixels).
        width: Window width (the accelerator's tile width, pixels).
        out_y0: First frame row this window contributes to the output.
        out_y1: One past the last frame row it contributes.
        out_x0: First frame column it contributes.
        out_x1: One past the last frame column it contributes.
    """

    y0: int
    x0: int
    height: int
    width: int
    out_y0: int
    out_y1: int
    out_x0: int
    out_x1: int

    @property
    def window(self) -> tuple[slice, slice]:
        """The window in frame coordinates (may extend past a frame smaller than the tile)."""
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)

    @property
    def frame_slice(self) -> tuple[slice, slice]:
        """The contributed (valid) region in frame coordinates."""
        return slice(self.out_y0, self.out_y1), slice(self.out_x0, self.out_x1)

    @property
    def tile_slice(self) -> tuple[slice, slice]:
        """The contributed (valid) region in tile coordinates."""
        return (
            slice(self.out_y0 - self.y0, self.out_y1 - self.y0),
            slice(self.out_x0 - self.x0, self.out_x1 - self.x0),
        )


def _plan_axis(length: int, size: int, halo: int) -> list[tuple[int, int, int]]:
    """Plan one axis: a list of ``(window_start, out_start, out_stop)``."""
    if length <= size:
        return [(0, 0, length)]
    spans = []
    out_start = 0
    while True:
        start = min(max(out_start - halo, 0), length - size)
        end = start + size
        if end >= length:
            spans.append((start, out_start, length))
            return spans
        spans.append((start, out_start, end - halo))
        out_start = end - halo


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"{name} must be two positive integers (Y, X), got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def plan_tiles(
    frame_shape: Sequence[int], tile_shape: Sequence[int], halo: int
) -> list[Tile]:
    """Plan windows of exactly ``tile_shape`` whose valid regions partition the frame.

    Args:
        frame_shape: ``(H, W)`` of the frame in pixels.
        tile_shape: ``(th, tw)`` the accelerator was compiled for, in pixels.
        halo: Receptive-field radius of the network in pixels (``L`` for ``L``
            stacked 3x3 convolutions).

    Returns:
        Tiles in row-major order. Their ``frame_slice`` regions cover every
        frame pixel exactly once.

    Raises:
        ValueError: If a tile side is not larger than ``2 * halo`` (no pixel of
            an interior window would be valid) or shapes are malformed.
    """
    h, w = _check_shape("frame_shape", frame_shape)
    th, tw = _check_shape("tile_shape", tile_shape)
    if int(halo) != halo or halo < 0:
        raise ValueError(f"halo must be a non-negative integer, got {halo!r}")
    halo = int(halo)
    if th <= 2 * halo or tw <= 2 * halo:
        raise ValueError(
            f"tile {th}x{tw} is too small for halo {halo}: each side must exceed 2*halo = "
            f"{2 * halo}; use a larger tile or a network with a smaller receptive field"
        )
    rows = _plan_axis(h, th, halo)
    cols = _plan_axis(w, tw, halo)
    return [
        Tile(y0, x0, th, tw, oy0, oy1, ox0, ox1)
        for (y0, oy0, oy1) in rows
        for (x0, ox0, ox1) in cols
    ]


def _frame_shape_of(frame: np.ndarray) -> tuple[int, int]:
    if frame.ndim < 2:
        raise ValueError(f"frame must have at least 2 axes (..., Y, X), got shape {frame.shape}")
    return int(frame.shape[-2]), int(frame.shape[-1])


def extract(frame: np.ndarray, t: Tile) -> np.ndarray:
    """Cut the window of tile ``t`` from ``frame``, reflect-padding to the tile size if needed."""
    ys, xs = t.window
    win = frame[..., ys, xs]
    pad_y = t.height - win.shape[-2]
    pad_x = t.width - win.shape[-1]
    if pad_y or pad_x:
        pad = [(0, 0)] * (win.ndim - 2) + [(0, pad_y), (0, pad_x)]
        win = np.pad(win, pad, mode="reflect")
    return np.ascontiguousarray(win)


def tile(frame: np.ndarray, plan: Sequence[Tile]) -> list[np.ndarray]:
    """Cut ``frame`` (``(..., Y, X)``) into the windows of ``plan``."""
    _frame_shape_of(frame)
    return [extract(frame, t) for t in plan]


def stitch(
    outputs: Sequence[np.ndarray], plan: Sequence[Tile], frame_shape: Sequence[int]
) -> np.ndarray:
    """Assemble per-tile outputs into a frame using each tile's valid region.

    Args:
        outputs: One array per tile, shape ``(..., th, tw)``; all share leading
            axes and dtype (taken from the first).
        plan: The plan the outputs were computed from.
        frame_shape: ``(H, W)`` of the frame.

    Returns:
        Array of shape ``outputs[0].shape[:-2] + frame_shape``.
    """
    h, w = _check_shape("frame_shape", frame_shape)
    if len(outputs) != len(plan) or not plan:
        raise ValueError(f"got {len(outputs)} outputs for a plan of {len(plan)} tiles")
    first = np.asarray(outputs[0])
    out = np.empty(first.shape[:-2] + (h, w), dtype=first.dtype)
    for t, o in zip(plan, outputs, strict=True):
        o = np.asarray(o)
        if o.shape[-2:] != (t.height, t.width) or o.shape[:-2] != first.shape[:-2]:
            raise ValueError(
                f"tile output has shape {o.shape}, expected {first.shape[:-2]} + "
                f"{(t.height, t.width)}; the tile function must keep the tile's Y, X size"
            )
        fy, fx = t.frame_slice
        ty, tx = t.tile_slice
        out[..., fy, fx] = o[..., ty, tx]
    return out


_Entry = tuple[Tile, tuple[slice, slice], tuple[slice, slice], tuple[slice, slice], bool]


@functools.lru_cache(maxsize=32)
def _cached_plan(
    frame_shape: tuple[int, int], tile_shape: tuple[int, int], halo: int
) -> tuple[_Entry, ...]:
    """``plan_tiles`` with each tile's window, frame and tile slices and whether its window
    needs padding, kept for the next frame of the same size."""
    h, w = frame_shape
    return tuple((t, t.window, t.frame_slice, t.tile_slice,
                  t.y0 + t.height > h or t.x0 + t.width > w)
                 for t in plan_tiles(frame_shape, tile_shape, halo))


def _cut(frame: np.ndarray, entry: _Entry) -> np.ndarray:
    """:func:`extract` for a plan entry (a plain copy unless the window needs padding)."""
    if entry[4]:
        return extract(frame, entry[0])
    ys, xs = entry[1]
    return np.ascontiguousarray(frame[..., ys, xs])


def _accelerator_of(fn: Any) -> Any:
    """The accelerator behind ``fn`` (itself, or the owner of its bound ``run``), or None."""
    from .accelerator import Accelerator

    if isinstance(fn, Accelerator):
        return fn
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, Accelerator) and getattr(fn, "__name__", "") == "run":
        return owner
    return None


def process_tiled(
    frame: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray] | Any,
    tile_shape: Sequence[int],
    halo: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Run ``fn`` (tile in, same-size tile out) over a tiling of ``frame`` and stitch.

    With ``halo`` at least the receptive-field radius of ``fn``, and a frame at
    least as large as the tile, the result equals ``fn`` applied to the whole
    frame (for a zero-padded convolutional ``fn``). See the module docstring
    for frames smaller than the tile.

    Args:
        frame: ``(..., Y, X)`` array.
        fn: the tile function; or an :class:`~fluorofpga.host.Accelerator` (or its bound
            ``run``): then up to ``max_in_flight`` tiles are submitted before the first
            ``wait()``, so an asynchronous device computes tile n+1 while the host cuts
            and stitches around tile n.
        tile_shape: ``(th, tw)`` pixels.
        halo: receptive-field radius, pixels.
        out: optional array to stitch into (reused between frames); it must have the
            output's shape and dtype (leading axes of the outputs + ``(Y, X)``). Without
            it the output takes the first tile's dtype, as :func:`stitch` does.

    Returns:
        The stitched output (``out`` when given).
    """
    frame = np.asarray(frame)
    shape = _frame_shape_of(frame)
    th, tw = _check_shape("tile_shape", tile_shape)
    if int(halo) != halo:
        raise ValueError(f"halo must be a non-negative integer, got {halo!r}")
    plan = _cached_plan(shape, (th, tw), int(halo))
    if out is not None and out.shape[-2:] != shape:
        raise ValueError(f"out has shape {out.shape}; its last two axes must be {shape}")
    result: list[np.ndarray] = [] if out is None else [out]

    def put(entry: _Entry, o: Any) -> None:
        t, _, (fy, fx), (ty, tx), _ = entry
        o = np.asarray(o)
        if not result:
            result.append(np.empty(o.shape[:-2] + shape, dtype=o.dtype))
        dest = result[0]
        if o.shape[-2:] != (th, tw) or o.shape[:-2] != dest.shape[:-2]:
            raise ValueError(
                f"tile output has shape {o.shape}, expected {dest.shape[:-2]} + "
                f"{(t.height, t.width)}; the tile function must keep the tile's Y, X size"
            )
        if out is not None and o.dtype != dest.dtype:  # no silent cast into the caller's
            raise ValueError(f"tile output dtype {o.dtype} differs from out's {dest.dtype}")
        dest[..., fy, fx] = o[..., ty, tx]

    acc = _accelerator_of(fn)
    depth = int(getattr(acc, "max_in_flight", 1)) if acc is not None else 1
    if depth <= 1:
        run = acc.run if acc is not None else fn
        for entry in plan:
            put(entry, run(_cut(frame, entry)))
    else:
        pending: deque[_Entry] = deque()
        try:
            for entry in plan:
                if len(pending) >= depth:
                    put(pending.popleft(), acc.wait())
                acc.submit(_cut(frame, entry))
                pending.append(entry)
            while pending:
                put(pending.popleft(), acc.wait())
        except BaseException:
            _drain(acc, len(pending))
            raise
    return result[0]


def _drain(acc: Any, n: int) -> None:
    """Collect what is still in flight after an error, so the accelerator can be reused."""
    from .accelerator import AcceleratorError

    for _ in range(n):
        if not acc.busy:
            return
        try:
            acc.wait()
        except AcceleratorError:  # the device's own error; the first error is re-raised
            return
