"""TIFF I/O tests for fluorofpga.microscope.io: round trips, bad files, atomic writes."""

import os

import numpy as np
import pytest
import tifffile

import fluorofpga.microscope.io as mio
from fluorofpga.microscope import (
    ImageFormatError,
    ImageMeta,
    OutputError,
    axes_of,
    check_output,
    read_image,
    read_image_meta,
    read_tiff,
    write_ome_zarr,
    write_tiff,
)


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


def test_a_tiff_of_zero_frames_is_called_empty_not_truncated(tmp_path):
    path = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):  # tifffile: zero-size arrays are nonconformant
        tifffile.imwrite(path, np.zeros((0, 64, 64), np.uint16))
    with pytest.raises(ImageFormatError, match="empty.tif: the TIFF holds no pixels"):
        read_tiff(path)


def test_a_file_of_several_image_series_is_refused_not_read_in_part(tmp_path):
    """Stage positions saved as series of one OME-TIFF: reading the first would silently
    drop the others. A reduced-resolution thumbnail is no image of its own."""
    from fluorofpga.microscope import read_image_meta

    rng = np.random.default_rng(0)
    a = rng.integers(100, 200, (2, 40, 48)).astype(np.uint16)
    path = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(a, metadata={"axes": "TYX"})
        w.write(a[:, :30], metadata={"axes": "TYX"})
    for read in (read_tiff, read_image_meta, axes_of):
        with pytest.raises(ImageFormatError, match=r"2 image series .*\(2, 40, 48\)"):
            read(path)
    thumb = tmp_path / "with_thumbnail.tif"
    with tifffile.TiffWriter(thumb) as w:
        w.write(a, photometric="minisblack", metadata={"axes": "TYX"})
        w.write(a[0, ::4, ::4], subfiletype=1)  # FILETYPE_REDUCEDIMAGE
    np.testing.assert_array_equal(read_image_meta(thumb)[0], a)


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


# ------------------------------------------------------------- physical metadata (ImageMeta)


def assert_same_calibration(got: ImageMeta, want: ImageMeta, *, z: bool = True, t: bool = True):
    assert got.axes == want.axes
    assert got.pixel_size_um == pytest.approx(want.pixel_size_um, rel=1e-6)
    if z:
        assert got.z_step_um == pytest.approx(want.z_step_um, rel=1e-6)
    if t:
        assert got.frame_interval_s == pytest.approx(want.frame_interval_s, rel=1e-9)


@pytest.mark.parametrize(
    ("axes", "array"),
    [
        ("TYX", stack((3, 64, 64))),  # ImageJ
        ("ZYX", stack((3, 64, 64))),  # ImageJ
        ("CYX", stack((2, 64, 64)).astype(np.float32)),  # ImageJ float
        ("TYX", stack((3, 64, 64)).astype(np.uint32)),  # OME-TIFF
        ("TZYX", stack((2, 3, 64, 64)).astype(np.int16)),  # OME-TIFF
    ],
)
def test_tiff_round_trip_keeps_axes_pixel_size_units_and_interval(tmp_path, axes, array):
    meta = ImageMeta(axes, pixel_size_y=0.065, pixel_size_x=0.07, spatial_unit="µm",
                     z_step=0.25, frame_interval=40.0, time_unit="ms")  # fmt: skip
    write_tiff(tmp_path / "a.tif", array, meta=meta)
    back, got = read_image_meta(tmp_path / "a.tif")
    np.testing.assert_array_equal(back, array)
    assert_same_calibration(got, meta)
    assert got.spatial_unit == "micrometer"


@pytest.mark.parametrize("axes", ["TYX", "ZYX", "TZYX", "YX"])
def test_ome_zarr_round_trip_keeps_calibration_of_its_axes(tmp_path, axes):
    pytest.importorskip("zarr")
    array = stack((2, 3, 64, 64)[-len(axes):])
    meta = ImageMeta(axes, pixel_size_y=65.0, pixel_size_x=65.0, spatial_unit="nm",
                     z_step=250.0 if "Z" in axes else None,
                     frame_interval=0.5 if "T" in axes else None)  # fmt: skip
    write_ome_zarr(tmp_path / "a.ome.zarr", array, meta=meta)
    back, got = read_image_meta(tmp_path / "a.ome.zarr")
    np.testing.assert_array_equal(back, array)
    assert got == meta  # NGFF keeps the values and units exactly


def test_ome_zarr_written_by_ome_zarr_py_is_read_at_full_resolution(tmp_path):
    """A store from the reference library (ome-zarr-py ``write_image``: NGFF 0.5, a
    five-level pyramid, its own dataset names, no units): level 0 with its axes."""
    pytest.importorskip("zarr")
    writer = pytest.importorskip("ome_zarr.writer")
    import zarr

    array = stack((2, 64, 80))
    root = zarr.open_group(tmp_path / "ref.zarr", mode="w")
    writer.write_image(array, root, axes="cyx")
    assert len(root.attrs["ome"]["multiscales"][0]["datasets"]) > 1  # a pyramid
    back, got = read_image_meta(tmp_path / "ref.zarr")
    np.testing.assert_array_equal(back, array)
    assert got.axes == "CYX"
    # a chunk lost from such a store (another writer: no completeness flag of ours) would
    # read as zeros and be restored into plausible counts: refused, named
    level0 = root.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
    chunk = next(p for p in sorted((tmp_path / "ref.zarr" / level0).rglob("*"))
                 if p.is_file() and p.name != "zarr.json" and not p.name.startswith("."))
    chunk.unlink()
    with pytest.raises(ImageFormatError, match=r"ref.zarr: 1 of \d+ chunks .* not stored"):
        read_image_meta(tmp_path / "ref.zarr")


def test_image_meta_units_validation_and_helpers():
    meta = ImageMeta("TYX", 0.1, 0.1, "micron", None, 2.0, "min")
    assert meta.spatial_unit == "micrometer" and meta.time_unit == "minute"
    assert meta.frame_interval_s == 120.0
    assert meta.upscaled(2).pixel_size_um == pytest.approx((0.05, 0.05))
    assert meta.with_axes("YX").axes == "YX"
    assert ImageMeta("YX").pixel_size_um is None
    assert ImageMeta("YX", 1.0, 1.0, "\\u00B5m").spatial_unit == "micrometer"  # ImageJ escape
    with pytest.raises(ValueError, match="unknown spatial unit"):
        ImageMeta("YX", 1.0, 1.0, "parsec")
    with pytest.raises(ValueError, match="positive"):
        ImageMeta("YX", -1.0, 1.0)
    with pytest.raises(ValueError, match="axes"):
        ImageMeta("tyx")
    with pytest.raises(ValueError, match="meta.axes"):
        write_tiff("never.tif", stack(), axes="ZYX", meta=ImageMeta("TYX"))


def test_calibration_of_files_written_by_other_software(tmp_path):
    # ImageJ as Fiji writes it: unit in the description, pixels per unit in the tags
    tifffile.imwrite(tmp_path / "ij.tif", stack((4, 64, 64)), imagej=True,
                     resolution=(1 / 0.108, 1 / 0.108),
                     metadata={"axes": "ZYX", "unit": "\\u00B5m", "spacing": 0.5})  # fmt: skip
    _, meta = read_image_meta(tmp_path / "ij.tif")
    assert meta.axes == "ZYX"
    assert meta.pixel_size_um == pytest.approx((0.108, 0.108), rel=1e-6)
    assert meta.z_step_um == pytest.approx(0.5)
    # OME-TIFF in nanometres and milliseconds
    tifffile.imwrite(tmp_path / "ome.tif", stack((4, 64, 64)), ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 108.0, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 108.0, "PhysicalSizeYUnit": "nm",
                               "TimeIncrement": 50.0, "TimeIncrementUnit": "ms"})  # fmt: skip
    _, meta = read_image_meta(tmp_path / "ome.tif")
    assert meta.axes == "TYX" and meta.pixel_size_um == pytest.approx((0.108, 0.108))
    assert meta.frame_interval_s == pytest.approx(0.05)
    # plain TIFF: centimetre resolution is a pixel size, inch resolution is a display DPI
    tifffile.imwrite(tmp_path / "cm.tif", stack((64, 64)), resolution=(1e4 / 6.5, 1e4 / 6.5),
                     resolutionunit="CENTIMETER")  # fmt: skip
    assert read_image_meta(tmp_path / "cm.tif")[1].pixel_size_um == pytest.approx((6.5, 6.5))
    tifffile.imwrite(tmp_path / "dpi.tif", stack((64, 64)), resolution=(72, 72),
                     resolutionunit="INCH")  # fmt: skip
    assert read_image_meta(tmp_path / "dpi.tif")[1].pixel_size_um is None


# ---------------------------------------------------------------------- axes of 3-D inputs


def test_rgb_images_are_refused_with_the_axes_found(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(ImageFormatError, match=r"rgb.tif: RGB.*'YXS'"):
        read_image_meta(tmp_path / "rgb.tif")
    with pytest.raises(ImageFormatError, match="YXS"):
        read_tiff(tmp_path / "rgb.tif")  # no longer read as 64 frames of 64x3
    with pytest.raises(ImageFormatError, match="RGB"):
        read_image(tmp_path / "rgb.tif")
    # three frames written without photometric: tifffile stores (and reports) planar RGB
    with pytest.warns(DeprecationWarning):
        tifffile.imwrite(tmp_path / "planar.tif", np.zeros((3, 64, 64), np.uint16))
    with pytest.raises(ImageFormatError, match="SYX") as info:
        read_image_meta(tmp_path / "planar.tif")
    assert "photometric='minisblack'" in str(info.value)  # how to save frames instead
    with pytest.warns(DeprecationWarning):  # the same, two of them: the hint too
        tifffile.imwrite(tmp_path / "planar4d.tif", np.zeros((2, 3, 64, 64), np.uint16))
    with pytest.raises(ImageFormatError, match="QSYX.*photometric='minisblack'"):
        read_image_meta(tmp_path / "planar4d.tif")
    with pytest.raises(ImageFormatError) as info:
        read_image_meta(tmp_path / "rgb.tif")
    assert "minisblack" not in str(info.value)  # real RGB pixels: no such hint


@pytest.mark.parametrize("axes", ["ZYX", "CYX", "TYX"])
@pytest.mark.parametrize("flavour", ["imagej", "ome", "ours"])
def test_labelled_3d_axes_come_back_as_labelled(tmp_path, axes, flavour):
    path = tmp_path / "s.tif"
    if flavour == "ours":
        write_tiff(path, stack((5, 64, 64)), axes=axes)
    else:
        tifffile.imwrite(path, stack((5, 64, 64)), metadata={"axes": axes},
                         **{flavour: True})  # fmt: skip
    assert read_image_meta(path)[1].axes == axes
    assert read_image(path)[1] == axes


def test_3d_file_without_axis_information_is_qyx(tmp_path):
    tifffile.imwrite(tmp_path / "shaped.tif", stack((5, 64, 64)), photometric="minisblack")
    tifffile.imwrite(tmp_path / "bare.tif", stack((5, 64, 64)), photometric="minisblack",
                     metadata=None)  # fmt: skip
    for name in ("shaped.tif", "bare.tif"):
        array, meta = read_image_meta(tmp_path / name)
        assert meta.axes == "QYX" and array.shape == (5, 64, 64)


# ------------------------------------------------------------------------- check_output


def test_check_output_accepts_a_new_file_and_refuses_a_missing_folder(tmp_path):
    check_output(tmp_path / "new.tif", overwrite=False)
    with pytest.raises(OutputError, match="does not exist; create it first"):
        check_output(tmp_path / "missing" / "new.tif")
    assert issubclass(OutputError, ValueError)


def test_check_output_existing_file_or_store_needs_overwrite(tmp_path):
    (tmp_path / "old.tif").write_bytes(b"results")
    with pytest.raises(OutputError, match="old.tif exists.*--overwrite"):
        check_output(tmp_path / "old.tif", overwrite=False)
    check_output(tmp_path / "old.tif", overwrite=True)
    store = tmp_path / "old.zarr"
    store.mkdir()
    (store / ".zgroup").write_text("{}")
    with pytest.raises(OutputError, match="old.zarr exists"):
        check_output(store, overwrite=False)
    check_output(store, overwrite=True)
    folder = tmp_path / "photos.zarr"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(OutputError, match="not a Zarr store"):
        check_output(folder, overwrite=True)
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(OutputError, match="folder"):
        check_output(tmp_path / "dir.tif", overwrite=True)
    assert (tmp_path / "old.tif").read_bytes() == b"results"


def test_check_output_refuses_the_inputs_even_with_overwrite(tmp_path):
    dark = tmp_path / "dark.tif"
    dark.write_bytes(b"frames")
    for out in (dark, tmp_path / "." / "dark.tif"):
        with pytest.raises(OutputError, match="overwrite the input"):
            check_output(out, overwrite=True, inputs=[dark])
    (tmp_path / "link.tif").symlink_to(dark)
    with pytest.raises(OutputError, match="input"):
        check_output(tmp_path / "link.tif", overwrite=True, inputs=[dark])
    os.link(dark, tmp_path / "hard.tif")
    with pytest.raises(OutputError, match="input"):
        check_output(tmp_path / "hard.tif", overwrite=True, inputs=[dark])
    store = tmp_path / "in.zarr"
    store.mkdir()
    with pytest.raises(OutputError, match="input"):
        check_output(store / "0", overwrite=True, inputs=[store])  # inside the input
    with pytest.raises(OutputError, match="input"):
        check_output(tmp_path, overwrite=True, inputs=[dark])  # would delete the input
    assert dark.read_bytes() == b"frames"


def test_check_output_refuses_an_unwritable_folder(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:  # root (and some file systems) ignore the permission bits
            (folder / "probe").write_bytes(b"")
        except PermissionError:
            pass
        else:
            pytest.skip("this user can write into a read-only folder (root?)")
        with pytest.raises(OutputError, match="cannot write in the folder"):
            check_output(folder / "out.tif")
    finally:
        folder.chmod(0o755)


def test_check_output_tries_to_write_for_real(tmp_path, monkeypatch):
    # the same refusal whatever the reason the folder cannot take a file (read-only mount,
    # full quota): runs as root too, where chmod cannot simulate it
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mio.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=r"cannot write in the folder .*Permission denied"):
        check_output(tmp_path / "out.tif")


# ----------------------------------------------------------------------- damaged Zarr stores


def _store_with_chunks(tmp_path):
    pytest.importorskip("zarr")
    array = stack((3, 64, 64))
    array[1] = 0  # an all-zero plane is still written as a chunk
    store = tmp_path / "cells.zarr"
    write_ome_zarr(store, array, axes="TYX")
    chunks = sorted(p for p in (store / "0").rglob("*") if p.is_file() and p.name[0] != ".")
    assert len(chunks) == 3
    return store, array, chunks


def test_zarr_chunk_with_garbage_is_an_image_format_error(tmp_path):
    store, _, chunks = _store_with_chunks(tmp_path)
    chunks[1].write_bytes(b"\x00garbage" * 7)
    with pytest.raises(ImageFormatError, match=r"cells.zarr: damaged OME-Zarr store"):
        read_image_meta(store)


def test_deleted_zarr_chunk_is_reported_not_read_as_zeros(tmp_path):
    store, array, chunks = _store_with_chunks(tmp_path)
    np.testing.assert_array_equal(read_image(store)[0], array)
    chunks[2].unlink()
    with pytest.raises(ImageFormatError, match=r"cells.zarr: .*1 of 3 chunks .* missing"):
        read_image(store)


def test_failed_zarr_write_leaves_nothing_and_keeps_the_old_store(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    store = tmp_path / "out.zarr"
    write_ome_zarr(store, stack(), axes="TYX")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(mio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_ome_zarr(store, stack() + 1, axes="TYX", overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        write_ome_zarr(tmp_path / "new.zarr", stack(), axes="TYX")
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(store)[0], stack())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_an_ome_tif_name_gets_an_ome_tiff_with_its_calibration(tmp_path):
    """A user who names the output ``.ome.tif`` gets OME-TIFF (it was once ImageJ under
    that name), with pixel size and frame interval, read back the same."""
    from fluorofpga.microscope import read_image_meta

    meta = ImageMeta("TYX", 0.108, 0.108, "micron", None, 0.05, "s")
    write_tiff(tmp_path / "cells.ome.tif", stack(), meta=meta)
    with tifffile.TiffFile(tmp_path / "cells.ome.tif") as tif:
        assert tif.is_ome and not tif.is_imagej
    back, got = read_image_meta(tmp_path / "cells.ome.tif")
    np.testing.assert_array_equal(back, stack())
    assert got.axes == "TYX" and got.pixel_size_um == pytest.approx((0.108, 0.108))
    assert got.frame_interval_s == pytest.approx(0.05)
