"""Frame sinks: ``write(index, frame)`` per restored frame, ``close()`` at the end.

Sinks are context managers. Frames arrive in processing order; ``index`` is the
source's frame index (gaps mean frames were dropped upstream). Leaving the ``with``
block on an exception calls :meth:`abort` (for the sinks that distinguish it),
otherwise :meth:`close`.
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import MutableSequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from fluorofpga.microscope.io import ImageMeta

__all__ = ["BackgroundSink", "KeepOpen", "MemorySink", "OmeZarrSink", "TiffSink", "open_sink"]

#: Classic TIFF offsets are 32-bit; above this many bytes of pixels a file is BigTIFF.
CLASSIC_TIFF_MAX_BYTES = 2**32 - 2**25  # 32 MiB left for the IFDs and metadata
#: Frame dtypes a TiffSink writes (those ImageJ hyperstacks hold).
TIFF_SINK_DTYPES = ("uint8", "uint16", "float32")


class _Sink:
    """Shared bookkeeping: indices written and closed state."""

    def __init__(self) -> None:
        self.indices: MutableSequence[int] = []
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

    def abort(self) -> None:
        """Stop after a failure; by default the same as :meth:`close`."""
        self.close()

    def __enter__(self) -> _Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


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


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where a file sink writes ``path`` until it is complete: ``name.partial.tif``.

    (``x.zarr`` -> ``x.partial.zarr`` for :class:`OmeZarrSink`.)
    """
    target = Path(path)
    return target.with_name(f"{target.stem}.partial{target.suffix or '.tif'}")


class TiffSink(_Sink):
    """Writes ``TYX`` frames to a TIFF one by one, holding no frame in memory.

    Frames are appended with ``tifffile.TiffWriter`` to ``<stem>.partial.tif`` beside
    ``path`` (:func:`partial_path`); only a clean :meth:`close` completes the metadata,
    flushes the file to disk and renames it to ``path``. After a failure (:meth:`abort`,
    or an exception leaving a ``with`` block) the frames written so far stay in the
    clearly-named partial file and ``path`` is never created or replaced by it.

    The file is an ImageJ hyperstack (``TYX``; classic TIFF, readable by ImageJ, Fiji,
    napari, tifffile) when the data fits in 4 GB, else an OME BigTIFF; both carry the
    axes and, with ``meta``, the pixel size, unit and frame interval. With
    ``bigtiff=None`` the choice is made from ``expected_frames``: a stream of unknown
    length is written as BigTIFF (a live camera can run past 4 GB).
    If no frame was written, ``close()`` creates nothing and warns. The source indices
    of the frames are kept in :attr:`indices` (an ``array("q")``, 8 bytes per frame).

    Args:
        path: destination ``.tif``; its folder must exist and be writable.
        meta: calibration of the frames (pixel size, unit, frame interval); its axes
            are ignored (the file is ``TYX``).
        expected_frames: number of frames expected, to choose classic TIFF or BigTIFF.
        bigtiff: force BigTIFF (True) or classic TIFF (False); ``None`` chooses.
        dtype: dtype of every frame, one of :data:`TIFF_SINK_DTYPES`.
        overwrite: replace an existing ``path`` (and a partial file left by an earlier
            interrupted run); without it either is refused before anything is written.

    Raises:
        fluorofpga.microscope.OutputError: (a ``ValueError``) the folder is missing or
            not writable, or ``path`` or its partial file exists and ``overwrite`` is
            False.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: ImageMeta | None = None,
        *,
        expected_frames: int | None = None,
        bigtiff: bool | None = None,
        dtype: str = "uint16",
        overwrite: bool = False,
    ) -> None:
        from fluorofpga.microscope.io import OutputError, check_output

        super().__init__()
        self.indices = array("q")  # 8 bytes per frame: a live stream may run for days
        if dtype not in TIFF_SINK_DTYPES:
            raise ValueError(f"TiffSink writes {', '.join(TIFF_SINK_DTYPES)}, not {dtype!r}")
        if expected_frames is not None and expected_frames < 0:
            raise ValueError(f"expected_frames must be >= 0, got {expected_frames}")
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        if not self.path.absolute().parent.is_dir():  # the historical message and type
            raise FileNotFoundError(
                f"directory {self.path.absolute().parent} does not exist; create it first"
            )
        check_output(self.path, overwrite)
        if self.partial_path.exists() and not overwrite:
            raise OutputError(
                f"{self.partial_path} exists: the partial output of an interrupted run; "
                "move it away, or pass --overwrite (overwrite=True) to replace it"
            )
        self.meta = meta
        self.dtype = np.dtype(dtype)
        self.expected_frames = expected_frames
        self.bigtiff = bigtiff
        self.frames_written = 0
        self._frame_shape: tuple[int, int] | None = None
        self._fh: BinaryIO | None = None
        self._writer: Any = None
        self._format: str | None = None  # "imagej" or "ome", chosen at the first frame
        if overwrite:
            self.partial_path.unlink(missing_ok=True)
        self._fh = open(self.partial_path, "xb")  # noqa: SIM115 - closed in close()/abort()

    # ----------------------------------------------------------------------- writing

    def _use_bigtiff(self, frame_bytes: int) -> bool:
        if self.bigtiff is not None:
            return self.bigtiff
        if self.expected_frames is None:
            return True
        return self.expected_frames * frame_bytes > CLASSIC_TIFF_MAX_BYTES

    def _open_writer(self, frame: np.ndarray) -> None:
        import tifffile

        self._frame_shape = (int(frame.shape[0]), int(frame.shape[1]))
        big = self._use_bigtiff(frame.nbytes)
        self._writer = tifffile.TiffWriter(self._fh, bigtiff=big, imagej=not big)
        self._format = "ome" if big else "imagej"

    def write(self, index: int, frame: np.ndarray) -> None:
        """Append one frame (same shape and dtype as the first) to the partial file."""
        frame = np.asarray(frame)
        if frame.dtype != self.dtype:
            raise ValueError(
                f"frame {index}: TiffSink writes {self.dtype} frames, got {frame.dtype}"
            )
        if self._frame_shape is not None and frame.shape != self._frame_shape:
            raise ValueError(
                f"frame {index} has shape {frame.shape}, the stack has {self._frame_shape}"
            )
        frame = self._accept(index, frame)
        if self._writer is None:
            self._open_writer(frame)
        kwargs: dict[str, Any] = {"contiguous": True, "photometric": "minisblack"}
        if self.frames_written == 0:
            kwargs.update(self._first_page_kwargs())
        self._writer.write(frame, **kwargs)
        self.frames_written += 1

    def _first_page_kwargs(self) -> dict[str, Any]:
        """Resolution tags and (provisional) metadata for the first page."""
        if self._format == "imagej":
            resolution, imagej = (None, {}) if self.meta is None else self.meta.to_imagej()
            kwargs: dict[str, Any] = {"metadata": imagej}
            if resolution is not None:
                kwargs["resolution"] = resolution
            return kwargs
        return {"metadata": {}}  # a description tag to be replaced by the OME-XML

    def _final_description(self) -> bytes:
        """The ImageJ or OME description of the complete ``TYX`` stack."""
        import tifffile

        assert self._frame_shape is not None
        shape = (self.frames_written, *self._frame_shape)
        if self._format == "imagej":
            _, imagej = (None, {}) if self.meta is None else self.meta.to_imagej()
            return tifffile.imagej_description(shape, axes="TYX", **imagej).encode("ascii")
        ome = tifffile.OmeXml()
        stored = (self.frames_written, 1, 1, *self._frame_shape, 1)
        ome.addimage(self.dtype, shape, stored, axes="TYX",
                     **({} if self.meta is None else self.meta.to_ome()))  # fmt: skip
        return ome.tostring(declaration=True).encode("utf-8")

    # ---------------------------------------------------------------------- finishing

    def _release(self) -> None:
        """Close the TIFF writer and the file handle (idempotent)."""
        writer, fh = self._writer, self._fh
        self._writer, self._fh = None, None
        try:
            if writer is not None:
                writer.close()
        finally:
            if fh is not None:
                fh.close()

    def close(self) -> None:
        """Complete the file and rename it to :attr:`path` (once).

        On any failure the partial file is kept (see :meth:`abort`) and the error raised.
        """
        if self.closed:
            return
        if self.frames_written == 0:
            self.closed = True
            self._release()
            self.partial_path.unlink(missing_ok=True)
            warnings.warn(f"TiffSink: no frames were written; {self.path} not created",
                          stacklevel=2)  # fmt: skip
            return
        import tifffile

        try:
            assert self._fh is not None
            self._writer.close()
            self._writer = None
            self._fh.flush()
            self._fh.close()
            self._fh = None
            with tifffile.TiffFile(self.partial_path, mode="r+b") as tif:
                tif.pages[0].tags["ImageDescription"].overwrite(self._final_description())
            with open(self.partial_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.partial_path, self.path)
        except BaseException:
            self.abort()
            raise
        self.closed = True

    def abort(self) -> None:
        """Stop writing after a failure: keep what was written as the partial file.

        :attr:`path` is left untouched (absent, or an earlier complete file when
        ``overwrite`` was given); :attr:`partial_path` holds the frames written so far
        (a readable stack when the TIFF writer could finish its pages), or is removed
        when no frame was written. Idempotent.
        """
        if self.closed:
            return
        self.closed = True
        try:
            self._release()
        except Exception as error:  # the caller's error is the one that matters
            warnings.warn(f"TiffSink: closing {self.partial_path} after a failure failed "
                          f"too: {error!r}", RuntimeWarning, stacklevel=2)  # fmt: skip
        if self.frames_written == 0:
            self.partial_path.unlink(missing_ok=True)


class KeepOpen:
    """A view of ``sink`` whose ``close()`` does nothing, for :class:`StreamPipeline`.

    The pipeline closes its sink whether it succeeded or failed; a caller that must
    tell the two apart (to :meth:`TiffSink.close` or :meth:`TiffSink.abort`) passes
    ``KeepOpen(sink)`` and finishes the sink itself after ``run()``.
    """

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def write(self, index: int, frame: np.ndarray) -> None:
        """Forward one frame to the sink."""
        self.sink.write(index, frame)

    def close(self) -> None:
        """Do nothing: the owner closes or aborts the sink."""


#: Edge of the Y/X chunks of :class:`OmeZarrSink` (T is chunked one frame at a time).
ZARR_CHUNK_YX = 1024
_ZARR_HINT = ("OME-Zarr output needs the zarr and ome-zarr packages: pip install "
              "fluorofpga[zarr] (ome-zarr itself with --no-deps, see the Makefile)")


class OmeZarrSink(_Sink):
    """Appends ``TYX`` frames to an OME-Zarr store (NGFF 0.4) chunk by chunk.

    The store is created at the first frame in ``<stem>.partial.zarr`` beside ``path``
    with NGFF metadata written by the ``ome-zarr`` library (so the partial store is a
    valid OME-Zarr image of the frames written so far), the array grows by one frame
    (one chunk in T) per :meth:`write`, and nothing is held in memory. A clean
    :meth:`close` records the source indices and ``complete: true`` under the
    ``fluorofpga`` attributes and renames the store to ``path``; after :meth:`abort`
    the partial store stays, marked ``complete: false``.

    Args:
        path: destination store (``*.zarr``, conventionally ``*.ome.zarr``).
        meta: calibration (pixel size, unit, frame interval) written as NGFF scale/units.
        dtype: dtype of every frame.
        overwrite: replace an existing store at ``path`` (only a Zarr store) and a
            partial store of an earlier interrupted run.

    Raises:
        ImportError: zarr or ome-zarr is not installed.
        fluorofpga.microscope.OutputError: the folder is missing or not writable, or
            ``path`` or its partial store exists and ``overwrite`` is False.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: ImageMeta | None = None,
        *,
        dtype: str = "uint16",
        overwrite: bool = False,
    ) -> None:
        from fluorofpga.microscope.io import OutputError, check_output

        super().__init__()
        self.indices = array("q")
        try:
            import ome_zarr.writer  # noqa: F401
            import zarr  # noqa: F401
        except ImportError as e:
            raise ImportError(f"{_ZARR_HINT} ({e})") from None
        self.path = Path(path)
        if self.path.suffix.lower() != ".zarr":
            raise OutputError(f"{self.path}: an OME-Zarr store's name ends in .zarr")
        self.partial_path = partial_path(self.path)
        check_output(self.path, overwrite)
        if self.partial_path.exists() and not overwrite:
            raise OutputError(
                f"{self.partial_path} exists: the partial output of an interrupted run; "
                "move it away, or pass --overwrite (overwrite=True) to replace it")
        self.meta = meta
        self.dtype = np.dtype(dtype)
        self.overwrite = overwrite
        self.frames_written = 0
        self._group: Any = None
        self._array: Any = None
        self._frame_shape: tuple[int, int] | None = None

    def _create(self, frame: np.ndarray) -> None:
        import shutil

        import zarr
        from ome_zarr.format import FormatV04
        from ome_zarr.writer import write_multiscales_metadata

        if self.partial_path.exists():  # refused in __init__ unless overwrite
            shutil.rmtree(self.partial_path)
        self._frame_shape = (int(frame.shape[0]), int(frame.shape[1]))
        chunks = (1, *(min(n, ZARR_CHUNK_YX) for n in self._frame_shape))
        group = zarr.open_group(str(self.partial_path), mode="w-", zarr_format=2)
        self._array = group.create_array(
            "0", shape=(0, *self._frame_shape), chunks=chunks, dtype=self.dtype,
            chunk_key_encoding={"name": "v2", "separator": "/"},
            config={"write_empty_chunks": True})
        scale, units = ([1.0, 1.0, 1.0], {}) if self.meta is None else self.meta.to_ngff("TYX")
        types = {"T": "time", "Y": "space", "X": "space"}
        axes = [{"name": a.lower(), "type": types[a], **({"unit": units[a]} if a in units else {})}
                for a in "TYX"]  # fmt: skip
        write_multiscales_metadata(
            group, datasets=[{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": scale}]}],
            fmt=FormatV04(), axes=axes, name=self.path.name)
        group.attrs["fluorofpga"] = {"axes": "TYX", "complete": False}
        self._group = group

    def write(self, index: int, frame: np.ndarray) -> None:
        """Append one frame (same shape and dtype as the first) to the store."""
        frame = np.asarray(frame)
        if frame.dtype != self.dtype:
            raise ValueError(f"frame {index}: OmeZarrSink writes {self.dtype} frames, "
                             f"got {frame.dtype}")  # fmt: skip
        if self._frame_shape is not None and frame.shape != self._frame_shape:
            raise ValueError(
                f"frame {index} has shape {frame.shape}, the stack has {self._frame_shape}")
        frame = self._accept(index, frame)
        if self._array is None:
            self._create(frame)
        n = self.frames_written
        self._array.resize((n + 1, *frame.shape))
        self._array[n] = frame
        self.frames_written += 1

    def _finish_attrs(self, complete: bool) -> None:
        self._group.attrs["fluorofpga"] = {
            "axes": "TYX", "complete": complete, "frames": self.frames_written,
            "frame_indices": list(self.indices),
            # every chunk is written: a missing one means a damaged store
            **({"all_chunks_written": True} if complete else {}),
        }

    def close(self) -> None:
        """Record the indices, mark the store complete and rename it to :attr:`path`."""
        if self.closed:
            return
        if self.frames_written == 0:
            self.closed = True
            warnings.warn(f"OmeZarrSink: no frames were written; {self.path} not created",
                          stacklevel=2)  # fmt: skip
            return
        import shutil
        import uuid

        try:
            self._finish_attrs(complete=True)
            if self.path.exists():  # overwrite was given and checked in __init__
                trash = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.old")
                os.replace(self.path, trash)
                try:
                    os.replace(self.partial_path, self.path)
                except BaseException:
                    os.replace(trash, self.path)
                    raise
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(self.partial_path, self.path)
        except BaseException:
            self.abort()
            raise
        self.closed = True

    def abort(self) -> None:
        """Keep the frames written so far in the partial store, marked ``complete: false``."""
        if self.closed:
            return
        self.closed = True
        if self._group is None:
            return
        try:
            self._finish_attrs(complete=False)
        except Exception as error:  # the caller's error is the one that matters
            warnings.warn(f"OmeZarrSink: marking {self.partial_path} partial failed too: "
                          f"{error!r}", RuntimeWarning, stacklevel=2)  # fmt: skip


class BackgroundSink:
    """Writes to ``sink`` on its own thread, behind a bounded queue that never drops.

    The stream hands a frame over (waiting while ``queue_size`` frames are queued) and
    goes on with the next frame while this one is written, so file or network writes
    overlap the accelerator. An error of the writer thread is raised by the next
    :meth:`write` or by :meth:`close`. :meth:`close` writes what is queued, then closes
    ``sink``; :meth:`abort` writes what is queued, then aborts ``sink`` (its partial
    output then holds every frame handed over).

    Args:
        sink: any sink (``write``/``close``, optionally ``abort``).
        queue_size: frames queued between the stream and the writer (>= 1).
    """

    _END = None

    def __init__(self, sink: Any, queue_size: int = 2) -> None:
        import queue
        import threading

        if int(queue_size) != queue_size or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        self.sink = sink
        self.closed = False
        self.writes = 0
        self._write_ms = 0.0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=int(queue_size))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fluorofpga-sink",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def __getattr__(self, name: str) -> Any:
        """Attributes of the wrapped sink (``path``, ``endpoint``, ``frames_written``...)."""
        if name == "sink":
            raise AttributeError(name)
        return getattr(self.sink, name)

    @property
    def write_ms_mean(self) -> float:
        """Mean time the wrapped sink took per frame, ms (on the writer thread)."""
        return self._write_ms / self.writes if self.writes else 0.0

    def _work(self) -> None:
        import time

        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self._error is None:  # after an error, queued frames are discarded
                t0 = time.perf_counter()
                try:
                    self.sink.write(*item)
                except BaseException as exc:  # raised in the stream's thread
                    self._error = exc
                    continue
                self._write_ms += (time.perf_counter() - t0) * 1e3
                self.writes += 1

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write(self, index: int, frame: np.ndarray) -> None:
        """Queue one frame (not copied: do not reuse its buffer) for the writer thread."""
        if self.closed:
            raise RuntimeError(f"BackgroundSink is closed; frame {index} was not written")
        self._raise_error()
        self._queue.put((index, frame))

    def _drain(self) -> None:
        self._queue.put(self._END)
        self._thread.join()

    def close(self) -> None:
        """Write the queued frames, then close the sink; raises a writer error instead."""
        if self.closed:
            return
        self.closed = True
        self._drain()
        try:
            self._raise_error()
        except BaseException:
            getattr(self.sink, "abort", self.sink.close)()
            raise
        self.sink.close()

    def abort(self) -> None:
        """Write the queued frames, then abort the sink (keeping its partial output)."""
        if self.closed:
            return
        self.closed = True
        self._drain()
        if self._error is not None:
            warnings.warn(f"BackgroundSink: writing failed too: {self._error!r}",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
        getattr(self.sink, "abort", self.sink.close)()


def open_sink(
    target: str | os.PathLike[str],
    meta: ImageMeta | None = None,
    *,
    dtype: str = "uint16",
    expected_frames: int | None = None,
    overwrite: bool = False,
) -> Any:
    """The sink a user names: ``*.tif``/``*.tiff``, ``*.zarr`` or ``tcp://host:port``.

    ``tcp://*:5555`` (or any ``tcp://`` address) binds a
    :class:`~fluorofpga.host.netstream.ZmqSink` (PUSH) there;
    ``pub+tcp://...`` makes it PUB (many viewers, none can slow the stream; lost
    frames are seen by the receiver as gaps).

    Raises:
        ValueError: an unknown kind of sink, or what the sink refuses (see each class).
    """
    name = os.fspath(target)
    if "://" in name:
        from .netstream import ZmqSink

        pattern, _, address = name.rpartition("+") if name.startswith("pub+") else ("push", "",
                                                                                   name)
        return ZmqSink(address, pattern=pattern, meta=meta)
    suffix = Path(name).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return TiffSink(name, meta, expected_frames=expected_frames, dtype=dtype,
                        overwrite=overwrite)  # fmt: skip
    if suffix == ".zarr":
        return OmeZarrSink(name, meta, dtype=dtype, overwrite=overwrite)
    raise ValueError(f"{name}: unknown sink; give a .tif/.tiff file, a .zarr store or a "
                     "tcp://HOST:PORT address")
