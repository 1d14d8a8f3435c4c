"""Image I/O (TIFF, OME-Zarr) with explicit axes and one error type for bad files.

Files are written as ImageJ hyperstacks when ImageJ can hold them (dtype uint8, uint16
or float32 and axes in ImageJ's ``TZCYX`` order) and as OME-TIFF otherwise; both carry
the axes string, which :func:`axes_of` reads back. Reading checks the TIFF structure
against the file size first, so a truncated file is reported instead of being read as a
shorter (or zero-filled) image.

OME-Zarr stores (:func:`write_ome_zarr`, :func:`read_ome_zarr`) follow NGFF 0.4 on Zarr
format 2 (readable by napari-ome-zarr, Fiji's MoBIE/N5 readers and ``ome-zarr-py``), with a
single resolution level; NGFF 0.5 (Zarr 3) stores are read too. ``zarr`` is imported only
inside these functions (``pip install fluorofpga[zarr]``).

Physical metadata travels with the pixels as an :class:`ImageMeta` (axes, pixel size and
unit, Z step, frame interval and unit): :func:`read_image_meta` reads it from ImageJ
metadata and resolution tags, OME-XML or NGFF ``axes``/``coordinateTransformations``, and
``write_tiff(..., meta=)`` / ``write_ome_zarr(..., meta=)`` write it back.

Axes conventions of the readers: letters from ``TZCYXS``; ``Q`` marks an axis whose
meaning the file does not state (a plain multi-page TIFF: time points, Z slices and
channels look the same), so a 3-D image without axis information comes back as ``QYX``
and the caller decides (refuse it, or treat the planes as repeated frames where that is
physically safe, as camera calibration does). RGB/multi-sample images (axis ``S``) are
refused: a fluorescence camera records one value per pixel.

Outputs: :func:`check_output` validates an output path before any work (folder exists
and is writable, nothing replaced without ``overwrite``, never one of the inputs) and
raises :class:`OutputError`; files are written atomically (:func:`atomic_write`) and Zarr
stores through a sibling temporary folder renamed into place.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import tempfile
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile
from numpy.typing import DTypeLike

PathLike = str | os.PathLike[str]

# Conventional axes for an n-dimensional image, used in messages.
_AXES_FOR_NDIM = {2: "YX", 3: "TYX", 4: "TCYX", 5: "TZCYX"}
_IMAGEJ_AXES_ORDER = "TZCYXS"
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_VALID_AXES = "TZCYXS"
# Byte sizes of the TIFF field types (TIFF 6.0 and BigTIFF).
_TIFF_TYPE_SIZES = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8,
    11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8,
}  # fmt: skip
# Exceptions tifffile has been seen to raise on damaged files (TiffFileError is a
# ValueError); anything else is a bug worth seeing.
_READ_ERRORS = (OSError, ValueError, struct.error, EOFError, IndexError, KeyError)


class ImageFormatError(ValueError):
    """An image file is missing, unreadable, truncated, or not the expected dtype/shape."""


class OutputError(ValueError):
    """An output path cannot or must not be written (see :func:`check_output`)."""


# --------------------------------------------------------------------- physical metadata

# Canonical unit names are the UDUNITS names NGFF uses; values are the size of the unit
# in micrometres (space) or seconds (time).
_SPATIAL_UNITS_UM = {
    "angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3,
    "centimeter": 1e4, "meter": 1e6,
}  # fmt: skip
_TIME_UNITS_S = {
    "nanosecond": 1e-9, "microsecond": 1e-6, "millisecond": 1e-3, "second": 1.0,
    "minute": 60.0, "hour": 3600.0,
}  # fmt: skip
_UNIT_ALIASES = {
    "å": "angstrom", "angstroms": "angstrom", "\u212b": "angstrom",
    "nm": "nanometer", "nanometre": "nanometer", "nanometers": "nanometer",
    "um": "micrometer", "\u00b5m": "micrometer", "\u03bcm": "micrometer",
    "\\u00b5m": "micrometer", "micron": "micrometer", "microns": "micrometer",
    "micrometre": "micrometer", "micrometers": "micrometer",
    "mm": "millimeter", "millimetre": "millimeter", "millimeters": "millimeter",
    "cm": "centimeter", "centimetre": "centimeter", "centimeters": "centimeter",
    "m": "meter", "metre": "meter", "meters": "meter",
    "ns": "nanosecond", "nsec": "nanosecond", "nanoseconds": "nanosecond",
    "us": "microsecond", "\u00b5s": "microsecond", "\u03bcs": "microsecond",
    "\\u00b5s": "microsecond", "usec": "microsecond", "microseconds": "microsecond",
    "ms": "millisecond", "msec": "millisecond", "milliseconds": "millisecond",
    "s": "second", "sec": "second", "secs": "second", "seconds": "second",
    "min": "minute", "mins": "minute", "minutes": "minute",
    "h": "hour", "hr": "hour", "hrs": "hour", "hours": "hour",
}  # fmt: skip
# How each canonical unit is spelled in ImageJ descriptions and in OME-XML. ImageJ
# writes ``tunit`` only when the time unit is not its default "sec".
_IMAGEJ_UNITS = {
    "angstrom": "angstrom", "nanometer": "nm", "micrometer": "micron", "millimeter": "mm",
    "centimeter": "cm", "meter": "m", "nanosecond": "ns", "microsecond": "us",
    "millisecond": "ms", "second": "sec", "minute": "min", "hour": "hour",
}  # fmt: skip
_OME_UNITS = {
    "angstrom": "\u00c5", "nanometer": "nm", "micrometer": "\u00b5m", "millimeter": "mm",
    "centimeter": "cm", "meter": "m", "nanosecond": "ns", "microsecond": "\u00b5s",
    "millisecond": "ms", "second": "s", "minute": "min", "hour": "h",
}  # fmt: skip
_RESUNIT_CENTIMETER = 3  # TIFF ResolutionUnit value


def _canonical_unit(unit: Any, table: Mapping[str, float]) -> str | None:
    """Canonical name of ``unit`` if it is one of ``table``'s units, else ``None``."""
    if not isinstance(unit, str):
        return None
    key = unit.strip()
    key = _UNIT_ALIASES.get(key.lower(), _UNIT_ALIASES.get(key, key.lower()))
    return key if key in table else None


@dataclass(frozen=True)
class ImageMeta:
    """Axes and physical calibration of an image, as read from or written to a file.

    Attributes:
        axes: one letter per array dimension from ``TZCYXS``; ``Q`` for an axis whose
            meaning the file does not state (see the module docstring).
        pixel_size_y, pixel_size_x: pixel pitch in the sample plane, in ``spatial_unit``,
            or ``None`` when the file does not say.
        spatial_unit: unit of the pixel size and Z step; a UDUNITS name (``"micrometer"``,
            ``"nanometer"``, ...). Common spellings (``"um"``, ``"µm"``, ``"micron"``)
            are accepted and stored canonically.
        z_step: distance between Z planes in ``spatial_unit``, or ``None``.
        frame_interval: time between frames in ``time_unit``, or ``None``.
        time_unit: unit of the frame interval (``"second"``, ``"millisecond"``, ...).

    Raises:
        ValueError: unknown unit, or a size that is not a positive finite number.
    """

    axes: str
    pixel_size_y: float | None = None
    pixel_size_x: float | None = None
    spatial_unit: str = "micrometer"
    z_step: float | None = None
    frame_interval: float | None = None
    time_unit: str = "second"

    def __post_init__(self) -> None:
        """Validate the axes and sizes and store the units canonically."""
        if not isinstance(self.axes, str) or not self.axes.isalpha() or not self.axes.isupper():
            raise ValueError(f"axes must be upper-case letters such as 'TYX', got {self.axes!r}")
        spatial = _canonical_unit(self.spatial_unit, _SPATIAL_UNITS_UM)
        if spatial is None:
            raise ValueError(
                f"unknown spatial unit {self.spatial_unit!r}; use one of "
                f"{', '.join(_SPATIAL_UNITS_UM)}"
            )
        time = _canonical_unit(self.time_unit, _TIME_UNITS_S)
        if time is None:
            raise ValueError(
                f"unknown time unit {self.time_unit!r}; use one of {', '.join(_TIME_UNITS_S)}"
            )
        object.__setattr__(self, "spatial_unit", spatial)
        object.__setattr__(self, "time_unit", time)
        for name in ("pixel_size_y", "pixel_size_x", "z_step", "frame_interval"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
            object.__setattr__(self, name, number)

    @property
    def pixel_size_um(self) -> tuple[float, float] | None:
        """``(y, x)`` pixel size in micrometres, or ``None`` if either is unknown."""
        if self.pixel_size_y is None or self.pixel_size_x is None:
            return None
        factor = _SPATIAL_UNITS_UM[self.spatial_unit]
        return (self.pixel_size_y * factor, self.pixel_size_x * factor)

    @property
    def z_step_um(self) -> float | None:
        """Z step in micrometres, or ``None``."""
        return None if self.z_step is None else self.z_step * _SPATIAL_UNITS_UM[self.spatial_unit]

    @property
    def frame_interval_s(self) -> float | None:
        """Frame interval in seconds, or ``None``."""
        if self.frame_interval is None:
            return None
        return self.frame_interval * _TIME_UNITS_S[self.time_unit]

    def with_axes(self, axes: str) -> ImageMeta:
        """The same calibration under other axes (e.g. ``"YX"`` for one plane of ``"TYX"``)."""
        return replace(self, axes=axes)

    def upscaled(self, factor: float) -> ImageMeta:
        """Calibration of the image resampled ``factor`` times finer in Y and X.

        A 2x SIM reconstruction has half the pixel size: ``meta.upscaled(2)``.
        """
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"upscaling factor must be > 0, got {factor!r}")
        return replace(
            self,
            pixel_size_y=None if self.pixel_size_y is None else self.pixel_size_y / factor,
            pixel_size_x=None if self.pixel_size_x is None else self.pixel_size_x / factor,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy (for reports and manifests)."""
        return asdict(self)

    def to_imagej(self) -> tuple[tuple[float, float] | None, dict[str, Any]]:
        """``(resolution, metadata)`` for tifffile's ImageJ writer (axes not included).

        ``resolution`` is ``(x, y)`` pixels per unit for the XResolution/YResolution tags
        (``None`` without a pixel size); ``metadata`` holds ``unit``, ``spacing`` (Z step),
        ``finterval`` and, unless in seconds, its ``tunit`` (as ImageJ writes them).
        """
        metadata: dict[str, Any] = {}
        resolution = None
        if self.pixel_size_y is not None and self.pixel_size_x is not None:
            resolution = (1.0 / self.pixel_size_x, 1.0 / self.pixel_size_y)
        if resolution is not None or self.z_step is not None:
            metadata["unit"] = _IMAGEJ_UNITS[self.spatial_unit]
        if self.z_step is not None:
            metadata["spacing"] = self.z_step
        if self.frame_interval is not None:
            metadata["finterval"] = self.frame_interval
            if self.time_unit != "second":
                metadata["tunit"] = _IMAGEJ_UNITS[self.time_unit]
        return resolution, metadata

    def to_ome(self) -> dict[str, Any]:
        """OME-XML ``Pixels`` attributes (``PhysicalSizeX``, ``TimeIncrement``, ...)."""
        unit = _OME_UNITS[self.spatial_unit]
        ome: dict[str, Any] = {}
        for key, value in (("X", self.pixel_size_x), ("Y", self.pixel_size_y),
                           ("Z", self.z_step)):  # fmt: skip
            if value is not None:
                ome[f"PhysicalSize{key}"] = value
                ome[f"PhysicalSize{key}Unit"] = unit
        if self.frame_interval is not None:
            ome["TimeIncrement"] = self.frame_interval
            ome["TimeIncrementUnit"] = _OME_UNITS[self.time_unit]
        return ome

    def to_ngff(self, axes: str) -> tuple[list[float], dict[str, str]]:
        """NGFF ``scale`` per letter of ``axes`` and the ``unit`` of each calibrated axis."""
        sizes = {"Y": self.pixel_size_y, "X": self.pixel_size_x, "Z": self.z_step,
                 "T": self.frame_interval}  # fmt: skip
        scale, units = [], {}
        for letter in axes:
            size = sizes.get(letter)
            scale.append(1.0 if size is None else float(size))
            if size is not None:
                units[letter] = self.time_unit if letter == "T" else self.spatial_unit
        return scale, units


def _normalise_axes(axes: str) -> str:
    """tifffile's axes with every letter outside ``TZCYXS`` (I, Q, ...) as ``Q``."""
    return "".join(letter if letter in _VALID_AXES else "Q" for letter in str(axes).upper())


def _refuse_samples(name: str, axes: str, shape: Sequence[int]) -> None:
    if "S" in axes:
        planes = (" (if these are 3 or 4 frames of a stack, the file was saved as colour "
                  "planes: tifffile does so for such an array unless it is written with "
                  "photometric='minisblack')") if "Y" in axes and axes.index("S") < axes.index(
                      "Y") else ""  # separate colour planes before YX, not RGB pixels
        raise ImageFormatError(
            f"{name}: RGB/multi-sample image (axes {axes!r}, shape {tuple(shape)}); "
            "fluorofpga works on single-channel camera frames (one value per pixel): use "
            f"the camera's raw data, or split the channels and give them one by one{planes}"
        )


def _describe_ndims(ndims: tuple[int, ...]) -> str:
    return " or ".join(_AXES_FOR_NDIM.get(n, f"{n}-D") for n in ndims)


def _check_tiff_structure(path: PathLike) -> None:
    """Walk the IFD chain and raise ImageFormatError if anything points past the end."""
    name = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:

        def read(offset: int, count: int) -> bytes:
            if offset < 0 or offset + count > size:
                raise ImageFormatError(
                    f"{name}: truncated or corrupt TIFF ({count} bytes needed at offset "
                    f"{offset}, file has {size} bytes)"
                )
            fh.seek(offset)
            return fh.read(count)

        header = read(0, 8)
        if header[:2] not in (b"II", b"MM"):
            raise ImageFormatError(f"{name}: not a TIFF file (bad byte-order mark)")
        order = "<" if header[:2] == b"II" else ">"
        magic = struct.unpack(order + "H", header[2:4])[0]
        if magic == 42:
            count_fmt, entry_size, offset_fmt = "H", 12, "I"
            ifd_offset = struct.unpack(order + "I", header[4:8])[0]
        elif magic == 43:
            count_fmt, entry_size, offset_fmt = "Q", 20, "Q"
            ifd_offset = struct.unpack(order + "Q", read(8, 8))[0]
        else:
            raise ImageFormatError(f"{name}: not a TIFF file (magic number {magic})")
        count_size = struct.calcsize(count_fmt)
        offset_size = struct.calcsize(offset_fmt)
        inline_bytes = offset_size  # values up to this size are stored in the entry
        seen: set[int] = set()
        while ifd_offset:
            if ifd_offset in seen:
                raise ImageFormatError(f"{name}: corrupt TIFF (IFD chain loops)")
            seen.add(ifd_offset)
            n_entries = struct.unpack(order + count_fmt, read(ifd_offset, count_size))[0]
            table = read(ifd_offset + count_size, n_entries * entry_size + offset_size)
            for i in range(n_entries):
                entry = table[i * entry_size : (i + 1) * entry_size]
                _, field_type = struct.unpack(order + "HH", entry[:4])
                value_count, value_offset = struct.unpack(
                    order + offset_fmt * 2, entry[4 : 4 + 2 * offset_size]
                )
                nbytes = _TIFF_TYPE_SIZES.get(field_type, 1) * value_count
                if nbytes > inline_bytes:
                    read_check = value_offset + nbytes
                    if read_check > size:
                        raise ImageFormatError(
                            f"{name}: truncated or corrupt TIFF (tag data ends at byte "
                            f"{read_check}, file has {size} bytes)"
                        )
            ifd_offset = struct.unpack(order + offset_fmt, table[-offset_size:])[0]


def _open_series(path: PathLike, tif: tifffile.TiffFile) -> tifffile.TiffPageSeries:
    """First image series of ``tif``, after checking every page's data lies in the file."""
    name = os.fspath(path)
    size = os.path.getsize(path)
    for page in tif.pages:
        if 0 in tuple(getattr(page, "shape", ())) or (tif.series and 0 in tif.series[0].shape):
            raise ImageFormatError(f"{name}: the TIFF holds no pixels (an image of shape "
                                   f"{tuple(tif.series[0].shape) if tif.series else ()}: "
                                   "zero frames or an empty plane)")
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            if offset + count > size:
                raise ImageFormatError(
                    f"{name}: truncated TIFF (image data ends at byte {offset + count}, "
                    f"file has {size} bytes)"
                )
    if not tif.series:
        raise ImageFormatError(f"{name}: TIFF file holds no image")
    images = [s for s in tif.series if not _is_reduced(s)]  # thumbnails are no images
    if len(images) > 1:  # positions / wells / acquisitions: reading one would drop the rest
        shapes = ", ".join(f"{tuple(s.shape)} {_normalise_axes(s.axes)}" for s in images[:6])
        more = " ..." if len(images) > 6 else ""
        raise ImageFormatError(
            f"{name}: the file holds {len(images)} image series (e.g. stage positions): "
            f"{shapes}{more}; fluorofpga reads one image per file, so none is read rather "
            "than the first alone: save each series to its own file (Fiji: Bio-Formats "
            "'open all series', then save each; or tifffile.TiffFile(...).series[i])")
    return tif.series[0]


def _is_reduced(series: Any) -> bool:
    """A thumbnail or reduced-resolution preview series (no image of its own)."""
    try:
        return bool(series.pages[0].is_reduced)
    except (AttributeError, IndexError, TypeError):
        return False


def read_tiff(
    path: PathLike,
    *,
    dtype: DTypeLike | None = np.uint16,
    ndim: int | Iterable[int] = (2, 3),
) -> np.ndarray:
    """Read the first image series of a TIFF file, checking its integrity, dtype and rank.

    Args:
        path: file to read.
        dtype: required dtype (``None`` accepts any).
        ndim: allowed number(s) of dimensions; the defaults mean ``YX`` or ``TYX``.

    Returns:
        The image in native byte order.

    Raises:
        ImageFormatError: the file is missing, unreadable, truncated or corrupt, its
            dtype or number of dimensions is not the expected one, or it is an RGB image.
            The message names the file and states what was expected and what was found.
    """
    name = os.fspath(path)
    ndims = (int(ndim),) if isinstance(ndim, (int, np.integer)) else tuple(int(n) for n in ndim)
    want = None if dtype is None else np.dtype(dtype).newbyteorder("=")
    expected = f"{'any dtype' if want is None else want.name} {_describe_ndims(ndims)}"
    if not os.path.isfile(path):
        raise ImageFormatError(f"{name}: no such file (expected {expected} TIFF)")
    try:
        _check_tiff_structure(path)
        with tifffile.TiffFile(path) as tif:
            series = _open_series(path, tif)
            _refuse_samples(name, _normalise_axes(series.axes), series.shape)
            found = np.dtype(series.dtype).newbyteorder("=")
            if (want is not None and found != want) or len(series.shape) not in ndims:
                raise ImageFormatError(
                    f"{name}: expected {expected}, found {found.name} with shape "
                    f"{tuple(series.shape)}"
                )
            array = series.asarray()
    except ImageFormatError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFormatError(
            f"{name}: unreadable TIFF ({type(exc).__name__}: {exc}); expected {expected}"
        ) from exc
    if array.shape != tuple(series.shape):
        raise ImageFormatError(
            f"{name}: corrupt TIFF (read shape {array.shape}, header says {series.shape})"
        )
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def axes_of(path: PathLike) -> str:
    """Axes string of the first image series (e.g. ``"YX"``, ``"TYX"``).

    Taken from ImageJ or OME metadata when present; for plain TIFFs it is tifffile's
    guess, which may use ``Q``/``I`` for unknown axes.

    Raises:
        ImageFormatError: the file is missing, unreadable, truncated or corrupt.
    """
    return str(_series_header(path).axes)


def _validate_for_writing(array: np.ndarray, axes: str) -> None:
    if array.dtype.kind not in "uif":
        raise ValueError(f"cannot write dtype {array.dtype} as an image (need int/uint/float)")
    if array.size == 0:
        raise ValueError(f"cannot write an empty image of shape {array.shape}")
    if len(axes) != array.ndim:
        raise ValueError(f"axes {axes!r} has {len(axes)} letters but array has shape {array.shape}")
    if len(set(axes)) != len(axes) or not set(axes) <= set(_VALID_AXES):
        raise ValueError(f"axes {axes!r} must be distinct letters from {_VALID_AXES!r}")
    if not (axes.endswith("YX") or axes.endswith("YXS")):
        raise ValueError(f"axes {axes!r} must end with 'YX' (optionally followed by 'S')")


def _is_imagej_compatible(array: np.ndarray, axes: str) -> bool:
    positions = [_IMAGEJ_AXES_ORDER.find(a) for a in axes]
    return (
        array.dtype.newbyteorder("=") in _IMAGEJ_DTYPES
        and -1 not in positions
        and positions == sorted(positions)
    )


def write_tiff(
    path: PathLike,
    array: np.ndarray,
    *,
    axes: str | None = None,
    metadata: dict[str, Any] | None = None,
    meta: ImageMeta | None = None,
) -> None:
    """Write an image with its axes and physical calibration, atomically.

    The file is an OME-TIFF when its name ends in ``.ome.tif`` / ``.ome.tiff`` (what that
    name promises) or when ImageJ cannot hold the dtype and axes order, else an ImageJ
    hyperstack. It is written to a hidden temporary file in the same directory,
    flushed to disk and moved over ``path`` with ``os.replace``, so ``path`` is either
    untouched or complete. An existing ``path`` is replaced: check it first with
    :func:`check_output`.

    Args:
        path: destination file.
        array: image; integer or float dtype, one dimension per letter of ``axes``.
        axes: axes string such as ``"YX"``, ``"TYX"``, ``"CYX"``, ``"TZCYX"``; default
            ``meta.axes``, else ``"TYX"``.
        metadata: extra ImageJ / OME metadata (e.g. ``{"spacing": 0.2, "unit": "um"}``);
            it takes precedence over what ``meta`` gives.
        meta: pixel size, unit, Z step and frame interval to record (ImageJ:
            resolution tags, ``unit``, ``spacing``, ``finterval``; OME: ``PhysicalSize*``,
            ``TimeIncrement``).

    Raises:
        ValueError: the array or axes cannot be written, or ``axes`` differs from
            ``meta.axes`` (nothing is created).
    """
    if meta is not None and axes is not None and axes != meta.axes:
        raise ValueError(f"axes {axes!r} differ from meta.axes {meta.axes!r}")
    axes = axes if axes is not None else (meta.axes if meta is not None else "TYX")
    array = np.asarray(array)
    _validate_for_writing(array, axes)
    metadata = dict(metadata or {})
    if metadata.setdefault("axes", axes) != axes:
        raise ValueError(f"metadata axes {metadata['axes']!r} differ from axes {axes!r}")
    ome_name = Path(path).name.lower().endswith((".ome.tif", ".ome.tiff"))
    if _is_imagej_compatible(array, axes) and not ome_name:
        format_kwargs: dict[str, Any] = {"imagej": True}
        if meta is not None:
            resolution, imagej = meta.to_imagej()
            metadata = {**imagej, **metadata}
            if resolution is not None:
                format_kwargs["resolution"] = resolution
    else:
        format_kwargs = {"ome": True}
        if meta is not None:
            metadata = {**meta.to_ome(), **metadata}

    atomic_write(path, lambda fh: tifffile.imwrite(fh, array, metadata=metadata,
                                                   **format_kwargs))


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through ``write(fh)`` atomically.

    The data goes to a hidden temporary file in the same directory, is flushed to disk
    and then renamed over ``path``; on any failure the temporary file is removed and
    ``path`` is left untouched (never half-written).
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _resolved(path: PathLike) -> Path:
    """Absolute path with symlinks resolved as far as they exist."""
    return Path(os.path.abspath(path)).resolve(strict=False)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_writable(folder: Path, name: str) -> None:
    """Raise :class:`OutputError` unless a file can be created in ``folder``.

    Tried for real (a temporary file is created and removed): permission bits say
    nothing about root, read-only mounts or full quotas.
    """
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".fluorofpga-write-test-")
    except OSError as exc:
        raise OutputError(
            f"{name}: cannot write in the folder {folder} ({exc.strerror or exc}); choose a "
            "writable location"
        ) from None
    os.close(handle)
    os.unlink(probe)


def check_output(path: PathLike, overwrite: bool = False, inputs: Sequence[PathLike] = ()) -> None:
    """Check that ``path`` may be written, before any work starts.

    The same rules hold for files and for ``.zarr`` stores (folders):

    * ``path`` is not one of ``inputs``, not inside one (a store's folder) and does not
      contain one (replacing it would delete the input), symlinks and hard links included;
    * its folder exists and a file can be created in it;
    * ``path`` does not exist, unless ``overwrite`` is true; even then a ``.zarr`` path is
      replaced only if it is a Zarr store (or an empty folder), and a file path never
      replaces a folder.

    Raises:
        OutputError: the reason, naming the path and what to do.
    """
    name = os.fspath(path)
    target = Path(path)
    resolved = _resolved(target)
    for source in inputs:
        source_resolved = _resolved(source)
        same = _is_within(resolved, source_resolved) or _is_within(source_resolved, resolved)
        if not same and target.exists() and os.path.exists(source):
            same = os.path.samefile(target, source)
        if same:
            raise OutputError(
                f"{name}: the output would overwrite the input {os.fspath(source)}; choose "
                "another output name"
            )
    folder = resolved.parent
    if not folder.exists():
        raise OutputError(f"{name}: the output folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise OutputError(f"{name}: {folder} is not a folder")
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputError(
                f"{name} exists; choose another name or pass --overwrite (overwrite=True) to "
                "replace it"
            )
        is_store = target.suffix.lower() == ".zarr"
        if target.is_dir() and not (
            is_store and (_looks_like_zarr(target) or not any(target.iterdir()))
        ):
            raise OutputError(
                f"{name} is a folder{'' if is_store else ' (the output is a file)'} and not "
                "a Zarr store; not replacing it, even with overwrite"
            )
        if is_store and not target.is_dir():
            raise OutputError(f"{name} exists and is not a Zarr store; not replacing it")
    _check_writable(folder, name)


def tiff_shape(path: PathLike) -> tuple[int, ...]:
    """Shape of the first image series, read from the header only (no pixel data).

    Raises:
        ImageFormatError: the file is missing, unreadable, truncated or corrupt.
    """
    return tuple(int(n) for n in _series_header(path).shape)


def _series_header(path: PathLike) -> Any:
    """The first image series of a TIFF (header only), or :class:`ImageFormatError`."""
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageFormatError(f"{name}: no such file")
    try:
        _check_tiff_structure(path)
        with tifffile.TiffFile(path) as tif:
            return _open_series(path, tif)
    except ImageFormatError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"{name}: unreadable TIFF ({type(exc).__name__}: {exc})") from exc


def _resolution_per_unit(page: Any) -> tuple[float, float, int] | None:
    """``(x, y, ResolutionUnit)`` pixels per unit from the page's tags, if meaningful."""
    tags = page.tags
    xres, yres, unit = tags.get("XResolution"), tags.get("YResolution"), tags.get("ResolutionUnit")
    if xres is None or yres is None:
        return None
    try:
        x = float(xres.value[0]) / float(xres.value[1])
        y = float(yres.value[0]) / float(yres.value[1])
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        return None
    return x, y, int(unit.value) if unit is not None else 2  # TIFF default: inch


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _add_frame_interval(fields: dict[str, Any], value: Any, unit: Any) -> None:
    """Put a valid frame interval and its unit into ``fields`` (nothing if either is bad)."""
    interval = _positive(value)
    time_unit = _canonical_unit(unit, _TIME_UNITS_S)
    if interval is not None and time_unit is not None:
        fields["frame_interval"] = interval
        fields["time_unit"] = time_unit


def _ome_meta(xml: str, axes: str) -> ImageMeta:
    """Pixel size, Z step and time increment of the first OME ``Pixels`` element."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return ImageMeta(axes)
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return ImageMeta(axes)
    attrs = pixels.attrib
    fields: dict[str, Any] = {}
    units = []
    for key, field_name in (("X", "pixel_size_x"), ("Y", "pixel_size_y"), ("Z", "z_step")):
        size = _positive(attrs.get(f"PhysicalSize{key}"))
        unit = _canonical_unit(attrs.get(f"PhysicalSize{key}Unit", "\u00b5m"), _SPATIAL_UNITS_UM)
        if size is not None and unit is not None:
            fields[field_name] = size * _SPATIAL_UNITS_UM[unit]  # micrometres for now
            units.append(unit)
    if units:  # express everything in the unit of the first calibrated axis
        factor = _SPATIAL_UNITS_UM[units[0]]
        fields = {k: v / factor for k, v in fields.items()}
        fields["spatial_unit"] = units[0]
    _add_frame_interval(fields, attrs.get("TimeIncrement"), attrs.get("TimeIncrementUnit", "s"))
    return ImageMeta(axes, **fields)


def _imagej_meta(tif: tifffile.TiffFile, page: Any, axes: str) -> ImageMeta:
    """Calibration of an ImageJ file: resolution tags in ``unit``, ``spacing``, ``finterval``."""
    info = tif.imagej_metadata or {}
    fields: dict[str, Any] = {}
    unit = _canonical_unit(info.get("unit"), _SPATIAL_UNITS_UM)
    if unit is not None:
        fields["spatial_unit"] = unit
        resolution = _resolution_per_unit(page)  # pixels per ``unit`` in ImageJ files
        if resolution is not None:
            fields["pixel_size_x"], fields["pixel_size_y"] = 1 / resolution[0], 1 / resolution[1]
        spacing = _positive(info.get("spacing"))
        if spacing is not None:
            fields["z_step"] = spacing
    _add_frame_interval(fields, info.get("finterval"), info.get("tunit", "s"))
    return ImageMeta(axes, **fields)


def _tiff_meta(tif: tifffile.TiffFile, axes: str) -> ImageMeta:
    """Calibration from OME-XML, else ImageJ metadata, else centimetre resolution tags.

    Plain TIFF resolutions in inches are ignored: they are display DPI defaults (72, 96,
    300) in nearly every file, not a microscope's pixel size.
    """
    page = tif.pages[0]
    if tif.is_ome and tif.ome_metadata:
        return _ome_meta(tif.ome_metadata, axes)
    if tif.is_imagej:
        return _imagej_meta(tif, page, axes)
    resolution = _resolution_per_unit(page)
    if resolution is not None and resolution[2] == _RESUNIT_CENTIMETER:
        return ImageMeta(axes, pixel_size_y=1e4 / resolution[1], pixel_size_x=1e4 / resolution[0])
    return ImageMeta(axes)


def _local_name(element: ElementTree.Element) -> str:
    """Tag without its XML namespace (OME-XML elements are namespaced)."""
    return element.tag.rsplit("}", 1)[-1]


def _ome_objective_na(root: ElementTree.Element) -> float | None:
    """``LensNA`` of the objective the first image refers to (or the file's only one)."""
    objectives = {el.get("ID"): el for el in root.iter() if _local_name(el) == "Objective"}
    image = next((el for el in root.iter() if _local_name(el) == "Image"), None)
    settings = None if image is None else next(
        (el for el in image if _local_name(el) == "ObjectiveSettings"), None)
    if settings is not None and settings.get("ID") in objectives:
        return _positive(objectives[settings.get("ID")].get("LensNA"))
    values = {_positive(el.get("LensNA")) for el in objectives.values()} - {None}
    return values.pop() if len(values) == 1 else None


def _ome_emission_nm(root: ElementTree.Element) -> float | None:
    """Emission wavelength (nm) of the first image's channels, if they all state one."""
    pixels = next((el for el in root.iter() if _local_name(el) == "Pixels"), None)
    if pixels is None:
        return None
    values = set()
    for channel in (el for el in pixels if _local_name(el) == "Channel"):
        size = _positive(channel.get("EmissionWavelength"))
        unit = _canonical_unit(channel.get("EmissionWavelengthUnit", "nm"), _SPATIAL_UNITS_UM)
        if size is None or unit is None:
            return None
        values.add(round(size * _SPATIAL_UNITS_UM[unit] * 1e3, 6))
    return values.pop() if len(values) == 1 else None


def read_ome_optics(path: PathLike) -> dict[str, float]:
    """Objective NA and emission wavelength stated in a TIFF's OME-XML metadata.

    NA: ``LensNA`` of the ``Objective`` the first ``Image`` refers to through its
    ``ObjectiveSettings`` (or of the file's objectives when they all agree). Wavelength:
    ``EmissionWavelength`` of the first image's ``Channel`` elements, converted to nm
    (``EmissionWavelengthUnit``, default nm), when every channel states the same one.
    ImageJ metadata, plain TIFFs and OME-Zarr carry neither: the result is then empty.

    Returns:
        ``{"na": ..., "wavelength_nm": ...}`` with only the keys the file states.

    Raises:
        ImageFormatError: the file is missing, unreadable, truncated or corrupt.
    """
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return {}
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageFormatError(f"{name}: no such file")
    try:
        _check_tiff_structure(path)
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata if tif.is_ome else None
    except ImageFormatError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"{name}: unreadable TIFF ({type(exc).__name__}: {exc})") from exc
    if not xml:
        return {}
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return {}
    found = {"na": _ome_objective_na(root), "wavelength_nm": _ome_emission_nm(root)}
    return {key: value for key, value in found.items() if value is not None}


def _read_tiff_with_meta(path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageFormatError(f"{name}: no such file")
    try:
        _check_tiff_structure(path)
        with tifffile.TiffFile(path) as tif:
            series = _open_series(path, tif)
            axes = _normalise_axes(series.axes)
            _refuse_samples(name, axes, series.shape)
            meta = _tiff_meta(tif, axes)
            array = series.asarray()
    except ImageFormatError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"{name}: unreadable TIFF ({type(exc).__name__}: {exc})") from exc
    if array.shape != tuple(series.shape) or array.ndim != len(axes):
        raise ImageFormatError(
            f"{name}: corrupt TIFF (read shape {array.shape}, header says {series.shape} "
            f"with axes {axes!r})"
        )
    return array.astype(array.dtype.newbyteorder("="), copy=False), meta


# ----------------------------------------------------------------------------- OME-Zarr

# NGFF 0.4 orders axes by type: time, channel, then space.
_NGFF_ORDER = "TCZYX"
_NGFF_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_NGFF_UNITS = {"T": "second", "Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
_ZARR_MISSING = "OME-Zarr support needs the zarr package: pip install fluorofpga[zarr]"
_ZARR_CHUNK_YX = 256  # chunk edge in Y and X; other axes are chunked one plane at a time
# Marker under the "fluorofpga" attributes: every chunk was written (none left to the
# fill value), so a missing chunk means a damaged store.
_ALL_CHUNKS = "all_chunks_written"
# Errors zarr and its codecs raise on damaged chunk data (numcodecs' Blosc raises
# RuntimeError); anything else is a bug worth seeing.
_ZARR_READ_ERRORS = (KeyError, OSError, ValueError, TypeError, RuntimeError, EOFError)


def _import_zarr() -> Any:
    try:
        import zarr
    except ImportError as exc:
        raise ImportError(_ZARR_MISSING) from exc
    return zarr


def _check_zarr_axes(axes: str, ndim: int) -> None:
    if not isinstance(axes, str) or len(axes) != ndim:
        raise ImageFormatError(
            f"axes {axes!r} has {len(axes) if isinstance(axes, str) else '?'} letters but the "
            f"array has {ndim} dimensions"
        )
    if len(set(axes)) != len(axes) or not set(axes) <= set(_NGFF_ORDER):
        raise ImageFormatError(
            f"axes {axes!r} must be distinct letters from {_NGFF_ORDER!r} for OME-Zarr"
        )
    if not axes.endswith("YX"):
        raise ImageFormatError(f"axes {axes!r} must end with 'YX'")


def _scale_for(
    axes: str, pixel_size_um: float | Mapping[str, float] | None
) -> tuple[list[float], dict[str, str]]:
    """Per-axis scale and the units of the axes given a physical size."""
    if pixel_size_um is None:
        sizes: dict[str, float] = {}
    elif isinstance(pixel_size_um, Mapping):
        sizes = {str(k).upper(): float(v) for k, v in pixel_size_um.items()}
        if "C" in sizes:
            raise ImageFormatError("the channel axis has no physical size")
        unknown = set(sizes) - set(axes)
        if unknown:
            raise ImageFormatError(
                f"pixel_size_um names axes {sorted(unknown)} that are not in {axes!r}"
            )
    else:
        sizes = {"Y": float(pixel_size_um), "X": float(pixel_size_um)}
    for letter, size in sizes.items():
        if not (np.isfinite(size) and size > 0):
            raise ImageFormatError(f"size of axis {letter} must be > 0, got {size!r}")
    units = {letter: _NGFF_UNITS[letter] for letter in sizes}
    return [sizes.get(letter, 1.0) for letter in axes], units


def write_ome_zarr(
    path: PathLike,
    array: np.ndarray,
    axes: str | None = None,
    pixel_size_um: float | Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    meta: ImageMeta | None = None,
) -> str:
    """Write an image as an OME-Zarr store (NGFF 0.4, Zarr format 2, one resolution level).

    Axes are stored in NGFF order (time, channel, then ``ZYX``): the array is transposed
    if ``axes`` is in another order, and the stored axes string is returned. The store
    is written next to ``path`` and renamed into place, so ``path`` is never left half
    written; with ``overwrite`` the old store stays intact until the new one is complete.
    Every chunk is written (also those holding only zeros), and the store is marked so,
    which lets :func:`read_ome_zarr` report a deleted chunk instead of reading zeros.

    Args:
        path: store directory to create (conventionally ``*.ome.zarr``).
        array: integer or float image, one dimension per letter of ``axes``.
        axes: distinct letters from ``"TCZYX"`` ending in ``"YX"`` (e.g. ``"YX"``,
            ``"TYX"``, ``"CZYX"``); default ``meta.axes``, else ``"TYX"``.
        pixel_size_um: Y and X pixel size in µm, or a mapping per axis (``{"Z": 0.3,
            "Y": 0.065, "X": 0.065, "T": 0.5}``; ``T`` in seconds). Axes without a size
            get scale 1 and no unit.
        metadata: extra JSON-serialisable attributes, stored under ``"fluorofpga"``.
        overwrite: replace an existing store at ``path`` (only if it is a Zarr store).
        meta: physical calibration written as NGFF scale and axis units (pixel size in
            its unit, Z step, frame interval in its time unit); not together with
            ``pixel_size_um``.

    Returns:
        The axes string as stored (NGFF order).

    Raises:
        ImageFormatError: bad axes, dtype, sizes, ``axes`` differing from ``meta.axes``,
            or ``path`` holds something else.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ImportError: zarr is not installed.
    """
    zarr = _import_zarr()
    array = np.asarray(array)
    if array.dtype.kind not in "uif" or array.size == 0:
        raise ImageFormatError(
            f"cannot write dtype {array.dtype} shape {array.shape} as an image "
            "(need a non-empty int/uint/float array)"
        )
    if meta is not None:
        if axes is not None and axes != meta.axes:
            raise ImageFormatError(f"axes {axes!r} differ from meta.axes {meta.axes!r}")
        if pixel_size_um is not None:
            raise ImageFormatError("give the pixel size either in meta or in pixel_size_um")
    axes = axes if axes is not None else (meta.axes if meta is not None else "TYX")
    _check_zarr_axes(axes, array.ndim)
    stored_axes = "".join(letter for letter in _NGFF_ORDER if letter in axes)
    array = np.transpose(array, [axes.index(letter) for letter in stored_axes])
    if meta is not None:
        scale, units = meta.to_ngff(stored_axes)
    else:
        scale, units = _scale_for(stored_axes, pixel_size_um)
    extra = dict(metadata or {})
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{os.fspath(path)} exists; pass overwrite=True to replace it")
    if target.exists() and not _looks_like_zarr(target):
        raise ImageFormatError(
            f"{os.fspath(path)} exists and is not a Zarr store; not replacing it"
        )

    axes_meta = []
    for letter in stored_axes:
        entry = {"name": letter.lower(), "type": _NGFF_TYPES[letter]}
        if letter in units:
            entry["unit"] = units[letter]
        axes_meta.append(entry)
    chunks = tuple(
        min(n, _ZARR_CHUNK_YX) if letter in "YX" else 1
        for letter, n in zip(stored_axes, array.shape, strict=True)
    )
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        if int(zarr.__version__.split(".")[0]) >= 3:
            group = zarr.open_group(str(temporary), mode="w-", zarr_format=2)
            group.create_array(
                "0",
                data=array,
                chunks=chunks,
                chunk_key_encoding={"name": "v2", "separator": "/"},
                config={"write_empty_chunks": True},
            )
        else:  # zarr 2.18
            group = zarr.open_group(str(temporary), mode="w-")
            group.create_dataset("0", data=array, chunks=chunks, dimension_separator="/",
                                 write_empty_chunks=True)
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": target.name,
                "axes": axes_meta,
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
                "type": "none",
            }
        ]
        group.attrs["fluorofpga"] = {**extra, "axes": stored_axes, _ALL_CHUNKS: True}
        if target.exists():
            trash = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
            os.replace(target, trash)
            try:
                os.replace(temporary, target)
            except BaseException:
                os.replace(trash, target)  # put the old store back
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return stored_axes


def _looks_like_zarr(path: Path) -> bool:
    return path.is_dir() and any(
        (path / marker).exists() for marker in (".zgroup", ".zarray", "zarr.json")
    )


def _open_ome_zarr(path: PathLike) -> tuple[Any, dict[str, Any]]:
    """Open a store and return ``(group, multiscale entry)``, checking what is needed."""
    zarr = _import_zarr()
    name = os.fspath(path)
    remote = "://" in name  # an fsspec URL (file://, s3://, https://, ...): zarr opens it
    if not remote and not Path(path).is_dir():
        raise ImageFormatError(f"{name}: no such OME-Zarr store (expected a directory)")
    if not remote and not _looks_like_zarr(Path(path)):
        raise ImageFormatError(f"{name}: not a Zarr store (no .zgroup or zarr.json)")
    try:
        group = zarr.open_group(name, mode="r")
        attrs = dict(group.attrs)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise ImageFormatError(
            f"{name}: unreadable Zarr store ({type(exc).__name__}: {exc})"
        ) from exc
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not multiscales or not isinstance(multiscales, list):
        raise ImageFormatError(f"{name}: Zarr group has no OME-NGFF 'multiscales' metadata")
    entry = multiscales[0]
    if not entry.get("datasets") or not entry.get("axes"):
        raise ImageFormatError(f"{name}: OME-NGFF multiscales lacks 'datasets' or 'axes'")
    return group, entry


def _axes_letters(name: str, entry: dict[str, Any]) -> str:
    letters = []
    for axis in entry["axes"]:
        label = axis.get("name") if isinstance(axis, dict) else axis
        if not isinstance(label, str) or label.upper() not in _NGFF_ORDER:
            raise ImageFormatError(
                f"{name}: axis {label!r} is not one of {', '.join(_NGFF_ORDER.lower())}"
            )
        letters.append(label.upper())
    return "".join(letters)


def read_ome_zarr(path: PathLike) -> tuple[np.ndarray, str]:
    """Read the full-resolution image of an OME-Zarr store.

    Returns:
        ``(array, axes)`` with axes as upper-case letters in stored order (e.g. ``"TYX"``).

    Raises:
        ImageFormatError: missing store, not Zarr, no NGFF metadata, axes that are not
            ``t c z y x``, or an array whose rank differs from the axes.
        ImportError: zarr is not installed.
    """
    name = os.fspath(path)
    group, entry = _open_ome_zarr(path)
    axes = _axes_letters(name, entry)
    dataset = entry["datasets"][0].get("path")
    try:
        stored = group[dataset]
    except _ZARR_READ_ERRORS as exc:
        raise ImageFormatError(f"{name}: cannot open array {dataset!r} ({exc})") from exc
    ours = bool((group.attrs.get("fluorofpga") or {}).get(_ALL_CHUNKS))
    try:
        present, total = int(stored.nchunks_initialized), int(stored.nchunks)
    except (*_ZARR_READ_ERRORS, NotImplementedError) as exc:
        if ours:
            raise ImageFormatError(
                f"{name}: cannot list the chunks of {dataset!r} ({exc})"
            ) from exc
        present = total = 0  # a store that cannot be listed (plain HTTP): not checkable
    if present != total:
        if ours:
            raise ImageFormatError(
                f"{name}: damaged OME-Zarr store: {total - present} of {total} chunks of array "
                f"{dataset!r} are missing; re-copy or re-create the store"
            )
        # another writer's store: a missing chunk reads as the fill value, which no camera
        # records over a whole chunk (its offset is above 0); refused rather than restored
        raise ImageFormatError(
            f"{name}: {total - present} of {total} chunks of array {dataset!r} are not "
            f"stored: they would read as the fill value ({stored.fill_value}), not as camera "
            "counts. A damaged or incomplete copy? If its writer skipped empty chunks on "
            "purpose, re-save it with every chunk written (zarr: write_empty_chunks=True)"
        )
    try:
        array = np.asarray(stored[...])
    except _ZARR_READ_ERRORS as exc:
        raise ImageFormatError(
            f"{name}: damaged OME-Zarr store: chunk data of array {dataset!r} cannot be "
            f"decoded ({type(exc).__name__}: {exc}); re-copy or re-create the store"
        ) from exc
    if array.ndim != len(axes):
        raise ImageFormatError(
            f"{name}: array {dataset!r} has shape {array.shape} but the axes are {axes!r}"
        )
    return array, axes


def ome_zarr_metadata(path: PathLike) -> dict[str, Any]:
    """Axes, physical scale, units and extra metadata of an OME-Zarr store.

    Returns:
        ``{"axes": "TYX", "scale": {"T": 1.0, "Y": 0.065, "X": 0.065}, "units":
        {"Y": "micrometer", ...}, "metadata": {...}}`` (``metadata`` holds what
        :func:`write_ome_zarr` stored under ``"fluorofpga"``, without ``axes``).
    """
    name = os.fspath(path)
    group, entry = _open_ome_zarr(path)
    axes = _axes_letters(name, entry)
    scale = [1.0] * len(axes)
    for transform in entry["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(v) for v in transform["scale"]]
    units = {
        letter: axis["unit"]
        for letter, axis in zip(axes, entry["axes"], strict=True)
        if isinstance(axis, dict) and "unit" in axis
    }
    extra = dict(group.attrs.get("fluorofpga") or {})
    extra.pop("axes", None)
    extra.pop(_ALL_CHUNKS, None)
    return {
        "axes": axes,
        "scale": dict(zip(axes, scale, strict=True)),
        "units": units,
        "metadata": extra,
    }


def _zarr_meta(entry: dict[str, Any], axes: str) -> ImageMeta:
    """Calibration of an NGFF multiscale: scale of the first dataset where a unit is given.

    Axes without a unit are taken as uncalibrated (NGFF does not define a default unit).
    """
    scale = [1.0] * len(axes)
    for transform in entry["datasets"][0].get("coordinateTransformations", []) or []:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            scale = list(transform.get("scale") or scale)
    if len(scale) != len(axes):
        return ImageMeta(axes)
    fields: dict[str, Any] = {}
    spatial: list[tuple[str, float, str]] = []
    for letter, value, axis in zip(axes, scale, entry["axes"], strict=True):
        unit = axis.get("unit") if isinstance(axis, dict) else None
        size = _positive(value)
        if size is None or unit is None:
            continue
        if letter == "T" and _canonical_unit(unit, _TIME_UNITS_S) is not None:
            fields["frame_interval"] = size
            fields["time_unit"] = _canonical_unit(unit, _TIME_UNITS_S)
        elif letter in "ZYX" and _canonical_unit(unit, _SPATIAL_UNITS_UM) is not None:
            spatial.append((letter, size, str(_canonical_unit(unit, _SPATIAL_UNITS_UM))))
    if spatial:
        base = next((u for letter, _, u in spatial if letter == "X"), spatial[0][2])
        fields["spatial_unit"] = base
        names = {"Y": "pixel_size_y", "X": "pixel_size_x", "Z": "z_step"}
        for letter, size, unit in spatial:
            fields[names[letter]] = size * _SPATIAL_UNITS_UM[unit] / _SPATIAL_UNITS_UM[base]
    return ImageMeta(axes, **fields)


def read_image_meta(path: PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read a TIFF (``.tif``/``.tiff``) or OME-Zarr (``.zarr``) image with its calibration.

    Axes come from ImageJ or OME metadata (TIFF) or the NGFF axes (Zarr). An axis the
    file does not name is ``Q`` (a 3-D TIFF without axis information is ``"QYX"``: its
    planes may be time points, Z slices or channels; the caller decides). Pixel size,
    unit, Z step and frame interval come from ImageJ metadata and resolution tags,
    OME-XML ``PhysicalSize*``/``TimeIncrement``, centimetre resolution tags of plain
    TIFFs, or NGFF scale + axis units; what the file does not state is ``None``.

    Returns:
        ``(array, meta)``; any dtype, native byte order, one dimension per axis letter.

    Raises:
        ImageFormatError: unknown suffix, missing, truncated or corrupt file or store
            (a damaged Zarr chunk included), or an RGB/multi-sample image (the message
            gives the axes found).
        ImportError: a ``.zarr`` path without zarr installed.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _read_tiff_with_meta(path)
    if suffix == ".zarr":
        name = os.fspath(path)
        array, axes = read_ome_zarr(path)
        _group, entry = _open_ome_zarr(path)
        try:
            return array, _zarr_meta(entry, axes)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ImageFormatError(f"{name}: bad NGFF scale metadata ({exc})") from exc
    raise ImageFormatError(
        f"{os.fspath(path)}: unknown image suffix {suffix!r} (expected .tif, .tiff or .zarr)"
    )


def read_image(path: PathLike) -> tuple[np.ndarray, str]:
    """Read a TIFF (``.tif``/``.tiff``) or OME-Zarr (``.zarr``) image with its axes.

    The same as :func:`read_image_meta` without the calibration: TIFFs of any dtype;
    ``Q`` marks an axis the file does not name; RGB images are refused.

    Raises:
        ImageFormatError: unknown suffix, or the errors of the format's reader.
    """
    array, meta = read_image_meta(path)
    return array, meta.axes
