"""`app.stream(..., backend="pynq")` against the stand-in PYNQ device (board environment).

The whole live path of the board: simulated camera -> FrameRestorer -> the ``pynq``
backend (PYNQ's Overlay, DMA and buffers; the stand-in executes the accelerator behind
the DMA registers) -> TIFF and ZeroMQ sinks. The SIM paths too: ``stream --sim`` and
``fluorofpga sim`` with the shipped SIM bundles (learned ``sim3``, classical ``wiener9``)
on ``--backend pynq``, equal to the emulator. Skipped where ``pynq`` is not importable.
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
from fluorofpga.host import (  # noqa: E402
    SimulatedSimCameraSource,
    default_bundle_path,
    load_bundle,
)
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


def _with_standin_bitstream(source: Path, path: Path) -> Path:
    """A copy of the bundle at ``source`` with a stand-in bitstream of its graph."""
    shutil.copytree(source, path)
    bundle = load_bundle(path)
    _standin().write_design(path / "bitstream", bundle.file("hw_layers"), bundle.tile_shape,
                            bundle.in_bits, bundle.out_bits)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"]["bitstream"] = "bitstream/fluorofpga.bit"
    (path / MANIFEST).write_text(json.dumps(manifest))
    _standin().standin_device()
    return path


@pytest.fixture(scope="module")
def standin_bundle(tmp_path_factory) -> Path:
    return _with_standin_bitstream(load_bundle().path, tmp_path_factory.mktemp("pynq") / "bundle")


@pytest.fixture(scope="module")
def sim_bundles(tmp_path_factory) -> dict[str, Path]:
    """The shipped SIM bundles with stand-in bitstreams: ``{"sim3": ..., "wiener9": ...}``."""
    root = tmp_path_factory.mktemp("pynq_sim")
    return {name: _with_standin_bitstream(default_bundle_path().parent / name, root / name)
            for name in ("sim3", "wiener9")}


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


SIM_SIZE = 64
SIM_OPTICS = {"na": 1.2, "wavelength_nm": 520.0, "pixel_size_um": 0.065}


@pytest.mark.parametrize("name", ["sim3", "wiener9"])
def test_sim_stream_on_the_pynq_backend_equals_the_emulator(tmp_path, sim_bundles, name):
    """`stream --sim --model SIM_BUNDLE --backend pynq`: 2 groups, the emulator's images."""
    per = load_bundle(sim_bundles[name]).frames
    kwargs = {"bundle_path": sim_bundles[name], "frames": 2 * per, "size": SIM_SIZE,
              "drop": "block", "sim": True, **SIM_OPTICS}
    r = app.stream("sim", tmp_path / "pynq.tif", backend="pynq", **kwargs)
    app.stream("sim", tmp_path / "emu.tif", backend="emulate", **kwargs)
    assert r["backend"] == "pynq" and r["computed_on"].startswith("the pynq accelerator")
    assert r["groups_reconstructed"] == 2 and r["frames_per_group"] == per
    on_pynq, meta = read_image_meta(tmp_path / "pynq.tif")
    emulated, _ = read_image_meta(tmp_path / "emu.tif")
    assert on_pynq.shape == (2, 2 * SIM_SIZE, 2 * SIM_SIZE) and on_pynq.std() > 0
    np.testing.assert_array_equal(on_pynq, emulated)
    assert meta.pixel_size_um == pytest.approx((0.0325, 0.0325))


@pytest.mark.parametrize("name", ["sim3", "wiener9"])
def test_sim_command_on_the_pynq_backend_equals_the_emulator(tmp_path, sim_bundles, name):
    """`fluorofpga sim RAW OUT --model SIM_BUNDLE --backend pynq` (the CLI), 2 groups."""
    import tifffile
    from typer.testing import CliRunner

    from fluorofpga.cli import app as cli

    bundle = load_bundle(sim_bundles[name])
    camera = SimulatedSimCameraSource(0, (SIM_SIZE, SIM_SIZE), seed=3,
                                      phases=bundle.frames // 3)
    rng = np.random.default_rng(3)
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, np.concatenate([camera.raw_group(rng) for _ in range(2)]),
                     photometric="minisblack")
    out = {}
    for backend in ("pynq", "emulate"):
        out[backend] = tmp_path / f"{backend}.tif"
        r = CliRunner().invoke(cli, ["sim", str(raw), str(out[backend]), "--model",
                                     str(sim_bundles[name]), "--backend", backend,
                                     "--na", "1.2", "--wavelength", "520",
                                     "--pixel-size", "0.065"])
        assert r.exit_code == 0, r.output
    on_pynq, emulated = (read_image_meta(out[b])[0] for b in ("pynq", "emulate"))
    assert on_pynq.shape == (2, 2 * SIM_SIZE, 2 * SIM_SIZE) and on_pynq.std() > 0
    np.testing.assert_array_equal(on_pynq, emulated)


def test_sim_bundle_without_a_bitstream_refuses_pynq_clearly(tmp_path):
    """The shipped SIM bundles have no bitstream: a clear BoardNotFound (the CLI: one
    error line), before anything is written."""
    from typer.testing import CliRunner

    from fluorofpga.cli import app as cli
    from fluorofpga.host import BoardNotFound

    sim3 = default_bundle_path().parent / "sim3"
    with pytest.raises(BoardNotFound, match="sim3.* has no bitstream"):
        app.stream("sim", tmp_path / "x.tif", bundle_path=sim3, backend="pynq", frames=3,
                   size=SIM_SIZE, sim=True, **SIM_OPTICS)
    import tifffile

    raw = tmp_path / "raw.tif"
    group = SimulatedSimCameraSource(0, (SIM_SIZE, SIM_SIZE), phases=1).raw_group(
        np.random.default_rng(4))
    tifffile.imwrite(raw, group, photometric="minisblack")
    r = CliRunner().invoke(cli, ["sim", str(raw), str(tmp_path / "y.tif"), "--model",
                                 str(sim3), "--backend", "pynq"])
    assert r.exit_code == 2 and "has no bitstream" in " ".join(r.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.tif"]
