"""ZeroMQ frame stream: real sockets on tcp://127.0.0.1, sender and receiver in threads."""

import json
import threading

import numpy as np
import pytest

zmq = pytest.importorskip("zmq", reason="pyzmq is not installed (pip install pyzmq)")

from fluorofpga.host import MemorySink, StreamPipeline, TiffSink, ZmqSink, ZmqSource  # noqa: E402
from fluorofpga.host.netstream import PROTOCOL, StreamIncomplete, free_tcp_port  # noqa: E402
from fluorofpga.microscope import ImageMeta, read_image_meta  # noqa: E402

META = ImageMeta("TYX", pixel_size_y=0.1, pixel_size_x=0.1, frame_interval=0.05)


def frame(k, shape=(20, 30)):
    return ((np.arange(shape[0] * shape[1]) * 7 + k) % 5000).astype(np.uint16).reshape(shape)


def _run_in_thread(fn):
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the test thread
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_push_pull_delivers_every_frame_with_its_metadata(tmp_path):
    port = free_tcp_port()
    receiver = ZmqSource(f"tcp://127.0.0.1:{port}", timeout_s=10)
    out = tmp_path / "received.tif"
    thread, box = _run_in_thread(lambda: StreamPipeline(
        receiver, lambda f: f, TiffSink(out, META), drop_policy="block").run())
    kept = [0, 1, 3, 4, 7]  # 2, 5, 6 "dropped upstream": the indices say so
    sink = ZmqSink(f"tcp://127.0.0.1:{port}", meta=META)
    for k in kept:
        sink.write(k, frame(k))
    sink.close()
    thread.join(15)
    assert "error" not in box, box.get("error")
    stats = box["result"]
    assert stats.frames_out == 5
    assert receiver.complete and receiver.missed == 0 and receiver.frames_received == 5
    assert receiver.meta["pixel_size_x"] == pytest.approx(0.1)
    array, meta = read_image_meta(out)
    np.testing.assert_array_equal(array, np.stack([frame(k) for k in kept]))
    assert meta.frame_interval_s == pytest.approx(0.05)


def test_messages_carry_index_shape_dtype_and_end_marker():
    port = free_tcp_port()
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.connect(f"tcp://127.0.0.1:{port}")
    try:
        sink = ZmqSink(f"tcp://127.0.0.1:{port}")
        sink.write(42, frame(1).astype(np.float32))
        sink.close()
        assert pull.poll(5000)
        header, payload = pull.recv_multipart()
        h = json.loads(header)
        assert h == {"type": "frame", "protocol": PROTOCOL, "seq": 0, "index": 42,
                     "shape": [20, 30], "dtype": "float32", "meta": None}
        np.testing.assert_array_equal(np.frombuffer(payload, np.float32).reshape(20, 30),
                                      frame(1))
        assert pull.poll(5000)
        end = json.loads(pull.recv())
        assert end["type"] == "end" and end["complete"] is True and end["frames"] == 1
    finally:
        pull.close(linger=0)
        context.term()


def test_an_interrupted_sender_leaves_a_marked_partial_file_at_the_receiver(tmp_path):
    from fluorofpga.host.sinks import partial_path

    port = free_tcp_port()
    out = tmp_path / "received.tif"
    receiver = ZmqSource(f"tcp://127.0.0.1:{port}", timeout_s=10)
    thread, box = _run_in_thread(lambda: StreamPipeline(
        receiver, lambda f: f, TiffSink(out), drop_policy="block").run())

    def process(image):
        if image[0, 0] == frame(2)[0, 0]:
            raise RuntimeError("accelerator fault")
        return image

    sink = ZmqSink(f"tcp://127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match="accelerator fault"):
        StreamPipeline(((k, frame(k)) for k in range(5)), process, sink,
                       drop_policy="block").run()
    thread.join(15)
    assert isinstance(box.get("error"), StreamIncomplete)
    assert "incomplete after 2 frame(s)" in str(box["error"])
    assert not out.exists() and partial_path(out).exists()


def test_receiver_times_out_when_the_sender_goes_silent():
    port = free_tcp_port()
    source = ZmqSource(f"tcp://127.0.0.1:{port}", timeout_s=1.0)
    got = []
    thread, box = _run_in_thread(lambda: [got.append(item) for item in source])
    sink = ZmqSink(f"tcp://127.0.0.1:{port}", linger_s=0, send_timeout_s=5)
    try:
        sink.write(0, frame(0))  # then silence, no end message
        thread.join(10)
        assert isinstance(box.get("error"), StreamIncomplete)
        assert "no message" in str(box["error"]) and "after 1 frame" in str(box["error"])
        assert [k for k, _ in got] == [0] and not source.complete
    finally:
        sink.abort()


def test_pub_sub_counts_lost_messages_as_gaps():
    port = free_tcp_port()
    # a subscriber binds, the publisher connects (so it is connected before sending)
    source = ZmqSource(f"tcp://127.0.0.1:{port}", pattern="sub", bind=True, timeout_s=10)
    sink_box = {}

    def send():
        import time

        sink = ZmqSink(f"tcp://127.0.0.1:{port}", pattern="pub", bind=False)
        sink_box["sink"] = sink
        time.sleep(0.5)  # PUB/SUB: let the subscription arrive first
        for k in range(6):
            if k == 3:
                sink.frames_written += 1  # a message lost on the way: seq jumps
            sink.write(k, frame(k))
        sink.close()

    sender = threading.Thread(target=send, daemon=True)
    received = MemorySink()
    thread, box = _run_in_thread(lambda: StreamPipeline(
        source, lambda f: f, received, drop_policy="block").run())
    sender.start()
    sender.join(15)
    thread.join(15)
    assert "error" not in box, box.get("error")
    assert received.indices == list(range(6)) and source.missed == 1


def test_sink_refuses_bad_addresses_and_times_out_without_a_receiver():
    from fluorofpga.microscope import OutputError

    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        ZmqSink("localhost:5555")
    with pytest.raises(ValueError, match="pattern"):
        ZmqSink("tcp://127.0.0.1:1", pattern="req")
    for bad in ("tcp://127.0.0.1:99999", "tcp://127.0.0.1", "tcp://host:port"):
        with pytest.raises(ValueError, match="port must be a number in 1..65535"):
            ZmqSource(bad, timeout_s=0.1)  # at once, not after waiting for a sender
    port = free_tcp_port()
    first = ZmqSink(f"tcp://127.0.0.1:{port}", send_timeout_s=0.2, hwm=1, linger_s=0)
    try:
        with pytest.raises(OutputError, match="cannot listen"):
            ZmqSink(f"tcp://127.0.0.1:{port}")
        with pytest.raises(TimeoutError, match="fluorofpga receive"):
            for k in range(3):  # nobody connected: PUSH waits, then says so
                first.write(k, frame(k))
    finally:
        first.abort()
