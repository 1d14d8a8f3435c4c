"""TiffSink: frame-by-frame TIFF writing, flat memory, partial files, calibration metadata.

Runs in the board environment too (numpy 1.x, no torch or zarr).
"""

import gc
import tracemalloc
import weakref

import numpy as np
import pytest
import tifffile

from fluorofpga.host import StreamPipeline, TiffSink
from fluorofpga.host.sinks import KeepOpen, partial_path
from fluorofpga.microscope import ImageMeta, OutputError, read_image_meta, read_tiff

SHAPE = (64, 64)
META = ImageMeta("TYX", pixel_size_y=0.108, pixel_size_x=0.108, frame_interval=20.0,
                 time_unit="ms")  # fmt: skip


def frame(k: int, shape=SHAPE) -> np.ndarray:
    return ((np.arange(shape[0] * shape[1]) + 37 * k) % 4096).astype(np.uint16).reshape(shape)


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("expected", "bigtiff"), [(5, False), (None, True)])
def test_sink_writes_a_tyx_stack_with_its_calibration(tmp_path, expected, bigtiff):
    out = tmp_path / "restored.tif"
    with TiffSink(out, META, expected_frames=expected) as sink:
        for k in range(5):
            sink.write(10 + k, frame(k))
        assert partial_path(out).exists() and not out.exists()  # under way: marked partial
    assert listing(tmp_path) == ["restored.tif"]
    assert list(sink.indices) == [10, 11, 12, 13, 14] and sink.frames_written == 5
    array, meta = read_image_meta(out)
    np.testing.assert_array_equal(array, np.stack([frame(k) for k in range(5)]))
    assert meta.axes == "TYX"
    assert meta.pixel_size_um == pytest.approx((0.108, 0.108), rel=1e-6)
    assert meta.frame_interval_s == pytest.approx(0.02)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff == bigtiff
        assert tif.is_imagej == (not bigtiff) and tif.is_ome == bigtiff  # ImageJ or OME


def test_sink_without_meta_and_of_one_frame(tmp_path):
    with TiffSink(tmp_path / "one.tif", expected_frames=1) as sink:
        sink.write(0, frame(3))
    np.testing.assert_array_equal(read_tiff(tmp_path / "one.tif"), frame(3))
    with TiffSink(tmp_path / "f.tif", bigtiff=False, dtype="float32") as sink:
        for k in range(3):
            sink.write(k, frame(k).astype(np.float32))
    back, meta = read_image_meta(tmp_path / "f.tif")
    assert back.dtype == np.float32 and back.shape == (3, *SHAPE) and meta.axes == "TYX"
    assert meta.pixel_size_um is None and meta.frame_interval_s is None


def test_sink_memory_stays_flat_and_keeps_no_frames(tmp_path):
    n = 400  # 3.2 MB of frames
    sink = TiffSink(tmp_path / "long.tif", expected_frames=n)
    probe = frame(0)
    sink.write(0, probe)
    reference = weakref.ref(probe)
    del probe
    gc.collect()
    assert reference() is None  # the sink holds no reference to a written frame
    for k in range(1, 10):
        sink.write(k, frame(k))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(10, n):
            sink.write(k, frame(k))
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 40 * frame(0).nbytes, f"memory grew by {growth} bytes over {n - 10} frames"
    sink.close()
    assert read_tiff(tmp_path / "long.tif").shape == (n, *SHAPE)


def test_aborted_sink_leaves_a_marked_partial_file_and_no_final_file(tmp_path):
    out = tmp_path / "restored.tif"
    with pytest.raises(RuntimeError, match="camera unplugged"):
        with TiffSink(out, META, expected_frames=10) as sink:
            for k in range(3):
                sink.write(k, frame(k))
            raise RuntimeError("camera unplugged")
    assert not out.exists()
    assert listing(tmp_path) == ["restored.partial.tif"]
    assert sink.closed
    sink.close()  # a later close() does not complete an aborted file
    assert not out.exists()
    # the partial file holds the frames written so far
    partial = tifffile.imread(tmp_path / "restored.partial.tif")
    np.testing.assert_array_equal(partial[:3].reshape(3, *SHAPE), [frame(k) for k in range(3)])


def test_abort_before_any_frame_leaves_nothing_and_keeps_an_old_result(tmp_path):
    out = tmp_path / "restored.tif"
    out.write_bytes(b"previous complete result")
    sink = TiffSink(out, overwrite=True)
    sink.abort()
    assert listing(tmp_path) == ["restored.tif"]
    sink = TiffSink(out, overwrite=True)
    sink.write(0, frame(0))
    sink.abort()
    assert out.read_bytes() == b"previous complete result"  # never replaced by a partial


def test_existing_outputs_are_refused_without_overwrite(tmp_path):
    out = tmp_path / "restored.tif"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="restored.tif exists"):
        TiffSink(out)
    out.unlink()
    partial_path(out).write_bytes(b"frames of an interrupted run")
    with pytest.raises(OutputError, match="interrupted run"):
        TiffSink(out)
    with TiffSink(out, overwrite=True) as sink:
        sink.write(0, frame(0))
    assert listing(tmp_path) == ["restored.tif"]
    with pytest.raises(ValueError, match="uint16"):
        TiffSink(tmp_path / "x.tif", dtype="int64")


def test_pipeline_failure_with_keep_open_leaves_only_the_partial_file(tmp_path):
    out = tmp_path / "restored.tif"
    sink = TiffSink(out, expected_frames=6)

    def process(image):
        if image[0, 0] == frame(3)[0, 0]:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the stream
        return image

    source = ((k, frame(k)) for k in range(6))
    with pytest.raises(KeyboardInterrupt):
        try:
            StreamPipeline(source, process, KeepOpen(sink), drop_policy="block").run()
        except BaseException:
            sink.abort()
            raise
    assert listing(tmp_path) == ["restored.partial.tif"]
    assert sink.frames_written == 3


# -- OME-Zarr -----------------------------------------------------------------------------


def _needs_ome_zarr():
    for module in ("zarr", "ome_zarr"):
        pytest.importorskip(module, reason=f"{module} is not installed (the board environment "
                            "writes TIFF; `pip install fluorofpga[zarr]`)")


def test_ome_zarr_sink_appends_frames_readable_by_ome_zarr_and_fluorofpga(tmp_path):
    _needs_ome_zarr()
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from fluorofpga.host import OmeZarrSink

    out = tmp_path / "restored.ome.zarr"
    sink = OmeZarrSink(out, META)
    for k in range(4):
        sink.write(20 + k, frame(k))
        partial = tmp_path / "restored.ome.partial.zarr"
        assert partial.is_dir() and not out.exists()  # under way: marked partial
        # chunk by chunk: the frames written so far are on disk already
        np.testing.assert_array_equal(read_image_meta(partial)[0][k], frame(k))
    sink.close()
    assert listing(tmp_path) == ["restored.ome.zarr"]
    array, meta = read_image_meta(out)  # fluorofpga's reader
    np.testing.assert_array_equal(array, np.stack([frame(k) for k in range(4)]))
    assert meta.axes == "TYX" and meta.pixel_size_um == pytest.approx((0.108, 0.108))
    assert meta.frame_interval_s == pytest.approx(0.02)
    node = next(iter(Reader(parse_url(str(out)))()))  # ome-zarr's reader
    np.testing.assert_array_equal(np.asarray(node.data[0]), array)
    assert [a["name"] for a in node.metadata["axes"]] == ["t", "y", "x"]
    import zarr

    attrs = zarr.open_group(str(out), mode="r").attrs["fluorofpga"]
    assert attrs["complete"] is True and attrs["frame_indices"] == [20, 21, 22, 23]


def test_interrupted_ome_zarr_sink_leaves_a_marked_partial_store(tmp_path):
    _needs_ome_zarr()
    import zarr

    from fluorofpga.host import OmeZarrSink

    out = tmp_path / "live.zarr"
    source = ((k, frame(k)) for k in range(6))

    def process(image):
        if image[0, 0] == frame(3)[0, 0]:
            raise KeyboardInterrupt
        return image

    with pytest.raises(KeyboardInterrupt):
        StreamPipeline(source, process, OmeZarrSink(out), drop_policy="block").run()
    assert listing(tmp_path) == ["live.partial.zarr"]
    partial = tmp_path / "live.partial.zarr"
    attrs = zarr.open_group(str(partial), mode="r").attrs["fluorofpga"]
    assert attrs["complete"] is False and attrs["frame_indices"] == [0, 1, 2]
    np.testing.assert_array_equal(read_image_meta(partial)[0],
                                  np.stack([frame(k) for k in range(3)]))
    with pytest.raises(OutputError, match="interrupted run"):
        OmeZarrSink(out)
    with OmeZarrSink(out, overwrite=True) as sink:
        sink.write(0, frame(0))
    assert listing(tmp_path) == ["live.zarr"]
    (tmp_path / "notzarr.zarr").mkdir()
    (tmp_path / "notzarr.zarr" / "keep.txt").write_text("user data")
    with pytest.raises(OutputError, match="not a Zarr store"):
        OmeZarrSink(tmp_path / "notzarr.zarr", overwrite=True)
    with pytest.raises(OutputError, match="exists"):
        OmeZarrSink(out)


def test_open_sink_picks_the_sink_from_the_name(tmp_path):
    from fluorofpga.host import open_sink

    sink = open_sink(tmp_path / "a.tif")
    assert isinstance(sink, TiffSink)
    sink.abort()
    with pytest.raises(ValueError, match="unknown sink"):
        open_sink(tmp_path / "a.png")


# -- background writing -------------------------------------------------------------------


def test_background_sink_writes_on_its_own_thread_behind_a_bounded_queue():
    import threading

    from fluorofpga.host import MemorySink
    from fluorofpga.host.sinks import BackgroundSink

    release = threading.Event()
    threads = []

    class Gated(MemorySink):
        def write(self, index, image):
            threads.append(threading.current_thread().name)
            release.wait(5)
            super().write(index, image)

    inner = Gated()
    sink = BackgroundSink(inner, queue_size=2)
    for k in range(3):  # one being written (held), two queued: none of these waits
        sink.write(k, frame(k))
    assert inner.indices == []  # handed over, not written yet
    blocked = threading.Thread(target=sink.write, args=(3, frame(3)))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # the queue is full: the stream waits, nothing is dropped
    release.set()
    blocked.join(5)
    sink.close()
    assert inner.closed and inner.indices == [0, 1, 2, 3]
    assert set(threads) == {"fluorofpga-sink"} and sink.writes == 4
    assert sink.write_ms_mean > 0


def test_background_sink_reports_writer_errors_and_keeps_partial_output(tmp_path):
    from fluorofpga.host.sinks import BackgroundSink

    out = tmp_path / "restored.tif"
    sink = BackgroundSink(TiffSink(out), queue_size=1)
    sink.write(0, frame(0))
    sink.write(1, frame(1).astype(np.float32))  # the TIFF sink refuses it on its thread
    with pytest.raises(ValueError, match="float32"):
        for k in range(2, 10):
            sink.write(k, frame(k))
    sink.abort()
    assert listing(tmp_path) == ["restored.partial.tif"]
    # abort writes what was handed over before aborting
    out2 = tmp_path / "b.tif"
    sink = BackgroundSink(TiffSink(out2), queue_size=4)
    for k in range(4):
        sink.write(k, frame(k))
    sink.abort()
    assert sink.sink.frames_written == 4 and partial_path(out2).exists() and not out2.exists()
    # a pipeline through a background sink: complete and identical
    out3 = tmp_path / "c.tif"
    StreamPipeline(((k, frame(k)) for k in range(5)), lambda f: f,
                   BackgroundSink(TiffSink(out3)), drop_policy="block").run()
    np.testing.assert_array_equal(read_tiff(out3), np.stack([frame(k) for k in range(5)]))
