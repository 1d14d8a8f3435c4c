"""Frame sinks: ``write(index, frame)`` per restored frame, ``close()`` at the end.

Sinks are context managers. Frames arrive in processing order; ``index`` is the
source's frame index (gaps mean frames were dropped upstream).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import TracebackType

import numpy as np

__all__ = ["MemorySink", "TiffSink"]


class _Sink:
    """Shared bookkeeping: indices written and closed state."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.closed = False

    def _accept(self, index: int, frame: np.ndarray) -> np.ndarray:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed; frame {index} was not written")
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise ValueError(f"frame {index} must be a 2-D (Y, X) array, got shape {frame.shape}")
        self.indices.append(int(index))
        return frame

    def close(self) -> None:
        """Finish writing. Idempotent."""
        self.closed = True

    def __enter__(self) -> _Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemorySink(_Sink):
    """Keeps every written frame in :attr:`frames` (and its index in :attr:`indices`)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[np.ndarray] = []

    def write(self, index: int, frame: np.ndarray) -> None:
        """Store one frame (not copied: do not reuse the buffer after writing)."""
        frame = self._accept(index, frame)
        self.frames.append(frame)

    def stack(self) -> np.ndarray:
        """The frames as one ``TYX`` array."""
        if not self.frames:
            raise ValueError("MemorySink holds no frames")
        return np.stack(self.frames)


class TiffSink(_Sink):
    """Collects ``uint16`` frames and writes one ``TYX`` TIFF stack on :meth:`close`.

    ``fluorofpga.microscope.write_tiff`` writes a temporary file in the same
    directory and renames it into place, so ``path`` is either absent or
    complete. The frame indices are kept in :attr:`indices` (the TIFF itself is
    a plain stack in arrival order).
    If no frame was written, ``close()`` writes nothing and warns.

    Args:
        path: Destination ``.tif`` file; its parent directory must exist.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"directory {self.path.parent} does not exist; create it first")
        self._frames: list[np.ndarray] = []

    def write(self, index: int, frame: np.ndarray) -> None:
        """Queue one ``uint16`` frame of the same shape as the previous ones."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint16:
            raise ValueError(f"frame {index}: TiffSink writes uint16 ADU, got {frame.dtype}")
        if self._frames and frame.shape != self._frames[0].shape:
            raise ValueError(
                f"frame {index} has shape {frame.shape}, the stack has {self._frames[0].shape}"
            )
        self._frames.append(self._accept(index, frame))

    def close(self) -> None:
        """Write the stack atomically (once) and release the frames."""
        if self.closed:
            return
        self.closed = True
        if not self._frames:
            warnings.warn(
                f"TiffSink: no frames were written; {self.path} not created", stacklevel=2
            )
            return
        from fluorofpga.microscope import write_tiff

        stack = np.stack(self._frames)
        self._frames = []
        write_tiff(self.path, stack, axes="TYX")  # atomic: temporary file + os.replace
