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
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
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


# ----------------------------------------------------------------------------- OME-Zarr

# NGFF 0.4 orders axes by type: time, channel, then space.
_NGFF_ORDER = "TCZYX"
_NGFF_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_NGFF_UNITS = {"T": "second", "Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
_ZARR_MISSING = "OME-Zarr support needs the zarr package: pip install fluorofpga[zarr]"
_ZARR_CHUNK_YX = 256  # chunk edge in Y and X; other axes are chunked one plane at a time


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
    axes: str = "TYX",
    pixel_size_um: float | Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Write an image as an OME-Zarr store (NGFF 0.4, Zarr format 2, one resolution level).

    Axes are stored in NGFF order (time, channel, then ``ZYX``): the array is transposed
    if ``axes`` is in another order, and the stored axes string is returned. The store
    is written next to ``path`` and renamed into place, so ``path`` is never left half
    written.

    Args:
        path: store directory to create (conventionally ``*.ome.zarr``).
        array: integer or float image, one dimension per letter of ``axes``.
        axes: distinct letters from ``"TCZYX"`` ending in ``"YX"`` (e.g. ``"YX"``,
            ``"TYX"``, ``"CZYX"``).
        pixel_size_um: Y and X pixel size in µm, or a mapping per axis (``{"Z": 0.3,
            "Y": 0.065, "X": 0.065, "T": 0.5}``; ``T`` in seconds). Axes without a size
            get scale 1 and no unit.
        metadata: extra JSON-serialisable attributes, stored under ``"fluorofpga"``.
        overwrite: replace an existing store at ``path`` (only if it is a Zarr store).

    Returns:
        The axes string as stored (NGFF order).

    Raises:
        ImageFormatError: bad axes, dtype, sizes, or ``path`` holds something else.
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
    _check_zarr_axes(axes, array.ndim)
    stored_axes = "".join(letter for letter in _NGFF_ORDER if letter in axes)
    array = np.transpose(array, [axes.index(letter) for letter in stored_axes])
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
            )
        else:  # zarr 2.18
            group = zarr.open_group(str(temporary), mode="w-")
            group.create_dataset("0", data=array, chunks=chunks, dimension_separator="/")
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
        group.attrs["fluorofpga"] = {"axes": stored_axes, **extra}
        if target.exists():
            trash = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
            os.replace(target, trash)
            os.replace(temporary, target)
            shutil.rmtree(trash)
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
    if not Path(path).is_dir():
        raise ImageFormatError(f"{name}: no such OME-Zarr store (expected a directory)")
    if not _looks_like_zarr(Path(path)):
        raise ImageFormatError(f"{name}: not a Zarr store (no .zgroup or zarr.json)")
    try:
        group = zarr.open_group(name, mode="r")
        attrs = dict(group.attrs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
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
        array = np.asarray(group[dataset][...])
    except (KeyError, OSError, ValueError, TypeError) as exc:
        raise ImageFormatError(f"{name}: cannot read array {dataset!r} ({exc})") from exc
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
    return {
        "axes": axes,
        "scale": dict(zip(axes, scale, strict=True)),
        "units": units,
        "metadata": extra,
    }


def read_image(path: PathLike) -> tuple[np.ndarray, str]:
    """Read a TIFF (``.tif``/``.tiff``) or OME-Zarr (``.zarr``) image with its axes.

    TIFFs are read with any dtype and 2–5 dimensions; their axes come from
    :func:`axes_of`.

    Raises:
        ImageFormatError: unknown suffix, or the errors of the format's reader.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return read_tiff(path, dtype=None, ndim=(2, 3, 4, 5)), axes_of(path)
    if suffix == ".zarr":
        return read_ome_zarr(path)
    raise ImageFormatError(
        f"{os.fspath(path)}: unknown image suffix {suffix!r} (expected .tif, .tiff or .zarr)"
    )
