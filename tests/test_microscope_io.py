"""TIFF I/O tests for fluorofpga.microscope.io: round trips, bad files, atomic writes."""

import numpy as np
import pytest
import tifffile

import fluorofpga.microscope.io as mio
from fluorofpga.microscope import ImageFormatError, axes_of, read_tiff, write_tiff


def stack(shape=(3, 32, 40), dtype=np.uint16) -> np.ndarray:
    return (np.arange(np.prod(shape)) % 4093).astype(dtype).reshape(shape)


@pytest.mark.parametrize(
    ("axes", "array"),
    [
        ("TYX", stack()),
        ("YX", stack()[0]),
        ("CYX", stack()),
        ("TYX", stack().astype(np.float32)),  # ImageJ float
        ("TYX", stack().astype(np.uint32)),  # not ImageJ: OME-TIFF
        ("ZTYX", stack((2, 3, 16, 8))),  # not ImageJ order: OME-TIFF
    ],
)
def test_round_trip_keeps_values_dtype_and_axes(tmp_path, axes, array):
    path = tmp_path / "img.tif"
    write_tiff(path, array, axes=axes)
    assert axes_of(path) == axes
    back = read_tiff(path, dtype=array.dtype, ndim=array.ndim)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_imagej_metadata_is_readable_by_tifffile(tmp_path):
    path = tmp_path / "img.tif"
    write_tiff(path, stack(), axes="TYX", metadata={"finterval": 0.5})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["frames"] == 3
        assert tif.imagej_metadata["finterval"] == pytest.approx(0.5)


def test_big_endian_file_reads_as_native_uint16(tmp_path):
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, stack(), byteorder=">", photometric="minisblack")
    back = read_tiff(path)
    assert back.dtype == np.dtype(np.uint16)
    np.testing.assert_array_equal(back, stack())


def test_truncated_file_raises(tmp_path):
    path = tmp_path / "cells.tif"
    write_tiff(path, stack())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFormatError, match="cells.tif"):
        read_tiff(path)
    with pytest.raises(ImageFormatError):
        axes_of(path)


@pytest.mark.parametrize("imagej", [True, False])
def test_any_truncation_raises_or_returns_the_complete_image(tmp_path, imagej):
    # tifffile alone silently returns one frame of a half-file: check every cut point.
    full = tmp_path / "full.tif"
    array = stack((3, 16, 16))
    if imagej:
        write_tiff(full, array)
    else:
        tifffile.imwrite(full, array, photometric="minisblack")  # plain multi-page TIFF
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    raised = 0
    for n in range(0, len(data), 5):
        cut.write_bytes(data[:n])
        try:
            back = read_tiff(cut)
        except ImageFormatError:
            raised += 1
            continue
        np.testing.assert_array_equal(back, array)  # only unreferenced tail bytes were cut
    assert raised >= len(range(0, len(data), 5)) - 4


def test_wrong_dtype_names_file_expected_and_found(tmp_path):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5, 6), np.float32), photometric="minisblack")
    with pytest.raises(ImageFormatError) as info:
        read_tiff(path)
    message = str(info.value)
    for part in ("cells.tif", "uint16", "YX or TYX", "float32", "(3, 4, 5, 6)"):
        assert part in message


def test_wrong_ndim_missing_and_non_tiff_files_raise(tmp_path):
    path = tmp_path / "vol.tif"
    write_tiff(path, stack((2, 2, 8, 8)), axes="TCYX")
    with pytest.raises(ImageFormatError, match="found uint16 with shape"):
        read_tiff(path)
    assert read_tiff(path, ndim=4).shape == (2, 2, 8, 8)
    with pytest.raises(ImageFormatError, match="no such file"):
        read_tiff(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image")
    with pytest.raises(ImageFormatError, match="not a TIFF"):
        read_tiff(text)
    assert issubclass(ImageFormatError, ValueError)


@pytest.mark.parametrize(
    ("array", "axes"),
    [
        (stack(), "YX"),  # axes do not match ndim
        (stack(), "TXY"),  # does not end in YX
        (np.array([["a"]], dtype=object), "YX"),
        (np.zeros((0, 4), np.uint16), "YX"),
    ],
)
def test_invalid_array_writes_nothing(tmp_path, array, axes):
    with pytest.raises(ValueError):
        write_tiff(tmp_path / "out.tif", array, axes=axes)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    write_tiff(path, stack())
    before = path.read_bytes()

    def broken_imwrite(fh, *args, **kwargs):
        fh.write(b"II*\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(mio.tifffile, "imwrite", broken_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(path, stack() + 1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_metadata_axes_must_agree(tmp_path):
    with pytest.raises(ValueError, match="axes"):
        write_tiff(tmp_path / "x.tif", stack(), axes="TYX", metadata={"axes": "ZYX"})
    assert list(tmp_path.iterdir()) == []
