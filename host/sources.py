"""Frame sources: iterables of ``(index, frame)`` with ``frame`` a ``uint16`` YX array.

Every source in this module yields plain ``(index, frame)`` tuples, ``index``
counting from 0 in acquisition order. That is all
:class:`~fluorofpga.host.stream.StreamPipeline` needs, so any generator of such
tuples is a source too; :class:`IterableSource` turns any iterable of frames into one.

- :class:`SimulatedCameraSource`: the sCMOS simulator, paced like a camera;
- :class:`TiffStackSource`: a TIFF stack or a folder of TIFFs, memory-mapped when the
  pixels are stored uncompressed and contiguous, else read page by page (never the
  whole stack at once);
- :class:`GenICamSource`: a GenICam camera through ``harvesters`` (optional);
- :class:`IterableSource`: any iterable of 2-D numpy frames;
- :class:`fluorofpga.host.sinks.ZmqSource`: frames sent by a ``ZmqSink`` over the network.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CameraError",
    "GenICamSource",
    "IterableSource",
    "SimulatedCameraSource",
    "TIFF_SUFFIXES",
    "TiffStackSource",
]

#: File name endings read as TIFF (case-insensitive).
TIFF_SUFFIXES = (".tif", ".tiff")


class CameraError(RuntimeError):
    """A camera (or its driver) is missing, misconfigured or stopped delivering frames."""


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


def _natural_key(path: Path) -> list[Any]:
    """``frame2.tif`` before ``frame10.tif``."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", path.name)]  # fmt: skip


#: Leading axes a stream takes as time: ``T``, and tifffile's letters for an axis the file
#: does not name (``Q`` unknown, ``I`` a plain image sequence).
_TIME_AXES = ("T", "Q", "I")


def _tiff_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted((p for p in path.iterdir()
                        if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES
                        and not p.name.startswith(".")), key=_natural_key)  # fmt: skip
        if not files:
            raise _format_error(f"{path}: the folder holds no .tif/.tiff file")
        return files
    if not path.is_file():
        raise _format_error(f"{path}: no such file or folder")
    return [path]


def _format_error(message: str) -> ValueError:
    from fluorofpga.microscope.io import ImageFormatError

    return ImageFormatError(message)


def _header_meta(tif: Any) -> Any:
    """Pixel size, unit and frame interval from a TIFF's header, as ``TYX`` (or None)."""
    from fluorofpga.microscope import io

    try:
        return io._tiff_meta(tif, "TYX")
    except (ValueError, KeyError, TypeError):  # calibration is optional, pixels are not
        return None


class _TiffFile:
    """Header facts of one TIFF: frames, frame shape, dtype (pixels not read)."""

    def __init__(self, path: Path, any_axis: bool = False) -> None:
        import tifffile

        self.path = path
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes, dtype = tuple(series.shape), str(series.axes), series.dtype
                self.meta = _header_meta(tif)
        except Exception as e:  # tifffile raises many types for damaged files
            raise _format_error(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from None
        if len(shape) == 2:
            shape = (1, *shape)
        if "S" in axes:
            raise _format_error(
                f"{path}: RGB/multi-sample image (axes {axes!r}, shape {tuple(series.shape)});"
                " a stream reads single-channel camera frames")
        if len(shape) != 3 or not axes.endswith("YX"):
            raise _format_error(
                f"{path}: axes {axes!r}, shape {tuple(series.shape)}: a stream reads 2-D "
                "frames (YX) or one series of them in time (TYX, or a stack whose file "
                "does not name its axis); split channels and RGB first")
        lead = axes[0] if len(series.shape) == 3 else "T"
        if lead not in _TIME_AXES and not any_axis:
            what = {"Z": "Z slices", "C": "channels"}.get(lead, f"axis {lead!r}")
            raise _format_error(
                f"{path}: axes {axes!r}: the stack's {what} are not time points, and a "
                "stream runs over time; restore it with `fluorofpga denoise`, which keeps "
                "its axes")
        #: the file names its frames as time points (else its axis is unknown: time assumed)
        self.time_axis = lead == "T"
        if dtype.kind != "u" or dtype.itemsize > 2:
            hint = ("; `fluorofpga denoise` takes a file of non-negative signed counts, or "
                    "save it as uint16" if dtype.kind == "i" else "")
            raise _format_error(f"{path}: {dtype} pixels; a stream reads raw camera counts "
                                f"(uint8/uint16){hint}")  # fmt: skip
        self.frames = int(shape[0])
        self.frame_shape = (int(shape[1]), int(shape[2]))
        self.dtype = np.dtype(dtype)

    def iter_frames(self, memmap: bool) -> Iterator[np.ndarray]:
        """The frames in order: views of a read-only memory map, or page by page."""
        import tifffile

        if memmap:
            try:
                mapped = tifffile.memmap(self.path, mode="r")
            except ValueError:  # compressed, tiled or scattered pixels: page by page
                mapped = None
            if mapped is not None:
                stack = mapped.reshape(self.frames, *self.frame_shape)
                for k in range(self.frames):
                    yield stack[k]
                return
        with tifffile.TiffFile(self.path) as tif:
            for k in range(self.frames):
                frame = tif.asarray(key=k, series=0)
                yield np.asarray(frame).reshape(self.frame_shape)


class TiffStackSource:
    """Frames of a TIFF stack (``YX`` or one series ``TYX``) or of a folder of TIFFs.

    Nothing but the headers is read up front (shape, dtype and axes are checked for
    every file then, so a bad input is refused before any work); pixels are read one
    frame at a time as the stream asks for them: from a read-only memory map when a
    file's pixels are uncompressed and contiguous (``tifffile.memmap``), else page by
    page. A folder's files are taken in natural order (``f2.tif`` before ``f10.tif``)
    and must all have the same frame shape and dtype; ``index`` counts frames across
    them.

    Args:
        path: A ``.tif``/``.tiff`` file or a folder of them.
        fps: Optional replay rate in frames/s (None: as fast as possible).
        memmap: Memory-map files where possible (False: always page by page).
        any_axis: take the frames of a stack along any axis its file names (raw SIM
            frames: angles and phases, often saved as channels or Z); by default only
            time, or an axis the file does not name.

    Raises:
        fluorofpga.microscope.ImageFormatError: (a ``ValueError``) missing or unreadable
            files, not 2-D frames, not unsigned integer pixels, mixed shapes in a folder,
            a stack whose file names its axis as Z slices, channels or anything but time.
    """

    def __init__(
        self, path: str | os.PathLike[str], fps: float | None = None, memmap: bool = True,
        any_axis: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        _Pacer(fps)
        self.fps = fps
        self.memmap = memmap
        self.files = [_TiffFile(p, any_axis) for p in _tiff_files(Path(path))]
        first = self.files[0]
        for f in self.files[1:]:
            if (f.frame_shape, f.dtype) != (first.frame_shape, first.dtype):
                raise _format_error(
                    f"{f.path}: frames {f.frame_shape} {f.dtype}, but {first.path} has "
                    f"{first.frame_shape} {first.dtype}; a folder streams one frame size")

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(Y, X)`` of one frame."""
        return self.files[0].frame_shape

    @property
    def dtype(self) -> np.dtype:
        """Pixel type of the frames."""
        return self.files[0].dtype

    @property
    def meta(self) -> Any:
        """The first file's calibration (``ImageMeta``, axes ``TYX``), or None."""
        return self.files[0].meta

    @property
    def time_axis(self) -> bool:
        """Every file names its frames as time points (False: a stack without axis names,
        streamed as time points; Z stacks and channels are refused)."""
        return all(f.time_axis for f in self.files)

    def __len__(self) -> int:
        return sum(f.frames for f in self.files)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        pacer = _Pacer(self.fps)
        k = 0
        for f in self.files:
            for frame in f.iter_frames(self.memmap):
                pacer.tick()
                yield k, frame
                k += 1


class IterableSource:
    """Any iterable of 2-D numpy frames as a source: yields ``(0, f0), (1, f1), ...``.

    Args:
        frames: An iterable (list, generator, ...) of ``(Y, X)`` arrays. A generator
            can be streamed once only.
        fps: Optional pacing in frames/s (None: as fast as the iterable gives them).
        n_frames: Stop after this many frames (None: when the iterable ends).
    """

    def __init__(
        self, frames: Iterable[np.ndarray], fps: float | None = None,
        n_frames: int | None = None,
    ) -> None:
        if n_frames is not None and (int(n_frames) != n_frames or n_frames < 0):
            raise ValueError(f"n_frames must be a non-negative integer or None, got {n_frames!r}")
        _Pacer(fps)
        self.frames = frames
        self.fps = fps
        self.n_frames = n_frames

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        pacer = _Pacer(self.fps)
        for k, frame in enumerate(self.frames):
            if self.n_frames is not None and k >= self.n_frames:
                return
            array = np.asarray(frame)
            if array.ndim != 2:
                raise ValueError(f"frame {k} has shape {array.shape}; a source yields 2-D "
                                 "(Y, X) frames")  # fmt: skip
            pacer.tick()
            yield k, array


#: Environment variable of the GenICam standard listing folders of GenTL producers.
GENTL_PATH_ENV = "GENICAM_GENTL64_PATH"


def _import_harvesters() -> Any:
    try:
        return importlib.import_module("harvesters.core")
    except ImportError as e:
        raise ImportError(
            "a GenICam camera is read through the 'harvesters' package, which is not "
            f"installed ({e}); install it with `pip install harvesters` and the GenTL "
            "producer (.cti) of your camera's vendor"
        ) from None


def find_gentl_producers() -> list[str]:
    """``.cti`` files in the folders named by ``$GENICAM_GENTL64_PATH`` (GenICam standard)."""
    found: list[str] = []
    for folder in os.environ.get(GENTL_PATH_ENV, "").split(os.pathsep):
        if folder:
            found.extend(sorted(glob.glob(os.path.join(folder, "*.cti"))))
    return found


class GenICamSource:
    """Frames of a GenICam camera (USB3 Vision, GigE Vision) through ``harvesters``.

    Args:
        camera: Index of the camera among those the producers find (``genicam:N``).
        n_frames: Stop after this many frames (None: until the stream is stopped).
        cti: GenTL producer files (``.cti``) of the camera vendor; default: those in
            ``$GENICAM_GENTL64_PATH``.
        fps: Frame rate to set on the camera (``AcquisitionFrameRate``), if given.
        timeout_s: Seconds to wait for a frame before :class:`CameraError`.

    ``harvesters`` is imported here, so a missing package is reported before any work;
    the camera is opened when iteration starts and released when it ends (also on an
    error or an early stop). ``index`` counts delivered frames; the camera's own frame
    counter is kept in :attr:`last_frame_id` when the producer gives one, and jumps in it
    (frames the camera or its driver lost before they reached us, e.g. because its
    buffers overflowed) are counted in :attr:`camera_lost`.

    Raises:
        ImportError: ``harvesters`` is not installed (the message says how to get it).
        CameraError: no GenTL producer found.
    """

    def __init__(
        self, camera: int = 0, n_frames: int | None = None,
        cti: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        fps: float | None = None, timeout_s: float = 5.0,
    ) -> None:
        self._core = _import_harvesters()
        if int(camera) != camera or camera < 0:
            raise ValueError(f"camera index must be an integer >= 0, got {camera!r}")
        if n_frames is not None and (int(n_frames) != n_frames or n_frames < 0):
            raise ValueError(f"n_frames must be a non-negative integer or None, got {n_frames!r}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        if cti is None:
            producers = find_gentl_producers()
        elif isinstance(cti, (str, os.PathLike)):
            producers = [os.fspath(cti)]
        else:
            producers = [os.fspath(c) for c in cti]
        if not producers:
            raise CameraError(
                "no GenTL producer (.cti file of the camera vendor) found: give one with "
                f"--cti PATH (cti=...) or list its folder in ${GENTL_PATH_ENV}")
        missing = [p for p in producers if not os.path.isfile(p)]
        if missing:
            raise CameraError(f"GenTL producer {missing[0]} not found")
        self.camera = int(camera)
        self.n_frames = n_frames
        self.producers = producers
        self.fps = fps
        self.timeout_s = float(timeout_s)
        self.last_frame_id: int | None = None
        self.camera_lost = 0

    def _configure(self, acquirer: Any) -> None:
        if self.fps is None:
            return
        nodes = acquirer.remote_device.node_map
        try:
            if hasattr(nodes, "AcquisitionFrameRateEnable"):
                nodes.AcquisitionFrameRateEnable.value = True
            nodes.AcquisitionFrameRate.value = float(self.fps)
        except Exception as e:  # GenApi raises its own types (access mode, range)
            raise CameraError(f"camera {self.camera}: cannot set AcquisitionFrameRate to "
                              f"{self.fps} ({type(e).__name__}: {e})") from None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        harvester = self._core.Harvester()
        acquirer = None
        try:
            for producer in self.producers:
                harvester.add_file(producer)
            harvester.update()
            found = len(harvester.device_info_list)
            if self.camera >= found:
                raise CameraError(f"GenICam camera {self.camera} not found: the producers "
                                  f"{self.producers} see {found} camera(s)")  # fmt: skip
            acquirer = harvester.create(self.camera)
            self._configure(acquirer)
            acquirer.start()
            k = 0
            while self.n_frames is None or k < self.n_frames:
                frame = self._fetch(acquirer, k)
                yield k, frame
                k += 1
        finally:
            if acquirer is not None:
                acquirer.stop()
                acquirer.destroy()
            harvester.reset()

    def _fetch(self, acquirer: Any, k: int) -> np.ndarray:
        try:
            buffer = acquirer.fetch(timeout=self.timeout_s)
        except Exception as e:  # harvesters/genicam timeouts have no common base class
            raise CameraError(
                f"camera {self.camera}: no frame {k} within {self.timeout_s} s "
                f"({type(e).__name__}: {e}); is it triggered externally, or unplugged?"
            ) from None
        with buffer:
            component = buffer.payload.components[0]
            width, height = int(component.width), int(component.height)
            frame = np.array(component.data, copy=True)  # the buffer goes back to the camera
            frame_id = getattr(buffer, "frame_id", None)
        if isinstance(frame_id, int):
            previous = self.last_frame_id
            if previous is not None and frame_id > previous + 1:
                self.camera_lost += frame_id - previous - 1
            self.last_frame_id = frame_id
        if frame.size != width * height:
            raise CameraError(f"camera {self.camera}: frame {k} holds {frame.size} values for "
                              f"{height}x{width} pixels (a colour or packed pixel format?); "
                              "set PixelFormat to Mono16 or Mono12")  # fmt: skip
        return frame.reshape(height, width)
