"""Frame sources: iterables of ``(index, frame)`` with ``frame`` a ``uint16`` YX array.

Every source in this module yields plain ``(index, frame)`` tuples, ``index``
counting from 0 in acquisition order. That is all
:class:`~fluorofpga.host.stream.StreamPipeline` needs, so any generator of such
tuples (a GenICam camera, a network socket) is a source too.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["SimulatedCameraSource", "TiffStackSource"]


class _Pacer:
    """Sleeps so that successive ``tick()`` calls happen at most ``fps`` times per second.

    The schedule is absolute (frame ``k`` is due at ``t0 + k / fps``), so the
    average rate stays exact; a consumer that falls behind is not waited for
    (like a free-running camera).
    """

    def __init__(self, fps: float | None) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0 or None (no pacing), got {fps!r}")
        self.fps = fps
        self._t0: float | None = None
        self._k = 0

    def tick(self) -> None:
        if self.fps is None:
            return
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._k / self.fps
        if due > now:
            time.sleep(due - now)
        self._k += 1


class SimulatedCameraSource:
    """A simulated sCMOS camera: noisy ``uint16`` frames from ``WidefieldMicroscope``.

    Yields ``(index, noisy_frame)``. The noise-free ``clean_adu`` (float64) of
    yielded frames is kept and available through :meth:`ground_truth` for
    evaluation (8 bytes per pixel per frame: bound it on the board with
    ``ground_truth_frames``).

    Args:
        n_frames: Number of frames per iteration.
        shape: ``(Y, X)`` frame size in pixels.
        seed: Random seed of the simulator (each iteration restarts from it).
        fps: If set, frames are released at this rate (frames/s), like a camera;
            None releases them as fast as they are simulated.
        ground_truth_frames: How many of the most recent ``clean_adu`` frames to
            keep; None keeps all, 0 none.
        microscope: An object with ``frames(n)`` yielding objects with
            ``index``, ``noisy``, ``clean_adu``; defaults to
            ``fluorofpga.microscope.WidefieldMicroscope(shape=shape, seed=seed)``.
    """

    def __init__(
        self,
        n_frames: int,
        shape: Sequence[int] = (512, 512),
        seed: int = 0,
        fps: float | None = None,
        ground_truth_frames: int | None = None,
        microscope: Any = None,
    ) -> None:
        if int(n_frames) != n_frames or n_frames < 0:
            raise ValueError(f"n_frames must be a non-negative integer, got {n_frames!r}")
        self.n_frames = int(n_frames)
        self.shape = (int(shape[0]), int(shape[1]))
        self.seed = seed
        self.fps = fps
        _Pacer(fps)  # validate fps now rather than at first iteration
        if ground_truth_frames is not None and ground_truth_frames < 0:
            raise ValueError(f"ground_truth_frames must be >= 0 or None, got {ground_truth_frames}")
        self.ground_truth_frames = ground_truth_frames
        if microscope is None:
            from fluorofpga.microscope import WidefieldMicroscope

            microscope = WidefieldMicroscope(shape=self.shape, seed=seed)
        self.microscope = microscope
        self._truth: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        pacer = _Pacer(self.fps)
        for k, frame in enumerate(self.microscope.frames(self.n_frames)):
            noisy = np.asarray(frame.noisy)
            if noisy.dtype != np.uint16 or noisy.ndim != 2:
                raise ValueError(
                    f"simulator returned {noisy.dtype} frame of shape {noisy.shape}; "
                    "expected a uint16 (Y, X) frame"
                )
            self._keep_truth(k, np.asarray(frame.clean_adu))
            pacer.tick()
            yield k, noisy

    def _keep_truth(self, index: int, clean: np.ndarray) -> None:
        limit = self.ground_truth_frames
        if limit == 0:
            return
        self._truth[index] = clean
        while limit is not None and len(self._truth) > limit:
            self._truth.popitem(last=False)

    def ground_truth(self, index: int) -> np.ndarray:
        """The noise-free frame (float64 ADU) of the frame yielded with ``index``."""
        try:
            return self._truth[index]
        except KeyError:
            raise KeyError(
                f"no ground truth for frame {index}: not yielded yet, or evicted "
                f"(ground_truth_frames={self.ground_truth_frames})"
            ) from None


class TiffStackSource:
    """Frames of a ``uint16`` TIFF file (``YX`` = one frame, ``TYX`` = a stack).

    Yields ``(index, frame)`` with ``index`` the position ``T`` in the file.
    The file is read (via ``fluorofpga.microscope.read_tiff``) on first use.

    Args:
        path: The TIFF file.
        fps: Optional replay rate in frames/s (None: as fast as possible).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = os.fspath(path)
        _Pacer(fps)
        self.fps = fps
        self._stack: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._stack is None:
            from fluorofpga.microscope import read_tiff

            data = np.asarray(read_tiff(self.path))
            if data.dtype != np.uint16:
                raise ValueError(f"{self.path}: expected uint16 ADU frames, got {data.dtype}")
            if data.ndim == 2:
                data = data[np.newaxis]
            if data.ndim != 3:
                raise ValueError(f"{self.path}: expected a YX or TYX stack, got shape {data.shape}")
            self._stack = data
        return self._stack

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(Y, X)`` of one frame."""
        stack = self._load()
        return int(stack.shape[1]), int(stack.shape[2])

    def __len__(self) -> int:
        return int(self._load().shape[0])

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        stack = self._load()
        pacer = _Pacer(self.fps)
        for k in range(stack.shape[0]):
            pacer.tick()
            yield k, stack[k]
