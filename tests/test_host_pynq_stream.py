"""`app.stream(..., backend="pynq")` against the stand-in PYNQ device (board environment).

The whole live path of the board: simulated camera -> FrameRestorer -> the ``pynq``
backend (PYNQ's Overlay, DMA and buffers; the stand-in executes the accelerator behind
the DMA registers) -> TIFF and ZeroMQ sinks. Skipped where ``pynq`` is not importable.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("pynq") is None:
    pytest.skip("pynq is not importable (it pins numpy<2): run in the board environment "
                "(`make test` runs tests/test_host_*.py again in .venv-board)",
                allow_module_level=True)

from fluorofpga import app  # noqa: E402
from fluorofpga.host import load_bundle  # noqa: E402
from fluorofpga.host.bundle import MANIFEST  # noqa: E402
from fluorofpga.microscope import read_image_meta  # noqa: E402

SIZE = 128


def _standin():
    name = "fluorofpga_tests_pynq_standin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("pynq_standin.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def standin_bundle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pynq") / "bundle"
    shutil.copytree(load_bundle().path, path)
    bundle = load_bundle(path)
    _standin().write_design(path / "bitstream", bundle.file("hw_layers"), bundle.tile_shape,
                            bundle.signal.in_bits, bundle.signal.out_bits)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"]["bitstream"] = "bitstream/fluorofpga.bit"
    (path / MANIFEST).write_text(json.dumps(manifest))
    _standin().standin_device()
    return path


def test_stream_on_the_pynq_backend_equals_the_emulator(tmp_path, standin_bundle):
    r = app.stream("sim", tmp_path / "pynq.tif", bundle_path=standin_bundle, backend="pynq",
                   frames=3, size=SIZE, drop="drop-oldest")
    app.stream("sim", tmp_path / "emu.tif", bundle_path=standin_bundle, backend="emulate",
               frames=3, size=SIZE)
    assert r["backend"] == "pynq" and r["frames_out"] + r["dropped"] == 3
    pynq_frames, meta = read_image_meta(tmp_path / "pynq.tif")
    emulated, _ = read_image_meta(tmp_path / "emu.tif")
    kept = [k for k in range(3) if k not in r["dropped_indices"]]
    np.testing.assert_array_equal(pynq_frames.reshape(-1, SIZE, SIZE), emulated[kept])
    assert meta.pixel_size_um == pytest.approx((0.065, 0.065))
    assert r["latency_ms_p99"] >= r["latency_ms_p50"] > 0


def test_stream_without_a_bitstream_refuses_pynq_before_writing(tmp_path):
    from fluorofpga.host import BoardNotFound

    with pytest.raises(BoardNotFound, match="no bitstream"):
        app.stream("sim", tmp_path / "x.tif", backend="pynq", frames=1, size=SIZE)
    assert list(tmp_path.iterdir()) == []
