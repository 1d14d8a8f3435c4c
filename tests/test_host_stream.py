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

    def endless():
        k = 0
        try:
            while True:
                yield k, np.zeros((4, 4), np.uint16)
                k += 1
                time.sleep(0.001)
        finally:
            source_closed.set()

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
    with pytest.raises(ValueError, match="drop_policy"):
        StreamPipeline(frames(1), lambda f: f, MemorySink(), drop_policy="drop_oldest")
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
