"""Streaming pipeline (drops counted, errors propagate), sources and sinks."""

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from fluorofpga.host import (
    MemorySink,
    SimulatedCameraSource,
    StreamPipeline,
    StreamStats,
    TiffSink,
    TiffStackSource,
)


def _microscope_api():
    try:
        from fluorofpga.microscope import WidefieldMicroscope, read_tiff, write_tiff
    except ImportError as exc:  # the simulator is developed concurrently
        pytest.skip(f"fluorofpga.microscope API not available yet: {exc}")
    return WidefieldMicroscope, read_tiff, write_tiff


def frames(n, shape=(8, 8)):
    for k in range(n):
        yield k, np.full(shape, k, dtype=np.uint16)


def endless_source(closed):
    """A camera that never ends (a frame a millisecond); sets ``closed`` when closed."""

    def endless():
        k = 0
        try:
            while True:
                yield k, np.zeros((4, 4), np.uint16)
                k += 1
                time.sleep(0.001)
        finally:
            closed.set()

    return endless


def slow(seconds):
    def process(frame):
        time.sleep(seconds)
        return frame + 1

    return process


# -- pipeline --------------------------------------------------------------------------------


def test_drop_newest_counts_every_dropped_frame():
    sink = MemorySink()
    calls = []
    stats = StreamPipeline(
        frames(20), slow(0.02), sink, queue_size=1, drop_policy="drop_newest",
        progress=lambda s: calls.append(s.frames_out),
    ).run()
    assert stats.frames_in == 20
    assert stats.dropped > 0
    assert stats.frames_in == stats.frames_out + stats.dropped
    assert stats.dropped == len(stats.dropped_indices)
    kept = [k for k in range(20) if k not in set(stats.dropped_indices)]
    assert sink.indices == kept
    assert [int(f[0, 0]) for f in sink.frames] == [k + 1 for k in kept]
    assert calls == list(range(1, stats.frames_out + 1))
    assert sink.closed
    d = stats.to_dict()
    assert set(d) >= {"frames_in", "frames_out", "dropped", "dropped_indices", "seconds",
                      "fps", "latency_ms_mean"}
    assert d["fps"] > 0 and d["latency_ms_mean"] >= 20 * 0.9


def test_block_never_drops():
    sink = MemorySink()
    stats = StreamPipeline(frames(10), slow(0.005), sink, queue_size=1, drop_policy="block").run()
    assert (stats.frames_in, stats.frames_out, stats.dropped) == (10, 10, 0)
    assert stats.dropped_indices == []
    assert sink.indices == list(range(10))
    assert isinstance(stats, StreamStats)


@pytest.mark.parametrize("policy", ["drop_newest", "block"])
def test_process_error_propagates_and_stops_source(policy):
    source_closed = threading.Event()
    endless = endless_source(source_closed)

    def process(frame):
        if process.n == 3:
            raise ZeroDivisionError("boom")
        process.n += 1
        return frame

    process.n = 0
    sink = MemorySink()
    with pytest.raises(ZeroDivisionError, match="boom"):
        StreamPipeline(endless(), process, sink, queue_size=2, drop_policy=policy).run()
    assert source_closed.wait(1.0)
    assert sink.closed and len(sink.indices) == 3


def test_source_error_propagates():
    def broken():
        yield 0, np.zeros((4, 4), np.uint16)
        raise OSError("camera unplugged")

    sink = MemorySink()
    with pytest.raises(OSError, match="camera unplugged"):
        StreamPipeline(broken(), lambda f: f, sink, drop_policy="block").run()
    assert sink.indices == [0] and sink.closed


def test_pipeline_arguments_and_single_run():
    with pytest.raises(ValueError, match="drop policy 'newest' unknown"):
        StreamPipeline(frames(1), lambda f: f, MemorySink(), drop_policy="newest")
    # the user's names, and the underscore spellings of earlier releases
    assert StreamPipeline(frames(1), lambda f: f, MemorySink(),
                          drop_policy="drop_oldest").drop_policy == "drop-oldest"
    assert StreamPipeline(frames(1), lambda f: f, MemorySink(),
                          drop_policy="drop_newest").drop_policy == "drop-newest"
    with pytest.raises(ValueError, match="queue_size"):
        StreamPipeline(frames(1), lambda f: f, MemorySink(), queue_size=0)
    pipe = StreamPipeline(frames(2), lambda f: f, MemorySink())
    pipe.run()
    with pytest.raises(RuntimeError, match="already ran"):
        pipe.run()


# -- sources ---------------------------------------------------------------------------------


@dataclass
class FakeFrame:
    index: int
    noisy: np.ndarray
    clean_adu: np.ndarray


class FakeMicroscope:
    def frames(self, n):
        for k in range(n):
            clean = np.full((6, 5), 100.0 + k)
            yield FakeFrame(k, (clean + 3).astype(np.uint16), clean)


def test_simulated_source_keeps_ground_truth_and_paces():
    src = SimulatedCameraSource(5, shape=(6, 5), fps=100.0, microscope=FakeMicroscope())
    t0 = time.monotonic()
    got = list(src)
    elapsed = time.monotonic() - t0
    assert [k for k, _ in got] == list(range(5)) and len(src) == 5
    assert elapsed >= 4 / 100.0 * 0.9  # 5 frames at 100 fps span 40 ms
    for k, f in got:
        assert f.dtype == np.uint16
        assert np.array_equal(src.ground_truth(k), np.full((6, 5), 100.0 + k))
    bounded = SimulatedCameraSource(5, shape=(6, 5), ground_truth_frames=2,
                                    microscope=FakeMicroscope())
    list(bounded)
    assert bounded.ground_truth(4)[0, 0] == 104.0
    with pytest.raises(KeyError, match="evicted"):
        bounded.ground_truth(0)
    with pytest.raises(ValueError, match="fps"):
        SimulatedCameraSource(1, fps=0, microscope=FakeMicroscope())


def test_simulated_source_with_real_microscope():
    _microscope_api()
    src = SimulatedCameraSource(3, shape=(32, 48), seed=0)
    got = list(src)
    assert [k for k, _ in got] == [0, 1, 2]
    for k, f in got:
        assert f.dtype == np.uint16 and f.shape == (32, 48)
        assert src.ground_truth(k).shape == (32, 48)


def test_tiff_source_and_sink_round_trip(tmp_path):
    _, read_tiff, write_tiff = _microscope_api()
    stack = np.random.default_rng(0).integers(0, 4000, size=(4, 16, 24)).astype(np.uint16)
    write_tiff(str(tmp_path / "in.tif"), stack, axes="TYX")
    src = TiffStackSource(tmp_path / "in.tif")
    assert len(src) == 4 and src.frame_shape == (16, 24)
    out = tmp_path / "out.tif"
    stats = StreamPipeline(src, lambda f: f + 1, TiffSink(out), drop_policy="block").run()
    assert stats.frames_out == 4
    assert np.array_equal(read_tiff(str(out)), stack + 1)
    assert {p.name for p in tmp_path.iterdir()} == {"in.tif", "out.tif"}  # no partial file


def test_tiff_source_single_yx_frame(tmp_path):
    _, _, write_tiff = _microscope_api()
    frame = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10)
    write_tiff(str(tmp_path / "one.tif"), frame, axes="YX")
    got = list(TiffStackSource(tmp_path / "one.tif"))
    assert len(got) == 1 and got[0][0] == 0 and np.array_equal(got[0][1], frame)


def test_tiff_sink_validation_and_empty(tmp_path):
    sink = TiffSink(tmp_path / "x.tif")
    with pytest.raises(ValueError, match="uint16"):
        sink.write(0, np.zeros((4, 4), np.float32))
    sink.write(0, np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="shape"):
        sink.write(1, np.zeros((5, 4), np.uint16))
    empty = TiffSink(tmp_path / "empty.tif")
    with pytest.warns(UserWarning, match="no frames"):
        empty.close()
    assert not (tmp_path / "empty.tif").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TiffSink(tmp_path / "missing" / "x.tif")


def test_memory_sink():
    with MemorySink() as sink:
        sink.write(3, np.ones((2, 2), np.uint16))
        sink.write(7, np.zeros((2, 2), np.uint16))
    assert sink.closed and sink.indices == [3, 7] and sink.stack().shape == (2, 2, 2)
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(8, np.zeros((2, 2), np.uint16))


def test_failed_stream_leaves_a_marked_partial_tiff_not_a_complete_looking_one(tmp_path):
    from fluorofpga.host import StreamPipeline, TiffSink
    from fluorofpga.host.sinks import partial_path

    frames = [(i, np.full((16, 16), i, np.uint16)) for i in range(6)]

    def process(frame):
        if int(frame[0, 0]) == 3:
            raise RuntimeError("accelerator fault")
        return frame

    out = tmp_path / "restored.tif"
    with pytest.raises(RuntimeError, match="fault"):
        StreamPipeline(frames, process, TiffSink(out), queue_size=2, drop_policy="block").run()
    assert not out.exists()
    assert partial_path(out).exists()


# -- drop-oldest, timing, percentiles, stop ----------------------------------------------------


def test_drop_oldest_keeps_the_newest_frames_and_lists_every_drop():
    sink = MemorySink()
    gate, started = threading.Event(), threading.Event()

    def process(frame):
        started.set()
        gate.wait(2.0)  # hold the first frame until the source has run ahead
        return frame

    def source():
        for k in range(12):
            yield k, np.full((4, 4), k, np.uint16)
            if k == 0:
                assert started.wait(2.0)
        gate.set()

    stats = StreamPipeline(source(), process, sink, queue_size=3,
                           drop_policy="drop-oldest").run()
    assert stats.drop_policy == "drop-oldest"
    assert stats.frames_in == 12 and stats.frames_in == stats.frames_out + stats.dropped
    # frame 0 was taken before the gate; the queue then kept the three newest frames
    assert sink.indices == [0, 9, 10, 11]
    assert stats.dropped_indices == list(range(1, 9))
    assert [int(f[0, 0]) for f in sink.frames] == sink.indices


def test_drop_newest_under_the_same_load_keeps_the_oldest():
    sink = MemorySink()
    gate, started = threading.Event(), threading.Event()

    def source():
        for k in range(12):
            yield k, np.full((4, 4), k, np.uint16)
            if k == 0:
                assert started.wait(2.0)
        gate.set()

    stats = StreamPipeline(source(), lambda f: (started.set(), gate.wait(2.0), f)[2], sink,
                           queue_size=3, drop_policy="drop-newest").run()
    assert sink.indices == [0, 1, 2, 3] and stats.dropped_indices == list(range(4, 12))


def test_stage_timing_rolling_fps_and_latency_percentiles():
    def source():
        for k in range(20):
            time.sleep(0.004)  # the camera: 4 ms per frame
            yield k, np.zeros((4, 4), np.uint16)

    class SlowSink(MemorySink):
        def write(self, index, frame):
            time.sleep(0.003)
            super().write(index, frame)

    stats = StreamPipeline(source(), slow(0.010), SlowSink(), queue_size=2,
                           drop_policy="block").run()
    assert stats.frames_out == 20
    assert 3.5 <= stats.read_ms_mean < 40
    assert 9.5 <= stats.process_ms_mean < 60
    assert 2.8 <= stats.write_ms_mean < 40
    # latency covers process + write (+ queueing): never below their sum
    assert stats.latency_ms_p50 >= 12.5
    assert stats.latency_ms_p50 <= stats.latency_ms_p95 <= stats.latency_ms_p99
    assert stats.latency_ms_p99 <= stats.latency_ms_max * 1.000001
    assert 0 < stats.fps_rolling < 1000 / 12.5 and 0 < stats.fps < 1000 / 12.5
    d = stats.to_dict()
    assert {"latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "fps_rolling",
            "read_ms_mean", "process_ms_mean", "write_ms_mean"} <= set(d)
    assert "dropped 0" in stats.summary()


def test_latency_histogram_percentiles_match_numpy():
    from fluorofpga.host.stream import LatencyHistogram

    values = np.random.default_rng(1).lognormal(mean=2.0, sigma=0.8, size=5000)
    hist = LatencyHistogram()
    for v in values:
        hist.add(v)
    for q in (50, 95, 99):
        exact = np.percentile(values, q, method="inverted_cdf")
        assert hist.percentile(q) == pytest.approx(exact, rel=0.006)
    assert hist.mean == pytest.approx(values.mean())
    assert hist.percentile(100) == pytest.approx(values.max())
    assert hist.counts.nbytes < 32_000  # constant memory however long the stream
    assert LatencyHistogram().percentile(50) == 0.0
    with pytest.raises(ValueError):
        hist.percentile(101)


def test_stop_ends_the_stream_cleanly_and_accounts_for_every_frame():
    sink = MemorySink()
    pipe = None

    def endless():
        k = 0
        while True:
            yield k, np.zeros((4, 4), np.uint16)
            k += 1
            time.sleep(0.001)

    def progress(stats):
        if stats.frames_out == 5:
            pipe.stop()

    pipe = StreamPipeline(endless(), slow(0.002), sink, queue_size=2, drop_policy="block",
                          progress=progress)
    stats = pipe.run()
    assert stats.stopped_early and sink.closed
    assert stats.frames_out >= 5
    assert stats.frames_in == stats.frames_out + stats.dropped == len(sink.indices)


# -- lazy TIFF sources ---------------------------------------------------------------------


def _stack(n=5, shape=(16, 24), seed=0):
    return np.random.default_rng(seed).integers(0, 4000, size=(n, *shape)).astype(np.uint16)


def test_tiff_source_memory_maps_uncompressed_files(tmp_path):
    import tifffile

    stack = _stack()
    tifffile.imwrite(tmp_path / "raw.tif", stack, imagej=True, metadata={"axes": "TYX"})
    src = TiffStackSource(tmp_path / "raw.tif")
    got = list(src)
    assert [k for k, _ in got] == list(range(5))
    assert all(isinstance(f, np.memmap) or isinstance(f.base, np.memmap) for _, f in got)
    np.testing.assert_array_equal(np.stack([f for _, f in got]), stack)


def test_tiff_source_reads_compressed_files_page_by_page(tmp_path, monkeypatch):
    import tifffile

    stack = _stack(6, seed=1)
    tifffile.imwrite(tmp_path / "zip.tif", stack, compression="zlib")
    reads = []
    real = tifffile.TiffFile.asarray

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        reads.append(out.shape)
        return out

    monkeypatch.setattr(tifffile.TiffFile, "asarray", spy)
    src = TiffStackSource(tmp_path / "zip.tif")
    assert len(src) == 6 and src.frame_shape == (16, 24)
    got = np.stack([f for _, f in src])
    np.testing.assert_array_equal(got, stack)
    assert reads == [(16, 24)] * 6  # one page per read, never the whole stack


def test_tiff_source_reads_a_folder_in_natural_order(tmp_path):
    import tifffile

    stack = _stack(12, seed=2)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(10):  # single frames frame0..frame9, and a 2-frame stack frame10
        tifffile.imwrite(folder / f"frame{k}.tif", stack[k])
    tifffile.imwrite(folder / "frame10.tiff", stack[10:12], compression="zlib")
    (folder / "notes.txt").write_text("not a frame")
    src = TiffStackSource(folder)
    assert len(src) == 12
    got = list(src)
    assert [k for k, _ in got] == list(range(12))
    np.testing.assert_array_equal(np.stack([f for _, f in got]), stack)


def test_tiff_source_refuses_bad_input_before_any_work(tmp_path):
    import tifffile

    from fluorofpga.microscope import ImageFormatError

    with pytest.raises(ImageFormatError, match="no such file"):
        TiffStackSource(tmp_path / "missing.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFormatError, match="no .tif"):
        TiffStackSource(tmp_path / "empty")
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ImageFormatError, match="float32"):
        TiffStackSource(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(ImageFormatError, match="RGB"):
        TiffStackSource(tmp_path / "rgb.tif")
    tifffile.imwrite(tmp_path / "planar.tif", np.zeros((3, 8, 8), np.uint16),
                     photometric="rgb", planarconfig="separate")
    with pytest.raises(ImageFormatError, match="RGB"):
        TiffStackSource(tmp_path / "planar.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageFormatError, match="not a readable TIFF"):
        TiffStackSource(tmp_path / "broken.tif")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "a.tif", np.zeros((8, 8), np.uint16))
    tifffile.imwrite(mixed / "b.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(ImageFormatError, match="one frame size"):
        TiffStackSource(mixed)


@pytest.mark.parametrize(("axes", "what"), [("ZYX", "Z slices"), ("CYX", "channels")])
def test_tiff_source_refuses_z_stacks_and_channels_but_sim_frames_take_any_axis(
        tmp_path, axes, what):
    """A stream runs over time: a stack whose file says its frames are Z slices or
    channels is refused (not relabelled TYX); raw SIM frames may come along any axis; a
    stack whose file names no axis streams as time points, and says so."""
    import tifffile

    from fluorofpga.microscope import ImageFormatError

    path = tmp_path / "stack.tif"
    stack = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": axes})
    with pytest.raises(ImageFormatError, match=f"{axes!r}.*{what} are not time points"):
        TiffStackSource(path)
    sim = TiffStackSource(path, any_axis=True)
    assert [int(f[0, 1]) for _, f in sim] == [1, 65, 129] and not sim.time_axis
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")  # axes 'QYX'
    plain = TiffStackSource(tmp_path / "plain.tif")
    assert len(plain) == 3 and not plain.time_axis
    tifffile.imwrite(tmp_path / "t.tif", stack, imagej=True, metadata={"axes": "TYX"})
    assert TiffStackSource(tmp_path / "t.tif").time_axis


# -- iterable and GenICam sources -------------------------------------------------------------


def test_iterable_source_numbers_frames_and_checks_them():
    from fluorofpga.host import IterableSource

    frames_ = [np.full((3, 3), k, np.uint16) for k in range(4)]
    got = list(IterableSource(frames_))
    assert [k for k, _ in got] == [0, 1, 2, 3] and int(got[3][1][0, 0]) == 3
    assert len(list(IterableSource(iter(frames_), n_frames=2))) == 2
    with pytest.raises(ValueError, match="2-D"):
        list(IterableSource([np.zeros((2, 3, 3))]))
    sink = MemorySink()
    StreamPipeline(IterableSource(frames_), lambda f: f, sink, drop_policy="block").run()
    assert sink.indices == [0, 1, 2, 3]


def test_genicam_source_without_harvesters_names_the_package(monkeypatch):
    import sys

    from fluorofpga.host import GenICamSource

    monkeypatch.setitem(sys.modules, "harvesters", None)
    monkeypatch.setitem(sys.modules, "harvesters.core", None)
    with pytest.raises(ImportError, match="'harvesters' package.*pip install harvesters"):
        GenICamSource(0)


class _FakeComponent:
    def __init__(self, k, shape):
        self.height, self.width = shape
        self.data = np.full(shape[0] * shape[1], 100 + k, np.uint16)


class _FakeBuffer:
    def __init__(self, k, shape, log, frame_id):
        self.payload = type("P", (), {"components": [_FakeComponent(k, shape)]})()
        self.frame_id = frame_id
        self.log = log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.log.append("requeue")


class _FakeAcquirer:
    def __init__(self, log, n_ok, ids):
        self.log, self.n_ok, self.k, self.ids = log, n_ok, 0, ids
        self.remote_device = type("D", (), {"node_map": type("N", (), {})()})()

    def start(self):
        self.log.append("start")

    def fetch(self, timeout):
        if self.k >= self.n_ok:
            raise TimeoutError("GenTL timeout")
        self.k += 1
        frame_id = 1000 + self.k - 1 if self.ids is None else self.ids[self.k - 1]
        return _FakeBuffer(self.k - 1, (6, 5), self.log, frame_id)

    def stop(self):
        self.log.append("stop")

    def destroy(self):
        self.log.append("destroy")


def _fake_harvesters(monkeypatch, log, n_ok=100, cameras=1, ids=None):
    import sys
    import types

    class Harvester:
        def __init__(self):
            self.device_info_list = []

        def add_file(self, path):
            log.append(("cti", path))

        def update(self):
            self.device_info_list = [object()] * cameras

        def create(self, index):
            log.append(("create", index))
            return _FakeAcquirer(log, n_ok, ids)

        def reset(self):
            log.append("reset")

    core = types.ModuleType("harvesters.core")
    core.Harvester = Harvester
    package = types.ModuleType("harvesters")
    package.core = core
    monkeypatch.setitem(sys.modules, "harvesters", package)
    monkeypatch.setitem(sys.modules, "harvesters.core", core)


def test_genicam_source_streams_through_harvesters_and_releases_the_camera(
        tmp_path, monkeypatch):
    from fluorofpga.host import CameraError, GenICamSource

    log = []
    _fake_harvesters(monkeypatch, log)
    cti = tmp_path / "vendor.cti"
    cti.write_bytes(b"\x7fELF")
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(tmp_path))
    src = GenICamSource(0, n_frames=3)
    assert src.producers == [str(cti)]
    sink = MemorySink()
    StreamPipeline(src, lambda f: f, sink, drop_policy="block").run()
    assert sink.indices == [0, 1, 2]
    assert [int(f[0, 0]) for f in sink.frames] == [100, 101, 102]
    assert sink.frames[0].shape == (6, 5) and src.last_frame_id == 1002
    assert src.camera_lost == 0
    assert log[-3:] == ["stop", "destroy", "reset"] and log.count("requeue") == 3
    # the camera's frame counter jumps: frames lost before they reached the stream
    _fake_harvesters(monkeypatch, log, ids=[7, 8, 12, 13])
    lossy = GenICamSource(0, n_frames=4)
    assert len(list(lossy)) == 4 and lossy.camera_lost == 3
    # a camera that stops delivering: a clear error, and the camera is still released
    log.clear()
    _fake_harvesters(monkeypatch, log, n_ok=2)
    with pytest.raises(CameraError, match="no frame 2 within"):
        list(GenICamSource(0, cti=cti, timeout_s=0.1))
    assert log[-3:] == ["stop", "destroy", "reset"]
    with pytest.raises(CameraError, match="camera 3 not found"):
        list(GenICamSource(3, cti=cti))
    monkeypatch.delenv("GENICAM_GENTL64_PATH")
    with pytest.raises(CameraError, match="GenTL producer"):
        GenICamSource(0)


# -- live displays -----------------------------------------------------------------------------


def test_rich_display_draws_the_live_numbers():
    import io

    from rich.console import Console

    from fluorofpga.host.display import RichDisplay

    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    with RichDisplay(total=10, console=console, refresh_s=0.0) as display:
        StreamPipeline(frames(10), slow(0.001), MemorySink(), queue_size=1,
                       drop_policy="drop-newest", progress=display).run()
    text = out.getvalue()
    assert "frames out" in text and "/ 10" in text and "p50" in text and "dropped" in text
    assert "pack" not in text  # a plain process: one "process" stage
    out.truncate(0)
    out.seek(0)
    with RichDisplay(total=10, console=console, refresh_s=0.0):
        pass  # refused before the first frame (bad source, no board): no empty panel
    assert out.getvalue() == ""


def test_notebook_display_uses_ipywidgets_and_falls_back_to_text(monkeypatch, capsys):
    import sys

    from fluorofpga.host import display as disp

    monkeypatch.setattr(disp, "_in_jupyter", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    text = disp.live_display(total=3, refresh_s=0.0)
    assert isinstance(text, disp.TextDisplay)
    StreamPipeline(frames(3), lambda f: f, MemorySink(), drop_policy="block",
                   progress=text).run()
    assert "[stream] 3/3 frames in 3  out 3  dropped 0" in capsys.readouterr().out

    monkeypatch.delitem(sys.modules, "ipywidgets")  # the real one (dev extra, board venv)
    widget = disp.live_display(total=3, refresh_s=0.0)
    assert isinstance(widget, disp.NotebookDisplay)
    import ipywidgets

    assert isinstance(widget.widget, ipywidgets.VBox)
    assert isinstance(widget.bar, ipywidgets.IntProgress)
    StreamPipeline(frames(3), lambda f: f, MemorySink(), drop_policy="block",
                   progress=widget).run()
    assert widget.bar.value == 3 and widget.bar.max == 3 and "dropped" in widget.label.value
    assert "<b>frames out</b>: 3 / 3" in widget.label.value
    endless = disp.NotebookDisplay(total=None, refresh_s=0.0)  # a live camera: no total
    StreamPipeline(frames(5), lambda f: f, MemorySink(), drop_policy="block",
                   progress=endless).run()
    assert endless.bar.value == endless.bar.max == 5
    monkeypatch.setattr(disp, "_in_jupyter", lambda: False)
    assert isinstance(disp.live_display(), disp.RichDisplay)


# -- staged pipeline (pack / accelerate / unpack on their own threads) -------------------------


class ThreeStages:
    """Stages that only finish when the next frame is in the previous stage: a pipeline
    that ran the stages one frame at a time would wait for ever (the events time out)."""

    def __init__(self, n):
        self.n = n
        self.entered = {name: [threading.Event() for _ in range(n + 1)]
                        for name in ("a", "b", "c")}
        self.overlapped = []

    def _step(self, name, after, item):
        k, value = item
        self.entered[name][k].set()
        if after is not None and k + 1 < self.n:  # the next frame reaches the stage before
            self.overlapped.append(self.entered[after][k + 1].wait(5.0))
        return k, value + 1

    def stages(self):
        return [("a", lambda f: self._step("a", None, (int(f[0, 0]), f))),
                ("b", lambda it: self._step("b", "a", it)),
                ("c", lambda it: self._step("c", "b", it)[1])]


def test_stages_run_concurrently_on_their_own_threads():
    proc = ThreeStages(6)
    sink = MemorySink()
    stats = StreamPipeline(frames(6), proc, sink, queue_size=2, drop_policy="block").run()
    assert proc.overlapped and all(proc.overlapped)  # frame k+1 was in a while k was in b
    assert sink.indices == list(range(6))
    assert [int(f[0, 0]) for f in sink.frames] == [k + 3 for k in range(6)]
    assert set(stats.stage_ms_mean) == {"a", "b", "c"}
    assert stats.process_ms_mean == pytest.approx(sum(stats.stage_ms_mean.values()))


def test_staged_false_calls_the_process_itself():
    class Both(ThreeStages):
        def __call__(self, frame):
            return frame + 10

    sink = MemorySink()
    stats = StreamPipeline(frames(3), Both(3), sink, drop_policy="block", staged=False).run()
    assert [int(f[0, 0]) for f in sink.frames] == [10, 11, 12]
    assert set(stats.stage_ms_mean) == {"process"}


@pytest.mark.parametrize("failing", ["a", "b", "c"])
def test_an_error_in_any_stage_propagates_stops_the_source_and_aborts_the_sink(failing):
    source_closed = threading.Event()
    endless = endless_source(source_closed)

    class Failing:
        seen = 0

        def step(self, name, x):
            if name == failing:
                self.seen += 1
                if self.seen == 4:
                    raise ZeroDivisionError(f"boom in {name}")
            return x

        def stages(self):
            return [(n, lambda x, n=n: self.step(n, x)) for n in ("a", "b", "c")]

    class AbortSink(MemorySink):
        aborted = False

        def abort(self):
            self.aborted = True
            self.closed = True

    sink = AbortSink()
    with pytest.raises(ZeroDivisionError, match=f"boom in {failing}"):
        StreamPipeline(endless(), Failing(), sink, queue_size=2, drop_policy="block").run()
    assert source_closed.wait(1.0)
    assert sink.aborted and sink.indices == [0, 1, 2]
    assert not [t for t in threading.enumerate() if t.name.startswith("fluorofpga-")
                and t.name[11:] in ("a", "b", "source")]


def test_staged_drops_only_at_the_first_queue_and_counts_them():
    class Slow:
        def stages(self):
            return [("pack", lambda f: f), ("accelerate", slow(0.01)), ("unpack", lambda f: f)]

    sink = MemorySink()
    stats = StreamPipeline(frames(40), Slow(), sink, queue_size=1,
                           drop_policy="drop-oldest").run()
    assert stats.dropped > 0 and stats.frames_in == 40
    assert stats.frames_in == stats.frames_out + stats.dropped
    kept = [k for k in range(40) if k not in set(stats.dropped_indices)]
    assert sink.indices == kept and 39 in kept  # drop-oldest keeps the newest frame


def test_bad_stages_are_refused():
    class Bad:
        def stages(self):
            return [("read", lambda f: f)]

    with pytest.raises(ValueError, match="uniquely named"):
        StreamPipeline(frames(1), Bad(), MemorySink())
    with pytest.raises(TypeError, match="callable"):
        StreamPipeline(frames(1), object(), MemorySink())


def test_a_restorer_streams_in_three_stages_bit_identical_to_calling_it():
    from fluorofpga.host import Accelerator, FrameRestorer
    from fluorofpga.microscope import NoiseModel, SignalSpec, SignalTables

    spec = SignalSpec()

    class Halve(Accelerator):
        name = "halve"

        def __init__(self):
            super().__init__((16, 16), spec.in_bits, spec.out_bits)

        def _compute(self, tile):
            return (tile // 2 + 64).astype(np.uint8)

    tables = SignalTables(spec, NoiseModel.from_camera(2.0, 100.0, 1.5), adc_max=4095)
    rng = np.random.default_rng(4)
    raw = [rng.integers(0, 4096, (45, 70)).astype(np.uint16) for _ in range(7)]
    staged = FrameRestorer(Halve(), tables, halo=2, dtype="float32")
    plain = FrameRestorer(Halve(), tables, halo=2, dtype="float32")
    sink = MemorySink()
    stats = StreamPipeline(enumerate(raw), staged, sink, drop_policy="block").run()
    assert set(stats.stage_ms_mean) == {"pack", "accelerate", "unpack"}
    for got, frame in zip(sink.frames, raw, strict=True):
        assert np.array_equal(got, plain(frame))
    assert staged.counts == plain.counts and staged.counts.saturated > 0
