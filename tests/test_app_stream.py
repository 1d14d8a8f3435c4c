"""`fluorofpga stream` / `receive` and the facade they share (emulated accelerator)."""

import threading

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import fluorofpga.app as facade
from fluorofpga.cli import app as cli
from fluorofpga.host import SimulatedCameraSource, load_bundle
from fluorofpga.host.sinks import partial_path
from fluorofpga.microscope import ImageMeta, OutputError, read_image_meta, write_tiff

SIZE = 128
runner = CliRunner()


def run(*args):
    result = runner.invoke(cli, [str(a) for a in args], env={"COLUMNS": "1000"})
    assert "Traceback" not in result.output, result.output
    return result


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def expected_sim(n, seed=0):
    """What the restorer makes of the simulated camera's frames, computed directly."""
    bundle = load_bundle()
    frames = [f for _, f in SimulatedCameraSource(n, (SIZE, SIZE), seed=seed)]
    with bundle.accelerator("emulate") as acc:
        process = bundle.restorer(acc, facade.simulated_camera_noise())
        return np.stack([process(f) for f in frames])


@pytest.fixture(scope="module")
def sim3():
    return expected_sim(3)


def test_stream_sim_to_tiff_gives_the_restored_frames_and_a_summary(tmp_path, sim3):
    seen = []
    r = facade.stream("sim", tmp_path / "out.tif", frames=3, size=SIZE, fps=50.0,
                      progress=lambda s: seen.append(s.frames_out))
    assert listing(tmp_path) == ["out.tif"]
    array, meta = read_image_meta(tmp_path / "out.tif")
    np.testing.assert_array_equal(array, sim3)  # same frames as the restorer gives
    assert meta.pixel_size_um == pytest.approx((0.065, 0.065))
    assert meta.frame_interval_s == pytest.approx(0.02)
    assert seen == [1, 2, 3]
    assert (r["frames_in"], r["frames_out"], r["dropped"], r["dropped_indices"]) == (3, 3, 0, [])
    # a paced camera drops oldest-first by default (its driver would lose frames uncounted)
    assert r["complete"] and not r["stopped_early"] and r["drop_policy"] == "drop-oldest"
    assert r["latency_ms_p50"] > 0 and r["process_ms_mean"] > 0 and r["counts"]["pixels"] > 0
    assert r["latency_ms_p50"] <= r["latency_ms_p95"] <= r["latency_ms_p99"]
    assert set(r["stage_ms_mean"]) == {"pack", "accelerate", "unpack"}  # on their threads


def test_stream_tiff_stack_to_ome_zarr_carries_the_calibration(tmp_path, sim3):
    pytest.importorskip("ome_zarr", reason="ome-zarr is not installed")
    raw = np.stack([f for _, f in SimulatedCameraSource(3, (SIZE, SIZE), seed=0)])
    meta = ImageMeta("TYX", pixel_size_y=0.1, pixel_size_x=0.1, frame_interval=0.5)
    write_tiff(tmp_path / "raw.tif", raw, meta=meta)
    r = facade.stream(str(tmp_path / "raw.tif"), tmp_path / "out.zarr")
    assert listing(tmp_path) == ["out.zarr", "raw.tif"]
    array, got = read_image_meta(tmp_path / "out.zarr")
    assert array.shape == raw.shape and array.dtype == np.uint16
    assert got.pixel_size_um == pytest.approx((0.1, 0.1)) and got.frame_interval_s == 0.5
    assert r["noise"]["from"] == "estimated from the first 3 frame(s)"
    assert r["frames_out"] == 3 and r["sink"].endswith("out.zarr")
    assert r["source_axes"] == "TYX"  # the file names its time axis
    # the restoration did something: closer to the simulator's known-noise result than raw
    assert np.abs(array.astype(float) - sim3).mean() < np.abs(raw.astype(float) - sim3).mean()


def test_stream_frames_limits_a_file_and_float32_output(tmp_path):
    raw = np.stack([f for _, f in SimulatedCameraSource(4, (SIZE, SIZE), seed=1)])
    tifffile.imwrite(tmp_path / "raw.tif", raw, compression="zlib",
                     photometric="minisblack")  # compressed: read page by page
    r = facade.stream(str(tmp_path / "raw.tif"), tmp_path / "out.tif", frames=2,
                      dtype="float32")
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == (2, SIZE, SIZE) and out.dtype == np.float32
    assert r["frames_expected"] == 2
    assert r["source_axes"].startswith("not named in the file")  # plain stack: said so


def test_every_argument_is_checked_before_any_work(tmp_path, monkeypatch):
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")
    calls = []
    monkeypatch.setattr(facade, "load_bundle", lambda *a: calls.append(a))
    with pytest.raises(OutputError, match="exists"):
        facade.stream("sim", out, frames=2, size=SIZE)
    partial_path(tmp_path / "new.tif").write_bytes(b"interrupted")
    with pytest.raises(OutputError, match="interrupted run"):
        facade.stream("sim", tmp_path / "new.tif", frames=2, size=SIZE)
    with pytest.raises(OutputError, match="does not exist"):
        facade.stream("sim", tmp_path / "missing" / "x.tif", frames=2, size=SIZE)
    write_tiff(tmp_path / "raw.tif", np.zeros((2, 32, 32), np.uint16), axes="TYX")
    with pytest.raises(OutputError, match="overwrite the input"):
        facade.stream(str(tmp_path / "raw.tif"), tmp_path / "raw.tif", overwrite=True)
    with pytest.raises(ValueError, match="drop policy 'sometimes' unknown"):
        facade.stream("sim", tmp_path / "y.tif", drop="sometimes")
    with pytest.raises(ValueError, match="unknown|give a .tif"):
        facade.stream("sim", tmp_path / "y.png")
    with pytest.raises(ValueError, match="no such file or folder"):
        facade.stream(str(tmp_path / "nothing.tif"), tmp_path / "y.tif")
    with pytest.raises(ValueError, match="genicam:N"):
        facade.stream("genicam:x", tmp_path / "y.tif")
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        facade.stream("sim", "udp://host:1")
    with pytest.raises(ValueError, match="--fps must be > 0"):
        facade.stream("sim", tmp_path / "y.tif", fps=0)
    assert calls == []  # the bundle was never even loaded
    assert out.read_bytes() == b"previous result"
    assert sorted(listing(tmp_path)) == ["new.partial.tif", "out.tif", "raw.tif"]


def test_genicam_needs_harvesters_and_a_calibration(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "harvesters", None)
    monkeypatch.setitem(sys.modules, "harvesters.core", None)
    with pytest.raises(ImportError, match="harvesters"):
        facade.stream("genicam", tmp_path / "y.tif")
    result = run("stream", "--source", "genicam:0", "--sink", tmp_path / "y.tif")
    assert result.exit_code == 2 and "harvesters" in result.output
    assert listing(tmp_path) == []


def test_bad_bundle_and_calibration_for_another_sensor_are_refused(tmp_path):
    from fluorofpga.host import BundleError
    from fluorofpga.microscope import CalibrationError, SCMOSSensor, calibrate

    with pytest.raises(BundleError):
        facade.stream("sim", tmp_path / "y.tif", bundle_path=tmp_path, size=SIZE)
    rng = np.random.default_rng(0)
    sensor = SCMOSSensor.random((32, 32), rng)
    dark = sensor.acquire(np.zeros((20, 32, 32)), rng)
    flats = [sensor.acquire(np.full((8, 32, 32), level), rng) for level in (30.0, 300.0, 1000.0)]
    calibrate(dark, flats).save(tmp_path / "cal.npz")
    with pytest.raises(CalibrationError, match="32"):
        facade.stream("sim", tmp_path / "y.tif", size=SIZE, frames=1,
                      calibration=tmp_path / "cal.npz")
    assert listing(tmp_path) == ["cal.npz"]


def test_interrupted_stream_leaves_only_a_marked_partial_file(tmp_path):
    def progress(stats):
        if stats.frames_out == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        facade.stream("sim", tmp_path / "out.tif", frames=5, size=SIZE, progress=progress)
    assert listing(tmp_path) == ["out.partial.tif"]
    assert tifffile.imread(tmp_path / "out.partial.tif").shape[0] == 2


def test_stop_ends_a_camera_stream_with_a_complete_file(tmp_path, sim3):
    box = {}

    def progress(stats):
        if stats.frames_out == 2:
            box["pipeline"].stop()

    r = facade.stream("sim", tmp_path / "out.tif", frames=50, size=SIZE, progress=progress,
                      on_start=lambda p: box.setdefault("pipeline", p))
    assert r["stopped_early"] and listing(tmp_path) == ["out.tif"]
    out = tifffile.imread(tmp_path / "out.tif")
    assert r["frames_out"] == len(out) >= 2 and r["frames_in"] == r["frames_out"]
    np.testing.assert_array_equal(out[:2], sim3[:2])


def test_stream_to_zmq_and_receive_on_the_pc(tmp_path, sim3):
    pytest.importorskip("zmq", reason="pyzmq is not installed")
    from fluorofpga.host.netstream import free_tcp_port

    port = free_tcp_port()
    box = {}

    def receive():
        try:
            box["r"] = facade.receive(f"tcp://127.0.0.1:{port}", tmp_path / "pc.tif",
                                      timeout_s=60)
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    s = facade.stream("sim", f"tcp://127.0.0.1:{port}", frames=3, size=SIZE, fps=20.0)
    thread.join(60)
    assert "error" not in box, box.get("error")
    assert s["sink_kind"] == "zmq" and s["sink"] == f"tcp://127.0.0.1:{port}"
    r = box["r"]
    assert r["frames"] == 3 and r["complete"] and r["missed"] == 0 and r["sender_dropped"] == 0
    array, meta = read_image_meta(tmp_path / "pc.tif")
    np.testing.assert_array_equal(array, sim3)
    assert meta.pixel_size_um == pytest.approx((0.065, 0.065))  # sent with the frames
    assert meta.frame_interval_s == pytest.approx(0.05)


def test_cli_stream_summary_and_refusals(tmp_path):
    result = run("stream", "--source", "sim", "--frames", "2", "--size", SIZE, "--sink",
                 tmp_path / "a.tif", "--drop", "drop-oldest")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "frames_out" in text and "dropped" in text and "latency_ms_p95" in text
    assert "wrote 2 frame(s)" in text
    assert "saturated at 65535 ADU (passed through)" in text  # nothing passed silently
    assert "clipped to the output dtype" in text
    again = run("stream", "--source", "sim", "--frames", "2", "--size", SIZE, "--sink",
                tmp_path / "a.tif")
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = run("stream", "--sink", tmp_path / "b.tif", "--drop", "never")
    assert bad.exit_code == 2 and "drop-oldest" in bad.output
    assert listing(tmp_path) == ["a.tif"]


def test_stream_of_an_8_bit_file_saturates_at_255(tmp_path):
    """The source's pixel type bounds the ADC: 8-bit frames pass 255 through, counted."""
    rng = np.random.default_rng(5)
    frames = np.minimum(rng.poisson(50, (3, 64, 72)) + 10, 255).astype(np.uint8)
    frames[:, 5:9, 5:9] = 255
    write_tiff(tmp_path / "in.tif", frames, meta=ImageMeta(axes="TYX"))
    r = facade.stream(str(tmp_path / "in.tif"), tmp_path / "out.tif")
    assert r["tables"]["adc_max"] == 255 and r["counts"]["saturated"] == 3 * 16
    out = tifffile.imread(tmp_path / "out.tif")
    assert np.array_equal(out[:, 5:9, 5:9], frames[:, 5:9, 5:9])
    with pytest.raises(ValueError, match="at most 255"):
        facade.stream(str(tmp_path / "in.tif"), tmp_path / "o2.tif", adc_max=4095)
    assert not (tmp_path / "o2.tif").exists()


def test_cli_receive_checks_before_listening(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"old")
    result = run("receive", "--connect", "tcp://127.0.0.1:1", "--out", tmp_path / "x.tif")
    assert result.exit_code == 2 and "exists" in result.output
    result = run("receive", "--connect", "tcp://127.0.0.1:1", "--out", tmp_path / "x.png")
    assert result.exit_code == 2
    try:
        import napari  # noqa: F401
    except ImportError:
        result = run("receive", "--connect", "tcp://127.0.0.1:1", "--out", tmp_path / "y.tif",
                     "--view")
        assert result.exit_code == 2 and "napari" in result.output
    assert listing(tmp_path) == ["x.tif"]


def _cli_stream_until(tmp_path, signals, size=SIZE, queue=4):
    """Run `fluorofpga stream` from a live camera; send SIGINT ``signals`` times once the
    output is under way; return (exit code, output, output path)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "live.tif"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluorofpga.cli", "stream", "--source", "sim", "--size",
         str(size), "--fps", "10", "--drop", "drop-oldest", "--queue", str(queue), "--sink",
         str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 120
        partial = partial_path(out)
        # under way: at least one frame in the partial file
        while time.monotonic() < deadline and not (
                partial.exists() and partial.stat().st_size > size * size * 2):
            time.sleep(0.05)
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, " ".join(output.split()), out


def test_cli_first_ctrl_c_ends_the_stream_with_a_complete_file(tmp_path):
    code, output, out = _cli_stream_until(tmp_path, signals=1)
    assert code == 0, output
    assert "stopping: finishing the frames in flight" in output and "(stopped early)" in output
    assert listing(tmp_path) == ["live.tif"]
    assert 1 <= tifffile.imread(out).reshape(-1, SIZE, SIZE).shape[0] < 100


def test_cli_second_ctrl_c_aborts_and_keeps_a_marked_partial_file(tmp_path):
    # large frames and a long queue: finishing the frames in flight takes seconds
    code, output, out = _cli_stream_until(tmp_path, signals=2, size=1024, queue=16)
    assert code == 130, output
    assert "interrupted; the frames streamed so far are in" in output
    assert listing(tmp_path) == ["live.partial.tif"]


def test_stream_from_a_genicam_camera_through_harvesters(tmp_path, monkeypatch):
    """A GenICam camera as `harvesters` presents it (its API faked here, the code is real)."""
    import sys
    import types

    from fluorofpga.microscope import SCMOSSensor, calibrate

    rng = np.random.default_rng(3)
    sensor = SCMOSSensor.random((32, 32), rng)
    calibrate(sensor.acquire(np.zeros((20, 32, 32)), rng),
              [sensor.acquire(np.full((8, 32, 32), v), rng) for v in (30.0, 300.0, 1000.0)]
              ).save(tmp_path / "cal.npz")
    frames = sensor.acquire(np.full((4, 32, 32), 200.0), rng)
    log = []

    class Buffer:
        def __init__(self, k):
            data = frames[k].reshape(-1)
            self.payload = types.SimpleNamespace(components=[types.SimpleNamespace(
                width=32, height=32, data=data)])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            log.append("requeue")

    class Acquirer:
        remote_device = types.SimpleNamespace(node_map=types.SimpleNamespace(
            AcquisitionFrameRate=types.SimpleNamespace(value=0.0)))

        def __init__(self):
            self.k = 0

        def start(self):
            log.append("start")

        def fetch(self, timeout):
            self.k += 1
            return Buffer(self.k - 1)

        def stop(self):
            log.append("stop")

        def destroy(self):
            log.append("destroy")

    class Harvester:
        device_info_list = [object()]

        def add_file(self, path):
            log.append(("cti", path))

        def update(self):
            pass

        def create(self, index):
            self.acquirer = Acquirer()
            return self.acquirer

        def reset(self):
            log.append("reset")

    core = types.ModuleType("harvesters.core")
    core.Harvester = Harvester
    monkeypatch.setitem(sys.modules, "harvesters", types.ModuleType("harvesters"))
    monkeypatch.setitem(sys.modules, "harvesters.core", core)
    cti = tmp_path / "vendor.cti"
    cti.write_bytes(b"\x7fELF")
    with pytest.raises(ValueError, match="needs --calibration"):
        facade.stream("genicam", tmp_path / "cam.tif", frames=3, cti=str(cti))
    assert log == []  # refused before the camera was opened
    r = facade.stream("genicam:0", tmp_path / "cam.tif", frames=3, cti=str(cti), fps=25.0,
                      calibration=tmp_path / "cal.npz")
    assert r["frames_out"] == 3 and r["noise"]["from"].startswith("calibration")
    assert r["drop_policy"] == "drop-oldest" and r["camera_lost"] == 0
    out, meta = read_image_meta(tmp_path / "cam.tif")
    assert out.shape == (3, 32, 32) and meta.frame_interval_s == pytest.approx(0.04)
    assert log[0] == ("cti", str(cti)) and log[-3:] == ["stop", "destroy", "reset"]
    assert Acquirer.remote_device.node_map.AcquisitionFrameRate.value == 25.0  # --fps set


def test_receive_names_its_own_options_in_errors(tmp_path):
    """`receive` speaks of --out and --timeout (not --sink or timeout_s) and writes
    nothing on a bad argument."""
    pytest.importorskip("zmq")
    with pytest.raises(ValueError, match=r"^--out .*x.png: give a .tif/.tiff file or a .zarr "
                                         r"store$"):
        facade.receive("tcp://127.0.0.1:5999", tmp_path / "x.png")
    with pytest.raises(ValueError, match="--timeout must be > 0"):
        facade.receive("tcp://127.0.0.1:5999", tmp_path / "x.tif", timeout_s=0)
    assert list(tmp_path.iterdir()) == []
