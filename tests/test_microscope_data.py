"""OME-Zarr I/O, read_image dispatch, simulated datasets and TIFF folder datasets."""

import sys

import numpy as np
import pytest

from fluorofpga.microscope.datasets import TiffFolderDataset, simulated_pairs_at
from fluorofpga.microscope.io import (
    ImageFormatError,
    ome_zarr_metadata,
    read_image,
    read_ome_zarr,
    write_ome_zarr,
    write_tiff,
)


@pytest.fixture
def zarr():
    return pytest.importorskip("zarr")


def ramp(shape, dtype=np.uint16) -> np.ndarray:
    return (np.arange(np.prod(shape)) % 5000).astype(dtype).reshape(shape)


# --------------------------------------------------------------------------- OME-Zarr


@pytest.mark.parametrize(
    ("axes", "shape", "dtype"),
    [("YX", (30, 40), np.uint16), ("TYX", (3, 300, 20), np.float32),
     ("TCZYX", (2, 2, 3, 8, 9), np.int32)],
)  # fmt: skip
def test_ome_zarr_round_trip_keeps_values_axes_and_scale(zarr, tmp_path, axes, shape, dtype):
    array = ramp(shape, dtype)
    path = tmp_path / "img.ome.zarr"
    sizes = {"Y": 0.065, "X": 0.07, **({"Z": 0.3} if "Z" in axes else {})}
    assert write_ome_zarr(path, array, axes=axes, pixel_size_um=sizes, metadata={"k": 1}) == axes
    back, back_axes = read_ome_zarr(path)
    assert back_axes == axes and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    meta = ome_zarr_metadata(path)
    assert meta["scale"]["Y"] == 0.065 and meta["scale"]["X"] == 0.07
    assert meta["units"]["X"] == "micrometer" and meta["metadata"] == {"k": 1}
    if "T" in axes:
        assert meta["scale"]["T"] == 1.0 and "T" not in meta["units"]
    # NGFF 0.4 layout that other readers rely on
    group = zarr.open_group(str(path), mode="r")
    ms = group.attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == list(axes.lower())
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][-1] == 0.07


def test_ome_zarr_stores_axes_in_ngff_order(zarr, tmp_path):
    array = ramp((2, 3, 8, 9))  # CTYX
    assert write_ome_zarr(tmp_path / "a.zarr", array, axes="CTYX") == "TCYX"
    back, axes = read_image(tmp_path / "a.zarr")
    assert axes == "TCYX"
    np.testing.assert_array_equal(back, array.transpose(1, 0, 2, 3))


def test_ome_zarr_errors(zarr, tmp_path):
    array = ramp((3, 8, 9))
    with pytest.raises(ImageFormatError, match="3 dimensions"):
        write_ome_zarr(tmp_path / "a.zarr", array, axes="YX")
    with pytest.raises(ImageFormatError, match="distinct letters"):
        write_ome_zarr(tmp_path / "a.zarr", array, axes="QYX")
    with pytest.raises(ImageFormatError, match="end with 'YX'"):
        write_ome_zarr(tmp_path / "a.zarr", array, axes="YXT")
    with pytest.raises(ImageFormatError, match="> 0"):
        write_ome_zarr(tmp_path / "a.zarr", array, axes="TYX", pixel_size_um=-1)
    assert not (tmp_path / "a.zarr").exists()
    write_ome_zarr(tmp_path / "a.zarr", array)
    with pytest.raises(FileExistsError):
        write_ome_zarr(tmp_path / "a.zarr", array)
    write_ome_zarr(tmp_path / "a.zarr", array[:1], overwrite=True)
    assert read_ome_zarr(tmp_path / "a.zarr")[0].shape == (1, 8, 9)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ImageFormatError, match="not a Zarr store"):
        read_ome_zarr(tmp_path / "folder")
    with pytest.raises(ImageFormatError, match="no such"):
        read_ome_zarr(tmp_path / "missing.zarr")
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(ImageFormatError, match="multiscales"):
        read_ome_zarr(tmp_path / "plain.zarr")
    with pytest.raises(ImageFormatError, match="suffix"):
        read_image(tmp_path / "a.png")


def test_missing_zarr_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r"pip install fluorofpga\[zarr\]"):
        write_ome_zarr(tmp_path / "a.zarr", ramp((8, 9)), axes="YX")


def test_read_image_dispatches_tiff(tmp_path):
    array = ramp((2, 8, 9))
    write_tiff(tmp_path / "s.tif", array, axes="TYX")
    back, axes = read_image(tmp_path / "s.tif")
    assert axes == "TYX"
    np.testing.assert_array_equal(back, array)


# --------------------------------------------------------------------------- datasets


def test_simulated_pairs_at_levels_are_labelled_and_scale_with_photons():
    noisy, clean, levels = simulated_pairs_at([5.0, 200.0], 2, (32, 32), seed=3,
                                              filaments=3, puncta=10, nuclei=0)  # fmt: skip
    assert noisy.shape == clean.shape == (4, 32, 32) and noisy.dtype == np.uint16
    assert levels.tolist() == [5.0, 5.0, 200.0, 200.0]
    offset = 100.0  # SCMOSCamera default offset, ADU
    peak_signal = clean.max(axis=(1, 2)) - offset
    assert peak_signal[2:].min() > 20 * peak_signal[:2].max()
    again = simulated_pairs_at([5.0], 2, (32, 32), seed=3, filaments=3, puncta=10, nuclei=0)
    np.testing.assert_array_equal(again[0], noisy[:2])  # adding a level keeps the others
    with pytest.raises(ValueError, match="photon_levels"):
        simulated_pairs_at([0.0], 1, (16, 16), seed=0)


@pytest.fixture
def folders(tmp_path):
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    noisy.mkdir()
    clean.mkdir()
    rng = np.random.default_rng(0)
    stacks = {"a.tif": rng.integers(90, 400, (3, 16, 20)), "b.tif": rng.integers(90, 400, (16, 20))}
    for name, data in stacks.items():
        axes = "TYX" if data.ndim == 3 else "YX"
        write_tiff(noisy / name, data.astype(np.uint16), axes=axes)
        write_tiff(clean / name, (data / 2).astype(np.float32), axes=axes)
    return noisy, clean, stacks


def test_tiff_folder_noisy_only_expands_stacks_into_frames(folders):
    noisy, _, stacks = folders
    dataset = TiffFolderDataset(noisy)
    assert len(dataset) == 4 and not dataset.paired
    frames = list(dataset)
    np.testing.assert_array_equal(frames[1], stacks["a.tif"][1])
    np.testing.assert_array_equal(frames[3], stacks["b.tif"])
    np.testing.assert_array_equal(dataset[-1], stacks["b.tif"])
    assert frames[0].dtype == np.float32 and frames[0].shape == (16, 20)
    with pytest.raises(IndexError):
        dataset[4]


def test_tiff_folder_pairs_by_name(folders):
    noisy, clean, stacks = folders
    dataset = TiffFolderDataset(noisy, clean_folder=clean)
    assert dataset.paired and len(dataset) == 4
    n, c = dataset[2]
    np.testing.assert_array_equal(n, stacks["a.tif"][2])
    np.testing.assert_allclose(c, stacks["a.tif"][2] / 2)


def test_tiff_folder_errors(folders, tmp_path):
    noisy, clean, _ = folders
    with pytest.raises(ImageFormatError, match="no such folder"):
        TiffFolderDataset(tmp_path / "missing")
    with pytest.raises(ImageFormatError, match="no files match"):
        TiffFolderDataset(noisy, pattern="*.png")
    write_tiff(noisy / "c.tif", np.zeros((16, 20), np.uint16), axes="YX")
    with pytest.raises(ImageFormatError, match=r"unpaired files: \['c.tif'\]"):
        TiffFolderDataset(noisy, clean_folder=clean)
    write_tiff(clean / "c.tif", np.zeros((16, 21), np.float32), axes="YX")
    with pytest.raises(ImageFormatError, match="differs from clean shape"):
        TiffFolderDataset(noisy, clean_folder=clean)
    write_tiff(noisy / "c.tif", np.zeros((2, 2, 16, 20), np.uint16), axes="TCYX")
    with pytest.raises(ImageFormatError, match="YX image or TYX stack"):
        TiffFolderDataset(noisy)
    write_tiff(noisy / "c.tif", np.full((16, 20), -1.0, np.float32), axes="YX")
    with pytest.raises(ImageFormatError, match="negative"):
        TiffFolderDataset(noisy)[4]
    write_tiff(noisy / "c.tif", np.full((16, 20), np.nan, np.float32), axes="YX")
    with pytest.raises(ImageFormatError, match="NaN"):
        TiffFolderDataset(noisy)[4]
