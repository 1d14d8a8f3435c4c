"""TIFF image I/O with explicit axes and one error type for bad files.

Files are written as ImageJ hyperstacks when ImageJ can hold them (dtype uint8, uint16
or float32 and axes in ImageJ's ``TZCYX`` order) and as OME-TIFF otherwise; both carry
the axes string, which :func:`axes_of` reads back. Reading checks the TIFF structure
against the file size first, so a truncated file is reported instead of being read as a
shorter (or zero-filled) image.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            if offset + count > size:
                raise ImageFormatError(
                    f"{name}: truncated TIFF (image data ends at byte {offset + count}, "
                    f"file has {size} bytes)"
                )
    if not tif.series:
        raise ImageFormatError(f"{name}: TIFF file holds no image")
    return tif.series[0]


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
        ImageFormatError: the file is missing, unreadable, truncated or corrupt, or its
            dtype or number of dimensions is not the expected one. The message names the
            file and states what was expected and what was found.
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
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageFormatError(f"{name}: no such file")
    try:
        _check_tiff_structure(path)
        with tifffile.TiffFile(path) as tif:
            return str(_open_series(path, tif).axes)
    except ImageFormatError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"{name}: unreadable TIFF ({type(exc).__name__}: {exc})") from exc


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
    axes: str = "TYX",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write an image with its axes, atomically.

    The file is an ImageJ hyperstack when ImageJ supports the dtype and axes order, an
    OME-TIFF otherwise. It is written to a hidden temporary file in the same directory,
    flushed to disk and moved over ``path`` with ``os.replace``, so ``path`` is either
    untouched or complete.

    Args:
        path: destination file.
        array: image; integer or float dtype, one dimension per letter of ``axes``.
        axes: axes string such as ``"YX"``, ``"TYX"``, ``"CYX"``, ``"TZCYX"``.
        metadata: extra ImageJ / OME metadata (e.g. ``{"spacing": 0.2, "unit": "um"}``).

    Raises:
        ValueError: the array or axes cannot be written (nothing is created).
    """
    array = np.asarray(array)
    _validate_for_writing(array, axes)
    metadata = dict(metadata or {})
    if metadata.setdefault("axes", axes) != axes:
        raise ValueError(f"metadata axes {metadata['axes']!r} differ from axes {axes!r}")
    if _is_imagej_compatible(array, axes):
        format_kwargs: dict[str, Any] = {"imagej": True}
    else:
        format_kwargs = {"ome": True}

    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as fh:
            tifffile.imwrite(fh, array, metadata=metadata, **format_kwargs)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
